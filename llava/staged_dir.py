"""Build an output folder so that a killed run never leaves something that looks finished.

    with staged_dir("playground/data/sample_task", "llava.demo.vqa_task seed=0") as tmp:
        ... write everything into tmp ...

The generator writes into a hidden sibling, `.NAME.partial`; only when it has
written everything does the folder take its real name, with a `.complete`
marker inside.  So:

  * `OUT/.complete` exists  <=>  OUT was finished (what `scripts/demo.sh` checks
    before it skips a step);
  * a run killed part-way leaves only `.NAME.partial`, which the next run
    removes (saying so) before it starts again;
  * an OUT that already exists is updated entry by entry and its marker is
    removed first and written last, so files of the user's that the generator
    does not write stay where they are.

The marker holds `what` (the generator and its settings): a rebuild with the
same settings writes the same bytes.
"""

from __future__ import annotations

import functools
import inspect
import os
import shutil
import sys
from contextlib import contextmanager
from pathlib import Path

MARKER = ".complete"


def is_complete(path: str | os.PathLike) -> bool:
    return (Path(path) / MARKER).is_file()


def partial_path(path: str | os.PathLike) -> Path:
    p = Path(path)
    return p.with_name(f".{p.name}.partial")


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink()


def _write_marker(folder: Path, what: str) -> None:
    tmp = folder / f"{MARKER}.tmp"
    tmp.write_text(what.rstrip("\n") + "\n", encoding="utf-8")
    os.replace(tmp, folder / MARKER)


@contextmanager
def staged_dir(path: str | os.PathLike, what: str, log=sys.stderr):
    """Yield a fresh staging folder; on success move its contents to `path` and mark it complete."""
    out = Path(path)
    if out.exists() and not out.is_dir():
        raise SystemExit(f"{out} exists and is not a folder: give another output folder")
    tmp = partial_path(out)
    if tmp.exists():
        print(f"removing {tmp}: the partial output of an interrupted run", file=log)
        _remove(tmp)
    tmp.mkdir(parents=True)
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if not out.exists():
        _write_marker(tmp, what)
        os.replace(tmp, out)  # one rename: OUT appears finished or not at all
        return
    (out / MARKER).unlink(missing_ok=True)  # from here until the end OUT is not complete
    for entry in sorted(tmp.iterdir()):
        target = out / entry.name
        if target.exists() or target.is_symlink():
            _remove(target)
        os.replace(entry, target)
    tmp.rmdir()
    _write_marker(out, what)


def staged_output(name: str):
    """Decorate a generator `fn(output_dir, ...) -> dict` so it writes through `staged_dir`.

    The marker records `name` and every argument (defaults included), so it is the same for the same
    settings; paths under the staging folder in the returned dict are given as their final paths.
    """
    def wrap(fn):
        signature = inspect.signature(fn)

        @functools.wraps(fn)
        def run(output_dir, *args, **kwargs):
            bound = signature.bind(output_dir, *args, **kwargs)
            bound.apply_defaults()
            settings = " ".join(f"{k}={v}" for k, v in list(bound.arguments.items())[1:])
            final = Path(output_dir)
            with staged_dir(final, f"{name} {settings}".strip()) as tmp:
                result = fn(tmp, *args, **kwargs)
            return _relocate(result, tmp, final)

        return run

    return wrap


def _relocate(value, old: Path, new: Path):
    if isinstance(value, Path) and (value == old or old in value.parents):
        return new / value.relative_to(old)
    if isinstance(value, dict):
        return {k: _relocate(v, old, new) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_relocate(v, old, new) for v in value)
    return value
