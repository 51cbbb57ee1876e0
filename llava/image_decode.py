"""Decoding one image, the way every entry point does it: the caps, the errors, the RGB conversion.

Training, preprocessing's image checks, batch inference, the tasks, the CLI, the web UI and the
HTTP API all decode here, so one set of caps holds everywhere:

    MAX_IMAGE_BYTES   20 MiB        checked from the file size (or the byte count) before reading
    MAX_IMAGE_PIXELS  40 megapixels checked from the header, before the pixels are decoded

The serving front ends let their flags (--max-image-bytes, --max-image-pixels) move these; the
other commands use them as they are.  An image that cannot be used raises ImageError, whose
message names the file and whose `reason` is a short stable key (the ones preprocessing counts in
its report).  Every image is decoded fully here, so a truncated file fails now, with its name, not
inside a DataLoader worker hours into a run.

RGB follows the original LLaVA (`Image.open(f).convert("RGB")`), the pixels fine-tuned checkpoints
were trained on: alpha is dropped, not composited, and EXIF orientation is not applied.  Where
Pillow's conversion is wrong it is fixed: 16-bit and 32-bit grey images (a 16-bit PNG is I;16)
would saturate to white, so they are scaled to 8 bits; premultiplied-alpha modes (La, RGBa), which
Pillow cannot turn into RGB directly, go through their plain-alpha twins.  Of an animated image
(GIF, APNG, multi-page TIFF) the first frame is used.
"""

from __future__ import annotations

import io
import stat
import warnings
from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import Image

from llava.printable import printable

MAX_IMAGE_BYTES = 20 * 1024 * 1024
MAX_IMAGE_PIXELS = 40_000_000

# Why an image cannot be used: short stable keys, counted by reason in preprocessing's report.
MISSING = "image_missing"
NOT_A_FILE = "image_not_a_file"
EMPTY = "image_empty_file"
UNREADABLE = "image_unreadable"  # e.g. no permission to read it
NOT_AN_IMAGE = "image_not_an_image"
TRUNCATED = "image_truncated"
CORRUPT = "image_corrupt"
TOO_LARGE = "image_too_large"

# Pillow warns from its own limit (~89 MP) while reading a header; the pixel cap here is lower and
# refuses such an image right after, with a message, so the warning would only repeat it as noise.
warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)


class ImageError(ValueError):
    """An image that cannot be used.  str() is "NAME: DETAIL"; `reason` is one of the keys above."""

    def __init__(self, message: str, reason: str = CORRUPT, detail: str | None = None):
        super().__init__(message)
        self.reason = reason
        self.detail = detail or message


def _fail(name: str, reason: str, detail: str) -> ImageError:
    return ImageError(f"{name}: {detail}", reason, detail)


def load_image(path: str | Path, max_bytes: int | None = MAX_IMAGE_BYTES, max_pixels: int | None = MAX_IMAGE_PIXELS,
               name: str | None = None) -> Image.Image:
    """The image file at `path`, fully decoded, as RGB; ImageError naming it (or `name`) otherwise."""
    path = Path(path)
    name = printable(path) if name is None else name
    try:
        st = path.stat()
    except FileNotFoundError:
        raise _fail(name, MISSING, "no such file") from None
    except (OSError, ValueError) as exc:  # ValueError: a NUL in the name; OSError: a name too long, no access
        raise _fail(name, MISSING, f"cannot look up the file ({getattr(exc, 'strerror', None) or exc})") from None
    if not stat.S_ISREG(st.st_mode):
        kind = "a directory" if stat.S_ISDIR(st.st_mode) else "not a regular file"
        raise _fail(name, NOT_A_FILE, f"{kind}, not an image file" if kind == "a directory" else kind)
    if st.st_size == 0:
        raise _fail(name, EMPTY, "empty file (0 bytes)")
    _check_bytes(name, st.st_size, max_bytes)
    try:
        f = open(path, "rb")
    except OSError as exc:
        raise _fail(name, UNREADABLE, f"cannot open the file ({exc.strerror or exc})") from None
    with f:
        return _decode(f, name, max_pixels)


def decode_image_bytes(data: bytes, name: str, max_pixels: int | None = MAX_IMAGE_PIXELS,
                       max_bytes: int | None = None) -> Image.Image:
    """An image held in memory (an upload, a data URL), decoded with the same caps and errors."""
    if not data:
        raise _fail(name, EMPTY, "empty (0 bytes)")
    _check_bytes(name, len(data), max_bytes)
    return _decode(io.BytesIO(data), name, max_pixels)


def _check_bytes(name: str, size: int, max_bytes: int | None) -> None:
    if max_bytes is not None and size > max_bytes:
        raise _fail(name, TOO_LARGE, f"{size:,} bytes, more than the {max_bytes:,} allowed")


def _decode(fp: BinaryIO, name: str, max_pixels: int | None) -> Image.Image:
    try:
        with Image.open(fp) as img:
            if max_pixels is not None and img.width * img.height > max_pixels:
                raise _fail(name, TOO_LARGE, f"{img.width}x{img.height} pixels, more than the {max_pixels:,} allowed")
            img.load()
            return to_rgb(img)
    except ImageError:
        raise
    except Image.DecompressionBombError as exc:  # Pillow's own limit, hit while reading the header
        cap = f"the {max_pixels:,}" if max_pixels is not None else "Pillow's limit of"
        raise _fail(name, TOO_LARGE, f"more pixels than {cap} allowed ({exc})") from None
    except Image.UnidentifiedImageError:
        raise _fail(name, NOT_AN_IMAGE, "cannot read image: not a file format Pillow knows") from None
    except Exception as exc:  # Pillow raises OSError, SyntaxError, ValueError, struct.error... for damaged files
        msg = str(exc) or type(exc).__name__
        if "truncated" in msg.lower():
            raise _fail(name, TRUNCATED, f"truncated file: cannot read image ({msg})") from None
        raise _fail(name, CORRUPT, f"cannot read image ({msg})") from None


_GREY_HIGH_DEPTH = {"I;16", "I;16L", "I;16B", "I;16N", "I", "F"}


def to_rgb(img: Image.Image) -> Image.Image:
    """img as 8-bit RGB: Pillow's convert("RGB"), as the original, except where that is wrong."""
    if img.mode in _GREY_HIGH_DEPTH:
        return Image.fromarray(_grey_to_8bit(np.asarray(img), img.mode), "L").convert("RGB")
    if img.mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")  # the same colours as convert("RGB"), without Pillow's warning
    elif img.mode in ("La", "RGBa"):
        img = img.convert(img.mode[:-1] + "A")  # premultiplied alpha: Pillow has no direct way to RGB
    return img.convert("RGB")


def _grey_to_8bit(a: np.ndarray, mode: str) -> np.ndarray:
    """0-255 grey levels of a 16-bit, 32-bit integer or float grey image (dark stays dark).

    I;16*: 16-bit by definition, v / 257 (65535 -> 255).  I and F say nothing of their range:
    values within 0-255 are taken as 8-bit, larger ones as 16-bit; F within 0-1 as fractions.
    """
    if mode.startswith("I;16"):
        return ((a.astype(np.uint32) + 128) // 257).astype(np.uint8)
    a = np.nan_to_num(a.astype(np.float32), nan=0.0, posinf=65535.0, neginf=0.0)
    top = float(a.max()) if a.size else 0.0
    if mode == "F" and top <= 1.0 and float(a.min()) >= 0.0:
        a = a * 255.0
    elif top > 255.0:
        a = np.clip(a, 0.0, 65535.0) / 257.0
    return np.clip(np.rint(a), 0, 255).astype(np.uint8)
