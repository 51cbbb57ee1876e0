"""Reading checkpoint files in the layouts checkpoints are released in.

Weights: safetensors or PyTorch .bin, single file or sharded with an index.
.bin files are loaded with weights_only=True: a pickle from the internet must
not run code.  JSON configs: read as one object.  A file that is missing,
damaged or of the wrong shape raises ModelLoadError naming it (safetensors'
own "header too large" names no file).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_file

from llava.model.errors import ModelLoadError

WEIGHT_FILES = (
    "model.safetensors.index.json",
    "model.safetensors",
    "pytorch_model.bin.index.json",
    "pytorch_model.bin",
)


def read_json_object(f: str | Path) -> dict:
    """A JSON file holding one object ({...}), e.g. config.json; ModelLoadError naming the file otherwise."""
    f = Path(f)
    if not f.exists():
        raise ModelLoadError(f"{f}: missing")
    if not f.is_file():
        raise ModelLoadError(f"{f}: not a file")
    try:
        text = f.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ModelLoadError(f"{f}: not UTF-8 text (byte {exc.object[exc.start]:#04x} at offset {exc.start})") from None
    except OSError as exc:
        raise ModelLoadError(f"{f}: cannot read ({exc.strerror or exc})") from None
    if not text.strip():
        raise ModelLoadError(f"{f}: empty file, expected a JSON object")
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ModelLoadError(f"{f}: not valid JSON ({exc})") from None
    if not isinstance(obj, dict):
        raise ModelLoadError(f"{f}: expected a JSON object {{...}}, got a JSON {_json_type(obj)}")
    return obj


def _json_type(obj) -> str:
    return {list: "array", str: "string", bool: "boolean", int: "number", float: "number"}.get(type(obj), "null")


def weight_files(path: str | Path) -> list[Path]:
    """The weight files of a checkpoint directory, in load order."""
    path = Path(path)
    for name in WEIGHT_FILES:
        f = path / name
        if not f.exists():
            continue
        if name.endswith(".index.json"):
            weight_map = read_json_object(f).get("weight_map")
            if not isinstance(weight_map, dict) or not all(isinstance(v, str) for v in weight_map.values()):
                raise ModelLoadError(f"{f}: no \"weight_map\" of tensor names to shard files")
            shards = sorted(set(weight_map.values()))
            missing = [s for s in shards if not (path / s).is_file()]
            if missing:
                raise ModelLoadError(f"{f} names shards that are not there: {', '.join(missing)}")
            return [path / s for s in shards]
        return [f]
    raise ModelLoadError(f"{path}: no weights found (looked for {', '.join(WEIGHT_FILES)})")


def check_safetensors(files: list[Path]) -> None:
    """Read each safetensors file's header (cheap: no tensor is loaded), so a damaged one is named now."""
    for f in files:
        if f.suffix != ".safetensors":
            continue
        try:
            with safe_open(str(f), "pt"):
                pass
        except Exception as exc:  # SafetensorError, OSError: "header too large", "file not fully covered"...
            raise ModelLoadError(f"{f}: not a readable safetensors file ({exc})") from None


def load_tensor_file(f: Path) -> dict[str, torch.Tensor]:
    try:
        if f.suffix == ".safetensors":
            return load_file(str(f))
        return torch.load(f, map_location="cpu", weights_only=True)
    except Exception as exc:  # SafetensorError, RuntimeError (a damaged zip), UnpicklingError, EOFError...
        raise ModelLoadError(f"{f}: cannot read weights ({type(exc).__name__}: {exc})") from None


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    state: dict[str, torch.Tensor] = {}
    for f in weight_files(path):
        state.update(load_tensor_file(f))
    return state


def has_weights(path: str | Path) -> bool:
    return any((Path(path) / name).exists() for name in WEIGHT_FILES)
