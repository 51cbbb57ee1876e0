"""Tag-relevance rating: the sample task's rules, the prompt and answer format, converting users' rows
(bad rows named), and the rater run for real on the tiny model (every line a valid rating, resumable)."""

from __future__ import annotations

import json
import random
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image

from llava.constants import IGNORE_INDEX
from llava.data.dataset import LazySupervisedDataset
from llava.demo.rating_task import (
    candidate_ratings,
    choose_ratings,
    make_rating_task,
    rate_color,
    rate_count,
    rate_object,
    rate_shape,
)
from llava.demo.scenes import SceneObject
from llava.eval.question_file import Question
from llava.mm_utils import load_image
from llava.model.inputs import build_batch
from llava.tasks.rating_data import convert
from llava.tasks.rating_prompt import (
    SCALE,
    SCORE_PREFIX,
    format_answer,
    parse_answer,
    partial_explanation,
    rating_prompt,
)
from llava.tasks.tag_rating import ConstrainedRater
from llava.tasks.tag_rating import main as tag_rating

ROOT = Path(__file__).resolve().parents[1]


def obj(color, shape, h="left", v="top"):
    return SceneObject(color, shape, 10, 10, 16, h, v)


RED_CIRCLE = obj("red", "circle")
BLUE_SQUARE = obj("blue", "square", "right", "bottom")
BLUE_CIRCLE = obj("blue", "circle", "right", "top")


@pytest.mark.parametrize("objects, tag, score", [
    ([RED_CIRCLE], ("red", "circle"), 5),  # the only object, exactly
    ([RED_CIRCLE, BLUE_SQUARE], ("red", "circle"), 4),  # there, among others
    ([BLUE_CIRCLE, BLUE_SQUARE], ("red", "circle"), 2),  # the shape in another colour
    ([RED_CIRCLE, BLUE_SQUARE], ("red", "square"), 2),  # shape match wins over colour match
    ([RED_CIRCLE], ("red", "square"), 1),  # only the colour
    ([BLUE_SQUARE], ("red", "circle"), 0),
])
def test_object_tag_rules(objects, tag, score):
    assert rate_object(objects, *tag).score == score


def test_colour_shape_and_count_rules():
    assert rate_color([RED_CIRCLE], "red").score == 5
    assert rate_color([BLUE_CIRCLE, BLUE_SQUARE], "blue").explanation == "Every object is blue."
    two = rate_color([RED_CIRCLE, BLUE_SQUARE], "blue")
    assert two.score == 3 and two.explanation == "The square at the bottom right is blue; one object is not."
    assert rate_color([RED_CIRCLE], "green").score == 0
    assert rate_shape([BLUE_CIRCLE, RED_CIRCLE], "circle").tag == "circles"
    assert rate_shape([BLUE_CIRCLE, RED_CIRCLE], "circle").score == 5
    assert rate_shape([BLUE_CIRCLE, BLUE_SQUARE], "square").score == 3
    assert rate_shape([BLUE_SQUARE], "triangle").score == 0
    assert (rate_count([RED_CIRCLE, BLUE_SQUARE], 2).score, rate_count([RED_CIRCLE], 2).score,
            rate_count([RED_CIRCLE], 3).score) == (5, 2, 0)
    assert rate_count([RED_CIRCLE], 3).explanation == "There is one object, not three."
    assert rate_object([obj("orange", "square")], "orange", "square").explanation == \
        "The only object is an orange square, exactly the search term."


def test_chosen_tags_are_distinct_and_spread_over_scores():
    rng = random.Random(0)
    picks = [r for _ in range(300) for r in choose_ratings(rng, candidate_ratings([RED_CIRCLE, BLUE_SQUARE]), 3)]
    counts = {s: sum(r.score == s for r in picks) for s in range(6)}
    # This scene offers scores 0, 1, 2, 3, 4 and 5: each about a sixth of the picks.
    assert all(100 < n < 200 for n in counts.values()), counts
    groups = [picks[i:i + 3] for i in range(0, len(picks), 3)]
    assert all(len({r.tag for r in g}) == 3 for g in groups)


