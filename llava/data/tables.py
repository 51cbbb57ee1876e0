"""Read task tables (CSV, TSV, JSON, JSONL, Parquet, Arrow) as records that know where they came from.

Every record carries its location (file and physical line for text formats,
1-based row for Parquet) so any later problem can be reported as
"train.csv:17: empty answer" instead of "row 16 of something". A record that
cannot be read (a malformed JSONL line, a CSV line with the wrong number of
fields, bytes that are not UTF-8) is returned too, with its error and a short
`kind` set, so the caller counts and reports it; the rest of the file goes on.
No reader raises for a bad record: only a file unusable as a whole (missing,
unknown format, no header, not a JSON list) raises TableError.

Text is read with errors="surrogateescape", so a byte sequence that is not
UTF-8 does not abort the file; the record holding it gets an error naming the
field, and no record's values hold such text (nor an unpaired "\\ud83d"
escape from JSON), so a consumer can write every value as UTF-8.

Some damage loses more than one record: an unclosed quote in a CSV makes the
csv module read the following lines into one field, a syntax error in a JSON
list leaves no reliable place to resume, a damaged Parquet row group cannot be
read at all.  Such a record says how many lines (rows, for Parquet) it lost in
`lost`, so the caller can say so and refuse to go on as if they were one row.

Parquet and Arrow files written by Hugging Face `datasets` keep an Image column
as a struct of the encoded file's `bytes` and its original `path`; such columns
are listed in `Table.image_columns` (found from the schema, before any row is
read) and their values stay those structs: llava.data.embedded_images writes
the bytes out.  Hugging Face datasets themselves (hub ids, save_to_disk
folders) are opened by llava.data.hf_tables into the same Table.
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

import pyarrow as pa
import pyarrow.parquet as pq

from llava.printable import first_surrogate, has_surrogates, printable

FORMATS = {".csv": "csv", ".tsv": "tsv", ".json": "json", ".jsonl": "jsonl", ".parquet": "parquet",
           ".arrow": "arrow"}

# csv's default 128 KiB field limit would abort the file on one long question.
csv.field_size_limit(min(sys.maxsize, 2**31 - 1))


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


# Record.kind: why a record could not be read (short stable keys, counted by reason in reports).
MALFORMED_JSON = "malformed_json"
UNREADABLE = "unreadable_record"
UNDECODABLE = "undecodable_text"
BAD_QUOTING = "bad_quoting"
UNCLOSED_QUOTE = "unclosed_quote"
UNREADABLE_ROWS = "unreadable_rows"


@dataclass(slots=True)
class Record:
    loc: Location
    values: dict[str, Any] = field(default_factory=dict)
    error: str | None = None  # set when the record itself could not be read
    kind: str | None = None  # with error: one of the keys above
    lost: int = 0  # with error: the lines (Parquet: rows) of other records it swallowed or left unreadable


@dataclass
class Table:
    path: Path
    format: str
    # Column names: the header for CSV/TSV/Parquet; for JSON/JSONL the union of
    # keys seen, in first-seen order (filled while reading).
    columns: list[str]
    has_header: bool  # False for JSON/JSONL: a missing key is a per-record problem
    records: Iterator[Record]
    # Columns holding encoded images as {"bytes", "path"} structs (the `datasets` Image feature; Parquet, Arrow).
    image_columns: list[str] = field(default_factory=list)
    rows: int | None = None  # the row count, when the format says so before reading (progress bars)


def has_undecodable(text: str) -> bool:
    """True when text holds bytes that were not valid UTF-8, or an unpaired surrogate escape."""
    return has_surrogates(text)


def _undecodable(values: Any, where: str = "") -> str | None:
    """The first field (key path) of a record whose text is not valid UTF-8, described; None if none."""
    if isinstance(values, str):
        bad = first_surrogate(values)
        return None if bad is None else f"{where or 'the value'} has {bad} that is not UTF-8 text"
    if isinstance(values, dict):
        for key, value in values.items():
            if isinstance(key, str) and has_surrogates(key):
                return f"field name {printable(key)!r} has {first_surrogate(key)} that is not UTF-8 text"
            found = _undecodable(value, f"{where}.{key}" if where else f"field {key!r}")
            if found:
                return found
    elif isinstance(values, (list, tuple)):
        for i, value in enumerate(values):
            found = _undecodable(value, f"{where}[{i}]")
            if found:
                return found
    return None


def _checked(loc: Location, values: dict) -> Record:
    """A record, or its error when a value is not valid UTF-8 (so no consumer ever writes one)."""
    bad = _undecodable(values)
    if bad is not None:
        return Record(loc, error=bad, kind=UNDECODABLE)
    return Record(loc, values)


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
        raise TableError(f"{printable(path)}: unknown input format {printable(path.suffix)!r}; "
                         f"expected one of {', '.join(FORMATS)}")
    return fmt


def open_table(path: str | Path) -> Table:
    """Open a table; records are read lazily. Raises TableError when the file is unusable as a whole."""
    path = Path(path)
    if not path.is_file():
        raise TableError(f"{printable(path)}: {'not a file' if path.exists() else 'no such file'}")
    fmt = detect_format(path)
    if fmt in ("csv", "tsv"):
        return _open_delimited(path, fmt)
    if fmt == "jsonl":
        columns: list[str] = []
        return Table(path, fmt, columns, False, _read_jsonl(path, columns))
    if fmt == "json":
        columns = []
        return Table(path, fmt, columns, False, _read_json(path, columns))
    if fmt == "arrow":
        return _open_arrow(path)
    return _open_parquet(path)


def _csv_reader(f, fmt: str):
    # strict: a field that opens with a quote must close with one followed by the delimiter. Otherwise
    # the csv module silently glues what follows the closing quote on ('"What" is it?' -> 'What is it?').
    return csv.reader(f, delimiter="\t" if fmt == "tsv" else ",", strict=True)


def _open_text(path: Path):
    # utf-8-sig drops the BOM Excel writes, which would otherwise glue itself to the first column name.
    return open(path, newline="", encoding="utf-8-sig", errors="surrogateescape")


def _open_delimited(path: Path, fmt: str) -> Table:
    """Read and check the header now; the records are read (file reopened) when iterated."""
    name = printable(path)
    with _open_text(path) as f:
        try:
            header = next(_csv_reader(f, fmt))
        except StopIteration:
            raise TableError(f"{name}: empty file, expected a header line") from None
        except csv.Error as exc:
            raise TableError(f"{name}:1: cannot parse header ({exc})") from None
    header = [h.strip() for h in header]
    if has_surrogates("".join(header)):
        raise TableError(f"{name}:1: the header is not UTF-8 text: {', '.join(printable(h) for h in header)}")
    dupes = sorted({h for h in header if header.count(h) > 1})
    if dupes:
        raise TableError(f"{name}:1: duplicate column name(s) in header: {', '.join(dupes)}")
    return Table(path, fmt, header, True, _read_delimited(path, fmt, header))


def _read_delimited(path: Path, fmt: str, header: list[str]) -> Iterator[Record]:
    name = printable(path)
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
                end = reader.line_num
                yield _quoting_error(Location(name, start), end, str(exc), fmt)
                start = end + 1
                continue
            loc, end = Location(name, start), reader.line_num
            start = end + 1
            if not fields or (len(fields) == 1 and not fields[0].strip()):
                continue  # blank line: not a record (a trailing newline at the end is common)
            if len(fields) != len(header):
                msg = f"has {len(fields)} fields, the header has {len(header)}"
                if end > loc.line:  # a stray quote made the csv module read the following lines into a field
                    yield _quoting_error(loc, end, msg, fmt)
                else:
                    yield Record(loc, error=msg, kind=UNREADABLE)
                continue
            yield _checked(loc, dict(zip(header, fields)))


def _quoting_error(loc: Location, end: int, what: str, fmt: str) -> Record:
    """A record the csv module could not read because of a quote: one line, or every line to `end`."""
    if end > loc.line:
        n = end - loc.line + 1
        return Record(loc, kind=UNCLOSED_QUOTE, lost=n, error=(
            f"an unclosed quote at line {loc.line} made lines {loc.line}-{end} ({n} lines) one field ({what}), "
            f"so the records on them are lost; close the quote (a quote inside a quoted field is written twice)"))
    example = '"""What"" is it?"' if fmt == "csv" else '"""What"" is it?" (or quote nothing in a TSV)'
    return Record(loc, kind=BAD_QUOTING, error=(
        f"cannot parse {fmt.upper()} ({what}): a field that starts with a quote must end with one; to keep "
        f"quotes in a field, quote the whole field and write each quote in it twice, e.g. {example}"))


