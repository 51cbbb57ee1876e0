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
from torch.utils.data import DataLoader, RandomSampler  # noqa: E402

from llava.data.collate import DataCollator  # noqa: E402
from llava.data.sampler import LengthGroupedSampler  # noqa: E402
from llava.train.args import parse_args  # noqa: E402
from llava.train.loss import answer_positions_loss  # noqa: E402
from llava.train.model_setup import configure_trainable, load_model  # noqa: E402
from llava.train.train import make_dataset  # noqa: E402


def measure(model, loader, steps: int, warmup: int, step_fn, optimizer, autocast) -> dict:
    tokens = padded = 0
    seconds = 0.0
    it = iter(loader)
    for i in range(warmup + steps):
        t0 = time.perf_counter()
        batch = next(it)
        with autocast():
            loss = step_fn(model, batch)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if i >= warmup:
            seconds += time.perf_counter() - t0
            tokens += int(batch["attention_mask"].sum())
            padded += batch["attention_mask"].numel()
    return {"tokens": tokens, "padded": padded, "seconds": seconds}


def full_loss(model, batch):
    return model(**batch).loss


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="checkpoints/llava-smol-base")
    ap.add_argument("--data", default="playground/data/sample_task_llava/train.json")
    ap.add_argument("--image-folder", default="playground/data/sample_task/images")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--steps", type=int, default=10, help="timed steps per round and method")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--lora-r", type=int, default=32, help="the CPU recipe's rank")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--cpu-bf16", action="store_true",
                    help="both sides' forward in bf16 autocast on CPU, as the CPU recipe trains (--cpu_bf16 auto)")
    args = ap.parse_args(argv)
    torch.manual_seed(args.seed)

    with tempfile.TemporaryDirectory() as tmp:
        model_args, data_args, training_args = parse_args([
            "--model_name_or_path", args.model, "--data_path", args.data, "--image_folder", args.image_folder,
            "--output_dir", tmp, "--lora_enable", "True", "--lora_r", str(args.lora_r),
            "--lora_alpha", str(2 * args.lora_r), "--lora_dropout", "0", "--report_to", "none",
            "--use_cpu", str(not torch.cuda.is_available())])
        model, processor = load_model(model_args, data_args, training_args)
        model = configure_trainable(model, model_args, training_args)
        dataset = make_dataset(args.data, data_args, training_args, model_args, processor, model.config)
    model.train()
    device = next(model.parameters()).device
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5)
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
    autocast = ((lambda: torch.autocast("cpu", dtype=torch.bfloat16)) if args.cpu_bf16 else contextlib.nullcontext)
    totals = {name: {"tokens": 0, "padded": 0, "seconds": 0.0} for name in methods}
    for r in range(args.rounds):
        for name, (loader, step_fn) in methods.items():
            res = measure(model, loader, args.steps, warmup=1 if r == 0 else 0, step_fn=step_fn,
                          optimizer=optimizer, autocast=autocast)
            for k in res:
                totals[name][k] += res[k]
            print(f"round {r + 1} {name:5s}: {res['tokens'] / res['seconds']:.0f} tokens/s "
                  f"({res['tokens']} real of {res['padded']} padded tokens)", flush=True)
    rate = {n: t["tokens"] / t["seconds"] for n, t in totals.items()}
    print(f"\nmodel {args.model}, data {args.data}, batch {args.batch_size}, LoRA r{args.lora_r}, "
          f"{args.rounds}x{args.steps} steps each, device {device}{', bf16 autocast' if args.cpu_bf16 else ', fp32'}")
    print("| method | real tokens/s | padding share |\n|---|---|---|")
    for n, t in totals.items():
        print(f"| {n} | {rate[n]:.0f} | {1 - t['tokens'] / t['padded']:.1%} |")
    print(f"\nthroughput ratio ours/naive: {rate['ours'] / rate['naive']:.2f}x")


if __name__ == "__main__":
    main()
