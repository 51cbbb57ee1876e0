"""The resumable run the batch commands share (llava/eval/resumable.py): what it does when a run is
resumed, interrupted with Ctrl-C, or ends with errors, without a model (the commands' own tests run it
with one: test_model_vqa, test_tag_rating, test_labeling, test_bad_input_batch)."""

from __future__ import annotations

import argparse
import json

import pytest

from llava.eval.question_file import Question
from llava.eval.resumable import ResumableRun, Words

RATING = Words(items="pairs", already="already rated", results="ratings", verb="rate",
               torn="that pair is rated again")


def flags(tmp_path, **kw) -> argparse.Namespace:
    return argparse.Namespace(**{"model_path": str(tmp_path / "my-model"), "model_base": None, "model_id": None,
                                 "resume": True, **kw})


def questions(*ids) -> list[Question]:
    return [Question(q, "What is this?", None, None, n) for n, q in enumerate(ids, 1)]


def answer(qid: str, model_id: str = "my-model") -> dict:
    return {"question_id": qid, "prompt": "What is this?", "text": "a cat", "answer_id": "x", "model_id": model_id,
            "metadata": {}}


def test_resuming_skips_the_answered_and_says_how_many(tmp_path, capsys):
    path = tmp_path / "answers.jsonl"
    path.write_text(json.dumps(answer("a")) + "\n" + '{"question_id": "b", "te')  # b: a killed write
    with ResumableRun(path, flags(tmp_path), RATING, flag="--output") as batch:
        todo = batch.todo(questions("a", "b", "c"))
    out = capsys.readouterr().out
    assert [q.question_id for q in todo] == ["b", "c"]
    assert f"{path}: cut off a half-written last line (a killed run); that pair is rated again" in out
    assert f"resuming: 1 of 3 pairs already rated in {path}" in out
    assert path.read_text() == json.dumps(answer("a")) + "\n"
    assert not (tmp_path / "answers.errors.jsonl").exists()


def test_nothing_answered_yet_is_no_resuming_line(tmp_path, capsys):
    with ResumableRun(tmp_path / "answers.jsonl", flags(tmp_path)) as batch:
        assert len(batch.todo(questions("a", "b"))) == 2
    assert "resuming" not in capsys.readouterr().out


def test_ctrl_c_keeps_the_answers_writes_the_errors_and_exits_130(tmp_path, capsys):
    path = tmp_path / "answers.jsonl"
    with pytest.raises(SystemExit) as exit_:
        with ResumableRun(path, flags(tmp_path)) as batch:
            batch.errors.append({"line": 3, "question_id": "c", "error": "no such image"})
            batch.store.write([answer("a")])
            raise KeyboardInterrupt
    assert exit_.value.code == 130
    assert (f"interrupted: 1 answers are safe in {path}; run the same command again to answer the rest"
            in capsys.readouterr().out)
    assert [json.loads(line)["question_id"] for line in path.read_text().splitlines()] == ["a"]
    assert json.loads((tmp_path / "answers.errors.jsonl").read_text())["error"] == "no such image"


def test_errors_are_grouped_as_the_command_says_and_a_clean_rerun_removes_them(tmp_path):
    path, errors_file = tmp_path / "labels.answers.jsonl", tmp_path / "labels.errors.jsonl"

    def per_image(errors):
        return [{"image": image} for image in dict.fromkeys(e["question_id"].split("#")[0] for e in errors)]

    with ResumableRun(path, flags(tmp_path), errors_for=tmp_path / "labels.csv", group_errors=per_image) as batch:
        batch.add({"answered": 0, "generated_tokens": 0, "seconds": 0.0,
                   "errors": [{"question_id": "x.png#description", "error": "e"},
                              {"question_id": "x.png#category", "error": "e"}]})
        assert batch.errors_note() == f"; 1 errors in {errors_file}"
    assert [json.loads(line) for line in errors_file.read_text().splitlines()] == [{"image": "x.png"}]
    with ResumableRun(path, flags(tmp_path), errors_for=tmp_path / "labels.csv", group_errors=per_image) as batch:
        assert batch.errors_note() == ""
    assert not errors_file.exists()


def test_another_models_answers_are_refused(tmp_path):
    path = tmp_path / "answers.jsonl"
    path.write_text(json.dumps(answer("a", model_id="other-model")) + "\n")
    with pytest.raises(SystemExit, match="holds answers of other-model, not my-model"):
        ResumableRun(path, flags(tmp_path))
