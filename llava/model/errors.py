"""The one error a model directory that cannot be loaded raises, whatever is wrong with it.

Every entry point (merge, convert, the CLI, the API, the web UI, batch inference, the tasks) loads
through llava.model.builder and turns ModelLoadError into a one-line message naming the file:

    try:
        loaded = load_pretrained_model(...)
    except ModelLoadError as exc:
        raise SystemExit(f"error: {exc}")

It is a ValueError, so code that caught ValueError from loading still does.  Its kinds
(ConversionError, AdapterMismatch) let a command word the message for its job ("cannot merge: ...").
"""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path


class ModelLoadError(ValueError):
    """A model, base or adapter directory (or a file in it) that cannot be loaded; the message names it."""


class ConversionError(ModelLoadError):
    """An original checkpoint this converter cannot turn into a transformers llava model."""


class AdapterMismatch(ModelLoadError):
    """Base model and adapter do not fit together."""


@contextmanager
def loading(what: str | Path):
    """Turn any failure while loading `what` into a ModelLoadError naming it.

    The readers below raise ModelLoadError naming the exact file (it passes through as it is);
    this catches what transformers, safetensors, peft or bitsandbytes raise from deeper down, in
    their many types, so an entry point has one type to turn into a message."""
    try:
        yield
    except ModelLoadError:
        raise
    except Exception as exc:  # noqa: BLE001 - kept as the cause, named in the message
        raise ModelLoadError(f"{what}: cannot load ({type(exc).__name__}: {exc})") from exc
