"""The answers JSONL of batch inference, written so that a killed run resumes exactly.

Every batch's answers are appended, flushed and fsynced together, so after a
kill the file holds whole batches and at most one torn last line.  On the
next run `AnswersFile` cuts a torn line off (that answer is simply asked
again), reads which question_ids are done, and appends after them: no answer
is lost and none is written twice.

A line of an existing file that cannot be read (bytes that are not UTF-8,
malformed JSON, no question_id: an edited or damaged file) is left where it
is and listed in `bad`; its question is asked again.  A file with more such
lines than answer records is not an answers file (a model file, an image,
a JSON list, someone's notes): it is refused rather than appended to.

Unusable questions (bad line, missing image) go to a sidecar errors file,
ANSWERS.errors.jsonl, rewritten by each run, so a question whose image was
fixed is retried on the next run and the answers file keeps LLaVA's format.
"""

from __future__ import annotations

import os
from pathlib import Path

from llava.eval.json_lines import json_line, parse_json, read_text_lines
from llava.eval.question_file import question_id_of

# How every answer line begins (json.dumps of a dict whose first key is question_id): a torn last
# line that begins so is a killed write of ours, not something else.
_ANSWER_START = '{"question_id"'


def errors_path(answers_path: str | Path) -> Path:
    p = Path(answers_path)
    return p.with_name(p.stem + ".errors.jsonl")


class AnswersFile:
    def __init__(self, path: str | Path, resume: bool = True):
        self.path = Path(path)
        self.done: set[str] = set()
        self.model_ids: set[str] = set()  # of the answers already there
        self.torn = False
        self.bad: list[dict] = []  # unreadable lines of the existing file, as error records
        self._first_bad = None
        if resume and self.path.exists():
            self._recover()
        else:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.path.write_text("")
        self._f = self.path.open("a", encoding="utf-8")

    def _recover(self) -> None:
        answers = 0
        tail = None  # (line, record or None, reason) of a last line with no newline
        for lineno, text, error, ended in read_text_lines(self.path):
            if error is None and not text.strip():
                continue
            row, reason = answer_record(text, error)
            if not ended:
                tail = (lineno, row, reason)
                break
            if row is None:
                self.bad.append(self._bad(lineno, reason))
                continue
            answers += 1
            self._note(row)
        with self.path.open("r+b") as f:
            start = _last_line_start(f)
            f.seek(start)
            ours = tail is not None and tail[1] is None and f.read(len(_ANSWER_START)) == _ANSWER_START.encode()
            unreadable = len(self.bad) + (tail is not None and tail[1] is None and not ours)
            if unreadable > answers:  # mostly something else (a model file, an image, a JSON list): not ours
                line, reason = self._first_bad or tail[::2]
                raise SystemExit(f"{self.path} is not an answers file ({answers} answer records, {unreadable} "
                                 f"other lines; line {line}: {reason}): cannot resume from it; give another path, "
                                 "or pass --no-resume to overwrite it")
            if tail is None:
                return
            if ours:  # a killed run's half-written answer: cut it off, its question is asked again
                self.torn = True
                f.truncate(start)
                return
            # A whole record with only its newline missing (an edited file), or something else: end the
            # line and keep it, so nothing of the file is lost and the next answer starts a line of its own.
            f.seek(0, os.SEEK_END)
            f.write(b"\n")
        if tail[1] is not None:
            self._note(tail[1])
        else:
            self.bad.append(self._bad(tail[0], tail[2]))

    def _bad(self, lineno: int, reason: str) -> dict:
        self._first_bad = self._first_bad or (lineno, reason)
        return {"file": str(self.path), "line": lineno, "question_id": None,
                "error": f"{self.path}:{lineno}: {reason}; the line is kept but is not an answer (its question "
                         "is asked again)"}

    def _note(self, row: dict) -> None:
        self.done.add(question_id_of(row["question_id"])[0])
        if row.get("model_id") is not None:
            self.model_ids.add(str(row["model_id"]))

    def write(self, records: list[dict]) -> None:
        if not records:
            return
        self._f.write("".join(json_line(r) for r in records))
        self._f.flush()
        os.fsync(self._f.fileno())
        self.done.update(str(r["question_id"]) for r in records)

    def close(self) -> None:
        self._f.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def answer_record(text: str | None, error: str | None = None) -> tuple[dict | None, str | None]:
    """(the record, None) when a line of an answers file is an answer record, else (None, why not)."""
    if error is not None:
        return None, error
    row, error = parse_json(text)
    if error is not None:
        return None, error
    if not isinstance(row, dict):
        return None, f"expected a JSON object, got {type(row).__name__}"
    _, error = question_id_of(row.get("question_id"))
    return (row, None) if error is None else (None, error)


def _last_line_start(f) -> int:
    """The offset just after the file's last newline (0 when it has none), read backwards in blocks."""
    end = f.seek(0, os.SEEK_END)
    pos = end
    while pos > 0:
        step = min(pos, 1 << 16)
        pos -= step
        f.seek(pos)
        block = f.read(step)
        i = block.rfind(b"\n")
        if i >= 0:
            return pos + i + 1
    return 0


def read_answer_texts(path: str | Path) -> dict[str, str]:
    """{question_id: text} of the readable answer records of `path` (the last one wins); bad lines skipped
    (AnswersFile reports them when it resumes the file)."""
    texts = {}
    if Path(path).is_file():
        for _, text, error, _ in read_text_lines(path):
            row, _ = answer_record(text, error) if error is not None or text.strip() else (None, None)
            if row is not None and isinstance(row.get("text"), str):
                texts[question_id_of(row["question_id"])[0]] = row["text"]
    return texts


def open_for_model(path: str | Path, model_id: str, resume: bool = True, flag: str = "--answers-file") -> AnswersFile:
    """The answers file to append model_id's answers to; refused when it holds another model's answers."""
    f = AnswersFile(path, resume=resume)
    if f.model_ids - {model_id}:
        f.close()
        raise SystemExit(f"{path} holds answers of {', '.join(sorted(f.model_ids))}, not {model_id}: resuming would "
                         f"mix two models' answers. Pass another {flag}, or --no-resume to overwrite it.")
    return f


def write_errors(answers_path: str | Path, errors: list[dict]) -> Path | None:
    """Replace the errors sidecar with this run's errors (remove it when there are none)."""
    path = errors_path(answers_path)
    if not errors:
        path.unlink(missing_ok=True)
        return None
    tmp = path.with_suffix(".tmp")
    tmp.write_text("".join(json_line(e) for e in errors), encoding="utf-8")
    tmp.replace(path)
    return path
