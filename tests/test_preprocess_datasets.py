"""Hugging Face datasets as preprocessing input (issue 21, part 4): a dataset built locally with an Image
column, read as Parquet with embedded bytes, as an Arrow file, as a save_to_disk folder (one dataset, and a
DatasetDict with splits) and through datasets.load_dataset (hf:...).  Every form gives the conversations the
same rows give as a CSV beside a folder of the original files; each image is written once, under the name of
its content, byte for byte; and bad rows, missing splits and an uncached hub id are clear errors."""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image
from skimage import data as photos

from tests.test_bad_input_preprocess import script_main

datasets = pytest.importorskip("datasets")


def _encoded(array, fmt: str) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).convert("RGB").resize((48, 36)).save(buf, fmt)
    return buf.getvalue()


@pytest.fixture(scope="module")
def photo_bytes():
    """Five real photos (scikit-image), small, as JPEG and PNG files' bytes, with their original names."""
    arrays = [photos.astronaut(), photos.coffee(), photos.chelsea(), photos.rocket(), photos.camera()]
    return [(f"photo{i}.{'jpg' if i % 2 == 0 else 'png'}", _encoded(a, "JPEG" if i % 2 == 0 else "PNG"))
            for i, a in enumerate(arrays)]


def _rows(photo_bytes):
    """Three questions per photo (so an image is shared by rows), answers naming the photo."""
    rows = []
    for i, (name, raw) in enumerate(photo_bytes):
        for q in range(3):
            rows.append({"question_id": f"p{i}q{q}", "question": f"Question {q} about this photo?",
                         "answer": f"photo {i}", "image": {"bytes": raw, "path": name}})
    return rows


def _features():
    return datasets.Features(question_id=datasets.Value("string"), question=datasets.Value("string"),
                             answer=datasets.Value("string"), image=datasets.Image())


def _dataset(rows):
    columns = {k: [r[k] for r in rows] for k in rows[0]}
    return datasets.Dataset.from_dict(columns, features=_features())


def _run(run_main, inp, images: Path, out: Path, *extra, expect_code=0):
    result = run_main(script_main(), ["--input", inp, "--image-folder", images, "--output-dir", out,
                                      "--no-progress", "--val-fraction", "0.2", "--seed", "3", *extra],
                      expect_code=expect_code)
    report = out / "report.json"
    return result, json.loads(report.read_text()) if report.exists() else None


def _by_bytes(out: Path, images: Path) -> list[tuple]:
    """Every output record with its image replaced by the image's bytes: comparable across image names."""
    found = []
    for name in ("train.json", "val.json"):
        for rec in json.loads((out / name).read_text()):
            found.append((name, rec["id"], (images / rec["image"]).read_bytes(), json.dumps(rec["conversations"])))
    for name in ("val_questions.jsonl", "val_answers.jsonl"):
        for line in (out / name).read_text().splitlines():
            rec = json.loads(line)
            raw = (images / rec.pop("image")).read_bytes() if "image" in rec else None
            found.append((name, rec.pop("question_id"), raw, json.dumps(rec, sort_keys=True)))
    return sorted(found)


@pytest.fixture(scope="module")
def reference(tmp_path_factory, photo_bytes):
    """The same rows as a CSV beside a folder of the original files: what every dataset form must equal."""
    root = tmp_path_factory.mktemp("csv")
    (root / "img").mkdir()
    for name, raw in photo_bytes:
        (root / "img" / name).write_bytes(raw)
    lines = ["question_id,question,answer,image"]
    lines += [f"{r['question_id']},{r['question']},{r['answer']},{r['image']['path']}" for r in _rows(photo_bytes)]
    (root / "t.csv").write_text("\n".join(lines) + "\n")
    return root


def _reference_outputs(run_main, reference):
    _run(run_main, reference / "t.csv", reference / "img", reference / "out")
    return _by_bytes(reference / "out", reference / "img")


def _build(form: str, root: Path, rows) -> tuple[str, list[str]]:
    """Write the dataset in one form; returns --input and the extra flags it needs."""
    ds = _dataset(rows)
    if form == "parquet":
        ds.to_parquet(str(root / "d.parquet"))
        return str(root / "d.parquet"), []
    if form == "arrow":  # the file save_to_disk writes: an Arrow IPC stream
        ds.save_to_disk(str(root / "saved"))
        return str(next((root / "saved").glob("data-*.arrow"))), []
    if form == "save_to_disk":
        ds.save_to_disk(str(root / "saved"))
        return str(root / "saved"), []
    if form == "save_to_disk splits":
        datasets.DatasetDict(train=ds, validation=ds.select(range(3))).save_to_disk(str(root / "saved"))
        return str(root / "saved"), ["--split", "train"]
    assert form == "hf"  # datasets.load_dataset on a folder of Parquet shards, as for a hub dataset
    (root / "hub").mkdir()
    ds.select(range(9)).to_parquet(str(root / "hub" / "train-00000-of-00002.parquet"))
    ds.select(range(9, len(ds))).to_parquet(str(root / "hub" / "train-00001-of-00002.parquet"))
    return f"hf:{root / 'hub'}", ["--split", "train"]


