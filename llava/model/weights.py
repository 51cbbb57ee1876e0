"""Reading checkpoint weights in the layouts checkpoints are released in.

safetensors or PyTorch .bin, single file or sharded with an index.  .bin
files are loaded with weights_only=True: a pickle from the internet must not
run code.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file

WEIGHT_FILES = (
    "model.safetensors.index.json",
    "model.safetensors",
    "pytorch_model.bin.index.json",
    "pytorch_model.bin",
)


def weight_files(path: str | Path) -> list[Path]:
    """The weight files of a checkpoint directory, in load order."""
    path = Path(path)
    for name in WEIGHT_FILES:
        f = path / name
        if not f.exists():
            continue
        if name.endswith(".index.json"):
            index = json.loads(f.read_text())
            shards = sorted(set(index.get("weight_map", {}).values()))
            missing = [s for s in shards if not (path / s).exists()]
            if missing:
                raise FileNotFoundError(f"{f} names shards that are not there: {', '.join(missing)}")
            return [path / s for s in shards]
        return [f]
    raise FileNotFoundError(f"{path}: no weights found (looked for {', '.join(WEIGHT_FILES)})")


def load_tensor_file(f: Path) -> dict[str, torch.Tensor]:
    if f.suffix == ".safetensors":
        return load_file(str(f))
    return torch.load(f, map_location="cpu", weights_only=True)


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    state: dict[str, torch.Tensor] = {}
    for f in weight_files(path):
        state.update(load_tensor_file(f))
    return state


def has_weights(path: str | Path) -> bool:
    return any((Path(path) / name).exists() for name in WEIGHT_FILES)
