"""Checks of the model and generation flags every command shares, made before the model loads.

A flag that is wrong (`--max-new-tokens 0`, `--device banana`, a --model-path
that is not there) must be refused in the first second, with the flag's name,
not after minutes of loading or with a traceback from deep inside generate.
Each check returns the flag's error message; `check_*` hand it to argparse's
`ap.error` (exit code 2, the usage line first), as for any other bad flag.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import torch

from llava.conversation import get_template


def model_dir_error(flag: str, path: str | None) -> str | None:
    """Why `path` is not a model directory, or None.  A name of the form ORG/NAME that is not a local
    folder is left to the loader (a Hugging Face Hub id), as llava.model.builder does."""
    if path is None:
        return None
    if path == "" or "\x00" in path:
        return f"{flag} {path!r}: not a path"
    p = Path(path)
    if not p.exists():
        if p.is_absolute() or path.startswith(("./", "../")) or path.count("/") != 1:
            return f"{flag} {path}: no such model directory"
        return None
    if not p.is_dir():
        return f"{flag} {path}: is a file, not a model directory"
    if not (p / "config.json").is_file() and not (p / "adapter_config.json").is_file():
        return f"{flag} {path}: no config.json (nor adapter_config.json): not a model directory"
    return None


def device_error(device: str | None) -> str | None:
    if device in (None, "auto"):
        return None
    try:
        dev = torch.device(device)
    except (RuntimeError, ValueError, TypeError) as exc:
        return f"--device {device!r}: not a device ({str(exc).splitlines()[0]}); use auto, cpu, cuda or cuda:N"
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            return f"--device {device}: no CUDA device here; use --device cpu (or auto)"
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            return f"--device {device}: there are {torch.cuda.device_count()} CUDA devices (0-based)"
    elif dev.type == "mps" and not torch.backends.mps.is_available():
        return f"--device {device}: no MPS device here"
    elif dev.type not in ("cpu", "cuda", "mps"):
        return f"--device {device}: unsupported device type {dev.type!r}; use auto, cpu, cuda or cuda:N"
    return None


def text_error(flag: str, value: str | None) -> str | None:
    """A flag value that is written into UTF-8 output files must be text (argv bytes that are not UTF-8
    arrive as lone surrogates, which no UTF-8 writer can write)."""
    if value is None:
        return None
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return f"{flag} {value!r}: not UTF-8 text"
    return None


def model_flag_errors(args: argparse.Namespace) -> list[str]:
    errors = []
    if getattr(args, "load_4bit", False) and getattr(args, "load_8bit", False):
        errors.append("choose one of --load-4bit and --load-8bit")
    errors.append(model_dir_error("--model-path", getattr(args, "model_path", None)))
    errors.append(model_dir_error("--model-base", getattr(args, "model_base", None)))
    if getattr(args, "conv_mode", None) is not None:
        try:
            get_template(args.conv_mode)
        except ValueError as exc:
            errors.append(f"--conv-mode: {exc}")
    errors.append(device_error(getattr(args, "device", None)))
    errors.append(text_error("--model-id", getattr(args, "model_id", None)))
    return [e for e in errors if e]


def _positive(args, name: str, least: int) -> str | None:
    value = getattr(args, name, None)
    if value is not None and value < least:
        return f"--{name.replace('_', '-')} must be at least {least}, got {value}"
    return None


def generation_flag_errors(args: argparse.Namespace) -> list[str]:
    """Counts and sampling settings, for whichever of them the command has."""
    errors = [_positive(args, "max_new_tokens", 1), _positive(args, "batch_size", 1),
              _positive(args, "num_workers", 0), _positive(args, "num_beams", 1)]
    min_new = getattr(args, "min_new_tokens", None)
    if min_new is not None and getattr(args, "max_new_tokens", None) is not None \
            and not 0 <= min_new <= args.max_new_tokens:
        errors.append(f"--min-new-tokens must be between 0 and --max-new-tokens ({args.max_new_tokens}), got {min_new}")
    temperature = getattr(args, "temperature", None)
    if temperature is not None and not (math.isfinite(temperature) and temperature >= 0):
        errors.append(f"--temperature must be a finite number >= 0 (0 = greedy), got {temperature}")
    top_p = getattr(args, "top_p", None)
    if top_p is not None and not 0 < top_p <= 1:  # NaN fails this too
        errors.append(f"--top-p must be in (0, 1], got {top_p}")
    penalty = getattr(args, "length_penalty", None)
    if penalty is not None and not math.isfinite(penalty):
        errors.append(f"--length-penalty must be a finite number, got {penalty}")
    return [e for e in errors if e]


def check_flags(ap: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """ap.error (exit 2) with every model and generation flag error, before anything is loaded."""
    errors = model_flag_errors(args) + generation_flag_errors(args)
    if errors:
        ap.error("; ".join(errors))
