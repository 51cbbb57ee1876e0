"""Preprocessing and the table readers under bad input: every damaged record is a per-record error with its
line (never an exception that loses the file), damage that swallows other records fails the run with a
count of the lines lost, names that are not UTF-8 are printed and written, and the output folder is
checked, and kept off the input, before any work."""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from llava.data.tables import open_table

ROOT = Path(__file__).resolve().parents[1]
HEADER = "image,question,question_id,answer\n"


def script_main():
    spec = importlib.util.spec_from_file_location("task_data_preprocessing",
                                                  ROOT / "scripts" / "task_data_preprocessing.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main


@pytest.fixture
def folder(tmp_path):
    (tmp_path / "img").mkdir()
    for name in ("a.png", "b.png"):
        Image.new("RGB", (8, 8), (30, 60, 90)).save(tmp_path / "img" / name)
    return tmp_path


def preprocess(run_main, folder: Path, table: Path, *extra, expect_code=None):
    result = run_main(script_main(), ["--input", table, "--image-folder", folder / "img", "--output-dir",
                                      folder / "out", "--no-progress", "--val-fraction", "0", *extra],
                      expect_code=expect_code)
    report = folder / "out" / "report.json"
    return result, json.loads(report.read_text(encoding="utf-8")) if report.exists() else None


def good_rows(n: int, start: int = 0) -> str:
    return "".join(f"a.png,Question {i}?,q{i},yes\n" for i in range(start, start + n))


# ---- damage that loses other records ------------------------------------------------------------------

@pytest.mark.bad_input
def test_an_unclosed_quote_that_swallows_199_lines_fails_naming_the_count(run_main, folder):
    # Line 3 opens a quote that nothing closes: the csv module reads the 199 lines after it as one field.
    text = HEADER + good_rows(1) + 'a.png,"Unclosed question?,q1,yes\n' + good_rows(198, start=2)
    (folder / "t.csv").write_text(text)
    result, report = preprocess(run_main, folder, folder / "t.csv", expect_code=1)
    assert report["lines_lost"] == 199 and report["rows_read"] == 2 and report["rows_used"] == 1
    assert report["problems"][0]["reason"] == "unclosed_quote" and report["problems"][0]["lost"] == 199
    assert "made lines 3-201 (199 lines) one field" in report["problems"][0]["message"]
    assert "LOST 199 line(s)" in result.out and "data files not written" in result.out
    assert not (folder / "out" / "train.json").exists()


@pytest.mark.bad_input
def test_a_quote_closed_lines_later_loses_the_lines_between(run_main, folder):
    text = HEADER + 'a.png,"Oops?,q0,yes\n' + good_rows(3, start=1) + 'b.png,"Quoted",q9,no\n' + good_rows(2, 10)
    (folder / "t.csv").write_text(text)
    result, report = preprocess(run_main, folder, folder / "t.csv", expect_code=1)
    # The quote opened on line 2 closes at the first quote of line 6: lines 2-6 were read as one field.
    assert [(p["line"], p["reason"], p.get("lost")) for p in report["problems"]] == [(2, "unclosed_quote", 5)]
    assert report["rows_used"] == 2 and report["lines_lost"] == 5  # the two lines after the damage are used


@pytest.mark.bad_input
@pytest.mark.parametrize("fmt", ["csv", "tsv"])
def test_a_field_starting_with_a_quote_is_refused_not_altered(run_main, folder, fmt):
    sep = "," if fmt == "csv" else "\t"
    lines = [sep.join(["image", "question", "question_id", "answer"]),
             sep.join(["a.png", '"What" is it?', "q1", "a ball"]),
             sep.join(["b.png", 'Is it "round"?', "q2", "yes"])]
    (folder / f"t.{fmt}").write_text("\n".join(lines) + "\n")
    result, report = preprocess(run_main, folder, folder / f"t.{fmt}", expect_code=0)
    assert [(p["line"], p["reason"]) for p in report["problems"]] == [(2, "bad_quoting")]
    assert "quote the whole field and write each quote in it twice" in report["problems"][0]["message"]
    train = json.loads((folder / "out" / "train.json").read_text())
    assert [c["conversations"][0]["value"] for c in train] == ['<image>\nIs it "round"?']  # kept as written


@pytest.mark.bad_input
def test_a_json_list_broken_mid_way_keeps_what_came_before_and_counts_the_rest(run_main, folder):
    records = [{"image": "a.png", "question": f"Q{i}?", "question_id": f"q{i}", "answer": "x"} for i in range(3)]
    text = "[\n" + ",\n".join(json.dumps(r) for r in records) + ",\n{\"image\": \"b.png\", oops},\n" + \
        json.dumps(records[0] | {"question_id": "q9"}) + "\n]\n"
    (folder / "t.json").write_text(text)
    result, report = preprocess(run_main, folder, folder / "t.json", expect_code=1)
    assert report["rows_read"] == 4 and report["rows_used"] == 3 and report["lines_lost"] == 3
    assert report["problems"][0]["line"] == 5 and report["problems"][0]["reason"] == "malformed_json"


# ---- file and folder names ----------------------------------------------------------------------------

@pytest.mark.bad_input
def test_an_input_file_name_that_is_not_utf8(run_main, folder):
    table = Path(os.fsdecode(bytes(folder) + b"/t\xe9st.csv"))
    table.write_text(HEADER + good_rows(2) + "b.png,Q?,q5,\n")
    result, report = preprocess(run_main, folder, table, expect_code=0)
    assert report["input"] == f"{folder}/t\\xe9st.csv"
    assert f"{folder}/t\\xe9st.csv:4: empty answer" in result.out


@pytest.mark.bad_input
def test_an_image_name_that_is_not_utf8_is_a_row_problem(run_main, folder):
    Image.new("RGB", (8, 8)).save(os.fsdecode(bytes(folder) + b"/img/caf\xe9.png"))
    (folder / "t.csv").write_bytes((HEADER + good_rows(1)).encode() + b"caf\xe9.png,Q?,q7,yes\n")
    result, report = preprocess(run_main, folder, folder / "t.csv", expect_code=0)
    assert [(p["line"], p["reason"]) for p in report["problems"]] == [(3, "undecodable_text")]
    assert report["problems"][0]["message"] == "field 'image' has a byte 0xe9 that is not UTF-8 text"


@pytest.mark.bad_input
def test_an_image_folder_name_that_is_not_utf8(run_main, folder):
    images = Path(os.fsdecode(bytes(folder) + b"/imag\xe9s"))
    (folder / "img").rename(images)
    (folder / "t.csv").write_text(HEADER + good_rows(1) + "gone.png,Q?,q3,yes\n")
    result = run_main(script_main(), ["--input", folder / "t.csv", "--image-folder", images, "--output-dir",
                                      folder / "out", "--no-progress", "--val-fraction", "0"], expect_code=0)
    report = json.loads((folder / "out" / "report.json").read_text())
    assert report["image_folder"] == f"{folder}/imag\\xe9s" and report["rows_used"] == 1
    assert "image 'gone.png': no such file" in result.out


# ---- the output folder, checked first ---------------------------------------------------------------

@pytest.mark.bad_input
@pytest.mark.parametrize("case", ["a-file", "under-a-file", "not-writable"])
def test_a_bad_output_dir_is_refused_before_reading(run_main, folder, case):
    # An input whose columns are wrong: had the input been read first, the error would be about it.
    (folder / "t.csv").write_text("picture,text\nx.png,hello\n")
    out = folder / "out"
    if case == "a-file":
        out.write_text("notes")
    elif case == "under-a-file":
        (folder / "f").write_text("notes")
        out = folder / "f" / "out"
    elif os.geteuid() != 0:
        out.mkdir()
        out.chmod(0o555)
    else:  # root writes through permissions: a read-only file system it cannot write either
        out = Path("/sys/llava-preprocess-out")
    result = run_main(script_main(), ["--input", folder / "t.csv", "--image-folder", folder / "img",
                                      "--output-dir", out, "--no-progress"], expect_code=2)
    expected = {"a-file": f"--output-dir {out}: a file, not a directory",
                "under-a-file": f"--output-dir {out}: {folder / 'f'} is a file, not a directory",
                "not-writable": f"--output-dir {out}: cannot write there"}[case]
    assert expected in result.err and "column" not in result.err


@pytest.mark.bad_input
def test_a_raw_train_json_in_the_output_dir_is_not_overwritten(run_main, folder):
    out = folder / "out"
    out.mkdir()
    raw = [{"image": "a.png", "question": "Q?", "question_id": "q1", "answer": "x"}]
    (out / "train.json").write_text(json.dumps(raw))
    before = (out / "train.json").read_bytes()
    result = run_main(script_main(), ["--input", out / "train.json", "--image-folder", folder / "img",
                                      "--output-dir", out, "--no-progress"], expect_code=2)
    assert f"--input {out / 'train.json'} lies in --output-dir {out}" in result.err
    assert (out / "train.json").read_bytes() == before and sorted(p.name for p in out.iterdir()) == ["train.json"]


# ---- the table readers: a bad record is an error with its line, never an exception ------------------

def read(path: Path) -> list[tuple]:
    """(line or row, kind, error) of every record; values of good ones must be writable as UTF-8."""
    out = []
    for rec in open_table(path).records:
        if rec.error is None:
            json.dumps(rec.values, ensure_ascii=False).encode("utf-8")
        out.append((rec.loc.line or rec.loc.row, rec.kind, rec.error))
    return out


def _table_case(tmp_path: Path, case: str) -> tuple[Path, int, str, str]:
    """case -> (file, line of the bad record, kind, words in its error)."""
    ok = json.dumps({"image": "a.png", "question": "Q?", "answer": "x"})
    if case in ("csv-not-utf8", "tsv-not-utf8"):
        sep = b"," if case.startswith("csv") else b"\t"
        path = tmp_path / f"t.{case[:3]}"
        rows = [[b"image", b"question", b"answer"], [b"a.png", b"Q?", b"x"], [b"a.png", b"Qu\xe9?", b"y"],
                [b"b.png", b"R?", b"z"]]
        path.write_bytes(b"".join(sep.join(row) + b"\n" for row in rows))
        return path, 3, "undecodable_text", "field 'question' has a byte 0xe9"
    path = tmp_path / "t.jsonl"
    bad = {
        "jsonl-not-utf8": b'{"image": "a.png", "question": "Q?", "answer": "caf\xe9"}',
        "jsonl-lone-surrogate-escape": b'{"image": "a.png", "question": "Q \\ud83d?", "answer": "x"}',
        "jsonl-nested-too-deep": b'{"image": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
        "jsonl-huge-integer": b'{"image": "a.png", "question": "Q?", "answer": ' + b"9" * 5000 + b"}",
        "jsonl-not-an-object": b'["a.png", "Q?", "x"]',
        "jsonl-truncated-line": b'{"image": "a.png", "quest',
        "jsonl-not-utf8-key": b'{"imag\xe9": "a.png", "question": "Q?", "answer": "x"}',
    }[case]
    path.write_bytes(ok.encode() + b"\n" + bad + b"\n" + ok.encode() + b"\n")
    kind, words = {
        "jsonl-not-utf8": ("undecodable_text", "field 'answer' has a byte 0xe9"),
        "jsonl-lone-surrogate-escape": ("undecodable_text", "field 'question' has an unpaired surrogate \\ud83d"),
        "jsonl-nested-too-deep": ("malformed_json", "nested too deeply"),
        "jsonl-huge-integer": ("malformed_json", "Exceeds the limit"),
        "jsonl-not-an-object": ("unreadable_record", "expected a JSON object, got list"),
        "jsonl-truncated-line": ("malformed_json", "malformed JSON"),
        "jsonl-not-utf8-key": ("undecodable_text", "field name 'imag\\\\xe9' has a byte 0xe9"),
    }[case]
    return path, 2, kind, words


TABLE_CASES = ["csv-not-utf8", "tsv-not-utf8", "jsonl-not-utf8", "jsonl-lone-surrogate-escape",
               "jsonl-nested-too-deep", "jsonl-huge-integer", "jsonl-not-an-object", "jsonl-truncated-line",
               "jsonl-not-utf8-key"]


@pytest.mark.bad_input
@pytest.mark.parametrize("case", TABLE_CASES)
def test_table_readers_turn_a_bad_record_into_its_error(tmp_path, case):
    path, line, kind, words = _table_case(tmp_path, case)
    records = read(path)
    assert len(records) == 3 and [r[1] for r in records] == [None, kind, None], records
    assert records[1][0] == line and words in records[1][2], records[1]


@pytest.mark.bad_input
def test_json_list_with_trailing_data_after_the_list(tmp_path):
    path = tmp_path / "t.json"
    path.write_text('[{"image": "a.png", "question": "Q?", "answer": "x"}]\n]\n')
    records = read(path)
    assert records[0][1] is None and records[1][:2] == (2, "malformed_json")
    assert "unexpected data after the closing ]" in records[1][2]


@pytest.mark.bad_input
def test_parquet_with_a_damaged_row_group_keeps_the_others(tmp_path):
    path = tmp_path / "t.parquet"
    table = pa.table({"image": ["a.png"] * 1000, "question": [f"Q{i}?" for i in range(1000)], "answer": ["x"] * 1000})
    pq.write_table(table, path, row_group_size=500)
    column = pq.ParquetFile(path).metadata.row_group(1).column(1)
    data = bytearray(path.read_bytes())
    data[column.data_page_offset + 30: column.data_page_offset + 230] = b"\xff" * 200
    path.write_bytes(bytes(data))
    records = read(path)
    good = [r for r in records if r[1] is None]
    assert len(good) == 500 and [r[0] for r in good] == list(range(1, 501))
    assert [r[:2] for r in records if r[1]] == [(501, "unreadable_rows")]
    assert "cannot read rows 501-1000 (500 rows, row group 2)" in records[-1][2]
