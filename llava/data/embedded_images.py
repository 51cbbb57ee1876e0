"""Write the images a table embeds (the `datasets` Image feature) into the image folder, each once.

Parquet and Arrow files written by Hugging Face `datasets`, and the datasets themselves, keep an image
as {"bytes": <the encoded file>, "path": <its original name>}.  Training and inference read images as
files under --image-folder, so each image's bytes are written there under a name derived from its
content: the first 32 hex digits of its SHA-256 and the extension of its format, told from its first
bytes (else from the original name; else ".img").  The same image in many rows, or in a second run, is
one file written once: a file already there under that name and with that size is not written again.
A write goes to a temporary name first and is then renamed, so a run killed mid-write leaves no half
file under a content name.

A struct with no bytes but a path (a dataset that references files instead of embedding them) gives
that path, looked up under --image-folder like any image column.  Nothing is decoded here: the files
are checked afterwards by llava.data.images exactly as files that were there before, so an embedded
image that is damaged is reported against its row like any other.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from llava.data.tables import Record

SEVERAL_IMAGES = "several_images"

# Leading bytes of the formats Pillow reads that datasets hold; (offset, signature, extension).
_SIGNATURES = (
    (0, b"\xff\xd8\xff", ".jpg"),
    (0, b"\x89PNG\r\n\x1a\n", ".png"),
    (0, b"GIF87a", ".gif"),
    (0, b"GIF89a", ".gif"),
    (8, b"WEBP", ".webp"),
    (0, b"BM", ".bmp"),
    (0, b"II*\x00", ".tif"),
    (0, b"MM\x00*", ".tif"),
)
_KNOWN_SUFFIXES = {".jpg", ".jpeg", ".png", ".gif", ".webp", ".bmp", ".tif", ".tiff"}


def extension_of(data: bytes, original: str | None) -> str:
    for offset, signature, ext in _SIGNATURES:
        if data[offset:offset + len(signature)] == signature:
            return ext
    suffix = PurePosixPath(original or "").suffix.lower()
    return suffix if suffix in _KNOWN_SUFFIXES else ".img"


def content_name(data: bytes, original: str | None = None) -> str:
    return hashlib.sha256(data).hexdigest()[:32] + extension_of(data, original)


class SeveralImages(ValueError):
    """A row whose image column holds more than one image (a question takes one)."""


@dataclass
class EmbeddedImages:
    """Turns image-column values into file names under `folder`, writing embedded bytes there."""

    folder: Path
    column: str
    written: int = 0  # files this run wrote
    present: int = 0  # files already there (an earlier run, or the same image under another dataset)
    rows_embedded: int = 0  # rows whose image came as bytes
    _seen: set[str] = field(default_factory=set)

    def name_of(self, value: Any) -> Any:
        """The value to look up under the folder: a content name for bytes, the path for a path-only struct."""
        if isinstance(value, list):
            if len(value) > 1:
                raise SeveralImages(f"{self.column!r} holds {len(value)} images; a question takes one image "
                                    "(split the row into one row per image, or keep the one it asks about)")
            return self.name_of(value[0]) if value else None
        if not isinstance(value, dict):
            return value  # a plain path column, or None: checked like any other
        data = value.get("bytes")
        if not data:
            return value.get("path")
        self.rows_embedded += 1
        name = content_name(data, value.get("path"))
        if name not in self._seen:
            self._seen.add(name)
            self._write(name, data)
        return name

    def _write(self, name: str, data: bytes) -> None:
        target = self.folder / name
        try:
            if target.stat().st_size == len(data):
                self.present += 1
                return
        except FileNotFoundError:
            pass
        fd, tmp = tempfile.mkstemp(dir=self.folder, prefix=f".{name}.", suffix=".part")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        self.written += 1

    def records(self, records: Iterable[Record]) -> Iterator[Record]:
        """The records with the image column's value replaced by the name to look up."""
        for rec in records:
            if rec.error is None and self.column in rec.values:
                try:
                    rec.values[self.column] = self.name_of(rec.values[self.column])
                except SeveralImages as exc:
                    rec = Record(rec.loc, error=str(exc), kind=SEVERAL_IMAGES)
            yield rec

    def as_dict(self) -> dict:
        return {"column": self.column, "folder": str(self.folder), "rows_with_bytes": self.rows_embedded,
                "files_written": self.written, "files_already_there": self.present}