def test_prompt_spells_out_the_scale_and_answers_round_trip():
    prompt = rating_prompt(" red circle ")
    assert '"red circle"' in prompt and all(f"{n} = {text}" in prompt for n, text in SCALE)
    answer = format_answer('A "red" circle.', 4)
    assert json.loads(answer) == {"explanation": 'A "red" circle.', "score": 4}
    assert parse_answer(answer) == (4, 'A "red" circle.')
    with pytest.raises(ValueError):
        format_answer("x", 6)


@pytest.mark.parametrize("text, expected", [
    ('{"explanation": "ok", "score": 3}', (3, "ok")),
    ('Sure!\n```json\n{"explanation": "ok", "score": "2"}\n```', (2, "ok")),
    ('{"score": 5.0}', (5, None)),
    ('{"explanation": "ok", "score": 7}', (None, "ok")),  # out of range: invalid, not clamped
    ('{"explanation": "ok", "score": true}', (None, "ok")),
    ("There are 3 objects.", (None, None)),  # a digit in prose is not a rating
    ('{"explanation": "cut off', (None, None)),
])
def test_parse_answer(text, expected):
    assert parse_answer(text) == expected


def test_partial_explanation():
    assert partial_explanation('{"explanation": "Two \\"red\\" things", "score": x') == 'Two "red" things'
    assert partial_explanation('{"explanation": "cut') is None


@pytest.fixture(scope="module")
def sample(tmp_path_factory):
    out = tmp_path_factory.mktemp("rating")
    return make_rating_task(out, num_train_images=40, num_test_images=6, seed=3)


def test_sample_task_files_agree(sample):
    out = sample["output_dir"]
    rows = [json.loads(line) for line in (out / "train.jsonl").read_text().splitlines()]
    assert len(rows) == 120 == sample["train"]["rows"] and sample["train"]["rejected"] == 0
    convs = json.loads((out / "train" / "conversations.json").read_text())
    for row, conv in zip(rows, convs):
        assert conv["image"] == row["image"] and (out / "images" / row["image"]).is_file()
        human, gpt = conv["conversations"]
        assert human["value"] == "<image>\n" + rating_prompt(row["tag"])
        assert parse_answer(gpt["value"]) == (row["score"], row["explanation"])
    pairs = [json.loads(line) for line in (out / "test" / "pairs.jsonl").read_text().splitlines()]
    key = [json.loads(line) for line in (out / "test" / "answers.jsonl").read_text().splitlines()]
    test_rows = [json.loads(line) for line in (out / "test.jsonl").read_text().splitlines()]
    assert [p["question_id"] for p in pairs] == [k["question_id"] for k in key] == [r["id"] for r in test_rows]
    assert [k["answers"] for k in key] == [[r["score"]] for r in test_rows]
    assert {r["image"] for r in test_rows}.isdisjoint({r["image"] for r in rows})


def test_rating_conversations_supervise_only_the_json_answer(sample, tiny_loaded):
    out = sample["output_dir"]
    ds = LazySupervisedDataset(out / "train" / "conversations.json", image_folder=out / "images",
                               tokenizer=tiny_loaded.tokenizer, image_processor=tiny_loaded.image_processor,
                               template="vicuna_v1", image_token_id=tiny_loaded.image_token_id,
                               num_image_tokens=tiny_loaded.num_image_tokens, model_max_length=2048)
    item = ds[0]
    supervised = item["labels"][item["labels"] != IGNORE_INDEX]
    target = json.loads((out / "train" / "conversations.json").read_text())[0]["conversations"][1]["value"]
    assert tiny_loaded.tokenizer.decode(supervised, skip_special_tokens=True).strip() == target


