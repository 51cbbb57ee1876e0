"""Optional dependencies, installed by setup.py's extras: when one is missing, the message names the extra.

    try:
        import gradio as gr
    except ImportError as exc:
        raise missing_extra("serve", exc, "the web UI") from exc

The heavy ones (Gradio, LanceDB, open_clip, sentence-transformers, bitsandbytes) are imported where they
are used, so that a module stays importable, and its flags are checked, without them.
"""

from __future__ import annotations


def missing_extra(extra: str, exc: ImportError, what: str | None = None) -> SystemExit:
    """The one-line exit for a missing optional dependency: which package, and `pip install -e '.[extra]'`."""
    package = exc.name or str(exc)
    needs = f"{what} needs {package}" if what else f"{package} is needed"
    return SystemExit(f"error: {needs}, which is not installed: pip install -e '.[{extra}]'")
