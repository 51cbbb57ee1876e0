"""Score a batch-inference answers file against an answer key; print a Markdown table and write JSON.

    python -m llava.eval.evaluate --answers-file answers.jsonl \\
        --annotation-file playground/data/sample_task_llava/val_answers.jsonl [--metric vqa|caption|rating]

Answers (one JSON object a line, as batch inference writes them):
`{"question_id", "prompt", "text", "answer_id", "model_id", "metadata"}`, or an
error record `{"question_id", "error"}`. The key: `{"question_id", "answers":
[...], "category"}` (+ "choices", "answer_letter" for multiple choice); for
`caption` the answers are reference captions, for `rating` the gold score.

Nothing is lost silently: every key question is scored, a question without a
usable answer (none, or an error record) scoring 0 and counted as missing;
error records, answers to ids not in the key (not scored) and duplicate
answers (the last one wins, as a resumed run appends its retries) are counted.
A line of either file that cannot be used (not UTF-8, not a JSON object, no
question_id, a key row without usable answers, a second key row for an id)
is named with FILE:LINE on stderr, listed in the scores file and counted as
"bad_lines"; the rest is scored.  The scores file is refused, before any
work, when it is one of the inputs (the answers, the key, the questions, the
answers' errors file).
Scores are fractions (0-1; CIDEr-D 0-10 as coco-caption), means over all key
questions; rating metrics are over the answers whose score could be parsed.
The metrics themselves are llava/eval/metrics.py.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from collections import defaultdict
from pathlib import Path

from llava.eval.answers_file import errors_path
from llava.eval.json_lines import read_json_lines
from llava.eval.metrics import bleu, caption_scores, gold_score, parse_score, rating_scores, short_answer_score
from llava.eval.output_paths import check_inputs, check_outputs
from llava.eval.question_file import question_id_of, read_questions
from llava.mm_utils import ImageError, load_image
from llava.model.clip_model import ClipModel, clip_score

METRICS = ("vqa", "caption", "rating")
NO_CATEGORY = "(none)"


def read_jsonl(path: str | Path, required: tuple[str, ...] = ("question_id",),
               bad: list[dict] | None = None) -> list[tuple[int, dict]]:
    """(line number, object) for each usable non-blank line.  A line that is not UTF-8, not a JSON
    object, lacks a required field or has a question_id that is not a string or an integer is left
    out and added to `bad` as {"file", "line", "error"} (printed to stderr when no list is given)."""
    rows = []
    for lineno, row, error in read_json_lines(path):
        if error is None and not isinstance(row, dict):
            error = f"expected a JSON object, got {type(row).__name__}"
        for field in required if error is None else ():
            if row.get(field) is None:
                error = f"missing '{field}'"
                break
        if error is None and "question_id" in required:
            error = question_id_of(row["question_id"])[1]
        if error is not None:
            _bad(bad, path, lineno, error)
            continue
        rows.append((lineno, row))
    return rows


def _bad(bad: list[dict] | None, path, lineno: int, error: str) -> None:
    record = {"file": str(path), "line": lineno, "error": f"{path}:{lineno}: {error}"}
    if bad is None:
        print(f"warning: {record['error']}; line left out", file=sys.stderr)
    else:
        bad.append(record)


def read_answers(path: str | Path, bad: list[dict] | None = None) -> list[dict]:
    rows = []
    for lineno, row in read_jsonl(path, bad=bad):
        if "error" not in row and not isinstance(row.get("text"), str):
            _bad(bad, path, lineno, "answer has neither a 'text' string nor an 'error'")
            continue
        rows.append(row)
    return rows


def annotation_error(row: dict, metric: str | None) -> str | None:
    """Why a key row cannot be scored with `metric` (None: any metric), or None."""
    answers = row["answers"]
    items = answers if isinstance(answers, list) else [answers]
    if not items:
        return "'answers' is empty"
    if any(isinstance(a, (dict, list, bool)) or a is None for a in items):
        return "'answers' must be a string, a number or a list of them"
    choices = row.get("choices")
    if choices is not None and not (isinstance(choices, list) and all(isinstance(c, (str, int, float))
                                                                      for c in choices)):
        return "'choices' must be a list of strings"
    if metric == "rating":
        try:
            gold_score(answers)
        except ValueError as exc:
            return str(exc)
    return None


def read_annotations(path: str | Path, metric: str | None = None, bad: list[dict] | None = None) -> list[dict]:
    """The key; a question_id twice is a bad line (which answer would be right?), the first one is kept."""
    first_line: dict[str, int] = {}
    rows = []
    for lineno, row in read_jsonl(path, required=("question_id", "answers"), bad=bad):
        qid = question_id_of(row["question_id"])[0]
        error = annotation_error(row, metric)
        if error is None and qid in first_line:
            error = f"duplicate question_id {qid!r} (first on line {first_line[qid]}); only the first is used"
        if error is not None:
            _bad(bad, path, lineno, error)
            continue
        first_line[qid] = lineno
        rows.append(row)
    return rows


def _index(answers_rows: list[dict], annotation_rows: list[dict]):
    key: dict[str, dict] = {}
    for i, row in enumerate(annotation_rows):
        qid = question_id_of(row.get("question_id"))[0]
        if qid is None or "answers" not in row:
            raise ValueError(f"annotation row {i + 1}: needs 'question_id' (a string or an integer) and 'answers'")
        if qid in key:
            raise ValueError(f"annotation row {i + 1}: duplicate question_id {qid!r}")
        key[qid] = row
    answers: dict[str, dict] = {}
    duplicates = 0
    for i, row in enumerate(answers_rows):
        qid = question_id_of(row.get("question_id"))[0]
        if qid is None:
            raise ValueError(f"answers row {i + 1}: no 'question_id' (a string or an integer)")
        duplicates += qid in answers
        answers[qid] = row  # the last one wins
    return key, answers, duplicates


def _category(row: dict) -> str:
    cat = row.get("category")
    return NO_CATEGORY if cat is None or cat == "" else str(cat)


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def evaluate(answers_rows: list[dict], annotation_rows: list[dict], metric: str = "vqa") -> dict:
    """Scores and counts as a JSON-ready dict; see format_table for what a person reads."""
    if metric not in METRICS:
        raise ValueError(f"unknown metric {metric!r}; choose one of {', '.join(METRICS)}")
    key, answers, duplicates = _index(answers_rows, annotation_rows)
    texts = {qid: row["text"] for qid, row in answers.items()
             if "error" not in row and isinstance(row.get("text"), str)}
    counts = {
        "questions": len(key),
        "answered": sum(qid in texts for qid in key),
        "missing": sum(qid not in texts for qid in key),
        "errors": sum("error" in row for row in answers.values()),
        "unknown_question_ids": sum(qid not in key for qid in answers),
        "duplicate_answers": duplicates,
    }
    score = {"vqa": _score_vqa, "caption": _score_caption, "rating": _score_rating}[metric]
    return {"metric": metric, **score(key, texts), "counts": counts}


def _score_vqa(key: dict[str, dict], texts: dict[str, str]) -> dict:
    rows = {}
    for qid, k in key.items():
        rows[qid] = short_answer_score(texts.get(qid, ""), k)
        if qid not in texts:  # no usable answer: every score of the row is 0
            rows[qid] = {name: 0.0 for name in rows[qid]}
    by_cat = defaultdict(list)
    for qid, k in key.items():
        by_cat[_category(k)].append(rows[qid])
    mc = [r["multiple_choice"] for r in rows.values() if "multiple_choice" in r]
    scores = {"vqa_accuracy": _mean([r["vqa_accuracy"] for r in rows.values()]),
              "exact_match": _mean([r["exact_match"] for r in rows.values()])}
    if mc:
        scores.update(multiple_choice_accuracy=_mean(mc), multiple_choice_questions=len(mc))
    per_category = {cat: {"count": len(rs), "vqa_accuracy": _mean([r["vqa_accuracy"] for r in rs]),
                          "exact_match": _mean([r["exact_match"] for r in rs])}
                    for cat, rs in sorted(by_cat.items())}
    return {"scores": scores, "per_category": per_category,
            "per_question": {qid: r["vqa_accuracy"] for qid, r in sorted(rows.items())}}


def _score_caption(key: dict[str, dict], texts: dict[str, str]) -> dict:
    refs = {qid: [str(a) for a in k["answers"]] if isinstance(k["answers"], list) else [str(k["answers"])]
            for qid, k in key.items()}
    for qid, r in refs.items():
        if not r:
            raise ValueError(f"question {qid!r}: no reference captions")
    cands = {qid: texts.get(qid, "") for qid in key}  # a missing caption is empty: it scores 0
    result = caption_scores(cands, refs)
    by_cat = defaultdict(list)
    for qid, k in key.items():
        by_cat[_category(k)].append(qid)
    per_category = {}
    for cat, qids in sorted(by_cat.items()):
        # BLEU is a corpus score, so each category's is its own sub-corpus; ROUGE-L and CIDEr-D are
        # means of per-image scores from the whole set (CIDEr-D's document frequencies included).
        per_category[cat] = {
            "count": len(qids),
            "bleu_4": bleu({q: cands[q] for q in qids}, {q: refs[q] for q in qids})[0][3],
            "rouge_l": _mean([result["per_image"]["rouge_l"][q] for q in qids]),
            "cider_d": _mean([result["per_image"]["cider_d"][q] for q in qids]),
        }
    return {"scores": result["scores"], "per_category": per_category,
            "per_question": {q: result["per_image"]["cider_d"][q] for q in sorted(key)}}


def _score_rating(key: dict[str, dict], texts: dict[str, str]) -> dict:
    gold = {}
    for qid, k in key.items():
        try:
            gold[qid] = gold_score(k["answers"])
        except ValueError as exc:
            raise ValueError(f"question {qid!r}: {exc}") from None
    parsed = {qid: parse_score(texts[qid]) for qid in key if qid in texts}
    valid = sorted(qid for qid, p in parsed.items() if p is not None)
    scores = rating_scores([parsed[q] for q in valid], [gold[q] for q in valid])
    scores.update(valid=len(valid), invalid=sum(p is None for p in parsed.values()))
    by_cat = defaultdict(list)
    for qid, k in key.items():
        by_cat[_category(k)].append(qid)
    per_category = {}
    for cat, qids in sorted(by_cat.items()):
        ok = [q for q in qids if parsed.get(q) is not None]
        s = rating_scores([parsed[q] for q in ok], [gold[q] for q in ok])
        per_category[cat] = {"count": len(qids), "valid": len(ok), "mae": s["mae"],
                             "exact_accuracy": s["exact_accuracy"]}
    return {"scores": scores, "per_category": per_category,
            "per_question": {q: parsed.get(q) for q in sorted(key)}}


# ---------------------------------------------------------------- output
_LABELS = {
    "vqa_accuracy": "VQA accuracy", "exact_match": "exact match",
    "multiple_choice_accuracy": "multiple-choice accuracy", "multiple_choice_questions": "multiple-choice questions",
    "bleu_1": "BLEU-1", "bleu_2": "BLEU-2", "bleu_3": "BLEU-3", "bleu_4": "BLEU-4", "rouge_l": "ROUGE-L",
    "cider_d": "CIDEr-D", "mae": "MAE", "exact_accuracy": "exact accuracy", "within_1_accuracy": "within-1 accuracy",
    "spearman": "Spearman", "valid": "valid scores", "invalid": "invalid (unparseable) scores",
    "questions": "questions", "answered": "answered", "missing": "missing answers", "errors": "errors",
    "unknown_question_ids": "unknown question ids (not scored)", "duplicate_answers": "duplicate answers (last kept)",
    "count": "count", "clip_score": "CLIPScore", "bad_lines": "unreadable lines (left out)",
}


def _fmt(value) -> str:
    if value is None:
        return "n/a"
    return str(value) if isinstance(value, int) else f"{value:.4f}"


def format_table(result: dict) -> str:
    """The scores and counts as a Markdown table, then one row per category."""
    lines = ["| metric | value |", "|---|---|"]
    for name, value in [*result["scores"].items(), *result["counts"].items()]:
        lines.append(f"| {_LABELS.get(name, name)} | {_fmt(value)} |")
    cats = result.get("per_category") or {}
    if cats:
        columns = list(next(iter(cats.values())))
        lines += ["", "| category | " + " | ".join(_LABELS.get(c, c) for c in columns) + " |",
                  "|---" * (len(columns) + 1) + "|"]
        for cat, row in cats.items():
            lines.append(f"| {cat} | " + " | ".join(_fmt(row[c]) for c in columns) + " |")
    return "\n".join(lines)


def _write_json(path: Path, data: dict) -> None:
    """Temporary file then rename: an interrupted run never leaves half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    text = json.dumps(data, indent=2, ensure_ascii=False)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # a file name that is not UTF-8 (lone surrogates in str form): \u-escape it
        text = json.dumps(data, indent=2)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text + "\n")
    os.replace(tmp, path)


