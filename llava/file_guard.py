"""Refuse, before any work, an output path that is one of the command's inputs.

Every command that writes calls `refuse_outputs_over_inputs` first thing after
parsing its flags.  "The same file" means the same resolved path or the same
inode (a hard link, a bind mount, `./a` vs `a`), so a user who points
`--output` at what they gave as `--input` gets a message naming both flags and
loses nothing.  A directory output (`--output-dir`) collides with an input that
lies inside it at one of the names the command will write there.
"""

from __future__ import annotations

import os
from pathlib import Path


def same_file(a: str | os.PathLike, b: str | os.PathLike) -> bool:
    """Whether two paths name one file: equal when resolved, or the same inode when both exist."""
    pa, pb = Path(a).expanduser(), Path(b).expanduser()
    try:
        if pa.resolve() == pb.resolve():
            return True
    except (OSError, RuntimeError):  # a symlink loop: compare what exists below
        pass
    try:
        return os.path.samefile(pa, pb)
    except OSError:  # one of them does not exist (yet): only the resolved comparison counts
        return False


def refuse_outputs_over_inputs(outputs: dict[str, str | os.PathLike | None],
                               inputs: dict[str, str | os.PathLike | None]) -> None:
    """SystemExit naming the two flags when an output is one of the inputs.

    outputs / inputs: {"--answers-file": path, ...}; None values are skipped.
    """
    for out_flag, out in outputs.items():
        if out is None or str(out) == "":
            continue
        for in_flag, inp in inputs.items():
            if inp is None or str(inp) == "":
                continue
            if same_file(out, inp):
                raise SystemExit(f"{out_flag} {out} is the same file as {in_flag} {inp}: writing it would destroy "
                                 f"the input; give {out_flag} another path")


def refuse_output_dir_over_inputs(out_flag: str, out_dir: str | os.PathLike, names: list[str],
                                  inputs: dict[str, str | os.PathLike | None]) -> None:
    """SystemExit when a file the command writes as out_dir/NAME is one of the inputs."""
    for name in names:
        for in_flag, inp in inputs.items():
            if inp is not None and str(inp) != "" and same_file(Path(out_dir) / name, inp):
                raise SystemExit(f"{in_flag} {inp} lies in {out_flag} {out_dir}, where this command writes its "
                                 f"{name}: it would be overwritten; give {out_flag} another folder or move the input")
