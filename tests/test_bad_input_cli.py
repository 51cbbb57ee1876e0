"""llava.serve.cli under bad input: the session goes on with its history, or the command stops with a
one-line message before the model loads.

One real CLI process reads a scripted stdin with every bad line in it (raw bytes, through a pipe) and
each test checks its part of the transcript; the answers after the bad lines must be the answers a
ChatSession gives with the good turns only, so the history is shown to be intact.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from llava.serve.chat import ChatSession
from llava.serve.cli import main
from llava.serve.images import open_image

ROOT = Path(__file__).resolve().parents[1]
Q1, Q2, Q3 = "What is in the picture?", "And what colour is it?", "Is it big?"
HUGE = "word " * 400_000  # 2 MB pasted in one line: over the tiny model's 1,024-token context
LONG = "word " * 1_500  # 1,500 tokens: over the context, but short enough to be tokenized


@pytest.fixture(scope="module")
def image_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("cli") / "noise.png"
    Image.fromarray(np.random.RandomState(0).randint(0, 255, (30, 50, 3)).astype("uint8")).save(path)
    return path


@pytest.fixture(scope="module")
def transcript(tiny_hf, image_file):
    """The CLI's stdout, split at each prompt: turns[i] is what followed the i-th line sent."""
    lines = [
        Q1.encode(),
        b"caf\xe9 ol\xe9?",  # Latin-1, not UTF-8
        HUGE.encode(),
        LONG.encode(),
        b"Describe <image> twice",  # a second image placeholder the one image cannot fill
        Q2.encode(),
        b"\\image " + str(image_file.parent / "nope.png").encode(),
        Q3.encode(),
    ]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT), "TOKENIZERS_PARALLELISM": "false"}
    p = subprocess.run([sys.executable, "-m", "llava.serve.cli", "--model-path", str(tiny_hf), "--image-file",
                        str(image_file), "--temperature", "0", "--max-new-tokens", "8"],
                       input=b"\n".join(lines) + b"\n", capture_output=True, cwd=ROOT, env=env, timeout=600)
    out, err = p.stdout.decode("utf-8", "replace"), p.stderr.decode("utf-8", "replace")
    assert "Traceback (most recent call last)" not in out + err, out[-3000:] + err[-3000:]
    turns = out.split("USER: ")
    assert len(turns) == len(lines) + 2, out[-3000:] + err[-3000:]  # the banner, one per line, and EOF's
    return {"code": p.returncode, "turns": [t.strip() for t in turns[1:]], "err": err}


@pytest.fixture(scope="module")
def reference(tiny_loaded, image_file):
    """Greedy answers with only the good turns in the history."""
    chat = ChatSession(tiny_loaded, image=open_image(str(image_file)), temperature=0, max_new_tokens=8)
    return ["ASSISTANT: " + "".join(chat.ask(q)).strip() for q in (Q1, Q2, Q3)]


@pytest.mark.slow
@pytest.mark.bad_input
def test_a_line_that_is_not_utf8_is_reported_and_the_history_kept(transcript, reference):
    turns = transcript["turns"]
    assert turns[0] == reference[0]
    assert turns[1].startswith("error: that line has a byte 0xe9 that is not UTF-8 text; it was not sent")


@pytest.mark.bad_input
def test_a_huge_pasted_line_is_refused_from_its_length(transcript):
    assert "ASSISTANT: \nerror: the question is 1,999,999 characters, more than the model's context of 1,024 " \
           "tokens can hold" in transcript["turns"][2]


@pytest.mark.bad_input
def test_a_question_over_the_context_is_refused_before_generating(transcript):
    turn = transcript["turns"][3]
    assert "error: the conversation with this question is" in turn and "more than the model's context of 1,024" \
        in turn, turn


@pytest.mark.bad_input
def test_an_image_placeholder_typed_in_is_refused(transcript):
    assert "error: prompt has 2 <image> placeholders but 1 image given" in transcript["turns"][4]


@pytest.mark.bad_input
def test_after_bad_lines_the_answers_follow_the_good_history(transcript, reference):
    """The fifth line sent is the second good question: its answer is the one with Q1 in the history."""
    assert transcript["turns"][5] == reference[1]


@pytest.mark.bad_input
def test_a_missing_image_at_the_prompt_keeps_the_conversation(transcript, reference):
    assert transcript["turns"][6].startswith("error: ") and "nope.png: no such file" in transcript["turns"][6]
    assert transcript["turns"][7] == reference[2]  # Q3 after Q1 and Q2: the old image and history stayed


@pytest.mark.bad_input
def test_end_of_input_leaves_cleanly(transcript):
    assert transcript["turns"][-1] == "bye" and transcript["code"] == 0


def _image_cases(tmp_path: Path) -> dict[str, tuple[Path, str]]:
    (tmp_path / "notes.png").write_text("not an image")
    (tmp_path / "empty.png").write_bytes(b"")
    (tmp_path / "folder.png").mkdir()
    Image.new("1", (9000, 9000)).save(tmp_path / "81mp.png")
    return {
        "missing": (tmp_path / "gone.png", "no such file"),
        "not-an-image": (tmp_path / "notes.png", "cannot read image"),
        "empty": (tmp_path / "empty.png", "empty file"),
        "directory": (tmp_path / "folder.png", "a directory"),
        "81-megapixels": (tmp_path / "81mp.png", "9000x9000 pixels, more than the 40,000,000 allowed"),
    }


@pytest.mark.bad_input
@pytest.mark.parametrize("case", ["missing", "not-an-image", "empty", "directory", "81-megapixels"])
def test_a_bad_image_file_is_refused_before_the_model_loads(run_main, tmp_path, case):
    path, words = _image_cases(tmp_path)[case]
    # A model directory the loader refuses (its flag check passes): had the image been accepted, loading
    # would have said so instead.
    model = tmp_path / "no-model"
    model.mkdir()
    (model / "config.json").write_text("[1, 2]")
    result = run_main(main, ["--model-path", model, "--image-file", path], expect_code=2)
    assert f"error: {path}: " in result.err and words in result.err
    assert "loading" not in result.out


@pytest.mark.bad_input
@pytest.mark.parametrize("case", ["missing-dir", "config-array", "corrupt-weights"])
def test_a_model_that_cannot_load_is_one_line_naming_the_file(run_main, tiny_hf, tmp_path, case):
    model = tmp_path / "model"
    if case != "missing-dir":
        shutil.copytree(tiny_hf, model)
    if case == "config-array":
        (model / "config.json").write_text("[1, 2]")
    if case == "corrupt-weights":
        (model / "model.safetensors").write_bytes(b"\xff" * 64)
    # A missing directory is refused with the other flags (exit 2), before the chat begins to load.
    result = run_main(main, ["--model-path", model], expect_code=2 if case == "missing-dir" else 1)
    named = {"missing-dir": f"--model-path {model}: no such model directory",
             "config-array": f"{model}/config.json: expected a JSON object",
             "corrupt-weights": f"{model}/model.safetensors: not a readable safetensors file"}[case]
    assert named in result.err, result
