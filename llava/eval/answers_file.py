"""The answers JSONL of batch inference, written so that a killed run resumes exactly.

Every batch's answers are appended, flushed and fsynced together, so after a
kill the file holds whole batches and at most one torn last line.  On the
next run `AnswersFile` cuts a torn line off (that answer is simply asked
again), reads which question_ids are done, and appends after them: no answer
is lost and none is written twice.

Unusable questions (bad line, missing image) go to a sidecar errors file,
ANSWERS.errors.jsonl, rewritten by each run, so a question whose image was
fixed is retried on the next run and the answers file keeps LLaVA's format.
"""

from __future__ import annotations

import json
import os
from pathlib import Path


def errors_path(answers_path: str | Path) -> Path:
    p = Path(answers_path)
    return p.with_name(p.stem + ".errors.jsonl")


class AnswersFile:
    def __init__(self, path: str | Path, resume: bool = True):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.done: set[str] = set()
        self.model_ids: set[str] = set()  # of the answers already there
        self.torn = False
        if resume and self.path.exists():
            self._recover()
        else:
            self.path.write_text("")
        self._f = self.path.open("a", encoding="utf-8")

    def _recover(self) -> None:
        data = self.path.read_bytes()
        keep = data.rfind(b"\n") + 1  # whole lines only
        if keep < len(data):
            self.torn = True
            with self.path.open("r+b") as f:
                f.truncate(keep)
        for lineno, line in enumerate(data[:keep].decode("utf-8").splitlines(), 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                self.done.add(str(row["question_id"]))
            except (json.JSONDecodeError, KeyError, TypeError):
                raise SystemExit(f"{self.path}:{lineno}: not an answer record; cannot resume from this file "
                                 "(move it away, or pass --no-resume to start over)") from None
            if row.get("model_id") is not None:
                self.model_ids.add(str(row["model_id"]))

    def write(self, records: list[dict]) -> None:
        if not records:
            return
        self._f.write("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))
        self._f.flush()
        os.fsync(self._f.fileno())
        self.done.update(str(r["question_id"]) for r in records)

    def close(self) -> None:
        self._f.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


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
    tmp.write_text("".join(json.dumps(e, ensure_ascii=False) + "\n" for e in errors), encoding="utf-8")
    tmp.replace(path)
    return path
