"""Text that is safe to print and to write as UTF-8, whatever bytes a file name or a file held.

Python reads a file name that is not UTF-8 (or a file read with errors="surrogateescape") into a
str holding lone surrogates; printing it to a UTF-8 stdout, or writing it to a UTF-8 file, then
raises UnicodeEncodeError, which once took down a whole preprocessing run at its last step.
`printable` shows such a byte as \\xNN (and an unpaired surrogate escape from JSON as \\udNNN)
so a message or report can name the file exactly and still be written.  Control characters (a NUL,
a newline or a terminal escape in a file name) are shown as \\xNN too, so a name cannot break a
message's line or drive the terminal.
"""

from __future__ import annotations

import os
import re

_SURROGATE = re.compile("[\ud800-\udfff]")
_UNPRINTABLE = re.compile("[\ud800-\udfff\x00-\x1f\x7f]")


def has_surrogates(text: str) -> bool:
    """True when text holds bytes that were not UTF-8, or an unpaired surrogate escape ("\\ud83d")."""
    return bool(_SURROGATE.search(text))


def _show(match: re.Match) -> str:
    code = ord(match.group())
    if code < 0x80:  # a control character
        return f"\\x{code:02x}"
    if 0xDC80 <= code <= 0xDCFF:  # a byte that was not UTF-8, kept by surrogateescape
        return f"\\x{code - 0xDC00:02x}"
    return f"\\u{code:04x}"


def printable(value: str | bytes | os.PathLike) -> str:
    """str(value), each undecodable byte or control character shown as \\xNN, each unpaired surrogate as \\uNNNN."""
    text = os.fsdecode(value) if isinstance(value, (bytes, os.PathLike)) else str(value)
    return _UNPRINTABLE.sub(_show, text)


def first_surrogate(text: str) -> str | None:
    """How the first undecodable character of text reads in a message ("a byte 0xff"), or None."""
    m = _SURROGATE.search(text)
    if m is None:
        return None
    code = ord(m.group())
    return f"a byte 0x{code - 0xDC00:02x}" if 0xDC80 <= code <= 0xDCFF else f"an unpaired surrogate \\u{code:04x}"