def _line_starts(text: str) -> list[int]:
    return [0] + [m.end() for m in re.finditer("\n", text)]


def _json_error(exc: Exception) -> str:
    if isinstance(exc, json.JSONDecodeError):
        return f"malformed JSON ({exc.msg} at column {exc.colno})"
    if isinstance(exc, RecursionError):
        return "malformed JSON (nested too deeply to read)"
    return f"malformed JSON ({exc})"  # ValueError: e.g. an integer of more digits than Python converts


def _read_jsonl(path: Path, columns: list[str]) -> Iterator[Record]:
    seen: set[str] = set()
    name = printable(path)
    with open(path, encoding="utf-8-sig", errors="surrogateescape") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            loc = Location(name, lineno)
            try:
                obj = json.loads(line)
            except (ValueError, RecursionError) as exc:  # JSONDecodeError is a ValueError
                yield Record(loc, error=_json_error(exc), kind=MALFORMED_JSON)
                continue
            if not isinstance(obj, dict):
                yield Record(loc, error=f"expected a JSON object, got {type(obj).__name__}", kind=UNREADABLE)
                continue
            rec = _checked(loc, obj)
            if rec.error is None:
                _note_keys(obj, columns, seen)
            yield rec


def _read_json(path: Path, columns: list[str]) -> Iterator[Record]:
    """A JSON list of objects, decoded one element at a time so each knows its line.

    A syntax error leaves no reliable place to resume: it ends the reading with a record that says
    so and how many lines it left unread, rather than an exception that loses the records before it."""
    text = path.read_text(encoding="utf-8-sig", errors="surrogateescape")
    name = printable(path)
    starts = _line_starts(text)
    last_line = len(starts) - (1 if text.endswith("\n") else 0)
    decoder = json.JSONDecoder()

    def line_of(pos: int) -> int:
        return bisect_right(starts, pos)

    def column(pos: int) -> int:
        return pos - starts[line_of(pos) - 1] + 1

    def broken(pos: int, msg: str) -> Record:
        line = line_of(pos)
        lost = last_line - line + 1
        return Record(Location(name, line), kind=MALFORMED_JSON, lost=lost, error=(
            f"{msg} (column {column(pos)}); the file cannot be read past it, so lines {line}-{last_line} "
            f"({lost} lines) are lost"))

    ws = re.compile(r"\s*")
    pos = ws.match(text, 0).end()
    if pos >= len(text) or text[pos] != "[":
        raise TableError(f"{name}:{line_of(pos)}: expected a JSON list of records, e.g. "
                         f"[{{\"image\": ..., \"question\": ...}}, ...] (column {column(pos)})")
    pos = ws.match(text, pos + 1).end()
    seen: set[str] = set()
    if pos < len(text) and text[pos] == "]":
        return
    while True:
        loc = Location(name, line_of(pos))
        try:
            obj, pos = decoder.raw_decode(text, pos)
        except json.JSONDecodeError as exc:
            yield broken(exc.pos, f"malformed JSON: {exc.msg}")
            return
        except (ValueError, RecursionError) as exc:
            yield broken(pos, _json_error(exc))
            return
        if isinstance(obj, dict):
            rec = _checked(loc, obj)
            if rec.error is None:
                _note_keys(obj, columns, seen)
            yield rec
        else:
            yield Record(loc, error=f"expected a JSON object, got {type(obj).__name__}", kind=UNREADABLE)
        pos = ws.match(text, pos).end()
        if pos < len(text) and text[pos] == ",":
            pos = ws.match(text, pos + 1).end()
        elif pos < len(text) and text[pos] == "]":
            rest = ws.match(text, pos + 1).end()
            if rest < len(text):
                yield broken(rest, "unexpected data after the closing ]")
            return
        else:
            yield broken(pos, "malformed JSON: expected ',' or ']' after a record")
            return


