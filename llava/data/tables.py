"""Read task tables (CSV, TSV, JSON, JSONL, Parquet) as records that know where they came from.

Every record carries its location (file and physical line for text formats,
1-based row for Parquet) so any later problem can be reported as
"train.csv:17: empty answer" instead of "row 16 of something". A record that
cannot be read at all (a malformed JSONL line, a CSV line with the wrong
number of fields) is returned too, with its error set, so the caller counts
and reports it; the rest of the file goes on.

Text is read with errors="surrogateescape": a byte sequence that is not UTF-8
becomes lone surrogates instead of aborting the whole file, and the caller
reports the field holding them (`has_undecodable`).
"""

from __future__ import annotations

import csv
import json
import math
import re
import sys
from bisect import bisect_right
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

FORMATS = {".csv": "csv", ".tsv": "tsv", ".json": "json", ".jsonl": "jsonl", ".parquet": "parquet"}

# csv's default 128 KiB field limit would abort the file on one long question.
csv.field_size_limit(min(sys.maxsize, 2**31 - 1))

_SURROGATE = re.compile("[\udc80-\udcff]")


class TableError(ValueError):
    """The table cannot be read at all (unknown format, unparsable JSON file, missing column)."""


@dataclass(frozen=True, slots=True)
class Location:
    file: str
    line: int | None = None  # physical line where the record starts (text formats)
    row: int | None = None  # 1-based data row (Parquet)

    def __str__(self) -> str:
        return f"{self.file}:{self.line}" if self.line is not None else f"{self.file} row {self.row}"

    def as_dict(self) -> dict:
        d: dict[str, Any] = {"file": self.file}
        if self.line is not None:
            d["line"] = self.line
        else:
            d["row"] = self.row
        return d


@dataclass(slots=True)
class Record:
    loc: Location
    values: dict[str, Any] = field(default_factory=dict)
    error: str | None = None  # set when the record itself could not be read


@dataclass
class Table:
    path: Path
    format: str
    # Column names: the header for CSV/TSV/Parquet; for JSON/JSONL the union of
    # keys seen, in first-seen order (filled while reading).
    columns: list[str]
    has_header: bool  # False for JSON/JSONL: a missing key is a per-record problem
    records: Iterator[Record]


def has_undecodable(text: str) -> bool:
    """True when text holds bytes that were not valid UTF-8 (see module docstring)."""
    return bool(_SURROGATE.search(text))


def is_missing(value: Any) -> bool:
    """None, NaN (pandas-written Parquet) and blank strings all mean "no value"."""
    if value is None:
        return True
    if isinstance(value, float) and math.isnan(value):
        return True
    return isinstance(value, str) and not value.strip()


def detect_format(path: Path) -> str:
    fmt = FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise TableError(f"{path}: unknown input format {path.suffix!r}; expected one of {', '.join(FORMATS)}")
    return fmt


def open_table(path: str | Path) -> Table:
    """Open a table; records are read lazily. Raises TableError when the file is unusable as a whole."""
    path = Path(path)
    if not path.is_file():
        raise TableError(f"{path}: no such file")
    fmt = detect_format(path)
    if fmt in ("csv", "tsv"):
        return _open_delimited(path, fmt)
    if fmt == "jsonl":
        columns: list[str] = []
        return Table(path, fmt, columns, False, _read_jsonl(path, columns))
    if fmt == "json":
        columns = []
        return Table(path, fmt, columns, False, _read_json(path, columns))
    return _open_parquet(path)


def _csv_reader(f, fmt: str):
    return csv.reader(f, delimiter="\t" if fmt == "tsv" else ",")


def _open_text(path: Path):
    # utf-8-sig drops the BOM Excel writes, which would otherwise glue itself to the first column name.
    return open(path, newline="", encoding="utf-8-sig", errors="surrogateescape")


def _open_delimited(path: Path, fmt: str) -> Table:
    """Read and check the header now; the records are read (file reopened) when iterated."""
    with _open_text(path) as f:
        try:
            header = next(_csv_reader(f, fmt))
        except StopIteration:
            raise TableError(f"{path}: empty file, expected a header line") from None
        except csv.Error as exc:
            raise TableError(f"{path}:1: cannot parse header ({exc})") from None
    header = [h.strip() for h in header]
    dupes = sorted({h for h in header if header.count(h) > 1})
    if dupes:
        raise TableError(f"{path}:1: duplicate column name(s) in header: {', '.join(dupes)}")
    return Table(path, fmt, header, True, _read_delimited(path, fmt, header))


