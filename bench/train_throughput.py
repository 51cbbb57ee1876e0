"""Training throughput: our batching against a naive baseline, same model and data, one process.

    .venv/bin/python bench/train_throughput.py                     # embedded default, sample task
    .venv/bin/python bench/train_throughput.py --model checkpoints/llava-smol-base --steps 12

Counts real (non-padding) tokens per second of LoRA training steps
(forward + backward + AdamW step):
  naive: random order, each batch padded to its longest record, the LM head
         over every position, images decoded in the training process
         (the original LLaVA's DataCollatorForSupervisedDataset behaviour);
  ours:  LengthGroupedSampler (--group_by_modality_length), DataCollator,
         the LM head only at supervised positions (--lm_head_on_labels_only),
         images decoded in a DataLoader worker.
The two run in alternation (naive, ours, naive, ours) so drift in machine
speed hits both; the ratio is printed last.  --cpu-bf16 runs both sides'
forward passes in bf16 autocast, as the CPU recipe trains where the CPU has
bf16 instructions; without it both run in fp32.

--bf16 stores the frozen weights in bf16 and runs both sides in bf16 autocast
(LoRA weights and AdamW stay fp32); --bf16-adapters also stores the trained
weights in bf16 and keeps fp32 master copies for AdamW, as DeepSpeed's bf16
mode does; --gradient-checkpointing recomputes
each layer in the backward pass, as the GPU recipe does.  On a GPU (the model
moves there when one is present) the table adds peak memory and MFU: the FLOPs
the loss needs (LLM forward and the backward to its activations per real
token, LoRA's weight gradients, the LM head at supervised positions only, the
frozen tower's forward and the projector's forward and backward per image;
recomputation not counted) over the time and --peak-tflops.  A
LLaVA-1.5-7B-shaped model with random weights: bench/gpu_7b.sh.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
from torch.profiler import ProfilerActivity, profile  # noqa: E402
from torch.utils.data import DataLoader, RandomSampler  # noqa: E402

from llava.data.collate import DataCollator  # noqa: E402
from llava.data.sampler import LengthGroupedSampler  # noqa: E402
from llava.train.args import parse_args  # noqa: E402
from llava.train.loss import answer_positions_loss  # noqa: E402
from llava.train.model_setup import configure_trainable, load_model  # noqa: E402
from llava.train.train import make_dataset  # noqa: E402


class MasterAdamW:
    """AdamW on fp32 master copies of bf16 parameters: grads are copied up, the step runs
    in fp32, the result is copied back down (DeepSpeed's bf16 optimizer, without its sharding)."""

    def __init__(self, params, lr: float):
        self.params = list(params)
        self.master = [p.detach().float().clone().requires_grad_(True) for p in self.params]
        self.inner = torch.optim.AdamW(self.master, lr=lr)

    def step(self) -> None:
        for p, m in zip(self.params, self.master):
            m.grad = None if p.grad is None else p.grad.float()
        self.inner.step()
        with torch.no_grad():
            for p, m in zip(self.params, self.master):
                p.copy_(m)

    def zero_grad(self, set_to_none: bool = True) -> None:
        for p in self.params:
            p.grad = None


def measure(model, loader, steps: int, warmup: int, step_fn, optimizer, autocast, flops_of) -> dict:
    tokens = padded = 0
    seconds = flops = 0.0
    it = iter(loader)
    cuda = next(model.parameters()).is_cuda
    for i in range(warmup + steps):
        t0 = time.perf_counter()
        batch = next(it)
        with autocast():
            loss = step_fn(model, batch)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if cuda:
            torch.cuda.synchronize()
        if i >= warmup:
            seconds += time.perf_counter() - t0
            tokens += int(batch["attention_mask"].sum())
            padded += batch["attention_mask"].numel()
            flops += sum(flops_of(batch).values())
    return {"tokens": tokens, "padded": padded, "seconds": seconds, "flops": flops}


def flop_counter(model):
    """batch -> the FLOPs one step's loss needs, by part (see the module docstring)."""
    base = model.get_base_model()
    llm, head = base.model.language_model, base.get_output_embeddings()
    frozen = sum(p.numel() for n, p in llm.named_parameters()
                 if p.dim() == 2 and "lora_" not in n and "embed_tokens" not in n)
    lora = sum(p.numel() for n, p in llm.named_parameters() if "lora_" in n)
    tower = sum(p.numel() for p in base.model.vision_tower.parameters())
    projector = sum(p.numel() for p in base.model.multi_modal_projector.parameters())
    cfg = base.config.text_config
    layers, hidden = cfg.num_hidden_layers, cfg.hidden_size
    patches = (base.config.vision_config.image_size // base.config.vision_config.patch_size) ** 2

    def flops(batch) -> dict:
        lengths = batch["attention_mask"].sum(1).double()
        tokens = float(lengths.sum())
        supervised = int((batch["labels"][:, 1:] != -100).sum())
        images = batch["pixel_values"].shape[0] if "pixel_values" in batch else 0
        return {
            "llm": 4 * frozen * tokens,  # forward and the gradient to activations; frozen weights get none
            "lora": 6 * lora * tokens,  # forward, activation and weight gradients
            "attention": float((6 * layers * hidden * lengths ** 2).sum()),  # causal half of 12 s^2 h, fwd + bwd
            "lm_head": 4 * head.weight.numel() * supervised,
            "images": images * (2 * tower * (patches + 1) + 6 * projector * patches),
        }
    return flops


def add_sample_task_args(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--model", default="checkpoints/llava-smol-base")
    ap.add_argument("--data", default="playground/data/sample_task_llava/train.json")
    ap.add_argument("--image-folder", default="playground/data/sample_task/images")
    ap.add_argument("--batch-size", type=int, default=16)


def lora_model_and_data(args, lora_r: int, use_cpu: bool, gradient_checkpointing: bool = False):
    """(model with LoRA r lora_r on every LLM linear layer, alpha 2r, no dropout; processor; dataset),
    loaded by train.py's own code from the flags of add_sample_task_args."""
    with tempfile.TemporaryDirectory() as tmp:
        model_args, data_args, training_args = parse_args([
            "--model_name_or_path", args.model, "--data_path", args.data, "--image_folder", args.image_folder,
            "--output_dir", tmp, "--lora_enable", "True", "--lora_r", str(lora_r), "--lora_alpha", str(2 * lora_r),
            "--lora_dropout", "0", "--report_to", "none", "--use_cpu", str(use_cpu),
            "--gradient_checkpointing", str(gradient_checkpointing)])
        model, processor = load_model(model_args, data_args, training_args)
        model = configure_trainable(model, model_args, training_args)
        dataset = make_dataset(args.data, data_args, training_args, model_args, processor, model.config)
    return model, processor, dataset


def full_loss(model, batch):
    return model(**batch).loss


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_sample_task_args(ap)
    ap.add_argument("--steps", type=int, default=10, help="timed steps per round and method")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--lora-r", type=int, default=32, help="the CPU recipe's rank")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--cpu-bf16", action="store_true",
                    help="both sides' forward in bf16 autocast on CPU, as the CPU recipe trains (--cpu_bf16 auto)")
    ap.add_argument("--bf16", action="store_true",
                    help="frozen weights stored in bf16 and bf16 autocast (the GPU recipe)")
    ap.add_argument("--bf16-adapters", action="store_true",
                    help="with --bf16: the trained weights in bf16 too, fp32 master copies in AdamW (DeepSpeed's bf16)")
    ap.add_argument("--gradient-checkpointing", action="store_true")
    ap.add_argument("--compile", action="store_true",
                    help="torch.compile each decoder layer of the LLM (dynamic shapes), both methods")
    ap.add_argument("--warmup-rounds", type=int, default=0,
                    help="untimed rounds first (1 with --compile: each method compiles its own graphs)")
    ap.add_argument("--profile", type=int, default=0, metavar="N",
                    help="afterwards, profile N steps of ours and print the 20 costliest kernels")
    ap.add_argument("--peak-tflops", type=float, default=989.0,
                    help="the GPU's dense bf16 peak for MFU (H100/H200 SXM datasheet: 989)")
    args = ap.parse_args(argv)
    torch.manual_seed(args.seed)

    model, processor, dataset = lora_model_and_data(args, args.lora_r, use_cpu=not torch.cuda.is_available(),
                                                    gradient_checkpointing=args.gradient_checkpointing)
    cuda = torch.cuda.is_available()
    if args.bf16_adapters and not args.bf16:
        ap.error("--bf16-adapters needs --bf16")
    if args.bf16:
        for p in model.parameters():
            if args.bf16_adapters or not p.requires_grad:
                p.data = p.data.to(torch.bfloat16)
    if cuda:
        model.to("cuda")
    if args.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    if args.compile:
        for layer in model.get_base_model().model.language_model.layers:
            layer.compile(dynamic=True)
    model.train()
    device = next(model.parameters()).device
    flops_of = flop_counter(model)
    trained = [p for p in model.parameters() if p.requires_grad]
    optimizer = MasterAdamW(trained, lr=1e-5) if args.bf16_adapters else torch.optim.AdamW(trained, lr=1e-5)
    collate = DataCollator(pad_token_id=processor.tokenizer.pad_token_id)

    def to_device(fn):
        return lambda m, b: fn(m, {k: v.to(device) for k, v in b.items()})

    lm_head = model.get_base_model().get_output_embeddings()
    methods = {
        "naive": (DataLoader(dataset, args.batch_size, sampler=RandomSampler(
            dataset, generator=torch.Generator().manual_seed(args.seed)), collate_fn=collate, num_workers=0),
            to_device(full_loss)),
        "ours": (DataLoader(dataset, args.batch_size, sampler=LengthGroupedSampler(
            args.batch_size, 1, dataset.lengths, args.seed, has_image=dataset.has_image),
            collate_fn=collate, num_workers=1),
            to_device(lambda m, b: answer_positions_loss(m, lm_head, b))),
    }
    bf16 = args.cpu_bf16 or args.bf16
    autocast = ((lambda: torch.autocast(device.type, dtype=torch.bfloat16)) if bf16 else contextlib.nullcontext)
    totals = {name: {"tokens": 0, "padded": 0, "seconds": 0.0, "flops": 0.0, "peak": 0} for name in methods}
    for r in range(-args.warmup_rounds, args.rounds):
        for name, (loader, step_fn) in methods.items():
            if cuda:
                torch.cuda.reset_peak_memory_stats()
            res = measure(model, loader, args.steps, warmup=1 if r == -args.warmup_rounds else 0, step_fn=step_fn,
                          optimizer=optimizer, autocast=autocast, flops_of=flops_of)
            if r < 0:
                print(f"warm-up round {name}: {res['tokens'] / res['seconds']:.0f} tokens/s (not counted)", flush=True)
                continue
            for k in res:
                totals[name][k] += res[k]
            if cuda:
                totals[name]["peak"] = max(totals[name]["peak"], torch.cuda.max_memory_allocated())
            print(f"round {r + 1} {name:5s}: {res['tokens'] / res['seconds']:.0f} tokens/s "
                  f"({res['tokens']} real of {res['padded']} padded tokens)", flush=True)
    rate = {n: t["tokens"] / t["seconds"] for n, t in totals.items()}
    where = torch.cuda.get_device_name() if cuda else "CPU"
    print(f"\nmodel {args.model}, data {args.data}, batch {args.batch_size}, LoRA r{args.lora_r}, "
          f"{args.rounds}x{args.steps} steps each, {where}{', bf16' if bf16 else ', fp32'}"
          f"{', bf16 adapters' if args.bf16_adapters else ''}"
          f"{', gradient checkpointing' if args.gradient_checkpointing else ''}"
          f"{', compiled layers' if args.compile else ''}")
    gpu_columns = " peak GPU memory | model TFLOP/s | MFU |" if cuda else ""
    print(f"| method | real tokens/s | padding share |{gpu_columns}\n" + "|---" * (3 + 3 * cuda) + "|")
    for n, t in totals.items():
        row = f"| {n} | {rate[n]:.0f} | {1 - t['tokens'] / t['padded']:.1%} |"
        if cuda:
            tf = t["flops"] / t["seconds"] / 1e12
            row += f" {t['peak'] / 2**30:.1f} GiB | {tf:.0f} | {tf / args.peak_tflops:.1%} |"
        print(row)
    print(f"\nthroughput ratio ours/naive: {rate['ours'] / rate['naive']:.2f}x")
    if args.profile:
        loader, step_fn = methods["ours"]
        activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
        with profile(activities=activities) as prof:
            measure(model, loader, args.profile, 0, step_fn, optimizer, autocast, flops_of)
        key = "self_cuda_time_total" if cuda else "self_cpu_time_total"
        print(prof.key_averages().table(sort_by=key, row_limit=20, max_name_column_width=70))


if __name__ == "__main__":
    main()
