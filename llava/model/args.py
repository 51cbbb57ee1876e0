"""The model flags every command shares (batch inference, CLI, HTTP API, web UI, the tasks), and loading
the model they name.

    ap = argparse.ArgumentParser()
    add_model_args(ap)                # --model-path --model-base --conv-mode --load-4bit --load-8bit --device
    args = ap.parse_args()
    check_model_args(ap, args)        # argparse's exit 2 for a bad model flag, before anything loads
    loaded = load_model_or_exit(args) # with no --model-path, the embedded default
"""

from __future__ import annotations

import argparse
from pathlib import Path

from llava.model.errors import ModelLoadError
from llava.model.flags import model_flag_errors

# The embedded default, after `make demo`: the demo's fine-tuned model, else its base.
DEFAULT_MODELS = ("checkpoints/llava-smol-task-merged", "checkpoints/llava-smol-base")


def default_model_path() -> str:
    """The embedded default: the first of DEFAULT_MODELS that is built."""
    for path in DEFAULT_MODELS:
        if (Path(path) / "config.json").exists():
            return path
    raise SystemExit(f"no --model-path given and the embedded default ({' or '.join(DEFAULT_MODELS)}) is not "
                     "built yet: run `make demo` first, or pass --model-path")


def add_model_args(ap: argparse.ArgumentParser, required: bool = False) -> None:
    """required: --model-path must be given (batch inference); otherwise it defaults to the embedded model."""
    ap.add_argument("--model-path", required=required, default=None,
                    help="a llava directory, an original LLaVA checkpoint or a LoRA dir"
                         + ("" if required else " (default: the embedded default model)"))
    ap.add_argument("--model-base", default=None, help="the base of a LoRA --model-path")
    ap.add_argument("--conv-mode", default=None, help="conversation template (default: the model's own)")
    ap.add_argument("--load-4bit", action="store_true", help="bitsandbytes NF4 (the tower and projector stay full)")
    ap.add_argument("--load-8bit", action="store_true")
    ap.add_argument("--device", default="auto")


def check_model_args(ap: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Refuse (argparse's exit 2) a bad model flag before anything loads: both quantizations, a
    --model-path or --model-base that is not a model directory, an unknown --conv-mode or --device."""
    errors = model_flag_errors(args)
    if errors:
        ap.error("; ".join(errors))


def load_model(args: argparse.Namespace):
    """Load what the flags name; with no --model-path, the embedded default (args.model_path is set to it)."""
    # Imported here, not above: the builder brings transformers' model code and peft (seconds), which
    # --help and a refused flag must not wait for.
    from llava.model.builder import load_pretrained_model  # noqa: PLC0415

    args.model_path = args.model_path or default_model_path()
    loaded = load_pretrained_model(args.model_path, args.model_base, load_4bit=args.load_4bit,
                                   load_8bit=args.load_8bit, device=args.device)
    if getattr(args, "conv_mode", None) and not loaded.family.native:
        raise ModelLoadError(f"--conv-mode {args.conv_mode}: {args.model_path} is a {loaded.family.title} model, "
                             "which uses its own chat template; leave --conv-mode out")
    return loaded


def load_model_or_exit(args: argparse.Namespace):
    """load_model for a command: a model that cannot be loaded (a broken config.json, missing weights)
    ends the run with the loader's message, which names the file, not with a traceback."""
    try:
        return load_model(args)
    except (OSError, ValueError) as exc:
        raise SystemExit(f"error: cannot load --model-path {args.model_path}: {exc}") from None


def precision_note(args: argparse.Namespace) -> str:
    return " (4-bit)" if args.load_4bit else " (8-bit)" if args.load_8bit else ""
