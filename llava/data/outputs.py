"""The preprocessing outputs: the image-grouped split, LLaVA conversation records, atomic writes.

Files (all under --output-dir):
    train.json / val.json      LLaVA conversation records
    val_questions.jsonl        {"question_id", "image", "text", "category"} (text without <image>)
    val_answers.jsonl          {"question_id", "answers", "category"} (+ "choices", "answer_letter")
    report.json                written by preprocess.py
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import tempfile
from pathlib import Path

from llava.constants import DEFAULT_IMAGE_TOKEN
from llava.data.questions import Question


def split_images(images: list[str], val_fraction: float, seed: int) -> set[str]:
    """The images held out for validation.

    Images are ordered by a seeded hash of their path, not by a shuffle of the
    input order: the split does not depend on the input format or row order,
    and the same seed gives the same split. The count is exact (rounded half
    up); a fraction strictly between 0 and 1 keeps at least one image on each
    side when there are two or more.
    """
    unique = sorted(set(images))
    n = len(unique)
    k = math.floor(val_fraction * n + 0.5)
    if 0 < val_fraction < 1 and n >= 2:
        k = min(max(k, 1), n - 1)
    order = sorted(unique, key=lambda p: hashlib.sha256(f"{seed}\0{p}".encode()).hexdigest())
    return set(order[:k])


def conversation(questions: list[Question], suffix: str | None) -> dict:
    """One LLaVA record; the image token only in the first human turn (LLaVA-1.5's multi-turn VQA)."""
    turns = []
    for i, q in enumerate(questions):
        text = q.prompt(suffix)
        turns.append({"from": "human", "value": f"{DEFAULT_IMAGE_TOKEN}\n{text}" if i == 0 else text})
        turns.append({"from": "gpt", "value": q.target})
    return {"id": questions[0].question_id, "image": questions[0].image, "conversations": turns}


def train_records(questions: list[Question], suffix: str | None, turns_per_image: int) -> list[dict]:
    """Questions of the same image grouped into conversations of up to turns_per_image turns.

    Conversations are ordered by each image's first question, questions within
    one in input order; the id is the first question's id (unique, traceable).
    """
    by_image: dict[str, list[Question]] = {}
    for q in questions:
        by_image.setdefault(q.image, []).append(q)
    records = []
    for group in by_image.values():
        for start in range(0, len(group), turns_per_image):
            records.append(conversation(group[start : start + turns_per_image], suffix))
    return records


def val_question_line(q: Question, suffix: str | None) -> dict:
    return {"question_id": q.question_id, "image": q.image, "text": q.prompt(suffix), "category": q.category}


def val_answer_line(q: Question) -> dict:
    line = {"question_id": q.question_id, "answers": list(q.answers), "category": q.category}
    if q.options:
        line["choices"] = list(q.options)
        line["answer_letter"] = q.target
    return line


def json_list_text(records: list[dict]) -> str:
    """A JSON list with one record per line: loads as usual, and diffs and greps well."""
    if not records:
        return "[]\n"
    return "[\n" + ",\n".join(json.dumps(r, ensure_ascii=False) for r in records) + "\n]\n"


def jsonl_text(lines: list[dict]) -> str:
    return "".join(json.dumps(line, ensure_ascii=False) + "\n" for line in lines)


def _umask() -> int:
    current = os.umask(0)
    os.umask(current)
    return current


def write_atomically(files: dict[Path, str]) -> None:
    """Write every file to a temporary sibling first, then rename them all into place.

    A crash while writing leaves the old files (or none), never a half-written
    one; renaming only after all temporaries are complete also keeps the set
    consistent except for the instant of the renames themselves.
    """
    temps: list[tuple[str, Path]] = []
    mode = 0o666 & ~_umask()  # mkstemp creates 0600; give the files the permissions open() would
    try:
        for path, text in files.items():
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
            temps.append((tmp, path))
            os.chmod(tmp, mode)
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(text)
                f.flush()
                os.fsync(f.fileno())
        for tmp, path in temps:
            os.replace(tmp, path)
    finally:
        for tmp, _ in temps:
            if os.path.exists(tmp):
                os.unlink(tmp)