def clip_scores(args, answers_rows: list[dict], key_rows: list[dict], result: dict) -> float | None:
    """Mean CLIPScore of the answered captions (per question in result["per_question_clip_score"])."""
    questions, _ = read_questions(args.question_file)
    image_of = {q.question_id: q.image for q in questions}
    texts = {question_id_of(r["question_id"])[0]: r["text"] for r in answers_rows if isinstance(r.get("text"), str)}
    pairs = []
    for row in key_rows:
        qid = question_id_of(row["question_id"])[0]
        if qid in texts and image_of.get(qid):
            try:
                pairs.append((qid, load_image(Path(args.image_folder) / image_of[qid]), texts[qid]))
            except ImageError as exc:
                print(f"CLIPScore: {exc}; left out")
    if not pairs:
        return None
    clip = ClipModel(args.clip_model)
    scores = clip_score(clip, [p[1] for p in pairs], [p[2] for p in pairs])
    result["per_question_clip_score"] = {p[0]: s for p, s in zip(pairs, scores)}
    result["clip_model"] = clip.name
    return sum(scores) / len(scores)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--answers-file", required=True, help="answers JSONL from batch inference")
    ap.add_argument("--annotation-file", required=True, help="answer key JSONL (question_id, answers, category)")
    ap.add_argument("--metric", default="vqa", choices=METRICS)
    ap.add_argument("--output", default=None, help="scores JSON (default: <answers stem>_scores.json beside it)")
    clip = ap.add_argument_group("CLIPScore (--metric caption), when you have an open_clip model")
    clip.add_argument("--clip-model", default=None,
                      help="local-dir:DIR or ARCH:WEIGHTS_FILE (see llava/model/clip_model.py)")
    clip.add_argument("--question-file", default=None, help="the questions, for each caption's image")
    clip.add_argument("--image-folder", default="")
    args = ap.parse_args(argv)
    if args.clip_model and (args.metric != "caption" or not args.question_file):
        ap.error("--clip-model needs --metric caption and --question-file")
    answers_path = Path(args.answers_file)
    output = Path(args.output) if args.output else answers_path.with_name(f"{answers_path.stem}_scores.json")
    sidecar = errors_path(args.answers_file)
    # Before reading anything: the inputs are there, and the scores file is none of them.
    check_inputs({"--answers-file": args.answers_file, "--annotation-file": args.annotation_file,
                  "--question-file": args.question_file},
                 {"--image-folder": args.image_folder if args.clip_model and args.image_folder else None})
    check_outputs({"--output" if args.output else "the scores file (default of --output)": output},
                  {"--answers-file": args.answers_file, "--annotation-file": args.annotation_file,
                   "--question-file": args.question_file, "the errors file of --answers-file": sidecar})

    bad: list[dict] = []
    answers = read_answers(args.answers_file, bad)
    key = read_annotations(args.annotation_file, args.metric, bad)
    for b in bad[:10]:
        print(f"warning: {b['error']}; line left out", file=sys.stderr)
    if len(bad) > 10:
        print(f"warning: ... {len(bad) - 10} more unreadable lines, all listed in the scores file", file=sys.stderr)
    if not key:
        raise SystemExit(f"error: {args.annotation_file}: no usable annotation record"
                         + (f" ({sum(b['file'] == str(args.annotation_file) for b in bad)} lines left out)"
                            if bad else " (the file is empty)"))
    try:
        result = evaluate(answers, key, args.metric)
    except ValueError as exc:
        raise SystemExit(f"{args.annotation_file}: {exc}") from None
    if args.clip_model:
        result["scores"]["clip_score"] = clip_scores(args, answers, key, result)
    if sidecar.is_file():  # batch inference's errors (bad lines, missing images): their questions are missing
        result["counts"]["errors"] += sum(1 for line in sidecar.read_bytes().splitlines() if line.strip())
        result["errors_file"] = str(sidecar)
    if bad:
        result["counts"]["bad_lines"] = len(bad)
        result["bad_lines"] = bad[:1000]
    print(format_table(result))
    _write_json(output, {"answers_file": str(args.answers_file), "annotation_file": str(args.annotation_file),
                         **result})
    print(f"\nscores written to {output}")


if __name__ == "__main__":
    main()
