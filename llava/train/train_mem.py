"""The original's training entry point name: `deepspeed llava/train/train_mem.py ...` runs train.py.

The original's train_mem.py turned on flash-attention before training; here the attention is chosen by
itself (flash-attn on a GPU where it is installed, PyTorch SDPA otherwise), so the two are the same."""

from __future__ import annotations

import sys
from pathlib import Path

# Runnable as `deepspeed llava/train/train_mem.py` from a checkout, as train.py is.
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from llava.train.train import train  # noqa: E402

if __name__ == "__main__":
    train()