def test_convert_names_every_bad_row_and_keeps_the_rest(tmp_path):
    images = tmp_path / "imgs"
    images.mkdir()
    Image.new("RGB", (32, 32), "red").save(images / "ok.png")
    (images / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not a png")
    rows = [
        {"id": "a", "image": "ok.png", "tag": "red", "score": 5, "explanation": "All red."},
        {"id": "b", "image": "ok.png", "tag": "blue", "score": "0", "explanation": "No blue."},
        {"id": "c", "image": "ok.png", "tag": "red", "score": 7, "explanation": "x"},
        {"id": "d", "image": "missing.png", "tag": "red", "score": 1, "explanation": "x"},
        {"id": "e", "image": "broken.png", "tag": "red", "score": 1, "explanation": "x"},
        {"id": "a", "image": "ok.png", "tag": "red", "score": 5, "explanation": "again"},
        {"id": "f", "image": "../etc/passwd", "tag": "red", "score": 1, "explanation": "x"},
        {"id": "g", "image": "ok.png", "tag": "", "score": 1, "explanation": "x"},
    ]
    src = tmp_path / "rows.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in rows) + "{not json\n")
    result = convert(src, images, tmp_path / "out")
    assert (result["rows"], result["rejected"]) == (2, 7)
    rejected = [json.loads(line)["error"] for line in (tmp_path / "out" / "rejected.jsonl").read_text().splitlines()]
    assert rejected[0] == f"{src}:3: score 7 is not an integer 0-5"
    assert rejected[1].startswith(f"{src}:4: image missing.png: no such file")
    assert rejected[2].startswith(f"{src}:5: image broken.png:")
    assert rejected[3] == f"{src}:6: id 'a' repeats {src}:1"
    assert rejected[4] == f"{src}:7: image '../etc/passwd' is outside the image folder"
    assert rejected[5] == f"{src}:8: missing tag"
    assert rejected[6].startswith(f"{src}:9:")
    key = [json.loads(line) for line in (tmp_path / "out" / "answers.jsonl").read_text().splitlines()]
    assert key == [{"question_id": "a", "answers": [5]}, {"question_id": "b", "answers": [0]}]


def run_rater(*args):
    return subprocess.run([sys.executable, "-m", "llava.tasks.tag_rating", *args, "--no-progress"], cwd=ROOT,
                          capture_output=True, text=True, timeout=600,
                          env={"HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT), "TOKENIZERS_PARALLELISM": "false",
                               "PATH": "/usr/bin:/bin"})


@pytest.mark.slow
def test_rater_writes_a_valid_rating_for_every_pair_and_resumes(sample, tiny_hf, tmp_path):
    out = sample["output_dir"]
    pairs = [json.loads(line) for line in (out / "test" / "pairs.jsonl").read_text().splitlines()][:5]
    lines = [json.dumps(p) for p in pairs]
    lines += ['{"question_id": "gone", "image": "no_such.jpg", "tag": "red"}', "not json at all",
              json.dumps({"id": "no-tag", "image": pairs[0]["image"]}),
              '{"question_id": "lone", "image": "%s", "tag": "red \\ud83d"}' % pairs[0]["image"]]
    src = tmp_path / "pairs.jsonl"
    src.write_text("\n".join(lines) + "\n")
    ratings = tmp_path / "ratings.jsonl"
    args = ["--model-path", str(tiny_hf), "--input", str(src), "--image-folder", str(out / "images"),
            "--output", str(ratings), "--max-new-tokens", "12", "--batch-size", "4",
            "--annotation-file", str(out / "test" / "answers.jsonl")]
    proc = run_rater(*args)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "generated tokens/s" in proc.stdout and "peak memory" in proc.stdout and "| MAE |" in proc.stdout
    rows = [json.loads(line) for line in ratings.read_text().splitlines()]
    assert sorted(r["question_id"] for r in rows) == sorted(p["question_id"] for p in pairs)
    for r in rows:
        assert isinstance(r["score"], int) and not isinstance(r["score"], bool) and 0 <= r["score"] <= 5
        assert parse_answer(r["text"]) == (r["score"], r["explanation"])
        # The untrained tiny model never writes the JSON: each answer went through constrained decoding.
        assert r["flagged"] is True and parse_answer(r["raw"])[0] is None
    errors = [json.loads(line)["error"] for line in ratings.with_name("ratings.errors.jsonl").read_text().splitlines()]
    assert any("no_such.jpg" in e for e in errors) and any(f"{src}:7: malformed JSON" in e for e in errors)
    assert any("'no-tag' has no tag" in e for e in errors)
    assert any(f"{src}:9: field 'tag' has an unpaired surrogate" in e for e in errors)  # not a crash at the end
    stats = json.loads(ratings.with_suffix(".stats.json").read_text())
    assert stats["rated"] == 5 and stats["flagged"] == 5 and stats["peak_rss_mib"] > 100
    # Run again: nothing is rated twice.
    before = ratings.read_text()
    again = run_rater(*args)
    assert again.returncode == 0 and "resuming: 5 of 6 pairs already rated" in again.stdout
    assert ratings.read_text() == before


def test_constrained_score_is_the_likeliest_digit(sample, tiny_loaded):
    """The constrained score agrees with one forward pass over the stem, read at the digit tokens."""
    out = sample["output_dir"]
    pair = json.loads((out / "test" / "pairs.jsonl").read_text().splitlines()[0])
    q = Question(pair["question_id"], rating_prompt(pair["tag"]), pair["image"], None, 1)
    rater = ConstrainedRater(tiny_loaded, None, str(out / "images"), max_new_tokens=8)
    score, explanation = rater.rate(q)
    stem = rater._prefix(q, '{"explanation": "') + explanation + SCORE_PREFIX
    digits = [tiny_loaded.tokenizer.convert_tokens_to_ids(str(d)) for d in range(6)]
    with torch.inference_mode():
        logits = tiny_loaded.model(**build_batch(tiny_loaded, [stem], [load_image(out / "images" / q.image)])).logits
    assert score == int(torch.argmax(logits[0, -1, digits]))


# --- bad input (issue 18) --------------------------------------------------------------------------


def broken_model(tmp_path):
    """A model directory the loader rejects: a run that ends well never loaded it."""
    model = tmp_path / "broken-model"
    model.mkdir(exist_ok=True)
    (model / "config.json").write_text('{"model_type": "bert"}')
    return model


BAD_PAIRS = {
    "lone-surrogate-in-tag": ("pairs.jsonl", b'{"question_id": "s", "image": "a.png", "tag": "red \\ud83d"}\n',
                              "pairs.jsonl:1: field 'tag' has an unpaired surrogate \\ud83d that is not UTF-8 text"),
    "csv-bytes-not-utf8": ("pairs.csv", b"question_id,image,tag\nc1,a.png,caf\xe9\n",
                           "pairs.csv:2: field 'tag' has a byte 0xe9 that is not UTF-8 text"),
    "jsonl-bytes-not-utf8": ("pairs.jsonl", b'{"question_id": "u", "image": "a.png", "tag": "\xff"}\n',
                             "pairs.jsonl:1: field 'tag' has a byte 0xff that is not UTF-8 text"),
    "id-object": ("pairs.jsonl", b'{"id": {"a": 1}, "image": "a.png", "tag": "red"}\n',
                  "pairs.jsonl:1: question_id {'a': 1} is a dict"),
    "id-bool": ("pairs.jsonl", b'{"question_id": false, "image": "a.png", "tag": "red"}\n',
                "pairs.jsonl:1: question_id False is a bool"),
    "tag-a-list": ("pairs.jsonl", b'{"question_id": "l", "image": "a.png", "tag": ["red"]}\n',
                   "pairs.jsonl:1: 'l': tag must be text"),
    "image-absolute": ("pairs.jsonl", b'{"question_id": "a", "image": "/etc/passwd", "tag": "red"}\n',
                       "is not a path inside the image folder"),
    "image-dotdot": ("pairs.jsonl", b'{"question_id": "d", "image": "../x.png", "tag": "red"}\n',
                     "is not a path inside the image folder"),
    "json-list-line": ("pairs.jsonl", b"[1, 2]\n", "pairs.jsonl:1: expected a JSON object, got list"),
    "jsonl-nested-too-deep": ("pairs.jsonl", b"[" * 100_000 + b"]" * 100_000 + b"\n", "nested too deeply"),
}


@pytest.mark.bad_input
@pytest.mark.parametrize("kind", list(BAD_PAIRS))
def test_a_bad_pair_is_an_error_record_and_the_run_goes_on(tmp_path, run_main, kind):
    name, data, message = BAD_PAIRS[kind]
    (tmp_path / name).write_bytes(data)
    out = tmp_path / "ratings.jsonl"
    result = run_main(tag_rating, ["--model-path", broken_model(tmp_path), "--input", tmp_path / name,
                                   "--output", out, "--no-progress"], expect_code=0)
    [error] = [json.loads(line) for line in out.with_name("ratings.errors.jsonl").read_text().splitlines()]
    assert message in error["error"] and error["line"] in (1, 2), error
    assert "1 errors in" in result.out and out.read_text() == ""


@pytest.mark.bad_input
@pytest.mark.parametrize("kind", ["output-is-the-input", "stats-file-is-the-key", "errors-file-is-the-input"])
def test_ratings_over_an_input_are_refused_before_any_work(tmp_path, run_main, kind):
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text('{"question_id": "p", "image": "a.png", "tag": "red"}\n')
    key = tmp_path / "key.jsonl"
    key.write_text('{"question_id": "p", "answers": [3]}\n')
    out = {"output-is-the-input": pairs, "stats-file-is-the-key": tmp_path / "key.jsonl",
           "errors-file-is-the-input": tmp_path / "pairs.jsonl"}[kind]
    if kind == "stats-file-is-the-key":
        key = key.rename(tmp_path / "ratings.stats.json")
        out = tmp_path / "ratings.jsonl"
    if kind == "errors-file-is-the-input":
        pairs = pairs.rename(tmp_path / "ratings.errors.jsonl")
        out = tmp_path / "ratings.jsonl"
    before = pairs.read_bytes(), key.read_bytes()
    result = run_main(tag_rating, ["--model-path", broken_model(tmp_path), "--input", pairs, "--output", out,
                                   "--annotation-file", key, "--no-progress"])
    assert result.code == 1 and "is the same file as" in result.err and "cannot load" not in result.text
    assert (pairs.read_bytes(), key.read_bytes()) == before


@pytest.mark.bad_input
@pytest.mark.parametrize("flags, message", [
    (["--max-new-tokens", "0"], "--max-new-tokens must be at least 1"),
    (["--batch-size", "0"], "--batch-size must be at least 1"),
    (["--num-workers", "-2"], "--num-workers must be at least 0"),
    (["--device", "banana"], "--device 'banana': not a device"),
    (["--image-folder", "/no/such/folder"], "--image-folder /no/such/folder: no such folder"),
    (["--annotation-file", "/no/such/key.jsonl"], "--annotation-file /no/such/key.jsonl: no such file"),
], ids=["max-new-tokens-0", "batch-size-0", "num-workers-negative", "device-unknown", "image-folder-missing",
        "annotation-file-missing"])
def test_a_bad_rating_flag_is_refused_before_the_model_loads(tmp_path, run_main, flags, message):
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text('{"question_id": "p", "image": "a.png", "tag": "red"}\n')
    result = run_main(tag_rating, ["--model-path", broken_model(tmp_path), "--input", pairs, "--output",
                                   tmp_path / "r.jsonl", *flags])
    assert result.code != 0 and message in result.err and "cannot load" not in result.text
    assert not (tmp_path / "r.jsonl").exists()


@pytest.mark.bad_input
def test_a_bad_line_in_the_ratings_being_resumed_is_reported_and_kept(tmp_path, run_main):
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text('{"question_id": "p", "image": "a.png", "tag": "red"}\n')
    out = tmp_path / "ratings.jsonl"
    rating = {"question_id": "p", "image": "a.png", "tag": "red", "score": 3, "explanation": "ok", "text": "x",
              "raw": "x", "flagged": False, "answer_id": "a", "model_id": "broken-model", "metadata": {}}
    data = (json.dumps(rating) + "\n").encode() + b'{"question_id": "q", "text": "\xff"}\n'
    out.write_bytes(data)
    result = run_main(tag_rating, ["--model-path", broken_model(tmp_path), "--input", pairs, "--output", out,
                                   "--no-progress"], expect_code=0)
    assert f"{out}:2: not UTF-8 text" in result.out and "resuming: 1 of 1 pairs" in result.out
    assert out.read_bytes() == data
    [error] = [json.loads(line) for line in out.with_name("ratings.errors.jsonl").read_text().splitlines()]
    assert error["line"] == 2 and error["file"] == str(out)
