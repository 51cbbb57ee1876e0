"""Task-data preprocessing: formats, columns, answers, multiple choice, split, problems, exit codes."""

from __future__ import annotations

import csv
import importlib.util
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image, ImageFile

from llava.constants import MULTIPLE_CHOICE_PROMPT, SHORT_ANSWER_PROMPT
from llava.data.images import check_images
from llava.data.outputs import split_images
from llava.data.preprocess import PreprocessConfig, preprocess
from llava.data.tables import TableError
from llava.demo.vqa_task import make_sample_task

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "task_data_preprocessing.py"
DATA_FILES = ["train.json", "val.json", "val_questions.jsonl", "val_answers.jsonl"]


def load_script():
    spec = importlib.util.spec_from_file_location("task_data_preprocessing", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def make_images(folder: Path, names, size=(12, 8)) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for i, name in enumerate(names):
        Image.new("RGB", size, (10 * i % 256, 100, 200)).save(folder / name)


def write_table(path: Path, records: list[dict]) -> Path:
    """Write records in the format the suffix names (lists stay lists where the format has them)."""
    fmt = path.suffix
    if fmt in (".csv", ".tsv"):
        columns = list(dict.fromkeys(k for r in records for k in r))
        with open(path, "w", newline="", encoding="utf-8") as f:
            w = csv.DictWriter(f, columns, delimiter="\t" if fmt == ".tsv" else ",", lineterminator="\n")
            w.writeheader()
            w.writerows(records)
    elif fmt == ".json":
        path.write_text(json.dumps(records, indent=2), encoding="utf-8")
    elif fmt == ".jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    elif fmt == ".parquet":
        pq.write_table(pa.Table.from_pylist(records), path)
    return path


def run(tmp_path: Path, input_path: Path, **kw):
    cfg = PreprocessConfig(input=str(input_path), image_folder=str(tmp_path / "img"),
                           output_dir=str(tmp_path / "out"), progress=False, **kw)
    return preprocess(cfg)


def outputs(tmp_path: Path) -> dict:
    out = tmp_path / "out"
    data = {"train": json.loads((out / "train.json").read_text()), "val": json.loads((out / "val.json").read_text())}
    for name in ("val_questions", "val_answers"):
        data[name] = [json.loads(line) for line in (out / f"{name}.jsonl").read_text().splitlines()]
    return data


def problems(result) -> list[tuple]:
    """(line or row, reason) of every problem, in report order."""
    return [(p.get("line", p.get("row")), p["reason"]) for p in result.report["problems"]]


# Four images, seven questions; q2 has three answers in repeated rows ("2" wins the vote).
ROWS = [
    {"image": "a.png", "question": "What color?", "question_id": "q1", "answer": "red", "category": "color"},
    {"image": "a.png", "question": "How many?", "question_id": "q2", "answer": "two", "category": "count"},
    {"image": "a.png", "question": "How many?", "question_id": "q2", "answer": "2", "category": "count"},
    {"image": "a.png", "question": "How many?", "question_id": "q2", "answer": "2", "category": "count"},
    {"image": "b.png", "question": "Is it round?", "question_id": "q3", "answer": "yes", "category": "yes_no"},
    {"image": "c.png", "question": "What shape?", "question_id": "q4", "answer": "square", "category": "shape"},
    {"image": "c.png", "question": "Left or right?", "question_id": "q5", "answer": "left", "category": "position"},
    {"image": "d.png", "question": "What color?", "question_id": "q6", "answer": "gray", "category": "color"},
    {"image": "d.png", "question": "What color?", "question_id": "q6", "answer": "grey", "category": "color"},
    {"image": "sub/e.png", "question": "What?", "question_id": "q7", "answer": "cat", "category": "other"},
]


@pytest.fixture
def images(tmp_path):
    make_images(tmp_path / "img", ["a.png", "b.png", "c.png", "d.png"])
    make_images(tmp_path / "img" / "sub", ["e.png"])
    return tmp_path / "img"


@pytest.mark.parametrize("fmt", [".tsv", ".json", ".jsonl", ".parquet"])
def test_every_format_gives_the_csv_outputs(tmp_path, images, fmt):
    ref = run(tmp_path, write_table(tmp_path / "t.csv", ROWS), val_fraction=0.4, seed=1)
    ref_bytes = {n: (tmp_path / "out" / n).read_bytes() for n in DATA_FILES}
    result = run(tmp_path, write_table(tmp_path / f"t{fmt}", ROWS), val_fraction=0.4, seed=1)
    assert result.exit_code == 0 and result.report["format"] == fmt[1:]
    assert {n: (tmp_path / "out" / n).read_bytes() for n in DATA_FILES} == ref_bytes
    for key in ("rows_read", "rows_used", "questions", "images", "columns"):
        assert result.report[key] == ref.report[key]
    assert ref.report["rows_read"] == 10 and ref.report["questions"]["total"] == 7


def test_outputs_have_the_llava_shapes_and_majority_target(tmp_path, images):
    result = run(tmp_path, write_table(tmp_path / "t.csv", ROWS), val_fraction=0.0)
    assert result.exit_code == 0 and result.report["problems"] == []
    data = outputs(tmp_path)
    assert data["train"][0] == {"id": "q1", "image": "a.png", "conversations": [
        {"from": "human", "value": "<image>\nWhat color?"}, {"from": "gpt", "value": "red"}]}
    targets = {r["id"]: r["conversations"][1]["value"] for r in data["train"]}
    assert targets == {"q1": "red", "q2": "2", "q3": "yes", "q4": "square", "q5": "left", "q6": "gray", "q7": "cat"}
    assert data["train"][-1]["image"] == "sub/e.png"
    assert data["val"] == data["val_questions"] == data["val_answers"] == []
    assert result.report["rows_used"] == 10 and result.report["images"]["train"] == 5


def test_val_files_keep_all_answers_in_order(tmp_path, images):
    run(tmp_path, write_table(tmp_path / "t.csv", ROWS), val_fraction=1.0)
    data = outputs(tmp_path)
    assert data["train"] == []
    answers = {a["question_id"]: a for a in data["val_answers"]}
    assert answers["q2"] == {"question_id": "q2", "answers": ["two", "2", "2"], "category": "count"}
    assert answers["q6"]["answers"] == ["gray", "grey"]
    q = {x["question_id"]: x for x in data["val_questions"]}["q2"]
    assert q == {"question_id": "q2", "image": "a.png", "text": "How many?", "category": "count"}
    assert [r["id"] for r in data["val"]] == [x["question_id"] for x in data["val_questions"]]
    assert len(data["val"]) == 7


def test_column_remapping_gives_the_same_outputs(tmp_path, images):
    run(tmp_path, write_table(tmp_path / "t.csv", ROWS), val_fraction=0.4)
    ref = {n: (tmp_path / "out" / n).read_bytes() for n in DATA_FILES}
    names = {"image": "img", "question": "q", "question_id": "qid", "answer": "a", "category": "cat"}
    renamed = [{names[k]: v for k, v in r.items()} for r in ROWS]
    result = run(tmp_path, write_table(tmp_path / "r.csv", renamed), val_fraction=0.4, image_column="img",
                 question_column="q", answer_column="a", id_column="qid", category_column="cat")
    assert {n: (tmp_path / "out" / n).read_bytes() for n in DATA_FILES} == ref
    assert result.report["columns"] == {"image": "img", "image_template": None, "question": "q", "answer": "a",
                                        "id": "qid", "category": "cat", "options": None}


def test_image_template_pads_integer_ids_and_keeps_plain_strings(tmp_path):
    make_images(tmp_path / "img", ["COCO_000000000042.jpg", "COCO_000000000007.jpg", "0042-x.png"])
    rows = [{"image_id": "42", "question": "Q?", "question_id": "1", "answer": "a"},
            {"image_id": "7", "question": "Q?", "question_id": "2", "answer": "b"}]
    run(tmp_path, write_table(tmp_path / "t.csv", rows), val_fraction=0, image_template="COCO_{image_id:012d}.jpg")
    assert [r["image"] for r in outputs(tmp_path)["train"]] == ["COCO_000000000042.jpg", "COCO_000000000007.jpg"]
    # No format spec: the value is used as written, leading zeros included.
    rows = [{"image_id": "0042", "kind": "x", "question": "Q?", "question_id": "1", "answer": "a"}]
    run(tmp_path, write_table(tmp_path / "u.csv", rows), val_fraction=0, image_template="{image_id}-{kind}.png")
    assert outputs(tmp_path)["train"][0]["image"] == "0042-x.png"
    # JSON integers work too, and a non-integer under :d is a bad row naming the value.
    rows = [{"image_id": 42, "question": "Q?", "question_id": "1", "answer": "a"},
            {"image_id": "abc", "question": "Q?", "question_id": "2", "answer": "a"}]
    result = run(tmp_path, write_table(tmp_path / "t.jsonl", rows), val_fraction=0,
                 image_template="COCO_{image_id:012d}.jpg")
    assert problems(result) == [(2, "bad_image_template")]
    assert "image_id='abc'" in result.report["problems"][0]["message"]


def test_missing_columns_are_named_with_the_available_ones(tmp_path, images):
    rows = [{"image_id": "1", "question": "Q?", "question_id": "1", "answer": "a"}]
    path = write_table(tmp_path / "t.csv", rows)
    with pytest.raises(TableError) as err:
        run(tmp_path, path)
    msg = str(err.value)
    assert "column 'image' (--image-column) not found in the header" in msg
    assert "available columns: image_id, question, question_id, answer" in msg and "--image-template" in msg
    with pytest.raises(TableError, match=r"column 'img_no' \(named in --image-template"):
        run(tmp_path, path, image_template="{img_no}.png")
    with pytest.raises(TableError, match=r"column 'label' \(--answer-column\) not found in the records"):
        run(tmp_path, write_table(tmp_path / "t.jsonl", rows), answer_column="label", image_template="{image_id}")
    with pytest.raises(TableError, match=r"column 'cat' \(--category-column\)"):
        run(tmp_path, path, category_column="cat", image_template="{image_id}")


def test_answers_from_list_column_and_separator(tmp_path, images):
    rows = [{"image": "a.png", "question": "Q1?", "question_id": "x1", "answer": ["two", "2", "2"]},
            {"image": "b.png", "question": "Q2?", "question_id": "x2", "answer": ["no", "yes"]}]
    run(tmp_path, write_table(tmp_path / "t.jsonl", rows), val_fraction=1.0)
    answers = [(a["answers"]) for a in outputs(tmp_path)["val_answers"]]
    targets = [r["conversations"][1]["value"] for r in outputs(tmp_path)["val"]]
    assert answers == [["two", "2", "2"], ["no", "yes"]] and targets == ["2", "no"]  # tie: first seen
    csv_rows = [{**r, "answer": "|".join(r["answer"])} for r in rows]
    run(tmp_path, write_table(tmp_path / "t.csv", csv_rows), val_fraction=1.0, answer_separator="|")
    assert [a["answers"] for a in outputs(tmp_path)["val_answers"]] == answers
    run(tmp_path, write_table(tmp_path / "t.parquet", rows), val_fraction=1.0)
    assert [a["answers"] for a in outputs(tmp_path)["val_answers"]] == answers


def test_repeated_rows_add_to_list_answers(tmp_path, images):
    rows = [{"image": "a.png", "question": "Q?", "question_id": "x", "answer": ["b"]},
            {"image": "a.png", "question": "Q?", "question_id": "x", "answer": ["a", "a"]}]
    run(tmp_path, write_table(tmp_path / "t.jsonl", rows), val_fraction=1.0)
    assert outputs(tmp_path)["val_answers"][0]["answers"] == ["b", "a", "a"]
    assert outputs(tmp_path)["val"][0]["conversations"][1]["value"] == "a"


MC_ROWS = [
    {"image": "a.png", "question": "Which animal?", "question_id": "m1", "options": ["cat", "dog", "cow"],
     "answer": "dog"},
    {"image": "b.png", "question": "Which colour?", "question_id": "m2", "options": ["red", "blue"], "answer": "a"},
    {"image": "c.png", "question": "Which?", "question_id": "m3", "options": ["x", "y"], "answer": "z"},
    {"image": "d.png", "question": "Open one?", "question_id": "m4", "options": [], "answer": "free"},
]


def test_multiple_choice_prompt_letters_and_bad_answer(tmp_path, images):
    result = run(tmp_path, write_table(tmp_path / "t.jsonl", MC_ROWS), val_fraction=1.0,
                 options_column="options", prompt_suffix=SHORT_ANSWER_PROMPT)
    data = outputs(tmp_path)
    assert data["val_questions"][0]["text"] == f"Which animal?\nA. cat\nB. dog\nC. cow\n{MULTIPLE_CHOICE_PROMPT}"
    assert data["val"][0]["conversations"] == [
        {"from": "human", "value": f"<image>\nWhich animal?\nA. cat\nB. dog\nC. cow\n{MULTIPLE_CHOICE_PROMPT}"},
        {"from": "gpt", "value": "B"}]
    assert data["val_answers"][0] == {"question_id": "m1", "answers": ["B"], "category": None,
                                      "choices": ["cat", "dog", "cow"], "answer_letter": "B"}
    assert data["val_answers"][1]["answer_letter"] == "A"  # given as a lower-case letter
    # No options on a row: an open question, with the prompt suffix.
    assert data["val_questions"][2]["text"] == f"Open one?\n{SHORT_ANSWER_PROMPT}"
    assert problems(result) == [(3, "answer_not_an_option")]
    assert "answer 'z' is neither an option letter (A-B) nor one of the options" in \
        result.report["problems"][0]["message"]


def test_multiple_choice_from_separated_string_and_option_columns(tmp_path, images):
    rows = [{"image": "a.png", "question": "Which?", "question_id": "m1", "options": "cat|dog|cow", "answer": "C"}]
    run(tmp_path, write_table(tmp_path / "t.csv", rows), val_fraction=1.0, options_column="options")
    assert outputs(tmp_path)["val_answers"][0]["choices"] == ["cat", "dog", "cow"]
    rows = [{"image": "a.png", "question": "Which?", "question_id": "m1", "A": "cat", "B": "Dog", "C": "", "D": "",
             "answer": "dog"},
            {"image": "b.png", "question": "Which?", "question_id": "m2", "A": "x", "B": "", "C": "z", "D": "",
             "answer": "A"}]
    result = run(tmp_path, write_table(tmp_path / "t.tsv", rows), val_fraction=1.0, options_column="A,B,C,D")
    first = outputs(tmp_path)["val_answers"][0]
    assert first["choices"] == ["cat", "Dog"] and first["answer_letter"] == "B"  # case-insensitive text match
    assert problems(result) == [(3, "bad_options")]


def test_prompt_suffix_and_short_answer_flag(tmp_path, images):
    run(tmp_path, write_table(tmp_path / "t.csv", ROWS[:1]), val_fraction=1.0, prompt_suffix="Be brief.")
    assert outputs(tmp_path)["val_questions"][0]["text"] == "What color?\nBe brief."
    script = load_script()
    rc = script.main(["--input", str(tmp_path / "t.csv"), "--image-folder", str(images), "--output-dir",
                      str(tmp_path / "out"), "--short-answer", "--val-fraction", "0", "--no-progress"])
    assert rc == 0
    assert outputs(tmp_path)["train"][0]["conversations"][0]["value"] == f"<image>\nWhat color?\n{SHORT_ANSWER_PROMPT}"


def test_split_is_grouped_by_image_exact_and_seeded(tmp_path):
    names = [f"{i:02d}.png" for i in range(20)]
    make_images(tmp_path / "img", names)
    rows = [{"image": n, "question": f"Q{j}?", "question_id": f"{n}-{j}", "answer": "a"} for n in names
            for j in range(3)]
    path = write_table(tmp_path / "t.csv", rows)

    def val_images(seed):
        result = run(tmp_path, path, val_fraction=0.25, seed=seed)
        data = outputs(tmp_path)
        train = {r["image"] for r in data["train"]}
        val = {q["image"] for q in data["val_questions"]}
        assert not train & val and len(train | val) == 20
        assert len(data["val_questions"]) == 3 * len(val)
        assert result.report["images"]["val"] == len(val)
        return val

    first = val_images(0)
    assert len(first) == 5 and val_images(0) == first
    assert val_images(1) != first
    assert first == split_images(names, 0.25, 0)
    # The split does not depend on row order.
    write_table(path, list(reversed(rows)))
    assert val_images(0) == first


def test_split_edges():
    assert split_images(["a", "b", "c"], 0.0, 0) == set()
    assert split_images(["a", "b", "c"], 1.0, 0) == {"a", "b", "c"}
    assert len(split_images(["a", "b", "c"], 0.01, 0)) == 1  # at least one held out
    assert len(split_images(["a", "b", "c"], 0.99, 0)) == 2  # at least one left to train on
    assert len(split_images([str(i) for i in range(10)], 0.25, 0)) == 3  # 2.5 rounds half up


def test_turns_per_image_groups_questions_into_conversations(tmp_path, images):
    rows = [{"image": "a.png", "question": f"Q{i}?", "question_id": f"q{i}", "answer": f"a{i}"} for i in range(5)]
    rows.append({"image": "b.png", "question": "B?", "question_id": "b", "answer": "yes"})
    result = run(tmp_path, write_table(tmp_path / "t.csv", rows), val_fraction=0, turns_per_image=2)
    train = outputs(tmp_path)["train"]
    assert [r["id"] for r in train] == ["q0", "q2", "q4", "b"]
    assert [len(r["conversations"]) for r in train] == [4, 4, 2, 2]
    assert train[0]["conversations"] == [
        {"from": "human", "value": "<image>\nQ0?"}, {"from": "gpt", "value": "a0"},
        {"from": "human", "value": "Q1?"}, {"from": "gpt", "value": "a1"}]
    assert train[1]["conversations"][0]["value"] == "<image>\nQ2?"
    assert result.report["train_conversations"] == 4 and result.report["questions"]["train"] == 6


def bad_images(folder: Path) -> None:
    make_images(folder, ["good.png"])
    buf = io.BytesIO()
    Image.effect_noise((64, 64), 40).convert("RGB").save(buf, "JPEG", quality=90)
    jpeg = buf.getvalue()
    (folder / "truncated.jpg").write_bytes(jpeg[: len(jpeg) // 2])
    buf = io.BytesIO()
    Image.effect_noise((64, 64), 40).convert("RGB").save(buf, "PNG")
    png = bytearray(buf.getvalue())
    png[200:216] = bytes(b ^ 0xFF for b in png[200:216])  # damage the compressed pixel data, keep the header
    (folder / "corrupt.png").write_bytes(bytes(png))
    (folder / "empty.jpg").write_bytes(b"")
    (folder / "notes.jpg").write_text("this is not an image\n")
    (folder / "adir.png").mkdir()


def test_image_problems_are_reported_per_row_and_the_rest_written(tmp_path):
    bad_images(tmp_path / "img")
    (tmp_path / "secret.png").write_bytes(b"x")
    names = ["good.png", "truncated.jpg", "corrupt.png", "empty.jpg", "notes.jpg", "missing.png", "adir.png",
             "../secret.png", "/etc/passwd", "good.png"]
    rows = [{"image": n, "question": "Q?", "question_id": f"q{i}", "answer": "a"} for i, n in enumerate(names)]
    result = run(tmp_path, write_table(tmp_path / "t.csv", rows), val_fraction=0)
    assert result.exit_code == 0
    assert problems(result) == [
        (3, "image_truncated"), (4, "image_corrupt"), (5, "image_empty_file"), (6, "image_not_an_image"),
        (7, "image_missing"), (8, "image_not_a_file"), (9, "image_path_outside_folder"),
        (10, "image_path_outside_folder")]
    messages = [p["message"] for p in result.report["problems"]]
    assert messages[0].startswith("image 'truncated.jpg': truncated file")
    assert messages[4] == "image 'missing.png': no such file"
    assert [r["id"] for r in outputs(tmp_path)["train"]] == ["q0", "q9"]
    assert result.report["images"]["skipped"] == {"total": 6, "by_reason": {
        "image_corrupt": 1, "image_empty_file": 1, "image_missing": 1, "image_not_a_file": 1,
        "image_not_an_image": 1, "image_truncated": 1}}
    assert result.report["rows_read"] == result.report["rows_used"] + result.report["rows_skipped"]["total"] == 10


def test_image_checks_ignore_the_global_truncation_switch_and_refuse_huge_images(tmp_path, monkeypatch):
    bad_images(tmp_path)
    make_images(tmp_path, ["big.png"], size=(80, 80))
    make_images(tmp_path, ["huge.png"], size=(120, 120))
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)  # as some training code sets it
    # 80x80 is over the cap given; 120x120 is over twice Pillow's own limit, which raises in Image.open.
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 5000)
    names = ["good.png", "truncated.jpg", "big.png", "huge.png", "good.png"]
    results = check_images(tmp_path, names, workers=3, progress=False, max_pixels=5000)
    assert list(results) == ["good.png", "truncated.jpg", "big.png", "huge.png"]
    assert [r.reason for r in results.values()] == [None, "image_truncated", "image_too_large", "image_too_large"]
    assert (results["good.png"].width, results["good.png"].height) == (12, 8)
    assert ImageFile.LOAD_TRUNCATED_IMAGES is True  # restored


def test_bad_image_skips_every_row_of_its_questions(tmp_path):
    make_images(tmp_path / "img", ["ok.png"])
    rows = [{"image": "gone.png", "question": "Q?", "question_id": "q1", "answer": a} for a in ("x", "y")]
    rows.append({"image": "ok.png", "question": "Q?", "question_id": "q2", "answer": "z"})
    result = run(tmp_path, write_table(tmp_path / "t.csv", rows), val_fraction=0)
    assert problems(result) == [(2, "image_missing"), (3, "image_missing")]
    assert result.report["rows_skipped"]["by_reason"] == {"image_missing": 2}


def test_row_problems_have_line_numbers(tmp_path, images):
    lines = [
        json.dumps({"image": "a.png", "question": "Q1?", "question_id": "q1", "answer": "x"}),
        '{"image": "a.png", "question": "broken", ',
        json.dumps({"image": "a.png", "question": "  ", "question_id": "q2", "answer": "x"}),
        "",
        json.dumps({"image": "a.png", "question": "Q3?", "question_id": "q3", "answer": ""}),
        json.dumps({"image": "b.png", "question": "Q1?", "question_id": "q1", "answer": "y"}),
        json.dumps({"image": "a.png", "question": "Q1?", "question_id": "q1", "answer": "z"}),
        json.dumps({"image": "a.png", "question_id": "q4", "answer": "x"}),
        json.dumps({"image": "a.png", "question": "Q5?", "question_id": "q5", "answer": True}),
        json.dumps(["not", "an", "object"]),
    ]
    (tmp_path / "t.jsonl").write_text("\n".join(lines) + "\n")
    result = run(tmp_path, tmp_path / "t.jsonl", val_fraction=1.0)
    assert problems(result) == [(2, "malformed_json"), (3, "empty_question"), (5, "empty_answer"),
                                (6, "conflicting_question_id"), (8, "missing_field"), (9, "unreadable_value"),
                                (10, "unreadable_record")]
    conflict = result.report["problems"][3]
    assert conflict["first_seen"] == {"file": str(tmp_path / "t.jsonl"), "line": 1}
    assert "first seen at" in conflict["message"] and ":1 with a different image 'b.png' vs 'a.png'" in \
        conflict["message"]
    assert result.report["problems"][4]["field"] == "question"
    assert outputs(tmp_path)["val_answers"] == [{"question_id": "q1", "answers": ["x", "z"], "category": None}]
    assert result.exit_code == 0


def test_csv_line_numbers_count_physical_lines(tmp_path, images):
    text = ('image,question,question_id,answer\n'
            'a.png,"Two\nline question?",q1,x\n'
            'a.png,"Another\ntwo-line one",q0,\n'
            'a.png,Q?,q2\n'
            'a.png,Q?,q3,\n'
            'b.png,Q?,q4,ok\xff\n').encode()
    text = text.replace("ok\xff".encode(), b"ok\xff")  # invalid UTF-8 byte
    (tmp_path / "t.csv").write_bytes(text)
    result = run(tmp_path, tmp_path / "t.csv", val_fraction=1.0)
    # A record is reported at the line where it starts, quoted newlines counted.
    assert problems(result) == [(4, "empty_answer"), (6, "unreadable_record"), (7, "empty_answer"),
                                (8, "undecodable_text")]
    assert result.report["problems"][1]["message"] == "has 3 fields, the header has 4"
    assert result.report["problems"][3]["message"] == "field 'answer' has a byte 0xff that is not UTF-8 text"
    assert outputs(tmp_path)["val_questions"][0]["text"] == "Two\nline question?"


def test_unclosed_quote_is_reported_with_the_lines_it_swallowed(tmp_path, images):
    (tmp_path / "t.csv").write_text('image,question,answer\na.png,Q?,x\na.png,"Oops?,y\nb.png,Q?,z\n')
    result = run(tmp_path, tmp_path / "t.csv", val_fraction=0)
    assert result.report["problems"][0]["message"] == (
        "an unclosed quote at line 3 made lines 3-4 (2 lines) one field (unexpected end of data), so the records "
        "on them are lost; close the quote (a quote inside a quoted field is written twice)")
    assert result.report["rows_read"] == 2 and result.report["rows_used"] == 1
    assert result.report["lines_lost"] == 2 and result.exit_code == 1 and not result.wrote


def test_val_records_follow_val_questions_and_train_groups_by_image(tmp_path, images):
    rows = [{"image": img, "question": f"Q{i}?", "question_id": f"q{i}", "answer": "x"}
            for i, img in enumerate(["a.png", "b.png", "a.png"])]
    path = write_table(tmp_path / "t.csv", rows)
    run(tmp_path, path, val_fraction=1.0)
    data = outputs(tmp_path)
    assert [r["id"] for r in data["val"]] == [q["question_id"] for q in data["val_questions"]] == ["q0", "q1", "q2"]
    run(tmp_path, path, val_fraction=0.0, turns_per_image=2)
    assert [(r["id"], len(r["conversations"])) for r in outputs(tmp_path)["train"]] == [("q0", 4), ("q1", 2)]


def test_json_list_and_parquet_locations(tmp_path, images):
    rows = [{"image": "a.png", "question": "Q?", "question_id": "q1", "answer": "x"},
            {"image": "a.png", "question": "Q?", "question_id": "q2", "answer": ""}]
    result = run(tmp_path, write_table(tmp_path / "t.json", rows))
    assert problems(result) == [(8, "empty_answer")]  # indent=2: the second record starts on line 8
    result = run(tmp_path, write_table(tmp_path / "t.parquet", rows))
    assert problems(result) == [(2, "empty_answer")] and result.report["problems"][0]["row"] == 2
    (tmp_path / "bad.json").write_text('[\n' + json.dumps(rows[0]) + ',\n{"image": oops}\n]\n')
    result = run(tmp_path, tmp_path / "bad.json")
    assert problems(result) == [(3, "malformed_json")] and result.report["lines_lost"] == 2
    assert result.report["problems"][0]["message"].startswith("malformed JSON: Expecting value (column 11); the "
                                                              "file cannot be read past it, so lines 3-4")


def test_image_token_in_question_is_removed_with_a_warning(tmp_path, images):
    rows = [{"image": "a.png", "question": "<image>\nWhat is it?", "question_id": "q1", "answer": "x"}]
    result = run(tmp_path, write_table(tmp_path / "t.csv", rows), val_fraction=1.0)
    assert outputs(tmp_path)["val_questions"][0]["text"] == "What is it?"
    assert result.report["warnings"]["by_reason"] == {"image_token_removed": 1}
    assert result.report["problems"] == []


def test_generated_ids_when_there_is_no_id_column(tmp_path, images):
    rows = [{"image": "a.png", "question": "Q?", "answer": "x"}, {"image": "b.png", "question": "R?", "answer": "y"}]
    result = run(tmp_path, write_table(tmp_path / "t.csv", rows), val_fraction=0)
    assert [r["id"] for r in outputs(tmp_path)["train"]] == ["line2", "line3"]
    assert result.report["columns"]["id"] is None


def script_rc(tmp_path, *args) -> int:
    return load_script().main(["--image-folder", str(tmp_path / "img"), "--output-dir", str(tmp_path / "out"),
                               "--no-progress", *args])


def test_exit_codes(tmp_path, images, capsys):
    good = write_table(tmp_path / "good.csv", ROWS)
    assert script_rc(tmp_path, "--input", str(good)) == 0
    assert "wrote train.json" in capsys.readouterr().out
    one_bad = write_table(tmp_path / "one_bad.csv", ROWS + [{"image": "nope.png", "question": "Q?",
                                                              "question_id": "z", "answer": "a"}])
    assert script_rc(tmp_path, "--input", str(one_bad)) == 0
    before = (tmp_path / "out" / "train.json").read_bytes()
    assert script_rc(tmp_path, "--input", str(one_bad), "--strict", "--val-fraction", "0") == 1
    assert "--strict: 1 problem(s), data files not written" in capsys.readouterr().out
    assert (tmp_path / "out" / "train.json").read_bytes() == before
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["exit_code"] == 1 and report["wrote_data_files"] is False
    all_bad = write_table(tmp_path / "all_bad.csv", [{"image": "nope.png", "question": "Q?", "question_id": "z",
                                                     "answer": "a"}])
    assert script_rc(tmp_path, "--input", str(all_bad)) == 1
    assert "nothing usable remains" in capsys.readouterr().out
    header_only = tmp_path / "header_only.csv"
    header_only.write_text("image,question,answer\n")
    assert script_rc(tmp_path, "--input", str(header_only)) == 1
    assert script_rc(tmp_path, "--input", str(good), "--answer-column", "label") == 2
    assert "column 'label' (--answer-column) not found" in capsys.readouterr().err
    assert script_rc(tmp_path, "--input", str(tmp_path / "absent.csv")) == 2
    assert script_rc(tmp_path, "--input", str(good), "--val-fraction", "1.5") == 2
    assert script_rc(tmp_path, "--input", str(good), "--val-fraction", "1.0") == 0  # all held out is usable


def test_writes_are_atomic(tmp_path, images, monkeypatch):
    path = write_table(tmp_path / "t.csv", ROWS)
    run(tmp_path, path)
    before = {n: (tmp_path / "out" / n).read_bytes() for n in DATA_FILES + ["report.json"]}

    def crash(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError, match="disk full"):
        run(tmp_path, path, val_fraction=0.5)
    assert {n: (tmp_path / "out" / n).read_bytes() for n in DATA_FILES + ["report.json"]} == before
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == sorted(DATA_FILES + ["report.json"])


def test_script_end_to_end_on_the_sample_task(tmp_path):
    task = make_sample_task(tmp_path / "task", num_train_images=40, num_test_images=5, seed=3)
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--input", str(task["train_csv"]), "--image-folder", str(task["images_dir"]),
         "--image-template", task["image_template"], "--output-dir", str(tmp_path / "out"), "--short-answer",
         "--turns-per-image", "3", "--val-fraction", "0.25", "--seed", "0"],
        capture_output=True, text=True, timeout=120, env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    assert proc.returncode == 0, proc.stderr
    assert "skipped 0" in proc.stdout
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["rows_read"] == report["rows_used"] == task["num_train_rows"]
    assert report["questions"] == {"train": 90, "val": 30, "total": 120}
    assert report["images"]["train"] == report["train_conversations"] == 30 and report["images"]["val"] == 10
    data = outputs(tmp_path)
    assert all(len(r["conversations"]) == 6 for r in data["train"])
    assert all(q["text"].endswith(SHORT_ANSWER_PROMPT) for q in data["val_questions"])
