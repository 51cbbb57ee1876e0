"""The VQA sample task (llava/demo/vqa_task.py, on the scenes of llava/demo/scenes.py): deterministic,
well-formed, and every answer true of its image."""

from __future__ import annotations

import csv
import re
from collections import defaultdict
from pathlib import Path

import pytest
from PIL import Image

from llava.demo.scenes import COLORS, IMAGE_TEMPLATE, PLURALS
from llava.demo.vqa_task import CATEGORIES, CSV_COLUMNS, main, make_sample_task, plan_task

SMALL = dict(num_train_images=60, num_test_images=20, seed=7)


def read_rows(path: Path) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def all_bytes(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def task(tmp_path_factory):
    return make_sample_task(tmp_path_factory.mktemp("task"), **SMALL)


def test_same_seed_gives_identical_files_and_other_seed_differs(tmp_path, task):
    again = make_sample_task(tmp_path / "again", **SMALL)
    first, second = all_bytes(task["output_dir"]), all_bytes(again["output_dir"])
    assert list(first) == list(second)
    assert first == second
    other = all_bytes(make_sample_task(tmp_path / "other", **{**SMALL, "seed": 8})["output_dir"])
    assert other["train.csv"] != first["train.csv"]
    assert set(other) != set(first)  # other image ids, so other file names


def test_layout_header_and_counts(task):
    out = task["output_dir"]
    assert sorted(p.name for p in out.iterdir()) == [".complete", "README.txt", "images", "test.csv", "train.csv"]
    for name in ("train.csv", "test.csv"):
        assert (out / name).read_text(encoding="utf-8").splitlines()[0] == ",".join(CSV_COLUMNS)
    train, test = read_rows(task["train_csv"]), read_rows(task["test_csv"])
    assert len(train) == task["num_train_rows"] and len(test) == task["num_test_rows"]
    assert len({r["question_id"] for r in train}) == task["num_train_questions"] == 3 * 60
    assert len({r["question_id"] for r in test}) == task["num_test_questions"] == 3 * 20
    assert len({r["image_id"] for r in train}) == 60 and len({r["image_id"] for r in test}) == 20
    readme = task["readme"].read_text(encoding="utf-8")
    assert IMAGE_TEMPLATE in readme and f"{task['num_train_rows']} rows" in readme


def test_image_files_follow_the_pattern_and_are_non_square_jpegs(task):
    files = sorted(p.name for p in task["images_dir"].iterdir())
    assert all(re.fullmatch(r"SYN_\d{12}\.jpg", f) for f in files)
    ids = {int(r["image_id"]) for r in read_rows(task["train_csv"]) + read_rows(task["test_csv"])}
    assert files == sorted(IMAGE_TEMPLATE.format(image_id=i) for i in ids)
    with Image.open(task["images_dir"] / files[0]) as img:
        assert (img.format, img.size, img.mode) == ("JPEG", (96, 72), "RGB")


def test_train_and_test_are_disjoint_and_ids_unique(task):
    train, test = read_rows(task["train_csv"]), read_rows(task["test_csv"])
    assert not {r["image_id"] for r in train} & {r["image_id"] for r in test}
    assert not {r["question_id"] for r in train} & {r["question_id"] for r in test}
    assert all(re.fullmatch(r"q\d{6}", r["question_id"]) for r in train + test)
    # Numbered across both files: train q000001..q000180, test q000181..q000240.
    assert min(r["question_id"] for r in test) == "q000181"


def test_all_categories_present(task):
    cats = {r["category"] for r in read_rows(task["train_csv"])}
    assert cats == set(CATEGORIES)


def test_several_answers_are_repeated_rows_with_canonical_first(task):
    rows = read_rows(task["train_csv"]) + read_rows(task["test_csv"])
    answers, order = defaultdict(list), []
    for r in rows:
        if r["question_id"] not in answers:
            order.append(r["question_id"])
        answers[r["question_id"]].append(r)
    # Rows of one question are adjacent, and agree on everything but the answer.
    flat = [r["question_id"] for r in rows]
    assert flat == [q for q in order for _ in answers[q]]
    words = ["zero", "one", "two", "three", "four"]
    multi = 0
    for group in answers.values():
        assert len({(r["image_id"], r["question"], r["category"]) for r in group}) == 1
        got = [r["answer"] for r in group]
        if group[0]["category"] == "count":
            assert got == [got[0], words[int(got[0])]]
        elif got[0] == "gray":
            assert got == ["gray", "grey"]
        else:
            assert len(got) == 1
        multi += len(got) > 1
    assert multi > 0


def oracle(question: str, objects, width: int, height: int) -> str:
    """Answer from the scene objects, parsed independently of the generator's templates."""
    def one(pred):
        found = [o for o in objects if pred(o)]
        assert len(found) == 1, f"ambiguous or unanswerable: {question}"
        return found[0]

    if m := re.fullmatch(r"What color is the (\w+)\?", question):
        return one(lambda o: o.shape == m[1]).color
    if m := re.fullmatch(r"What shape is the (\w+) object\?", question):
        return one(lambda o: o.color == m[1]).shape
    if question == "How many objects are there?":
        return str(len(objects))
    if m := re.fullmatch(r"How many (\w+) are there\?", question):
        shape = {v: k for k, v in PLURALS.items()}[m[1]]
        return str(sum(o.shape == shape for o in objects))
    if m := re.fullmatch(r"Is the (\w+) (\w+) on the left or the right\?", question):
        o = one(lambda o: (o.color, o.shape) == (m[1], m[2]))
        left, right = o.cx - o.size // 2, o.cx - o.size // 2 + o.size - 1
        assert right < width // 2 or left >= width // 2, "object crosses the vertical midline"
        return "left" if right < width // 2 else "right"
    if m := re.fullmatch(r"Is the (\w+) (\w+) at the top or the bottom\?", question):
        o = one(lambda o: (o.color, o.shape) == (m[1], m[2]))
        top, bottom = o.cy - o.size // 2, o.cy - o.size // 2 + o.size - 1
        assert bottom < height // 2 or top >= height // 2, "object crosses the horizontal midline"
        return "top" if bottom < height // 2 else "bottom"
    if m := re.fullmatch(r"Is there a (\w+) (\w+)\?", question):
        return "yes" if any((o.color, o.shape) == (m[1], m[2]) for o in objects) else "no"
    raise AssertionError(f"unexpected question {question!r}")


def test_every_canonical_answer_is_true_of_the_scene(task):
    plans = {p.image_id: p for p in plan_task(SMALL["num_train_images"], SMALL["num_test_images"], SMALL["seed"])}
    seen = set()
    for r in read_rows(task["train_csv"]) + read_rows(task["test_csv"]):
        if r["question_id"] in seen:
            continue  # the first row of a question holds its canonical answer
        seen.add(r["question_id"])
        assert r["answer"] == oracle(r["question"], plans[int(r["image_id"])].objects, 96, 72), r
    assert len(seen) == 240


def nearest_color(pixel, background) -> str:
    palette = {**COLORS, "background": background}
    return min(palette, key=lambda name: sum((a - b) ** 2 for a, b in zip(pixel, palette[name])))


def test_images_show_the_planned_objects_and_nothing_on_the_midlines(task):
    plans = plan_task(SMALL["num_train_images"], SMALL["num_test_images"], SMALL["seed"])
    for plan in plans[:30]:
        with Image.open(task["images_dir"] / plan.file_name) as img:
            rgb = img.convert("RGB")
        for o in plan.objects:
            assert nearest_color(rgb.getpixel((o.cx, o.cy)), plan.background) == o.color
            assert o.size >= 14
        # The midlines stay background, so "left/right" and "top/bottom" are never borderline.
        for x in (47, 48):
            assert all(nearest_color(rgb.getpixel((x, y)), plan.background) == "background" for y in range(72))
        for y in (35, 36):
            assert all(nearest_color(rgb.getpixel((x, y)), plan.background) == "background" for x in range(96))


def test_cli_writes_the_task(tmp_path, capsys):
    main(["--output-dir", str(tmp_path / "t"), "--num-train-images", "4", "--num-test-images", "2",
          "--image-size", "120", "80", "--seed", "1"])
    out = capsys.readouterr().out
    assert "wrote 4 train + 2 test images" in out
    assert len(list((tmp_path / "t" / "images").iterdir())) == 6
    with Image.open(next((tmp_path / "t" / "images").iterdir())) as img:
        assert img.size == (120, 80)


def test_too_small_image_size_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="too small"):
        make_sample_task(tmp_path, 1, 0, image_size=(30, 30))