@pytest.mark.parametrize("form", ["parquet", "arrow", "save_to_disk", "save_to_disk splits", "hf"])
def test_every_dataset_form_gives_the_csv_outputs_with_images_written_once_by_content(
        run_main, tmp_path, monkeypatch, photo_bytes, reference, form):
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "cache"))
    inp, extra = _build(form, tmp_path, _rows(photo_bytes))
    images = tmp_path / "images"  # not there yet: made to hold the dataset's images
    result, report = _run(run_main, inp, images, tmp_path / "out", *extra)

    assert report["rows_read"] == report["rows_used"] == 15, result
    assert report["embedded_images"]["rows_with_bytes"] == 15
    assert report["embedded_images"]["files_written"] == 5 and report["embedded_images"]["files_already_there"] == 0
    written = sorted(p.name for p in images.iterdir())
    assert written == sorted(hashlib.sha256(raw).hexdigest()[:32] + Path(name).suffix for name, raw in photo_bytes)
    assert _by_bytes(tmp_path / "out", images) == _reference_outputs(run_main, reference)

    # Run again: the same files, none written twice, the same outputs.
    before = {p.name: p.stat().st_mtime_ns for p in images.iterdir()}
    result, report = _run(run_main, inp, images, tmp_path / "out", *extra)
    assert report["embedded_images"]["files_written"] == 0 and report["embedded_images"]["files_already_there"] == 5
    assert {p.name: p.stat().st_mtime_ns for p in images.iterdir()} == before
    assert "wrote 0 file(s)" in result.out and "5 already there" in result.out


def test_damaged_several_and_path_only_images_are_row_problems_and_a_half_written_file_is_replaced(
        run_main, tmp_path, photo_bytes):
    rows = _rows(photo_bytes)[:6]  # photos 0 and 1
    good = rows[0]["image"]["bytes"]
    rows.append({"question_id": "damaged", "question": "Q?", "answer": "a",
                 "image": {"bytes": good[: len(good) // 2], "path": "cut.jpg"}})  # a truncated JPEG
    rows.append({"question_id": "pathonly", "question": "Q?", "answer": "a",
                 "image": {"bytes": None, "path": "on_disk.png"}})
    rows.append({"question_id": "noimage", "question": "Q?", "answer": "a", "image": None})
    rows.append({"question_id": "two", "question": "Q?", "answer": "a",
                 "image": [{"bytes": good, "path": "a.jpg"}, {"bytes": good, "path": "b.jpg"}]})
    for r in rows[:-1]:  # a list column of images (datasets.Sequence(Image)): one image each, and one row with two
        r["image"] = [r["image"]] if r["image"] else []
    # Written with pyarrow in the Image feature's storage: datasets' own writer stats the path-only file.
    image = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    schema = pa.schema([("question_id", pa.string()), ("question", pa.string()), ("answer", pa.string()),
                        ("image", pa.list_(image))])
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), tmp_path / "d.parquet")
    images = tmp_path / "images"
    images.mkdir()
    Image.fromarray(photos.coffee()).resize((20, 20)).save(images / "on_disk.png")
    # A file cut short by an earlier run killed mid-write (before renames were atomic, or by another tool).
    cut = hashlib.sha256(good).hexdigest()[:32] + ".jpg"
    (images / cut).write_bytes(good[:100])

    result, report = _run(run_main, tmp_path / "d.parquet", images, tmp_path / "out")
    reasons = {p["row"]: p["reason"] for p in report["problems"]}
    assert reasons == {7: "image_truncated", 9: "empty_image", 10: "several_images"}, report["problems"]
    assert report["rows_used"] == 7  # six rows of two good photos, and the path-only row
    assert (images / cut).read_bytes() == good
    out = tmp_path / "out"
    train = json.loads((out / "train.json").read_text()) + json.loads((out / "val.json").read_text())
    assert {r["id"]: r["image"] for r in train}["pathonly"] == "on_disk.png"
    assert "several_images" in result.out and "holds 2 images" in json.dumps(report["problems"])
    assert not list(images.glob(".*.part"))


def test_dataset_errors_name_the_dataset_and_what_to_do(run_main, tmp_path, monkeypatch, photo_bytes):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "cache"))
    ds = _dataset(_rows(photo_bytes))
    datasets.DatasetDict(train=ds, validation=ds).save_to_disk(str(tmp_path / "saved"))
    out, images = tmp_path / "out", tmp_path / "images"

    result, _ = _run(run_main, tmp_path / "saved", images, out, expect_code=2)
    assert "has the splits train, validation: choose one with --split" in result.err
    result, _ = _run(run_main, tmp_path / "saved", images, out, "--split", "test", expect_code=2)
    assert "no split 'test'" in result.err and "train, validation" in result.err
    result, _ = _run(run_main, "hf:nobody-here/no-such-dataset", images, out, "--split", "train", expect_code=2)
    assert "hf:nobody-here/no-such-dataset" in result.err and "HF_HUB_OFFLINE=1" in result.err
    (tmp_path / "t.csv").write_text("image,question,answer\na.png,Q?,a\n")
    result, _ = _run(run_main, tmp_path / "t.csv", images, out, "--split", "train", expect_code=2)
    assert "--split applies to a Hugging Face dataset" in result.err
    assert not images.exists() and not (out / "train.json").exists()  # nothing made on a failed start
