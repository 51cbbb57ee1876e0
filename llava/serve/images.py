"""Images from what a person types: a local path, an http(s) URL, a data: URL, or bare base64.

For the CLI, run by the person whose files and network it reads.  Every image
is decoded fully by llava.image_decode (a truncated or corrupt file fails now,
with its name), with the caps every entry shares, on bytes and pixels, so a
decompression bomb is refused rather than expanded.  The HTTP API calls
`decode_image_bytes` with its own --max-image-pixels.
"""

from __future__ import annotations

import base64
import binascii
import re
import urllib.request
from pathlib import Path

from PIL import Image

from llava.image_decode import MAX_IMAGE_BYTES, MAX_IMAGE_PIXELS, ImageError, decode_image_bytes, load_image

__all__ = ["MAX_BYTES", "MAX_PIXELS", "ImageError", "decode_base64", "decode_image_bytes", "fetch_url", "open_image"]

# The serving front ends' flag defaults (--max-image-bytes, --max-image-pixels): the shared caps.
MAX_BYTES = MAX_IMAGE_BYTES
MAX_PIXELS = MAX_IMAGE_PIXELS
_DATA_URL = re.compile(r"^data:image/[\w.+-]+;base64,", re.IGNORECASE)
_BASE64 = re.compile(r"^[A-Za-z0-9+/\s]+={0,2}$")


def decode_base64(text: str, name: str = "base64 image") -> bytes:
    try:
        return base64.b64decode(re.sub(r"\s+", "", text), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ImageError(f"{name}: not valid base64 ({exc})") from exc


def fetch_url(url: str, timeout: float = 10.0, max_bytes: int = MAX_BYTES) -> bytes:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            data = resp.read(max_bytes + 1)
    except Exception as exc:
        raise ImageError(f"{url}: cannot fetch ({exc})") from exc
    if len(data) > max_bytes:
        raise ImageError(f"{url}: larger than {max_bytes:,} bytes")
    return data


def open_image(source: str) -> Image.Image:
    """The image named by `source`: path, http(s) URL, data: URL or base64 text."""
    source = source.strip()
    if _DATA_URL.match(source):
        return decode_image_bytes(decode_base64(source.split(",", 1)[1], "data URL"), "data URL", MAX_PIXELS, MAX_BYTES)
    if source.lower().startswith(("http://", "https://")):
        return decode_image_bytes(fetch_url(source), source, MAX_PIXELS, MAX_BYTES)
    path = Path(source).expanduser()
    if len(source) >= 64 and _BASE64.match(source) and not _is_file(path):
        return decode_image_bytes(decode_base64(source), "base64 image", MAX_PIXELS, MAX_BYTES)
    return load_image(path, MAX_BYTES, MAX_PIXELS)


def _is_file(path: Path) -> bool:
    try:
        return path.is_file()
    except OSError:  # e.g. a name too long to be a file: base64 text
        return False
