"""Images from what a person types: a local path, an http(s) URL, a data: URL, or bare base64.

For the CLI, run by the person whose files and network it reads.  Every image
is decoded fully here (a truncated or corrupt file fails now, with its name),
with caps on bytes and pixels so a decompression bomb is refused rather than
expanded.
"""

from __future__ import annotations

import base64
import binascii
import io
import re
import urllib.request
from pathlib import Path

from PIL import Image

from llava.mm_utils import ImageError, load_image

MAX_BYTES = 20 * 1024 * 1024
MAX_PIXELS = 40_000_000
_DATA_URL = re.compile(r"^data:image/[\w.+-]+;base64,", re.IGNORECASE)
_BASE64 = re.compile(r"^[A-Za-z0-9+/\s]+={0,2}$")


def decode_image_bytes(data: bytes, name: str, max_pixels: int = MAX_PIXELS) -> Image.Image:
    try:
        with Image.open(io.BytesIO(data)) as img:
            if img.width * img.height > max_pixels:
                raise ImageError(f"{name}: {img.width}x{img.height} pixels, more than the {max_pixels:,} allowed")
            img.load()
            return img.convert("RGB")
    except ImageError:
        raise
    except Image.DecompressionBombError as exc:  # PIL's own, larger limit, hit while reading the header
        raise ImageError(f"{name}: more pixels than the {max_pixels:,} allowed ({exc})") from exc
    except Exception as exc:  # PIL raises several unrelated types for bad data
        raise ImageError(f"{name}: cannot read image ({exc})") from exc


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
        return decode_image_bytes(decode_base64(source.split(",", 1)[1], "data URL"), "data URL")
    if source.lower().startswith(("http://", "https://")):
        return decode_image_bytes(fetch_url(source), source)
    path = Path(source).expanduser()
    if len(source) >= 64 and _BASE64.match(source) and not _is_file(path):
        return decode_image_bytes(decode_base64(source), "base64 image")
    if _is_file(path) and path.stat().st_size > MAX_BYTES:
        raise ImageError(f"{path}: larger than {MAX_BYTES:,} bytes")
    return load_image(path)


def _is_file(path: Path) -> bool:
    try:
        return path.is_file()
    except OSError:  # e.g. a name too long to be a file: base64 text
        return False
