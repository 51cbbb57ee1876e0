"""Chat with a model about an image in the terminal; the answer streams in as it is generated.

    python -m llava.serve.cli --model-path checkpoints/llava-smol-task-merged --image-file cat.jpg
    python -m llava.serve.cli --model-path liuhaotian/llava-v1.5-7b --image-file https://.../cat.jpg --load-4bit
    python -m llava.serve.cli                       # the embedded default (after `make demo`)

The image may be a path, an http(s) URL, a data: URL or base64 text.  At the
prompt:  \\image PATH  switches to another image (and starts a new conversation),
\\reset  clears the history,  \\exit  (or Ctrl-D) leaves.  Ctrl-C stops an answer
being generated; at the prompt it leaves.

Bad input never ends the session or loses its history: a line that is not
UTF-8, a question longer than the model's context, or an image that cannot be
used gets a one-line error and the prompt comes back.  A bad --image-file is
refused before the model loads (exit 2); a model that cannot be loaded, with a
message naming the file (exit 1).

Works for LoRA directories (--model-base) and with --load-4bit / --load-8bit,
where the original's CLI failed (LLaVA#433, #829): loading goes through
load_pretrained_model, which keeps the tower and projector in full precision.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys

import torch

from llava.mm_utils import ImageError
from llava.model.args import add_model_args, check_model_args, default_model_path, load_model, precision_note
from llava.model.errors import ModelLoadError
from llava.printable import first_surrogate
from llava.serve.chat import ChatSession
from llava.serve.images import open_image

COMMANDS = "\\image PATH (new image, new conversation), \\reset (clear history), \\exit"


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_model_args(ap)
    ap.add_argument("--image-file", default=None, help="path, http(s) URL, data: URL or base64")
    ap.add_argument("--temperature", type=float, default=0.2, help="0 = greedy")
    ap.add_argument("--top-p", type=float, default=None)
    ap.add_argument("--max-new-tokens", type=int, default=512)
    ap.add_argument("--min-new-tokens", type=int, default=0, help="no end of an answer before this many tokens")
    ap.add_argument("--seed", type=int, default=None, help="for reproducible sampling")
    args = ap.parse_args(argv)
    check_model_args(ap, args)
    return args


def read_line(prompt: str) -> str | None:
    """A line from the user; None on EOF (Ctrl-D) or Ctrl-C at the prompt.

    A line holding bytes that are not UTF-8 (a paste from a Latin-1 file, a stray key) is reported
    and not sent, and the conversation goes on: "" (skipped) rather than an exception that ends the
    session and its history.  stdin is read with errors="surrogateescape" for this (see main).
    """
    try:
        line = input(prompt)
    except (EOFError, KeyboardInterrupt):
        print()
        return None
    bad = first_surrogate(line)
    if bad is not None:
        print(f"error: that line has {bad} that is not UTF-8 text; it was not sent (the conversation is kept). "
              "Type it again.", flush=True)
        return ""
    return line


def main(argv=None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if hasattr(sys.stdin, "reconfigure"):  # undecodable input becomes a message in read_line, not a crash
        sys.stdin.reconfigure(errors="surrogateescape")
    # Ctrl-C must stop an answer even when we were started with SIGINT ignored (a parent that ran us
    # in the background, nohup): Python then installs no KeyboardInterrupt handler of its own.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    if args.seed is not None:
        torch.manual_seed(args.seed)
    image = None
    if args.image_file:
        try:
            image = open_image(args.image_file)
        except ImageError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
    model_path = args.model_path or default_model_path()
    args.model_path = model_path
    print(f"loading {model_path}{precision_note(args)} ...", flush=True)
    try:
        loaded = load_model(args)
    except ModelLoadError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    chat = ChatSession(loaded, image=image, conv_mode=args.conv_mode, temperature=args.temperature,
                       top_p=args.top_p, max_new_tokens=args.max_new_tokens, min_new_tokens=args.min_new_tokens)
    quantized = sum(type(m).__name__ in ("Linear4bit", "Linear8bitLt") for m in loaded.model.modules())
    print(f"ready: {'an image' if image is not None else 'no image (text only)'}"
          + (f"; {quantized} bitsandbytes-quantized layers" if quantized else "") + f"; commands: {COMMANDS}",
          flush=True)
    while True:
        line = read_line("USER: ")
        if line is None:
            break
        text = line.strip()
        if not text:
            continue
        if text in ("\\exit", "\\quit"):
            break
        if text == "\\reset":
            chat.reset()
            print("(history cleared)")
            continue
        if text.startswith("\\image"):
            source = text[len("\\image"):].strip()
            if not source:
                print("usage: \\image PATH-OR-URL")
                continue
            try:
                chat.reset(image=open_image(source))
            except ImageError as exc:
                print(f"error: {exc}")
                continue
            print("(new image; history cleared)")
            continue
        if text.startswith("\\"):
            print(f"unknown command {text.split()[0]}; commands: {COMMANDS}")
            continue
        try:  # Ctrl-C anywhere in the answer, its first line included, stops it and keeps the chat
            print("ASSISTANT: ", end="", flush=True)
            started = False
            for piece in chat.ask(text):
                if not started:  # the answer's leading space (the tokenizer's word boundary) is not shown
                    piece = piece.lstrip()
                    started = bool(piece)
                print(piece, end="", flush=True)
            print(flush=True)
        except KeyboardInterrupt:
            print(" [stopped]", flush=True)
        except ValueError as exc:  # over the context, "<image>" typed in: refused before generating, history kept
            print(f"\nerror: {exc}", flush=True)
    print("bye")
    return 0


if __name__ == "__main__":
    sys.exit(main())
