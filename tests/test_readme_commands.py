"""Every command of the README's table runs as printed in a new shell (issue 24).

Each runs in a clean environment (`env -i` with only PATH and HOME, as a new terminal has) from the
repository root: the `python ...` commands after the README's one activation line, with `--help`;
the shell scripts without it (they find .venv themselves), with `--help`, and the training scripts
with `--dry-run`.  A README line that cannot run as printed fails here.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
VENV = REPO / ".venv"
ACTIVATE = "source .venv/bin/activate"  # the README's activation line, checked below
CLEAN_PATH = "/usr/local/bin:/usr/bin:/bin"
TRAINING_SCRIPTS = ["finetune_task_lora.sh", "finetune_task_qlora.sh", "finetune_task.sh", "finetune.sh",
                    "pretrain.sh"]

pytestmark = pytest.mark.skipif(not (VENV / "bin" / "python").exists(),
                                reason="no .venv at the repository root (`make test` creates it)")


def readme_commands() -> list[str]:
    """The code spans of the 'command' column of the README's table."""
    rows = [line for line in (REPO / "README.md").read_text().splitlines() if line.startswith("| ")]
    header = [c.strip() for c in rows[0].strip("|").split("|")]
    col = header.index("command")
    spans = []
    for row in rows[1:]:
        cells = re.split(r"(?<!\\)\|", row.strip().strip("|"))
        spans += [s.replace("\\|", "|") for s in re.findall(r"`([^`]+)`", cells[col])]
    return spans


def help_form(command: str) -> tuple[str, bool]:
    """(what to run, whether it needs the activation line) for a README command."""
    words = shlex.split(command)
    if words[0] == "make":
        return f"make -n {shlex.join(words[1:])}", True  # the targets resolve, nothing is built
    if words[0] in ("python", "bash"):
        fixed = 3 if words[1] == "-m" else 2  # python -m MODULE / python SCRIPT / bash SCRIPT
        head = words[:fixed]
        for w in words[fixed:]:  # then a subcommand, if any, up to the first flag or placeholder
            if w.startswith(("-", "[")):
                break
            head.append(w)
        return shlex.join(head + ["--help"]), words[0] == "python"
    if re.fullmatch(r"llava(\.\w+)+\(\.\.\.\)", command):  # a Python API, e.g. load_pretrained_model(...)
        module, name = command[:-5].rsplit(".", 1)
        return f"python -c 'from {module} import {name}; print({name}.__name__)'", True
    raise AssertionError(f"the README's command {command!r} has no check here: add how to run it")


def in_new_shell(command: str, activate: bool, extra_env: dict | None = None) -> subprocess.CompletedProcess:
    script = f"{ACTIVATE} && {command}" if activate else command
    env = {"PATH": CLEAN_PATH, "HOME": os.environ.get("HOME", "/root"), **(extra_env or {})}
    return subprocess.run(["env", "-i", *(f"{k}={v}" for k, v in env.items()), "bash", "-c", script],
                          cwd=REPO, capture_output=True, text=True, timeout=300)


def test_the_readme_gives_the_activation_line():
    assert ACTIVATE in (REPO / "README.md").read_text()


def test_the_readme_table_lists_the_users_commands():
    commands = readme_commands()
    for expected in ("bash scripts/finetune_task_lora.sh", "python scripts/merge_lora_weights.py", "bash inference.sh",
                     "python -m llava.serve.cli"):
        assert any(c.startswith(expected) for c in commands), expected


@pytest.mark.slow
@pytest.mark.parametrize("command", readme_commands())
def test_readme_command_runs_as_printed_in_a_new_shell(command):
    run, activate = help_form(command)
    p = in_new_shell(run, activate)
    assert p.returncode == 0, f"{run}\n{p.stdout[-1500:]}\n{p.stderr[-1500:]}"
    assert "Traceback" not in p.stderr, p.stderr[-1500:]
    if run.startswith("bash "):  # a shell script: it found the project's .venv by itself
        assert f"Python: {VENV}/bin/python" in p.stdout, p.stdout[-1500:]
    elif run.startswith("python") and "--help" in run:
        assert "usage:" in p.stdout, p.stdout[-1500:]


def shell_entry_points() -> list[str]:
    return ["inference.sh"] + sorted(f"scripts/{p.name}" for p in (REPO / "scripts").glob("*.sh")
                                     if not p.name.startswith("_"))


@pytest.mark.slow
@pytest.mark.parametrize("script", shell_entry_points())
def test_every_shell_script_has_help_and_finds_the_venv(script):
    p = in_new_shell(f"bash {script} --help", activate=False)
    assert p.returncode == 0, p.stderr[-1500:]
    first = next(line for line in (REPO / script).read_text().splitlines()[1:] if line.startswith("#"))
    assert first.lstrip("# ").strip() in p.stdout  # its own header comment
    assert f"Python: {VENV}/bin/python" in p.stdout


@pytest.mark.slow
@pytest.mark.parametrize("script", TRAINING_SCRIPTS)
def test_training_scripts_launch_deepspeed_of_the_venv(script):
    p = in_new_shell(f"bash scripts/{script} --dry-run --output_dir /tmp/x", activate=False)
    assert p.returncode == 0, p.stderr[-1500:]
    launch = shlex.split(p.stdout.strip().splitlines()[-1])
    assert launch[:3] == [f"{VENV}/bin/python", "-m", "deepspeed.launcher.runner"], launch
    assert launch[-2:] == ["--output_dir", "/tmp/x"] and "llava/train/train.py" in launch


def test_an_active_environment_or_python_wins_over_the_venv(tmp_path):
    other = tmp_path / "other-env"
    (other / "bin").mkdir(parents=True)
    (other / "bin" / "python").symlink_to(VENV / "bin" / "python")
    p = in_new_shell("bash inference.sh --help", activate=False, extra_env={"VIRTUAL_ENV": str(other)})
    assert f"Python: {other}/bin/python" in p.stdout, p.stdout[-800:]
    p = in_new_shell("bash scripts/demo.sh --help", activate=False,
                     extra_env={"VIRTUAL_ENV": str(other), "PYTHON": sys.executable})
    assert f"Python: {sys.executable}" in p.stdout, p.stdout[-800:]


@pytest.mark.bad_input
def test_a_python_without_torch_gets_told_what_to_do(tmp_path):
    p = in_new_shell("bash scripts/finetune_task_lora.sh", activate=False, extra_env={"PYTHON": "/usr/bin/python3"})
    assert p.returncode == 2
    assert "make install" in p.stderr and "Traceback" not in p.stderr