def _read_delimited(path: Path, fmt: str, header: list[str]) -> Iterator[Record]:
    name = str(path)
    with _open_text(path) as f:
        reader = _csv_reader(f, fmt)
        next(reader)  # the header, checked in _open_delimited
        start = reader.line_num + 1  # a quoted field may span lines: report where the record starts
        while True:
            try:
                fields = next(reader)
            except StopIteration:
                return
            except csv.Error as exc:
                yield Record(Location(name, start), error=f"cannot parse CSV ({exc})")
                start = reader.line_num + 1
                continue
            loc, end = Location(name, start), reader.line_num
            start = end + 1
            if not fields or (len(fields) == 1 and not fields[0].strip()):
                continue  # blank line: not a record (a trailing newline at the end is common)
            if len(fields) != len(header):
                msg = f"has {len(fields)} fields, the header has {len(header)}"
                if end > loc.line:  # a stray quote makes the csv module swallow the following lines
                    msg += f" (the record spans lines {loc.line}-{end}: an unclosed quote?)"
                yield Record(loc, error=msg)
                continue
            yield Record(loc, dict(zip(header, fields)))


def _line_starts(text: str) -> list[int]:
    return [0] + [m.end() for m in re.finditer("\n", text)]


def _read_jsonl(path: Path, columns: list[str]) -> Iterator[Record]:
    seen: set[str] = set()
    with open(path, encoding="utf-8-sig", errors="surrogateescape") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            loc = Location(str(path), lineno)
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                yield Record(loc, error=f"malformed JSON ({exc.msg} at column {exc.colno})")
                continue
            if not isinstance(obj, dict):
                yield Record(loc, error=f"expected a JSON object, got {type(obj).__name__}")
                continue
            _note_keys(obj, columns, seen)
            yield Record(loc, obj)


def _read_json(path: Path, columns: list[str]) -> Iterator[Record]:
    """A JSON list of objects, decoded one element at a time so each knows its line."""
    text = path.read_text(encoding="utf-8-sig", errors="surrogateescape")
    starts = _line_starts(text)
    decoder = json.JSONDecoder()

    def line_of(pos: int) -> int:
        return bisect_right(starts, pos)

    def fail(pos: int, msg: str) -> TableError:
        line = line_of(pos)
        return TableError(f"{path}:{line}: {msg} (column {pos - starts[line - 1] + 1})")

    ws = re.compile(r"\s*")
    pos = ws.match(text, 0).end()
    if pos >= len(text) or text[pos] != "[":
        raise fail(pos, "expected a JSON list of records, e.g. [{\"image\": ..., \"question\": ...}, ...]")
    pos = ws.match(text, pos + 1).end()
    seen: set[str] = set()
    if pos < len(text) and text[pos] == "]":
        return
    while True:
        loc = Location(str(path), line_of(pos))
        try:
            obj, pos = decoder.raw_decode(text, pos)
        except json.JSONDecodeError as exc:
            # One broken element leaves no reliable place to resume: the file is unusable.
            raise fail(exc.pos, f"malformed JSON: {exc.msg}") from None
        if isinstance(obj, dict):
            _note_keys(obj, columns, seen)
            yield Record(loc, obj)
        else:
            yield Record(loc, error=f"expected a JSON object, got {type(obj).__name__}")
        pos = ws.match(text, pos).end()
        if pos < len(text) and text[pos] == ",":
            pos = ws.match(text, pos + 1).end()
        elif pos < len(text) and text[pos] == "]":
            if text[pos + 1 :].strip():
                raise fail(pos + 1, "unexpected data after the closing ]")
            return
        else:
            raise fail(pos, "expected ',' or ']' after a record")


def _note_keys(obj: dict, columns: list[str], seen: set[str]) -> None:
    for key in obj:
        if key not in seen:
            seen.add(key)
            columns.append(key)


def _open_parquet(path: Path) -> Table:
    import pyarrow.parquet as pq  # only needed for Parquet input

    try:
        pf = pq.ParquetFile(path)
    except Exception as exc:  # pyarrow raises ArrowInvalid/OSError for non-Parquet files
        raise TableError(f"{path}: cannot read Parquet file ({exc})") from None
    columns = list(pf.schema_arrow.names)

    def records() -> Iterator[Record]:
        row = 0
        for batch in pf.iter_batches(batch_size=65536):  # bounded memory on big files
            for values in batch.to_pylist():
                row += 1
                yield Record(Location(str(path), row=row), values)

    return Table(path, "parquet", columns, True, records())