def _note_keys(obj: dict, columns: list[str], seen: set[str]) -> None:
    for key in obj:
        if key not in seen:
            seen.add(key)
            columns.append(key)


def _open_parquet(path: Path) -> Table:
    name = printable(path)
    try:
        pf = pq.ParquetFile(path)
    except Exception as exc:  # pyarrow raises ArrowInvalid/OSError for non-Parquet files
        raise TableError(f"{name}: cannot read Parquet file ({exc})") from None
    columns = list(pf.schema_arrow.names)

    def records() -> Iterator[Record]:
        row = 0
        for group in range(pf.metadata.num_row_groups):
            end = row + pf.metadata.row_group(group).num_rows
            try:
                for batch in pf.iter_batches(batch_size=65536, row_groups=[group]):  # bounded memory
                    for values in batch.to_pylist():
                        row += 1
                        yield _checked(Location(name, row=row), values)
            except Exception as exc:  # a damaged page, text that is not UTF-8: the rest of this group
                lost, why = end - row, printable(str(exc).strip())
                yield Record(Location(name, row=row + 1), kind=UNREADABLE_ROWS, lost=lost, error=(
                    f"cannot read rows {row + 1}-{end} ({lost} rows, row group {group + 1}): {why}"))
            row = end

    return Table(path, "parquet", columns, True, records(), image_columns_of(pf.schema_arrow),
                 pf.metadata.num_rows)


