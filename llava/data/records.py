"""Training records read once from a LLaVA conversation file (JSON list or JSONL), stored compactly.

Records are kept as one UTF-8 blob of their JSON plus an offset array, not as
a list of dicts: DataLoader workers are forked copies of the dataset, and
merely reading a Python object writes its reference count, so a list of
hundreds of thousands of dicts is slowly copied into every worker of every
rank (PyTorch issue 13246).  A bytes object and a numpy array are never
touched that way.  Decoding one record back costs a few microseconds.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterator

import numpy as np


class DataFileError(ValueError):
    """The training file cannot be read at all; the message names it (and the line)."""


def read_records(path: str | Path) -> list[Any]:
    """The records of a .json (a list) or .jsonl (an object per line) file."""
    path = Path(path)
    if not path.is_file():
        raise DataFileError(f"{path}: no such training data file")
    text = path.read_text(encoding="utf-8-sig")
    if path.suffix.lower() == ".jsonl":
        return list(_jsonl(path, text))
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise DataFileError(f"{path}:{exc.lineno}:{exc.colno}: malformed JSON ({exc.msg})") from None
    if not isinstance(data, list):
        raise DataFileError(f"{path}: expected a JSON list of records, got {type(data).__name__}"
                            " (a file with one record per line should be named .jsonl)")
    return data


def _jsonl(path: Path, text: str) -> Iterator[Any]:
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            yield json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataFileError(f"{path}:{lineno}: malformed JSON ({exc.msg} at column {exc.colno})") from None


class RecordStore:
    """Immutable sequence of records backed by one bytes blob (see module docstring)."""

    def __init__(self, records: list[Any]):
        parts = [json.dumps(r, ensure_ascii=False).encode() for r in records]
        self._offsets = np.zeros(len(parts) + 1, dtype=np.int64)
        np.cumsum([len(p) for p in parts], out=self._offsets[1:])
        self._blob = b"".join(parts)

    def __len__(self) -> int:
        return len(self._offsets) - 1

    def __getitem__(self, i: int) -> Any:
        return json.loads(self._blob[self._offsets[i]: self._offsets[i + 1]])
