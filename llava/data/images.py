"""Check that the images a task references exist and decode fully, before training finds out.

Each distinct image is checked once, however many questions share it, and the
checks run in a thread pool: Pillow releases the GIL while it reads and
decodes, so threads overlap file I/O and decoding without the start-up and
pickling cost of processes.

A check decodes the whole image (`Image.load()`), not just the header: a
truncated JPEG opens fine and reports its size, and only fails, or is padded
with grey when ImageFile.LOAD_TRUNCATED_IMAGES is set, when its pixels are
decoded. That is exactly the image that would otherwise crash (or silently
corrupt) a training run hours in.

A check is llava.image_decode's `load_image`, the decoder training and
inference use, with the same caps (20 MiB, 40 megapixels): an image that
passes here is one they can read.
"""

from __future__ import annotations

import os
import posixpath
import re
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from PIL import ImageFile
from tqdm import tqdm

from llava.image_decode import (  # noqa: F401 - the reason keys, re-exported for the report's readers
    CORRUPT,
    EMPTY,
    MAX_IMAGE_BYTES,
    MAX_IMAGE_PIXELS,
    MISSING,
    NOT_A_FILE,
    NOT_AN_IMAGE,
    TOO_LARGE,
    TRUNCATED,
    UNREADABLE,
    ImageError,
    load_image,
)

UNSAFE_PATH = "image_path_outside_folder"


_DRIVE = re.compile(r"^[A-Za-z]:[\\/]")


@dataclass(frozen=True)
class ImageCheck:
    ok: bool
    reason: str | None = None  # one of the keys above when not ok
    detail: str | None = None  # human-readable explanation
    width: int | None = None
    height: int | None = None


def normalize_relative(name: str) -> str | None:
    """The image path as a clean relative POSIX path, or None when it escapes the image folder.

    The check is lexical (no symlink resolution): an image folder that holds
    symlinks to a shared dataset directory is normal and allowed, while a
    name such as "../secret.png" or "/etc/passwd" is a bad row.
    """
    name = name.strip()
    if not name or name.startswith("/") or _DRIVE.match(name):  # POSIX- or Windows-absolute
        return None
    norm = posixpath.normpath(name)
    if norm == "." or norm == ".." or norm.startswith("../"):
        return None
    return norm


def check_image(path: Path, max_bytes: int | None = MAX_IMAGE_BYTES,
                max_pixels: int | None = MAX_IMAGE_PIXELS) -> ImageCheck:
    """Open and fully decode one image file, with the caps training and inference use."""
    try:
        img = load_image(path, max_bytes, max_pixels)
    except ImageError as exc:
        return ImageCheck(False, exc.reason, exc.detail)
    return ImageCheck(True, width=img.width, height=img.height)


# ImageFile.LOAD_TRUNCATED_IMAGES is a process-wide switch that makes Pillow pad
# truncated images instead of raising; check_images turns it off while it runs
# (and restores it), one call at a time.
_truncation_lock = threading.Lock()


def check_images(
    folder: Path,
    names: list[str],
    workers: int | None = None,
    progress: bool = True,
    max_bytes: int | None = MAX_IMAGE_BYTES,
    max_pixels: int | None = MAX_IMAGE_PIXELS,
) -> dict[str, ImageCheck]:
    """Check every (already normalized, relative) name under folder; returns name -> result."""
    unique = list(dict.fromkeys(names))
    if workers is None:
        # Pillow releases the GIL while decoding, so threads check images in parallel where there are
        # cores (bench/preprocess_rate.py; docs/data.md, "Measurements"). More threads than cores also
        # hide disk latency.
        workers = min(32, 4 * (os.cpu_count() or 1))
    results: dict[str, ImageCheck] = {}
    with _truncation_lock:
        saved = ImageFile.LOAD_TRUNCATED_IMAGES
        ImageFile.LOAD_TRUNCATED_IMAGES = False
        try:
            bar = tqdm(total=len(unique), unit="img", desc="checking images", disable=not progress or not unique)
            with bar, ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
                # map yields in input order, so the report lists problems in file order.
                checks = pool.map(lambda n: check_image(folder / n, max_bytes, max_pixels), unique)
                for name, res in zip(unique, checks):
                    results[name] = res
                    bar.update(1)
        finally:
            ImageFile.LOAD_TRUNCATED_IMAGES = saved
    return results
