"""An interrupted `make demo` (or generator, or training run) never resumes on a half-written output.

The demo's data steps are really run (scripts/demo.sh --steps ...) in a scratch copy of the repo's
scripts, killed with SIGKILL while they write, run again, and compared byte for byte with an
uninterrupted run.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from llava.staged_dir import MARKER, is_complete, partial_path, staged_dir, staged_output
from llava.train.train import last_checkpoint

REPO = Path(__file__).resolve().parents[1]
DATA_OUTPUTS = ["playground/data/scene_captions", "playground/data/sample_task", "playground/data/sample_task_llava"]


def tree_bytes(root: Path, scratch: Path | None = None) -> dict[str, bytes]:
    """Every file's bytes under root; the scratch repo's own path (preprocessing's report.json records
    its absolute --image-folder) replaced by a placeholder."""
    files = {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}
    if scratch is not None:
        files = {k: v.replace(str(scratch).encode(), b"<repo>") for k, v in files.items()}
    return files


# --- llava.staged_dir ------------------------------------------------------------------------------


def test_a_failed_build_leaves_nothing_and_a_finished_one_is_marked(tmp_path):
    out = tmp_path / "out"
    with pytest.raises(RuntimeError):
        with staged_dir(out, "gen") as tmp:
            (tmp / "a.txt").write_text("half")
            raise RuntimeError("killed")
    assert not out.exists() and not partial_path(out).exists()
    with staged_dir(out, "gen seed=1") as tmp:
        (tmp / "a.txt").write_text("whole")
    assert is_complete(out) and (out / MARKER).read_text() == "gen seed=1\n"
    assert (out / "a.txt").read_text() == "whole"


def test_a_killed_builds_partial_folder_is_removed_with_a_message(tmp_path, capsys):
    out = tmp_path / "out"
    partial_path(out).mkdir()
    (partial_path(out) / "stale.txt").write_text("from a killed run")
    with staged_dir(out, "gen", log=sys.stdout) as tmp:
        (tmp / "a.txt").write_text("x")
    assert "partial output of an interrupted run" in capsys.readouterr().out
    assert sorted(p.name for p in out.iterdir()) == [MARKER, "a.txt"]


def test_rebuilding_into_an_existing_folder_keeps_the_users_other_files(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "mine.txt").write_text("the user's")
    (out / "a.txt").write_text("old")
    with staged_dir(out, "gen") as tmp:
        assert not is_complete(out)
        (tmp / "a.txt").write_text("new")
    assert (out / "mine.txt").read_text() == "the user's" and (out / "a.txt").read_text() == "new"
    assert is_complete(out)


@pytest.mark.bad_input
def test_an_output_that_is_a_file_is_refused(tmp_path):
    (tmp_path / "out").write_text("a file")
    with pytest.raises(SystemExit, match="not a folder"):
        with staged_dir(tmp_path / "out", "gen"):
            pass
    assert (tmp_path / "out").read_text() == "a file"


def test_staged_output_records_every_setting_and_returns_final_paths(tmp_path):
    @staged_output("my.gen")
    def make(output_dir, n: int = 2, seed: int = 0):
        (Path(output_dir) / "f.txt").write_text(str(n * seed))
        return {"output_dir": Path(output_dir), "file": Path(output_dir) / "f.txt", "n": n}

    r = make(tmp_path / "o", 3)
    assert r == {"output_dir": tmp_path / "o", "file": tmp_path / "o" / "f.txt", "n": 3}
    assert (tmp_path / "o" / MARKER).read_text() == "my.gen n=3 seed=0\n"


# --- training: resume from the last complete checkpoint ----------------------------------------------


def test_resume_skips_a_checkpoint_cut_off_while_saving(tmp_path):
    for step, whole in ((50, True), (100, True), (150, False)):
        d = tmp_path / f"checkpoint-{step}"
        d.mkdir()
        (d / "adapter_model.safetensors").write_bytes(b"x")
        if whole:
            (d / "trainer_state.json").write_text("{}")
    (tmp_path / "checkpoint-notanumber").mkdir()
    assert last_checkpoint(str(tmp_path)) == str(tmp_path / "checkpoint-100")
    assert last_checkpoint(str(tmp_path / "checkpoint-150")) is None


# --- the demo's data steps, killed while they write --------------------------------------------------


def scratch_repo(root: Path) -> Path:
    """The demo's scripts in a folder of their own, so its playground/data is the test's."""
    shutil.copytree(REPO / "scripts", root / "scripts", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / "inference.sh", root)
    return root


def demo_env() -> dict:
    return {**os.environ, "PYTHON": sys.executable,
            "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}


def run_demo(root: Path, steps: str) -> str:
    p = subprocess.run(["bash", "scripts/demo.sh", "--steps", steps], cwd=root, env=demo_env(),
                       capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-2000:]
    assert "Traceback" not in p.stderr, p.stderr[-2000:]
    return p.stdout + p.stderr


def kill_while_writing(root: Path, steps: str, partial: Path, min_files: int) -> None:
    """Start the demo's steps and SIGKILL its whole process group once `partial` holds min_files files."""
    p = subprocess.Popen(["bash", "scripts/demo.sh", "--steps", steps], cwd=root, env=demo_env(),
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 300
    try:
        while time.monotonic() < deadline and p.poll() is None:
            images = partial / "images"
            if images.is_dir() and sum(1 for _ in images.iterdir()) >= min_files:
                break
            time.sleep(0.005)
        assert p.poll() is None, "the step finished before it could be interrupted"
    finally:
        os.killpg(p.pid, signal.SIGKILL)
        p.wait()


@pytest.mark.slow
def test_demo_data_steps_killed_mid_write_are_rebuilt_byte_identical(tmp_path):
    clean = scratch_repo(tmp_path / "clean")
    run_demo(clean, "2,6,7")
    expected = {out: tree_bytes(clean / out, clean) for out in DATA_OUTPUTS}
    assert is_complete(clean / "playground/data/sample_task")

    hit = scratch_repo(tmp_path / "killed")
    data = hit / "playground/data"
    kill_while_writing(hit, "2", partial_path(data / "scene_captions"), 300)
    kill_while_writing(hit, "6", partial_path(data / "sample_task"), 300)
    assert partial_path(data / "sample_task").exists() and not (data / "sample_task").exists()
    # What the demo of before this fix left when killed: a folder with train.csv and some images,
    # that its "exists" check took for finished.
    legacy = data / "sample_task"
    (legacy / "images").mkdir(parents=True)
    (legacy / "train.csv").write_bytes((clean / "playground/data/sample_task/train.csv").read_bytes()[:5000])
    log = run_demo(hit, "2,6,7")
    assert "partial output of an interrupted run" in log  # the killed scene captions' staging folder
    assert f"{Path('playground/data/sample_task')} is incomplete" in log
    for out in DATA_OUTPUTS:
        got = tree_bytes(hit / out, hit)
        assert sorted(got) == sorted(expected[out]), out
        assert got == expected[out], out
    assert not list(data.glob(".*.partial"))

    # A complete output is kept: the second run skips both generators.
    again = run_demo(hit, "2,6")
    assert again.count("(exists)") == 2


@pytest.mark.slow
def test_the_tiny_model_builder_killed_mid_write_rebuilds_the_same_bytes(tmp_path):
    def build(out: Path, kill_when_partial: bool = False):
        cmd = [sys.executable, "-m", "llava.demo.models", "--preset", "tiny", "--output-dir", str(out)]
        p = subprocess.Popen(cmd, env=demo_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                             start_new_session=True)
        if kill_when_partial:  # any of its staged folders (tower, LLM, model) being written
            while p.poll() is None and not any(f.is_file() for d in out.parent.glob(".*.partial")
                                               for f in d.rglob("*")):
                time.sleep(0.005)
            assert p.poll() is None, "the build finished before it could be interrupted"
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()
            return None
        _, err = p.communicate(timeout=600)
        assert p.returncode == 0, err.decode()[-2000:]
        return err.decode()

    build(tmp_path / "a" / "tiny")
    build(tmp_path / "b" / "tiny", kill_when_partial=True)
    assert not (tmp_path / "b" / "tiny").exists() or not is_complete(tmp_path / "b" / "tiny")
    log = build(tmp_path / "b" / "tiny")
    assert "partial output of an interrupted run" in log
    for sub in ("tiny", "tiny-parts"):
        assert tree_bytes(tmp_path / "b" / sub, tmp_path / "b") == tree_bytes(tmp_path / "a" / sub, tmp_path / "a"), sub
