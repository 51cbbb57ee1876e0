"""Batch inference throughput: model_vqa at batch N against the original behaviour (one question at
a time, image decoded in the main process), same model, same questions, one process.

    .venv/bin/python bench/inference_throughput.py                      # the demo's merged model
    .venv/bin/python bench/inference_throughput.py --model-path M --questions Q --image-folder I \\
        --batch-size 32 --limit 256 [--load-4bit]

Both go through llava.eval.model_vqa.run, so the only differences are batching,
length sorting, DataLoader workers and the shared-prefix cache (the system
prompt's keys and values computed once, an image's once per batch for all the
questions about it; the baseline recomputes them for every question, as the
original does).  --no-image-prefix leaves out the per-image part,
--no-prefix-cache both.  --cpu-bf16 runs the batched side in bf16 autocast (the
baseline stays fp32, so the ratio then includes the dtype; the answers that
differ are counted).  They run in alternation (baseline,
batched, baseline, batched) so drift in machine speed hits both; the greedy
answers of the two are checked to be the same; the ratio is printed last.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from llava.eval.answers_file import AnswersFile  # noqa: E402
from llava.eval.model_vqa import parse_args as vqa_args  # noqa: E402
from llava.eval.model_vqa import run  # noqa: E402
from llava.eval.question_file import read_questions  # noqa: E402
from llava.model.builder import load_pretrained_model  # noqa: E402


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model-path", default="checkpoints/llava-smol-task-merged")
    ap.add_argument("--model-base", default=None)
    ap.add_argument("--questions", default="playground/data/sample_task_llava/val_questions.jsonl")
    ap.add_argument("--image-folder", default="playground/data/sample_task/images")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--num-workers", type=int, default=1)
    ap.add_argument("--limit", type=int, default=96, help="questions per round")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--max-new-tokens", type=int, default=16)
    ap.add_argument("--load-4bit", action="store_true")
    ap.add_argument("--no-prefix-cache", action="store_true", help="the batched run without the shared-prefix cache")
    ap.add_argument("--no-image-prefix", action="store_true",
                    help="the batched run without sharing an image's tokens between its questions")
    ap.add_argument("--cpu-bf16", action="store_true", help="the batched run in bf16 autocast on a CPU")
    args = ap.parse_args(argv)

    loaded = load_pretrained_model(args.model_path, args.model_base, load_4bit=args.load_4bit)
    questions = read_questions(args.questions)[0][: args.limit]
    common = ["--model-path", args.model_path, "--question-file", args.questions, "--image-folder",
              args.image_folder, "--max-new-tokens", str(args.max_new_tokens), "--no-progress"]
    methods = {
        "one at a time": vqa_args([*common, "--answers-file", "-", "--batch-size", "1", "--num-workers", "0",
                                   "--no-prefix-cache"]),
        f"batch {args.batch_size}": vqa_args([*common, "--answers-file", "-", "--batch-size", str(args.batch_size),
                                             "--num-workers", str(args.num_workers),
                                             *(["--no-prefix-cache"] if args.no_prefix_cache else []),
                                             *(["--no-image-prefix"] if args.no_image_prefix else []),
                                             *(["--cpu-bf16"] if args.cpu_bf16 else [])]),
    }
    totals = {name: {"answered": 0, "generated_tokens": 0, "seconds": 0.0} for name in methods}
    cuda = loaded.model.device.type == "cuda"
    peak = {name: 0 for name in methods}
    answers: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as tmp:
        run(loaded, questions[: args.batch_size], methods[f"batch {args.batch_size}"],
            AnswersFile(Path(tmp) / "warmup.jsonl", resume=False), "bench")  # first-call costs out of the way
        for r in range(args.rounds):
            for name, margs in methods.items():
                path = Path(tmp) / f"{r}-{name}.jsonl"
                if cuda:
                    torch.cuda.reset_peak_memory_stats()
                with AnswersFile(path, resume=False) as writer:
                    res = run(loaded, questions, margs, writer, "bench")
                if cuda:
                    peak[name] = max(peak[name], torch.cuda.max_memory_allocated())
                assert not res["errors"], res["errors"][:3]
                for k in totals[name]:
                    totals[name][k] += res[k]
                answers[name] = {str(q): t for q, t in _texts(path).items()}
                print(f"round {r + 1} {name:>14s}: {res['answered'] / res['seconds']:.2f} answers/s, "
                      f"{res['generated_tokens'] / res['seconds']:.1f} generated tokens/s", flush=True)
    base, batched = answers.values()
    same = sum(base[q] == batched[q] for q in base)
    print(f"\nmodel {args.model_path}{' (4-bit)' if args.load_4bit else ''}"
          f"{', batched side in bf16 autocast' if args.cpu_bf16 else ''}, {len(questions)} questions x "
          f"{args.rounds} rounds, max {args.max_new_tokens} new tokens, device {loaded.model.device}"
          f"{' (' + torch.cuda.get_device_name() + ', ' + str(loaded.model.dtype) + ')' if cuda else ''}, "
          f"{torch.get_num_threads()} threads")
    print("| method | answers/s | generated tokens/s |"
          + (" peak GPU memory |\n|---|---|---|---|" if cuda else "\n|---|---|---|"))
    rate = {}
    for name, t in totals.items():
        rate[name] = t["answered"] / t["seconds"]
        print(f"| {name} | {rate[name]:.2f} | {t['generated_tokens'] / t['seconds']:.1f} |"
              + (f" {peak[name] / 2**30:.1f} GiB |" if cuda else ""))
    print(f"\nsame greedy answer at batch 1 and batch {args.batch_size}: {same}/{len(base)}")
    first, second = rate.values()
    print(f"throughput ratio batch {args.batch_size} / one at a time: {second / first:.2f}x")


def _texts(path: Path) -> dict:
    return {json.loads(line)["question_id"]: json.loads(line)["text"]
            for line in path.read_text().splitlines() if line.strip()}


if __name__ == "__main__":
    main()