def is_image_struct(kind: pa.DataType) -> bool:
    """The storage of the `datasets` Image feature: struct<bytes: binary, path: string> (or a list of them)."""
    if pa.types.is_list(kind) or pa.types.is_large_list(kind):
        kind = kind.value_type
    if not pa.types.is_struct(kind):
        return False
    names = {kind.field(i).name: kind.field(i).type for i in range(kind.num_fields)}
    return "bytes" in names and (pa.types.is_binary(names["bytes"]) or pa.types.is_large_binary(names["bytes"]))


def image_columns_of(schema: pa.Schema) -> list[str]:
    return [f.name for f in schema if is_image_struct(f.type)]


def batch_records(label: str, batches: Iterator[pa.RecordBatch | pa.Table]) -> Iterator[Record]:
    """Records of Arrow batches, numbered by 1-based row; a batch that cannot be read ends with one record saying so."""
    row = 0
    try:
        for batch in batches:
            for values in batch.to_pylist():
                row += 1
                yield _checked(Location(label, row=row), values)
    except Exception as exc:  # a damaged file: what follows cannot be located, so it is lost
        yield Record(Location(label, row=row + 1), kind=UNREADABLE_ROWS, lost=1,
                     error=f"cannot read rows from row {row + 1} on: {printable(str(exc).strip())}")


def _open_arrow(path: Path) -> Table:
    """An Arrow IPC file or stream (what `datasets` writes: save_to_disk's data-*.arrow, its cache files)."""
    name = printable(path)
    source = pa.memory_map(str(path))
    try:
        reader = pa.ipc.open_file(source)
        schema = reader.schema
        batches: Iterator = (reader.get_batch(i) for i in range(reader.num_record_batches))
    except pa.ArrowInvalid:  # not the file format: the stream format `datasets` writes
        try:
            source = pa.memory_map(str(path))
            reader = pa.ipc.open_stream(source)
        except Exception as exc:
            raise TableError(f"{name}: cannot read Arrow file ({printable(str(exc).strip())})") from None
        schema, batches = reader.schema, iter(reader)
    return Table(path, "arrow", list(schema.names), True, batch_records(name, batches), image_columns_of(schema))
