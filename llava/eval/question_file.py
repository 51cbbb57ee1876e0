"""Reading a question JSONL for batch inference, one bad line at a time.

    {"question_id": "q17", "image": "img/17.png", "text": "What color is the ball?", "category": "color"}

A line that cannot be used (malformed JSON, no question_id, no text, a
question_id seen before) does not stop the run: it becomes a `BadLine` with
its line number and reason, which batch inference writes to the errors file.
`image` may be missing or null (a text-only question).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path


@dataclass
class Question:
    question_id: str
    text: str
    image: str | None
    category: str | None
    line: int
    # Earlier turns [(user, assistant), ...] the question follows, the image in the first (callers that
    # chain questions, e.g. labeling's category after its description; a question file has none).
    history: tuple = ()


@dataclass
class BadLine:
    line: int
    question_id: str | None
    error: str


def read_questions(path: str | Path) -> tuple[list[Question], list[BadLine]]:
    """Every usable question in file order, and every unusable line with its reason."""
    questions: list[Question] = []
    bad: list[BadLine] = []
    first_seen: dict[str, int] = {}
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such question file")
    with path.open(encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                bad.append(BadLine(lineno, None, f"{path}:{lineno}: malformed JSON ({exc.msg})"))
                continue
            if not isinstance(row, dict):
                bad.append(BadLine(lineno, None, f"{path}:{lineno}: expected a JSON object"))
                continue
            qid = row.get("question_id")
            if qid is None or str(qid) == "":
                bad.append(BadLine(lineno, None, f"{path}:{lineno}: no question_id"))
                continue
            qid = str(qid)
            text = row.get("text")
            if not isinstance(text, str) or not text.strip():
                bad.append(BadLine(lineno, qid, f"{path}:{lineno}: question {qid!r} has no text"))
                continue
            if qid in first_seen:
                bad.append(BadLine(lineno, qid, f"{path}:{lineno}: question_id {qid!r} repeats line "
                                                f"{first_seen[qid]}; only the first is answered"))
                continue
            image = row.get("image")
            if image is not None and not isinstance(image, str):
                bad.append(BadLine(lineno, qid, f"{path}:{lineno}: question {qid!r}: image must be a path string"))
                continue
            first_seen[qid] = lineno
            questions.append(Question(qid, text, image or None, row.get("category"), lineno))
    return questions, bad


def get_chunk(items: list, num_chunks: int, chunk_idx: int) -> list:
    """The chunk_idx-th of num_chunks contiguous chunks, split as the original LLaVA's get_chunk
    (ceil-sized chunks), so parallel runs over --num-chunks together cover every line once."""
    if num_chunks < 1 or not 0 <= chunk_idx < num_chunks:
        raise ValueError(f"--chunk-idx must be in [0, {num_chunks}), got {chunk_idx}")
    size = math.ceil(len(items) / num_chunks)
    return items[chunk_idx * size:(chunk_idx + 1) * size]
