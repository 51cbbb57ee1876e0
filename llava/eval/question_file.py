"""Reading a question JSONL for batch inference, one bad line at a time.

    {"question_id": "q17", "image": "img/17.png", "text": "What color is the ball?", "category": "color"}

A line that cannot be used does not stop the run: it becomes a `BadLine`
with its line number and reason, which batch inference writes to the errors
file.  Unusable: bytes that are not UTF-8, malformed JSON, a value that is
not an object, an unpaired surrogate escape (llava/eval/json_lines.py), no
question_id or one that is not a string or an integer, no text, a
question_id seen before, an image that is not a relative path inside the
image folder.  `image` may be missing or null (a text-only question).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from llava.data.images import normalize_relative
from llava.eval.json_lines import read_json_lines


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
    # The id as the question file wrote it (an integer stays an integer in the answers file, as the
    # original's; 17.0 is 17); None: question_id.
    id_as_given: str | int | None = None

    @property
    def id_to_write(self) -> str | int:
        return self.question_id if self.id_as_given is None else self.id_as_given


@dataclass
class BadLine:
    line: int
    question_id: str | None
    error: str


def question_id_of(value) -> tuple[str | None, str | None]:
    """(the id as a string, None) or (None, why not).  Strings and integers (17.0 is 17) only: a
    fraction, a bool or an object has no one string form that another file would match."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None, "no question_id"
    if isinstance(value, float) and value.is_integer():  # 17.0: an integer id a table tool wrote as float
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        return None, f"question_id {value!r} is a {type(value).__name__}; it must be a string or an integer"
    return str(value), None


def image_name_error(image) -> str | None:
    """Why an image field cannot name a file inside the image folder, or None when it can."""
    if not isinstance(image, str):
        return "image must be a path string"
    if "\x00" in image:
        return f"image {image!r} holds a NUL byte"
    if normalize_relative(image) is None:
        return f"image {image!r} is not a path inside the image folder (absolute, empty or '..')"
    return None


def read_questions(path: str | Path) -> tuple[list[Question], list[BadLine]]:
    """Every usable question in file order, and every unusable line with its reason."""
    questions: list[Question] = []
    bad: list[BadLine] = []
    first_seen: dict[str, int] = {}
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such question file")
    for lineno, row, error in read_json_lines(path):
        if error is not None:
            bad.append(BadLine(lineno, None, f"{path}:{lineno}: {error}"))
            continue
        if not isinstance(row, dict):
            bad.append(BadLine(lineno, None, f"{path}:{lineno}: expected a JSON object, got {type(row).__name__}"))
            continue
        qid, error = question_id_of(row.get("question_id"))
        if error is not None:
            bad.append(BadLine(lineno, None, f"{path}:{lineno}: {error}"))
            continue
        text = row.get("text")
        if not isinstance(text, str) or not text.strip():
            bad.append(BadLine(lineno, qid, f"{path}:{lineno}: question {qid!r} has no text"))
            continue
        if qid in first_seen:
            bad.append(BadLine(lineno, qid, f"{path}:{lineno}: question_id {qid!r} repeats line "
                                            f"{first_seen[qid]}; only the first is answered"))
            continue
        image = row.get("image")
        image = None if image == "" else image
        error = image_name_error(image) if image is not None else None
        if error is not None:
            bad.append(BadLine(lineno, qid, f"{path}:{lineno}: question {qid!r}: {error}"))
            continue
        category = row.get("category")
        if category is not None and not isinstance(category, (str, int, float)):
            bad.append(BadLine(lineno, qid, f"{path}:{lineno}: question {qid!r}: category must be a string"))
            continue
        first_seen[qid] = lineno
        raw = row["question_id"]
        questions.append(Question(qid, text, image, category, lineno,
                                  id_as_given=int(raw) if isinstance(raw, (int, float)) else qid))
    return questions, bad


def get_chunk(items: list, num_chunks: int, chunk_idx: int) -> list:
    """The chunk_idx-th of num_chunks contiguous chunks, split as the original LLaVA's get_chunk
    (ceil-sized chunks), so parallel runs over --num-chunks together cover every line once."""
    if num_chunks < 1 or not 0 <= chunk_idx < num_chunks:
        raise ValueError(f"--chunk-idx must be in [0, {num_chunks}), got {chunk_idx}")
    size = math.ceil(len(items) / num_chunks)
    return items[chunk_idx * size:(chunk_idx + 1) * size]
