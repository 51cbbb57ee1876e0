"""Held-out accuracy of a model on preprocessed task data: greedy answers, exact match after
normalisation (llava/eval/normalize.py), overall and per category.

    python -m llava.eval.task_accuracy --model-path checkpoints/llava-smol-task-lora \\
        --model-base checkpoints/llava-smol-base \\
        --questions playground/data/sample_task_llava/val_questions.jsonl \\
        --answers playground/data/sample_task_llava/val_answers.jsonl \\
        --image-folder playground/data/sample_task/images

Questions are answered in batches of similar prompt length (left-padded).
"""

from __future__ import annotations

import argparse
import json
import time
from collections import defaultdict
from pathlib import Path

from tqdm import tqdm

from llava.eval.normalize import exact_match
from llava.mm_utils import load_image


def read_jsonl(path: str | Path) -> list[dict]:
    rows = []
    for lineno, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), 1):
        if line.strip():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise SystemExit(f"{path}:{lineno}: malformed JSON ({exc.msg})") from None
    return rows


def task_accuracy(loaded, questions: list[dict], answers: dict[str, dict], image_folder: str | Path,
                  batch_size: int = 16, max_new_tokens: int = 16, progress: bool = True) -> dict:
    from llava.model.inputs import generate

    order = sorted(range(len(questions)), key=lambda i: len(questions[i]["text"]))
    predictions: dict[str, str] = {}
    start = time.time()
    bar = tqdm(total=len(order), desc="answering", disable=not progress)
    for b in range(0, len(order), batch_size):
        rows = [questions[i] for i in order[b:b + batch_size]]
        images = [load_image(Path(image_folder) / r["image"]) if r.get("image") else None for r in rows]
        texts = generate(loaded, [r["text"] for r in rows], images, max_new_tokens=max_new_tokens)
        for r, t in zip(rows, texts):
            predictions[str(r["question_id"])] = t
        bar.update(len(rows))
    bar.close()
    seconds = time.time() - start
    by_cat: dict[str, list[bool]] = defaultdict(list)
    for q in questions:
        qid = str(q["question_id"])
        key = answers.get(qid)
        if key is None:
            raise SystemExit(f"question {qid} has no entry in the answer key")
        by_cat[key.get("category") or q.get("category") or "all"].append(exact_match(predictions[qid], key["answers"]))
    hits = [h for v in by_cat.values() for h in v]
    return {
        "accuracy": sum(hits) / len(hits),
        "num_questions": len(hits),
        "per_category": {c: sum(v) / len(v) for c, v in sorted(by_cat.items())},
        "seconds": round(seconds, 1),
        "predictions": predictions,
    }


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model-path", required=True)
    ap.add_argument("--model-base", default=None)
    ap.add_argument("--questions", required=True, help="question JSONL (question_id, image, text)")
    ap.add_argument("--answers", required=True, help="answer key JSONL (question_id, answers, category)")
    ap.add_argument("--image-folder", required=True)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--max-new-tokens", type=int, default=16)
    ap.add_argument("--limit", type=int, default=None, help="score only the first N questions")
    ap.add_argument("--output", default=None, help="write the scores (and predictions) as JSON here")
    args = ap.parse_args(argv)

    from llava.model.builder import load_pretrained_model

    loaded = load_pretrained_model(args.model_path, args.model_base)
    questions = read_jsonl(args.questions)[: args.limit]
    answers = {str(r["question_id"]): r for r in read_jsonl(args.answers)}
    result = task_accuracy(loaded, questions, answers, args.image_folder, args.batch_size, args.max_new_tokens)
    print("| category | accuracy |\n|---|---|")
    for cat, acc in result["per_category"].items():
        print(f"| {cat} | {acc:.3f} |")
    print(f"| **all** ({result['num_questions']}) | **{result['accuracy']:.3f}** |")
    if args.output:
        Path(args.output).write_text(json.dumps({**vars(args), **result}, indent=2))


if __name__ == "__main__":
    main()
