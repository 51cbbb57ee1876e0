"""The model flags every front end shares (CLI, HTTP API, web UI), and loading from them."""

from __future__ import annotations

import argparse
import logging

log = logging.getLogger(__name__)


def add_model_args(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--model-path", default=None, help="default: the embedded default model")
    ap.add_argument("--model-base", default=None, help="the base of a LoRA --model-path")
    ap.add_argument("--conv-mode", default=None, help="conversation template (default: the model's own)")
    ap.add_argument("--load-4bit", action="store_true", help="bitsandbytes NF4 (the tower and projector stay full)")
    ap.add_argument("--load-8bit", action="store_true")
    ap.add_argument("--device", default="auto")


def check_model_args(ap: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Refuse (argparse's exit 2) a bad model flag before anything loads: both quantizations, a
    --model-path or --model-base that is not a model directory, an unknown --conv-mode or --device."""
    from llava.model.flags import model_flag_errors

    errors = model_flag_errors(args)
    if errors:
        ap.error("; ".join(errors))


def load_model(args: argparse.Namespace):
    """Load what the flags name; with no --model-path, the embedded default (args.model_path is set to it)."""
    from llava.model.builder import load_pretrained_model
    from llava.serve.chat import default_model_path

    args.model_path = args.model_path or default_model_path()
    return load_pretrained_model(args.model_path, args.model_base, load_4bit=args.load_4bit,
                                 load_8bit=args.load_8bit, device=args.device)


def load_model_or_exit(args: argparse.Namespace):
    """load_model for a batch command: a model that cannot be loaded (a broken config.json, missing
    weights) ends the run with the loader's message, which names the file, not with a traceback."""
    try:
        return load_model(args)
    except (OSError, ValueError) as exc:
        raise SystemExit(f"error: cannot load --model-path {args.model_path}: {exc}") from None


def precision_note(args: argparse.Namespace) -> str:
    return " (4-bit)" if args.load_4bit else " (8-bit)" if args.load_8bit else ""
