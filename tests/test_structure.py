"""The layer contract (.importlinter) and the linter (ruff.toml) hold, so `make test` (CI) enforces both.

`make lint` runs the same two commands; their output, on a failure, says what to fix.
"""

from __future__ import annotations

import ast
import configparser
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent  # the venv's console scripts sit next to its python


def run(tool: str, *args: str) -> subprocess.CompletedProcess:
    # PYTHONPATH: the checkout under test, whatever llava the venv has installed
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run([str(BIN / tool), *args], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=300)


def test_the_layers_point_down():
    proc = run("lint-imports", "--no-cache", "--no-logo")
    assert proc.returncode == 0, f"lint-imports (.importlinter):\n{proc.stdout}\n{proc.stderr}"


def test_ruff_finds_nothing():
    proc = run("ruff", "check", "--no-cache", ".")
    assert proc.returncode == 0, f"ruff check . (ruff.toml):\n{proc.stdout}\n{proc.stderr}"


def test_every_top_level_part_of_llava_is_in_a_layer():
    """A module or package added directly under llava/ is in no layer, so unchecked, until it is listed."""
    config = configparser.ConfigParser()
    config.read(ROOT / ".importlinter")
    listed = {name.strip() for line in config["importlinter:contract:layers"]["layers"].splitlines()
              for name in line.replace("|", ":").split(":") if name.strip()}
    parts = {f"llava.{p.stem}" for p in (ROOT / "llava").glob("*.py") if p.name != "__init__.py"}
    parts |= {f"llava.{p.parent.name}" for p in (ROOT / "llava").glob("*/__init__.py")}
    assert parts == listed, f"in no layer: {sorted(parts - listed)}; listed but gone: {sorted(listed - parts)}"


def test_no_test_module_imports_another():
    """What two test modules share lives in conftest.py (fixtures) or tests/testkit/ (helpers)."""
    found = []
    for path in sorted((ROOT / "tests").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            found += [f"{path.relative_to(ROOT)}:{node.lineno} imports {n}" for n in names
                      if n.split(".")[0].startswith(("test_", "conftest"))]
    assert not found, "\n".join(found)
