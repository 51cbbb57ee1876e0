"""llava.file_guard: an output that is an input is refused by path, by resolved path and by inode."""

import os

import pytest

from llava.file_guard import refuse_output_dir_over_inputs, refuse_outputs_over_inputs, same_file


def test_same_file_by_path_resolution_and_inode(tmp_path, monkeypatch):
    a = tmp_path / "a.jsonl"
    a.write_text("x\n")
    os.link(a, tmp_path / "hard.jsonl")
    (tmp_path / "sym.jsonl").symlink_to(a)
    monkeypatch.chdir(tmp_path)
    assert same_file("a.jsonl", a)
    assert same_file(tmp_path / "sub" / ".." / "a.jsonl", a)
    assert same_file(tmp_path / "hard.jsonl", a)
    assert same_file(tmp_path / "sym.jsonl", a)
    assert not same_file(tmp_path / "b.jsonl", a)  # does not exist
    (tmp_path / "c.jsonl").write_text("x\n")
    assert not same_file(tmp_path / "c.jsonl", a)  # same content, another file


@pytest.mark.bad_input
def test_output_over_input_names_both_flags(tmp_path):
    a = tmp_path / "q.jsonl"
    a.write_text("x\n")
    os.link(a, tmp_path / "answers.jsonl")
    with pytest.raises(SystemExit) as exc:
        refuse_outputs_over_inputs({"--answers-file": tmp_path / "answers.jsonl"},
                                   {"--question-file": a, "--image-folder": None})
    assert "--answers-file" in str(exc.value.code) and "--question-file" in str(exc.value.code)
    assert a.read_text() == "x\n"
    refuse_outputs_over_inputs({"--answers-file": tmp_path / "new.jsonl"}, {"--question-file": a})


@pytest.mark.bad_input
def test_output_dir_holding_an_input_at_a_written_name(tmp_path):
    (tmp_path / "train.json").write_text("[]")
    with pytest.raises(SystemExit) as exc:
        refuse_output_dir_over_inputs("--output-dir", tmp_path, ["train.json", "val.json"],
                                      {"--input": tmp_path / "train.json"})
    assert "train.json" in str(exc.value.code) and "--output-dir" in str(exc.value.code)
    refuse_output_dir_over_inputs("--output-dir", tmp_path, ["train.json"], {"--input": tmp_path / "raw.csv"})
