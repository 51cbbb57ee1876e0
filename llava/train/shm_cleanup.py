"""Remove the shared-memory segment DeepSpeed's CPU all-reduce leaves behind.

On CPU, DeepSpeed's shm comm op gives every rank a segment named
/dev/shm/deepspeed_allreduce_buffer_{uid}_{MASTER_ADDR}_{MASTER_PORT}_{rank}
and never unlinks it (its maintainers note the leak in deepspeedai/DeepSpeed
PR #4115), so every CPU run keeps that RAM per rank until reboot, and enough
test launches and training runs fill /dev/shm until a training run is killed
for memory (the sizes seen: docs/training.md, "Measurements").  Each
training process unlinks its own segment when it exits; ranks that still have
it mapped keep their mapping, so this is safe while the others finish.
A process killed by SIGKILL cannot clean up after itself.
"""

from __future__ import annotations

import atexit
import os
from pathlib import Path

SHM_DIR = Path("/dev/shm")


def segment_path(environ=os.environ) -> Path | None:
    """This rank's segment, named as DeepSpeed's shm.cpp names it; None outside a launched run."""
    port, rank = environ.get("MASTER_PORT"), environ.get("RANK")
    if port is None or rank is None:
        return None
    addr = environ.get("MASTER_ADDR", "")
    return SHM_DIR / f"deepspeed_allreduce_buffer_{os.getuid()}_{addr}_{port}_{rank}"


def _unlink(path: Path) -> None:
    try:
        path.unlink()
    except FileNotFoundError:
        pass


def remove_at_exit() -> None:
    path = segment_path()
    if path is not None:
        atexit.register(_unlink, path)
