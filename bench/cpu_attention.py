"""bf16 LoRA training steps on a CPU: transformers' SDPA against llava/model/cpu_attention.py's fp32 SDPA.

    HF_HUB_OFFLINE=1 .venv/bin/python bench/cpu_attention.py [--steps 4] [--rounds 2]

One model (the embedded default with LoRA, weights and adapters in bf16, as
finetune_task_lora.sh trains on CPUs with bf16 instructions), the same
length-grouped batches of the sample task for both, the attention
implementation switched between rounds (sdpa, fp32, sdpa, fp32, ...); prints
seconds per step of each and their ratio, and the first batch's loss under
both (they differ by bf16 rounding only).  First, the attention kernel alone:
forward and backward of one layer's SDPA at the embedded default's shapes
(16 x 9 query heads, 3 key/value heads, 150 tokens, head size 64), bf16
against cast up to fp32 and back.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
from torch.utils.data import DataLoader  # noqa: E402

from bench.train_throughput import add_sample_task_args, lora_model_and_data  # noqa: E402
from llava.data.collate import DataCollator  # noqa: E402
from llava.data.sampler import LengthGroupedSampler  # noqa: E402
from llava.model.cpu_attention import register_cpu_sdpa_fp32  # noqa: E402
from llava.train.loss import answer_positions_loss  # noqa: E402


def kernel_ms(upcast: bool, masked: bool, reps: int = 10) -> float:
    """Milliseconds per forward and backward of one layer's attention, GQA heads repeated as transformers does."""
    f = torch.nn.functional
    q = torch.randn(16, 9, 150, 64, dtype=torch.bfloat16, requires_grad=True)
    k, v = (torch.randn(16, 3, 150, 64, dtype=torch.bfloat16, requires_grad=True) for _ in range(2))
    mask = torch.ones(150, 150, dtype=torch.bool).tril().expand(16, 1, 150, 150) if masked else None

    def step():
        qq, kk, vv = (t.float() for t in (q, k, v)) if upcast else (q, k, v)
        out = f.scaled_dot_product_attention(qq, kk.repeat_interleave(3, 1), vv.repeat_interleave(3, 1),
                                             attn_mask=mask, is_causal=mask is None)
        out.to(torch.bfloat16).sum().backward()

    for _ in range(3):
        step()
    t0 = time.perf_counter()
    for _ in range(reps):
        step()
    return (time.perf_counter() - t0) / reps * 1000


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_sample_task_args(ap)
    ap.add_argument("--steps", type=int, default=4, help="timed steps per round")
    ap.add_argument("--rounds", type=int, default=2, help="rounds per implementation")
    args = ap.parse_args(argv)
    torch.manual_seed(0)
    print("| one layer's SDPA, forward + backward | bf16 | cast up to fp32 |\n|---|---|---|")
    for masked in (False, True):
        print(f"| {'explicit mask' if masked else 'causal flag'} | {kernel_ms(False, masked):.1f} ms "
              f"| {kernel_ms(True, masked):.1f} ms |", flush=True)
    model, processor, dataset = lora_model_and_data(args, lora_r=32, use_cpu=True)
    model.to(torch.bfloat16).train()
    trained = [p for p in model.parameters() if p.requires_grad]
    lm_head = model.get_base_model().get_output_embeddings()
    loader = DataLoader(dataset, args.batch_size, sampler=LengthGroupedSampler(
        args.batch_size, 1, dataset.lengths, 0, has_image=dataset.has_image),
        collate_fn=DataCollator(pad_token_id=processor.tokenizer.pad_token_id))
    batches = [b for _, b in zip(range(args.steps + 1), loader)]
    impls = {"sdpa": "sdpa", "fp32 sdpa": register_cpu_sdpa_fp32()}
    seconds = {name: 0.0 for name in impls}
    first_loss = {}
    for r in range(args.rounds):
        for name, impl in impls.items():
            model.get_base_model().set_attn_implementation(impl)
            for i, batch in enumerate(batches):
                t0 = time.perf_counter()
                loss = answer_positions_loss(model, lm_head, batch)
                loss.backward()
                for p in trained:
                    p.grad = None
                if i == 0:  # untimed warm-up step of the round
                    first_loss[name] = loss.item()
                else:
                    seconds[name] += time.perf_counter() - t0
            print(f"round {r + 1} {name}: {seconds[name] / ((r + 1) * args.steps):.2f} s/step so far", flush=True)
    per = {n: s / (args.rounds * args.steps) for n, s in seconds.items()}
    print(f"\nbatch {args.batch_size}, {args.rounds}x{args.steps} timed steps each, bf16 weights, CPU, "
          f"{torch.get_num_threads()} threads")
    for n in impls:
        print(f"| {n} | {per[n]:.2f} s/step | first-batch loss {first_loss[n]:.4f} |")
    print(f"\nspeed-up of fp32 SDPA: {per['sdpa'] / per['fp32 sdpa']:.2f}x")


if __name__ == "__main__":
    main()
