"""Read a text or JSON-lines file one line at a time, so one bad line is one error, not a crash.

Batch commands read files that users made or that a killed run left behind.
Decoding the whole file at once (`open(path, encoding="utf-8")`) dies on the
first byte that is not UTF-8, and `json.loads` happily returns an unpaired
surrogate escape (`"\\ud83d"`) that later kills the tokenizer or the UTF-8
writer, far from the line that caused it.  Here each line is read as bytes
and decoded on its own; what cannot be used becomes `(line, None, reason)`:

  * bytes that are not UTF-8, a line over MAX_LINE_BYTES (skipped without
    reading it into memory), malformed JSON, NaN / Infinity (not JSON),
    nesting too deep for the parser, and a string holding an unpaired
    surrogate (it has no UTF-8 form);
  * a UTF-8 byte-order mark at the start of the file is dropped, CRLF line
    ends are read as LF.

`json_line` is the writing side: one record as a JSON line that can always
be written as UTF-8.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

# A question, answer or key line is a few KB; 16 MiB is far beyond any model's context in any tokenizer.
MAX_LINE_BYTES = 16 * 2**20
_CHUNK = 2**20
_BOM = b"\xef\xbb\xbf"
_SURROGATE = re.compile("[\ud800-\udfff]")


def _raw_lines(f, limit: int) -> Iterator[tuple[int, bytes | None, bool]]:
    """(line number, bytes without the line end or None when over `limit`, ended by a newline)."""
    lineno = 0
    while True:
        raw = f.readline(limit + 1)
        if not raw:
            return
        lineno += 1
        if len(raw) > limit and not raw.endswith(b"\n"):
            while raw and not raw.endswith(b"\n"):  # skip the rest of the line, a chunk at a time
                raw = f.readline(_CHUNK)
            yield lineno, None, raw.endswith(b"\n")
            continue
        ended = raw.endswith(b"\n")
        yield lineno, raw.rstrip(b"\r\n") if ended else raw, ended


def read_text_lines(path: str | Path, limit: int = MAX_LINE_BYTES
                    ) -> Iterator[tuple[int, str | None, str | None, bool]]:
    """(line number, text or None, error or None, ended by a newline) for every line of `path`."""
    with open(path, "rb") as f:
        for lineno, raw, ended in _raw_lines(f, limit):
            if raw is None:
                yield lineno, None, f"line is longer than {limit // 2**20} MiB; skipped", ended
                continue
            if lineno == 1 and raw.startswith(_BOM):
                raw = raw[len(_BOM):]
            try:
                yield lineno, raw.decode("utf-8"), None, ended
            except UnicodeDecodeError as exc:
                yield lineno, None, f"not UTF-8 text (byte {raw[exc.start]:#04x} at column {exc.start + 1})", ended


def _no_constant(name: str):
    raise ValueError(f"{name} is not a JSON value")


def parse_json(text: str):
    """(object, None) or (None, reason) for one line's text."""
    try:
        obj = json.loads(text, parse_constant=_no_constant)
    except json.JSONDecodeError as exc:
        return None, f"malformed JSON ({exc.msg} at column {exc.colno})"
    except ValueError as exc:  # NaN, Infinity
        return None, f"malformed JSON ({exc})"
    except RecursionError:
        return None, "malformed JSON (nested too deeply)"
    where = unpaired_surrogate(obj)
    if where is not None:
        return None, f"{where} holds an unpaired surrogate escape (e.g. \\ud83d alone), which is not text"
    return obj, None


def unpaired_surrogate(obj) -> str | None:
    """Where in a parsed JSON value a string (or key) holds a lone surrogate: "field 'text'", or None."""
    stack = [(obj, "the value")]
    while stack:  # not recursive: the parser already bounds the depth, this must not add to it
        value, where = stack.pop()
        if isinstance(value, str):
            if _SURROGATE.search(value):
                return where
        elif isinstance(value, dict):
            for k, v in value.items():
                if _SURROGATE.search(k):
                    return f"a key ({ascii(k)})"
                stack.append((v, f"field {k!r}" if where == "the value" else where))
        elif isinstance(value, list):
            stack.extend((v, where) for v in value)
    return None


def read_json_lines(path: str | Path, limit: int = MAX_LINE_BYTES
                    ) -> Iterator[tuple[int, object | None, str | None]]:
    """(line number, parsed value, None) or (line number, None, reason) for every non-blank line."""
    for lineno, text, error, _ in read_text_lines(path, limit):
        if error is not None:
            yield lineno, None, error
            continue
        if not text.strip():
            continue
        obj, error = parse_json(text)
        yield lineno, obj, error


def json_line(record: dict) -> str:
    """One JSON line, UTF-8 where it can be; a string with a lone surrogate is written \\u-escaped,
    so a writer never dies on it (and the line reads back to the same value)."""
    line = json.dumps(record, ensure_ascii=False)
    if _SURROGATE.search(line):
        line = json.dumps(record)
    return line + "\n"
