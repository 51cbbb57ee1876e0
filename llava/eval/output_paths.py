"""Checks on the files a batch command will write, made before it reads or loads anything.

A command that finds out its output path is unusable only when it first
writes (after loading a model and answering a batch) wastes the run and used
to print a traceback.  `check_outputs` refuses, naming the flag:

  * an output that is one of the command's inputs (llava/file_guard.py: by
    resolved path or inode), sidecars (ANSWERS.errors.jsonl, *_scores.json)
    included;
  * an output that is a directory, or under a path that is a file;
  * an output in a folder this process cannot write, or a path the system
    rejects (a NUL byte, a name too long);
  * an output that is a file of the model directory the command loads, or
    one of the images its input names.
"""

from __future__ import annotations

import os
import posixpath
from pathlib import Path

from llava.file_guard import refuse_outputs_over_inputs, same_file


def output_path_error(path: str | os.PathLike) -> str | None:
    """Why `path` cannot be written as a file (its folders made as needed), or None."""
    p = Path(path)
    if str(path) == "":
        return "an empty path"
    if "\x00" in str(path):
        return "holds a NUL byte"
    try:
        if p.is_dir():
            return "is a directory; give a file path"
        if p.exists():
            return None if os.access(p, os.W_OK) else "exists and is not writable"
        parent = p.parent
        while not parent.exists() and parent != parent.parent:
            if parent.is_symlink():  # a dangling link: mkdir would fail on it
                return f"{parent} is a broken symbolic link"
            parent = parent.parent
        if not parent.is_dir():
            return f"{parent} is a file, not a folder"
        if not os.access(parent, os.W_OK | os.X_OK):
            return f"cannot create files in {parent} (not writable)"
        if len(os.fsencode(p.name)) > 255:
            return "the file name is longer than 255 bytes"
    except OSError as exc:
        return exc.strerror or str(exc)
    return None


def check_outputs(outputs: dict[str, str | os.PathLike | None],
                  inputs: dict[str, str | os.PathLike | None]) -> None:
    """SystemExit naming the flag when an output cannot be written or is one of the inputs.

    outputs: {"--answers-file": path, "--answers-file's errors file": path, ...}; None values are skipped.
    """
    for flag, path in outputs.items():
        if path is None:
            continue
        error = output_path_error(path)
        if error is not None:
            raise SystemExit(f"error: {flag} {path}: {error}")
    refuse_outputs_over_inputs(outputs, inputs)


def input_path_error(path: str | os.PathLike, kind: str = "file") -> str | None:
    """Why `path` cannot be read as a `kind` ("file" or "folder"), or None."""
    p = Path(path)
    try:
        if str(path) == "":
            return "an empty path"
        if "\x00" in str(path):
            return "holds a NUL byte"
        if not p.exists():
            return f"no such {kind}"
        if kind == "file" and p.is_dir():
            return "is a directory, not a file"
        if kind == "folder" and not p.is_dir():
            return "is a file, not a folder"
        if not os.access(p, os.R_OK):
            return "not readable"
    except OSError as exc:
        return exc.strerror or str(exc)
    return None


def check_inputs(files: dict[str, str | os.PathLike | None], folders: dict | None = None) -> None:
    """SystemExit naming the flag and path of the first input that is missing or of the wrong kind."""
    for kind, group in (("file", files), ("folder", folders or {})):
        for flag, path in group.items():
            if path is None:
                continue
            error = input_path_error(path, kind)
            if error is not None:
                raise SystemExit(f"error: {flag} {path}: {error}")


# Files a model directory is loaded from (config, weights, tokenizer): answers are .jsonl, never one of these.
MODEL_FILE_SUFFIXES = {".json", ".safetensors", ".bin", ".model", ".txt", ".pt", ".pth", ".gguf", ".py"}


def refuse_outputs_in_model_dirs(outputs: dict[str, str | os.PathLike | None],
                                 model_dirs: dict[str, str | None]) -> None:
    """SystemExit when an output is an existing file of a model directory the command loads."""
    for flag, out in outputs.items():
        if out is None or Path(out).suffix.lower() not in MODEL_FILE_SUFFIXES or not Path(out).is_file():
            continue
        for model_flag, model_dir in model_dirs.items():
            if model_dir and Path(model_dir).is_dir() and same_file(Path(out).parent, model_dir):
                raise SystemExit(f"error: {flag} {out} is a file of the model in {model_flag} {model_dir}: "
                                 "writing it would break the model; give another path")


def refuse_outputs_over_images(outputs: dict[str, str | os.PathLike | None], image_folder: str | os.PathLike,
                               images: list[tuple[str, int]]) -> None:
    """SystemExit when an output is one of the images the input names (IMAGE_FOLDER/image, with its line)."""
    folder = Path(image_folder or ".")
    for flag, out in outputs.items():
        if out is None:
            continue
        try:
            rel = Path(os.path.relpath(Path(out).resolve(), folder.resolve())).as_posix()
        except ValueError:  # another drive
            continue
        for image, line in images:
            if posixpath.normpath(image) == rel:
                raise SystemExit(f"error: {flag} {out} is the image of line {line} ({image}) under the image "
                                 "folder: writing it would destroy the image; give another path")
