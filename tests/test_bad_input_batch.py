"""Bad input to batch inference (llava.eval.model_vqa), issue 18: one bad record is an error record and
the run goes on; an output that is an input is refused before any work; every flag is checked before
the model loads.  Everything through `run_main`, which fails on a traceback."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from llava.eval.model_vqa import main as model_vqa

GOOD = {"question_id": "good", "text": "What is this?", "image": "0.png"}


def setup(tmp_path: Path, lines: list[bytes | str | dict]) -> Path:
    """A question file of `lines` (bytes as given, dicts as JSON) after GOOD, and an image folder."""
    images = tmp_path / "images"
    images.mkdir(exist_ok=True)
    Image.fromarray(np.random.RandomState(0).randint(0, 255, (20, 30, 3)).astype("uint8")).save(images / "0.png")
    data = b""
    for line in [GOOD, *lines]:
        if isinstance(line, dict):
            line = json.dumps(line)
        data += (line.encode() if isinstance(line, str) else line) + b"\n"
    path = tmp_path / "questions.jsonl"
    path.write_bytes(data)
    return path


def argv(model, questions: Path, answers: Path, *extra) -> list:
    return ["--model-path", model, "--question-file", questions, "--image-folder", questions.parent / "images",
            "--answers-file", answers, "--max-new-tokens", "2", "--num-workers", "0", "--no-progress", *extra]


def read(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_bytes().decode("utf-8").splitlines() if line.strip()]


# --- class 1: one bad record is an error record, the rest is answered --------------------------------

BAD_LINES = {
    "not-utf8": (b'{"question_id": "latin1", "text": "caf\xe9?"}', "not UTF-8 text (byte 0xe9"),
    "lone-surrogate-in-text": ('{"question_id": "s", "text": "hi \\ud83d there"}', "unpaired surrogate"),
    "lone-surrogate-in-id": ('{"question_id": "\\udc00", "text": "hi"}', "unpaired surrogate"),
    "lone-surrogate-in-key": ('{"question_id": "k", "text": "hi", "\\ud800": 1}', "unpaired surrogate"),
    "json-list": ("[1, 2]", "expected a JSON object, got list"),
    "json-number": ("42", "expected a JSON object, got int"),
    "json-null": ("null", "expected a JSON object, got NoneType"),
    "json-string": ('"just text"', "expected a JSON object, got str"),
    "nan": ('{"question_id": NaN, "text": "x"}', "NaN is not a JSON value"),
    "nested-deep": ("[" * 100_000, "nested too deeply"),
    "id-fraction": ('{"question_id": 1.5, "text": "x"}', "question_id 1.5 is a float"),
    "id-bool": ('{"question_id": true, "text": "x"}', "question_id True is a bool"),
    "id-object": ('{"question_id": {"a": 1}, "text": "x"}', "question_id {'a': 1} is a dict"),
    "id-list": ('{"question_id": [1], "text": "x"}', "question_id [1] is a list"),
    "text-not-string": ('{"question_id": "t", "text": ["x"]}', "has no text"),
    "image-absolute": ({"question_id": "abs", "text": "x", "image": "/etc/passwd"}, "not a path inside the image"),
    "image-dotdot": ({"question_id": "up", "text": "x", "image": "../images/0.png"}, "not a path inside the image"),
    "image-nul": ({"question_id": "nul", "text": "x", "image": "0.png\u0000.jpg"}, "holds a NUL byte"),
    "image-number": ({"question_id": "num", "text": "x", "image": 7}, "image must be a path string"),
    "category-object": ({"question_id": "cat", "text": "x", "category": {"a": 1}}, "category must be a string"),
    "line-over-16MiB": (b'{"question_id": "huge", "text": "' + b"a" * (17 * 2**20) + b'"}', "longer than 16 MiB"),
}


@pytest.mark.bad_input
@pytest.mark.parametrize("kind", list(BAD_LINES))
def test_a_bad_question_line_is_an_error_record_and_the_run_goes_on(tmp_path, tiny_hf, run_main, kind):
    line, message = BAD_LINES[kind]
    questions = setup(tmp_path, [line, {"question_id": "after", "text": "And this?"}])
    answers = tmp_path / "answers.jsonl"
    for _ in range(2):  # a rerun does not die on it either, and asks the good ones nothing again
        result = run_main(model_vqa, argv(tiny_hf, questions, answers), expect_code=0)
    assert sorted(r["question_id"] for r in read(answers)) == ["after", "good"]
    assert "resuming: 2 of 2 questions already answered" in result.out
    errors = read(tmp_path / "answers.errors.jsonl")
    assert [e["line"] for e in errors] == [2], errors
    assert message in errors[0]["error"] and f"{questions}:2:" in errors[0]["error"]


@pytest.mark.bad_input
def test_a_question_text_far_over_the_context_is_refused_without_tokenizing_it(tmp_path, tiny_hf, run_main):
    questions = setup(tmp_path, [{"question_id": "long", "text": "why " * 2_000_000}])
    answers = tmp_path / "answers.jsonl"
    run_main(model_vqa, argv(tiny_hf, questions, answers), expect_code=0)
    assert [r["question_id"] for r in read(answers)] == ["good"]
    [error] = read(tmp_path / "answers.errors.jsonl")
    assert error["question_id"] == "long" and "8000000 characters cannot fit" in error["error"]


@pytest.mark.bad_input
@pytest.mark.parametrize("kind", ["bom", "crlf", "bom-and-crlf"])
def test_a_byte_order_mark_and_crlf_line_ends_are_read(tmp_path, tiny_hf, run_main, kind):
    questions = setup(tmp_path, [{"question_id": "second", "text": "And this?"}])
    data = questions.read_bytes()
    if "crlf" in kind:
        data = data.replace(b"\n", b"\r\n")
    if "bom" in kind:
        data = b"\xef\xbb\xbf" + data
    questions.write_bytes(data)
    answers = tmp_path / "answers.jsonl"
    run_main(model_vqa, argv(tiny_hf, questions, answers), expect_code=0)
    rows = {r["question_id"]: r for r in read(answers)}
    assert set(rows) == {"good", "second"} and rows["good"]["prompt"] == "What is this?"
    assert not (tmp_path / "answers.errors.jsonl").exists()


@pytest.mark.bad_input
def test_an_empty_question_file_is_said_and_loads_no_model(tmp_path, run_main):
    questions = tmp_path / "q.jsonl"
    questions.write_bytes(b"")
    model = broken_model(tmp_path)  # loading it would fail: nothing asked, nothing loaded
    result = run_main(model_vqa, ["--model-path", model, "--question-file", questions,
                                  "--answers-file", tmp_path / "a.jsonl", "--no-progress"], expect_code=0)
    assert "no questions (the file is empty)" in result.out and "answered 0 questions" in result.out


# --- class 1: the answers file being resumed ----------------------------------------------------------


def answered(tmp_path, tiny_hf, run_main, extra_lines: list[dict]) -> tuple[Path, Path]:
    questions = setup(tmp_path, extra_lines)
    answers = tmp_path / "answers.jsonl"
    run_main(model_vqa, argv(tiny_hf, questions, answers), expect_code=0)
    return questions, answers


@pytest.mark.bad_input
@pytest.mark.parametrize("kind", ["not-utf8", "torn-in-the-middle", "lone-surrogate", "json-list"])
def test_a_bad_line_in_the_answers_file_is_reported_kept_and_the_run_goes_on(tmp_path, tiny_hf, run_main, kind):
    questions, answers = answered(tmp_path, tiny_hf, run_main, [{"question_id": "q2", "text": "Two?"}])
    lines = answers.read_bytes().splitlines(keepends=True)
    assert len(lines) == 2
    bad = {"not-utf8": b'{"question_id": "x", "text": "\xff\xfe"}\n',
           "torn-in-the-middle": b'{"question_id": "q9", "prompt": "half a li\n',
           "lone-surrogate": b'{"question_id": "x", "text": "\\udfff"}\n',
           "json-list": b"[1, 2, 3]\n"}[kind]
    # The second answer replaced by the bad line: that question must be asked again.
    answers.write_bytes(lines[0] + bad) if "q2" in lines[1].decode() else answers.write_bytes(lines[1] + bad)
    kept = answers.read_bytes()
    result = run_main(model_vqa, argv(tiny_hf, questions, answers), expect_code=0)
    assert f"{answers}:2:" in result.out and "is not an answer" in result.out
    assert answers.read_bytes().startswith(kept)  # nothing of the file is lost
    ids = [r["question_id"] for r in (json.loads(line) for line in answers.read_bytes().splitlines()[2:])]
    assert ids == ["q2"]
    [error] = read(tmp_path / "answers.errors.jsonl")
    assert error["file"] == str(answers) and error["line"] == 2


@pytest.mark.bad_input
def test_a_last_answer_without_its_newline_is_kept_not_cut_off(tmp_path, tiny_hf, run_main):
    questions, answers = answered(tmp_path, tiny_hf, run_main, [{"question_id": "q2", "text": "Two?"}])
    data = answers.read_bytes().rstrip(b"\n")  # an edited file: the last record whole, its newline gone
    answers.write_bytes(data)
    result = run_main(model_vqa, argv(tiny_hf, questions, answers), expect_code=0)
    assert "half-written" not in result.out and "resuming: 2 of 2" in result.out
    assert answers.read_bytes() == data + b"\n"


@pytest.mark.bad_input
@pytest.mark.parametrize("kind", ["binary", "someone's-notes", "json-array-file"])
def test_a_file_that_is_not_an_answers_file_is_not_resumed_into(tmp_path, run_main, kind):
    questions = setup(tmp_path, [])
    answers = tmp_path / "answers.jsonl"
    data = {"binary": bytes(range(256)) * 4, "someone's-notes": b"meeting at 10\nbring the slides",
            "json-array-file": b'[\n  {"question_id": "a"}\n]\n'}[kind]
    answers.write_bytes(data)
    result = run_main(model_vqa, argv(broken_model(tmp_path), questions, answers))
    assert result.code != 0 and "is not an answers file" in result.err and "--no-resume" in result.err
    assert answers.read_bytes() == data


# --- class 2: an output that is an input --------------------------------------------------------------


def broken_model(tmp_path: Path) -> Path:
    """A model directory whose config.json the loader rejects: a refusal that comes first proves it came
    before loading."""
    model = tmp_path / "broken-model"
    model.mkdir(exist_ok=True)
    (model / "config.json").write_text('{"model_type": "bert"}')
    return model


@pytest.mark.bad_input
@pytest.mark.parametrize("kind", ["same-path", "dot-path", "hard-link", "symlink", "errors-file-is-the-question-file"])
def test_answers_over_the_question_file_are_refused_before_any_work(tmp_path, run_main, monkeypatch, kind):
    questions = setup(tmp_path, [{"question_id": "q2", "text": "Two?"}])
    before = questions.read_bytes()
    monkeypatch.chdir(tmp_path)
    answers = {"same-path": questions, "dot-path": Path("./images/../questions.jsonl"),
               "hard-link": tmp_path / "link.jsonl", "symlink": tmp_path / "sym.jsonl",
               "errors-file-is-the-question-file": tmp_path / "questions.jsonl"}[kind]
    if kind == "hard-link":
        os.link(questions, answers)
    if kind == "symlink":
        answers.symlink_to(questions)
    if kind == "errors-file-is-the-question-file":
        questions = questions.rename(tmp_path / "answers.errors.jsonl")
        answers = tmp_path / "answers.jsonl"
    result = run_main(model_vqa, argv(broken_model(tmp_path), questions, answers, "--no-resume"))
    assert result.code != 0 and "--question-file" in result.err and "same file" in result.err
    assert questions.read_bytes() == before and "cannot load" not in result.text


@pytest.mark.bad_input
@pytest.mark.parametrize("kind", ["directory", "under-a-file", "nul-in-path", "name-too-long"])
def test_an_answers_path_that_cannot_be_a_file_is_refused_before_any_work(tmp_path, run_main, kind):
    questions = setup(tmp_path, [])
    (tmp_path / "a-file").write_text("x")
    answers = {"directory": tmp_path / "images", "under-a-file": tmp_path / "a-file" / "answers.jsonl",
               "nul-in-path": f"{tmp_path}/ans\0wers.jsonl", "name-too-long": tmp_path / ("a" * 300)}[kind]
    result = run_main(model_vqa, argv(broken_model(tmp_path), questions, answers))
    assert result.code != 0 and f"--answers-file {answers}" in result.err, result
    assert {"directory": "is a directory", "under-a-file": "is a file, not a folder", "nul-in-path": "NUL",
            "name-too-long": "too long"}[kind] in result.err
    assert (tmp_path / "a-file").read_text() == "x" and "cannot load" not in result.text


@pytest.mark.bad_input
def test_answers_over_a_file_of_the_model_are_refused(tmp_path, tiny_hf, run_main):
    questions = setup(tmp_path, [])
    config = Path(tiny_hf) / "config.json"
    before = config.read_bytes()
    result = run_main(model_vqa, argv(tiny_hf, questions, config, "--no-resume"))
    assert result.code != 0 and "is a file of the model in --model-path" in result.err
    assert config.read_bytes() == before


@pytest.mark.bad_input
def test_answers_over_an_image_of_the_questions_are_refused(tmp_path, run_main):
    questions = setup(tmp_path, [])
    image = tmp_path / "images" / "0.png"
    before = image.read_bytes()
    result = run_main(model_vqa, argv(broken_model(tmp_path), questions, image, "--no-resume"))
    assert result.code != 0 and "is the image of line 1 (0.png)" in result.err
    assert image.read_bytes() == before


# --- class 3: flags, all checked before the model loads -----------------------------------------------

BAD_FLAGS = {
    "max-new-tokens-0": (["--max-new-tokens", "0"], "--max-new-tokens must be at least 1"),
    "max-new-tokens-negative": (["--max-new-tokens", "-3"], "--max-new-tokens must be at least 1"),
    "batch-size-0": (["--batch-size", "0"], "--batch-size must be at least 1"),
    "num-workers-negative": (["--num-workers", "-1"], "--num-workers must be at least 0"),
    "num-beams-0": (["--num-beams", "0"], "--num-beams must be at least 1"),
    "num-chunks-0": (["--num-chunks", "0"], "--num-chunks must be at least 1"),
    "chunk-idx-out-of-range": (["--num-chunks", "2", "--chunk-idx", "2"], "--chunk-idx must be in [0, 2)"),
    "temperature-negative": (["--temperature", "-0.5"], "--temperature must be a finite number >= 0"),
    "temperature-nan": (["--temperature", "nan"], "--temperature must be a finite number >= 0"),
    "top-p-0": (["--top-p", "0"], "--top-p must be in (0, 1]"),
    "top-p-over-1": (["--top-p", "1.5"], "--top-p must be in (0, 1]"),
    "length-penalty-inf": (["--length-penalty", "inf"], "--length-penalty must be a finite number"),
    "min-over-max-new-tokens": (["--min-new-tokens", "9"], "--min-new-tokens must be between 0 and"),
    "both-quantizations": (["--load-4bit", "--load-8bit"], "choose one of --load-4bit and --load-8bit"),
    "device-unknown": (["--device", "banana"], "--device 'banana': not a device"),
    "conv-mode-unknown": (["--conv-mode", "nosuch"], "unknown conversation template 'nosuch'"),
    "model-id-not-utf8": (["--model-id", "m\udcff"], "--model-id 'm\\udcff': not UTF-8 text"),
    "model-base-missing": (["--model-base", "/no/such/base"], "--model-base /no/such/base: no such model directory"),
}


@pytest.mark.bad_input
@pytest.mark.parametrize("kind", list(BAD_FLAGS))
def test_a_bad_flag_is_refused_before_the_model_loads(tmp_path, run_main, kind):
    flags, message = BAD_FLAGS[kind]
    questions = setup(tmp_path, [])
    answers = tmp_path / "answers.jsonl"
    result = run_main(model_vqa, argv(broken_model(tmp_path), questions, answers, *flags), expect_code=2)
    assert message in result.err and "usage:" in result.err
    assert "cannot load" not in result.text and not answers.exists()


@pytest.mark.bad_input
@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="this machine has a CUDA device")
def test_a_cuda_device_where_there_is_none_is_refused_before_loading(tmp_path, run_main):
    questions = setup(tmp_path, [])
    result = run_main(model_vqa, argv(broken_model(tmp_path), questions, tmp_path / "a.jsonl", "--device", "cuda"),
                      expect_code=2)
    assert "--device cuda: no CUDA device here" in result.err


BAD_PATHS = {
    "question-file-missing": ("--question-file", "missing.jsonl", "no such file"),
    "question-file-a-directory": ("--question-file", "images", "is a directory, not a file"),
    "image-folder-missing": ("--image-folder", "no-images", "no such folder"),
    "image-folder-a-file": ("--image-folder", "questions.jsonl", "is a file, not a folder"),
    "model-path-missing": ("--model-path", "no-such-model", "no such model directory"),
    "model-path-a-file": ("--model-path", "questions.jsonl", "is a file, not a model directory"),
    "model-path-without-config": ("--model-path", "images", "no config.json"),
}


@pytest.mark.bad_input
@pytest.mark.parametrize("kind", list(BAD_PATHS))
def test_a_missing_or_wrong_kind_of_input_is_named_before_any_work(tmp_path, run_main, kind):
    flag, name, message = BAD_PATHS[kind]
    questions = setup(tmp_path, [])
    args = argv(broken_model(tmp_path), questions, tmp_path / "answers.jsonl")
    args[args.index(flag) + 1] = tmp_path / name
    result = run_main(model_vqa, args)
    assert result.code != 0 and f"{flag} {tmp_path / name}: {message}" in result.err, result
    assert "cannot load" not in result.text and not (tmp_path / "answers.jsonl").exists()


@pytest.mark.bad_input
def test_a_model_that_cannot_load_is_a_message_not_a_traceback(tmp_path, run_main):
    questions = setup(tmp_path, [])
    result = run_main(model_vqa, argv(broken_model(tmp_path), questions, tmp_path / "answers.jsonl"))
    assert result.code != 0 and "cannot load --model-path" in result.err and "config.json" in result.err
