"""How well a model tells whether a colour-shape pair is in the picture: the sample task's yes/no
questions, the category every embedded base has been weakest at.

    # a base in its own words: "Can you see a red circle?" on the held-out yes/no questions,
    # scored by the answer's first word (Yes / No)
    .venv/bin/python bench/presence_probe.py --model checkpoints/llava-smol-base

    # how fast presence is learnt: a LoRA (scripts/finetune_task_lora.sh) on the task's yes/no
    # questions alone, N steps of 16, then the held-out yes/no questions in the task's format
    .venv/bin/python bench/presence_probe.py --model checkpoints/llava-smol-base --lora-steps 40 [train.py flags]

Extra flags go to train.py (e.g. --unfreeze_mm_vision_tower True --mm_vision_tower_lr 2e-4); with
--full, scripts/finetune_task.sh (a full fine-tune) runs instead of the LoRA script.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TASK = ROOT / "playground/data/sample_task_llava"
IMAGES = ROOT / "playground/data/sample_task/images"


def yes_no_subsets(work: Path) -> tuple[Path, Path, Path]:
    """Single-turn training records of the yes/no questions in train.json, and the held-out yes/no
    questions as the task asks them and as the bases' chats ask them ("Can you see ...?")."""
    records = []
    for r in json.loads((TASK / "train.json").read_text()):
        conv = r["conversations"]
        for i in range(0, len(conv), 2):
            question = conv[i]["value"].replace("<image>\n", "")
            if question.startswith("Is there a"):
                records.append({"id": f"{r['id']}_{i}", "image": r["image"], "conversations": [
                    {"from": "human", "value": "<image>\n" + question}, conv[i + 1]]})
    train = work / "yes_no_train.json"
    train.write_text(json.dumps(records))
    task_q, see_q = work / "yes_no_val.jsonl", work / "see_val.jsonl"
    with open(task_q, "w") as f_task, open(see_q, "w") as f_see:
        for line in (TASK / "val_questions.jsonl").read_text().splitlines():
            q = json.loads(line)
            if q["category"] != "yes_no":
                continue
            f_task.write(json.dumps(q) + "\n")
            pair = q["text"].split("\n")[0][len("Is there a "):-1]  # "red circle"
            article = "an" if pair[0] in "aeiou" else "a"
            f_see.write(json.dumps({**q, "text": f"Can you see {article} {pair}?"}) + "\n")
    return train, task_q, see_q


def answer(model: str, questions: Path, out: Path, base: str | None = None) -> None:
    cmd = [sys.executable, "-m", "llava.eval.model_vqa", "--model-path", model, "--question-file", str(questions),
           "--image-folder", str(IMAGES), "--answers-file", str(out), "--no-progress", "--no-resume",
           "--max-new-tokens", "12"]
    subprocess.run(cmd + (["--model-base", base] if base else []), cwd=ROOT, check=True,
                   env={**os.environ, "HF_HUB_OFFLINE": "1"})


def score(answers: Path) -> tuple[float, dict]:
    truth = {}
    for line in (TASK / "val_answers.jsonl").read_text().splitlines():
        row = json.loads(line)
        truth[row["question_id"]] = row["answers"][0]
    counts = collections.Counter()
    for line in answers.read_text().splitlines():
        a = json.loads(line)
        said = a["text"].strip().split(",")[0].split(" ")[0].strip(".").lower()
        counts[(truth[a["question_id"]], said)] += 1
    right = sum(n for (t, s), n in counts.items() if t == s)
    return right / sum(counts.values()), {f"truth {t}, said {s}": n for (t, s), n in sorted(counts.items())}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="checkpoints/llava-smol-base")
    ap.add_argument("--lora-steps", type=int, default=0, help="0: probe the model as it is")
    ap.add_argument("--full", action="store_true", help="full fine-tune instead of LoRA")
    ap.add_argument("--work", default="/tmp/presence_probe")
    args, train_flags = ap.parse_known_args(argv)
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    train, task_q, see_q = yes_no_subsets(work)
    if not args.lora_steps:
        answer(args.model, see_q, work / "see_answers.jsonl")
        acc, counts = score(work / "see_answers.jsonl")
        print(f"{args.model}: 'Can you see ...?' on {sum(counts.values())} held-out pairs: {acc:.3f} {counts}")
        return
    out = work / ("full" if args.full else "lora")
    script = "finetune_task.sh" if args.full else "finetune_task_lora.sh"
    shutil.rmtree(out, ignore_errors=True)  # a checkpoint left there would be resumed from
    t0 = time.time()
    subprocess.run(["bash", f"scripts/{script}", "--model_name_or_path", args.model, "--data_path", str(train),
                    "--output_dir", str(out), "--max_steps", str(args.lora_steps), "--save_steps", "100000",
                    *train_flags],
                   cwd=ROOT, check=True, env={**os.environ, "PYTHON": sys.executable, "HF_HUB_OFFLINE": "1"})
    seconds = time.time() - t0
    answer(str(out), task_q, work / "task_answers.jsonl", base=None if args.full else args.model)
    acc, counts = score(work / "task_answers.jsonl")
    losses = [json.loads(line)["loss"] for line in (out / "loss_log.jsonl").read_text().splitlines()]
    print(f"{script} on {len(json.loads(train.read_text()))} yes/no records, {args.lora_steps} steps x 16 "
          f"({seconds:.0f} s), last 10 steps' mean loss {sum(losses[-10:]) / len(losses[-10:]):.3f}; "
          f"held-out yes/no: {acc:.3f} {counts}")


if __name__ == "__main__":
    main()
