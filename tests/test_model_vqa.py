"""Batch JSONL inference (llava/eval/model_vqa.py, inference.sh) on the tiny model: batching does not
change greedy answers, a killed run resumes without losing or repeating an answer, bad lines and
missing images become error records."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import AutoTokenizer

from llava.eval.answers_file import AnswersFile
from llava.eval.model_vqa import main as model_vqa
from llava.eval.model_vqa import parse_args, run
from llava.eval.question_file import read_questions
from llava.model.builder import load_pretrained_model
from llava.model.inputs import prompt_ids, render_prompt
from llava.model.prefix_cache import common_prefix, image_grouped_batches, image_part

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}


def write_questions(root: Path, n: int, n_images: int = 6) -> Path:
    images = root / "images"
    images.mkdir(parents=True, exist_ok=True)
    rng = np.random.RandomState(0)
    for i in range(n_images):  # non-square, different sizes: pad-to-square and stacking both matter
        Image.fromarray(rng.randint(0, 255, (20 + 3 * i, 30 + 5 * i, 3)).astype("uint8")).save(images / f"{i}.png")
    words = ["What is this?", "What colour is the object on the left of the picture?", "Count them.",
             "Is there a red circle in the top right corner of the image, next to the square?"]
    lines = []
    for i in range(n):
        q = {"question_id": f"q{i}", "text": words[i % len(words)] + " " * (i % 3) + "Why?" * (i % 5),
             "category": ["a", "b"][i % 2]}
        if i % 7 != 3:  # some text-only questions mixed in
            q["image"] = f"{i % n_images}.png"
        lines.append(json.dumps(q))
    path = root / "questions.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path


def args(model, questions, answers, *extra):
    return ["--model-path", str(model), "--question-file", str(questions), "--image-folder",
            str(Path(questions).parent / "images"), "--answers-file", str(answers), "--max-new-tokens", "6",
            "--no-progress", *extra]


def read(path) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


@pytest.mark.slow
def test_batched_greedy_answers_equal_one_at_a_time(tmp_path, tiny_hf):
    questions = write_questions(tmp_path, 20)
    one = model_vqa(args(tiny_hf, questions, tmp_path / "one.jsonl", "--batch-size", "1", "--num-workers", "0"))
    many = model_vqa(args(tiny_hf, questions, tmp_path / "many.jsonl", "--batch-size", "8", "--num-workers", "2"))
    a = {r["question_id"]: r for r in read(tmp_path / "one.jsonl")}
    b = {r["question_id"]: r for r in read(tmp_path / "many.jsonl")}
    assert len(a) == len(b) == 20
    assert {q: r["text"] for q, r in a.items()} == {q: r["text"] for q, r in b.items()}
    assert any(r["text"] for r in a.values())  # the tiny random model does say something
    assert one["generated_tokens"] == many["generated_tokens"] > 0
    row = a["q1"]
    assert set(row) == {"question_id", "prompt", "text", "answer_id", "model_id", "metadata"}
    assert row["prompt"].startswith("What colour") and row["model_id"] == Path(tiny_hf).name
    assert row["metadata"] == {"category": "b"}
    assert row["answer_id"] == b["q1"]["answer_id"]  # stable across runs


@pytest.mark.slow
def test_a_killed_run_resumes_without_losing_or_repeating_an_answer(tmp_path, tiny_hf):
    questions = write_questions(tmp_path, 120)
    reference = tmp_path / "reference.jsonl"
    model_vqa(args(tiny_hf, questions, reference, "--batch-size", "2", "--num-workers", "0"))
    answers = tmp_path / "answers.jsonl"
    cmd = [sys.executable, "-m", "llava.eval.model_vqa",
           *args(tiny_hf, questions, answers, "--batch-size", "2", "--num-workers", "0")]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if answers.exists() and len(read(answers)) >= 10:
            proc.send_signal(signal.SIGKILL)
            break
        time.sleep(0.005)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    before = read(answers)
    assert 10 <= len(before) < 120
    with answers.open("a") as f:  # what a kill in the middle of a write leaves
        f.write('{"question_id": "q9999", "prompt": "half a li')
    out = subprocess.run(cmd, cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "half-written last line" in out.stdout
    assert f"resuming: {len(before)} of 120 questions already answered" in out.stdout
    after = read(answers)
    ids = [r["question_id"] for r in after]
    assert len(ids) == len(set(ids)) == 120
    assert after[:len(before)] == before  # nothing rewritten
    assert {r["question_id"]: r["text"] for r in after} == {r["question_id"]: r["text"] for r in read(reference)}
    again = subprocess.run(cmd, cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=300)
    assert "resuming: 120 of 120" in again.stdout and len(read(answers)) == 120
    other = subprocess.run([*cmd, "--model-id", "another-model"], cwd=ROOT, env=ENV, capture_output=True, text=True)
    assert other.returncode != 0 and "would mix two models' answers" in other.stderr


@pytest.mark.slow
def test_bad_lines_and_missing_images_become_error_records(tmp_path, tiny_hf):
    questions = write_questions(tmp_path, 6)
    rows = questions.read_text().splitlines()
    rows[1] = rows[1].replace('"image": "1.png"', '"image": "missing.png"')
    rows.insert(2, '{"question_id": "broken", "text": ')
    rows.insert(3, '{"text": "no id"}')
    rows.append(rows[0])  # q0 again
    (tmp_path / "images" / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    rows.append(json.dumps({"question_id": "c", "text": "What?", "image": "corrupt.png"}))
    questions.write_text("\n".join(rows) + "\n")
    answers = tmp_path / "answers.jsonl"
    result = model_vqa(args(tiny_hf, questions, answers, "--batch-size", "4", "--num-workers", "1"))
    assert sorted(r["question_id"] for r in read(answers)) == ["q0", "q2", "q3", "q4", "q5"]
    errors = read(tmp_path / "answers.errors.jsonl")
    by_line = {e["line"]: e for e in errors}
    assert set(by_line) == {2, 3, 4, 9, 10}
    assert "missing.png: no such file" in by_line[2]["error"] and by_line[2]["question_id"] == "q1"
    assert "malformed JSON" in by_line[3]["error"] and f"{questions}:3" in by_line[3]["error"]
    assert "no question_id" in by_line[4]["error"]
    assert "repeats line 1" in by_line[9]["error"]
    assert "cannot read image" in by_line[10]["error"] and by_line[10]["question_id"] == "c"
    assert len(result["errors"]) == 5
    # Fix the image: the next run answers just that question, and its error is gone.
    Image.new("RGB", (10, 10), "red").save(tmp_path / "images" / "missing.png")
    model_vqa(args(tiny_hf, questions, answers, "--batch-size", "4"))
    assert sorted(r["question_id"] for r in read(answers)) == ["q0", "q1", "q2", "q3", "q4", "q5"]
    assert {e["line"] for e in read(tmp_path / "answers.errors.jsonl")} == {3, 4, 9, 10}


@pytest.mark.slow
def test_chunks_cover_every_question_once(tmp_path, tiny_hf):
    questions = write_questions(tmp_path, 11)
    seen = []
    for k in range(3):
        out = tmp_path / f"chunk{k}.jsonl"
        model_vqa(args(tiny_hf, questions, out, "--num-chunks", "3", "--chunk-idx", str(k), "--num-workers", "0"))
        seen += [r["question_id"] for r in read(out)]
    assert sorted(seen) == sorted(f"q{i}" for i in range(11))


@pytest.mark.slow
def test_inference_sh_passes_flags_through(tmp_path, tiny_hf):
    """inference.sh's defaults point at the demo's model; flags given to it win."""
    questions = write_questions(tmp_path, 4)
    answers = tmp_path / "sh.jsonl"
    out = subprocess.run(["bash", "inference.sh", *args(tiny_hf, questions, answers, "--batch-size", "3",
                                                        "--load-4bit")],
                         cwd=ROOT, env={**ENV, "PYTHON": sys.executable}, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert len(read(answers)) == 4
    assert "(batch 3)" in out.stdout


@pytest.mark.slow
@pytest.mark.parametrize("flag", ["--load-4bit", "--load-8bit"])
def test_quantized_batch_inference(tmp_path, tiny_hf, flag):
    questions = write_questions(tmp_path, 5)
    result = model_vqa(args(tiny_hf, questions, tmp_path / "q.jsonl", flag, "--num-workers", "0"))
    assert result["answered"] == 5 and not result["errors"]


def test_beam_search_with_a_minimum_length(tmp_path, tiny_hf):
    """Captioning's settings: beams, and no answer ending before --min-new-tokens."""
    questions = write_questions(tmp_path, 6)
    stats = model_vqa(args(tiny_hf, questions, tmp_path / "beam.jsonl", "--num-beams", "3", "--min-new-tokens", "5",
                           "--length-penalty", "1.5", "--batch-size", "3", "--num-workers", "0"))
    assert stats["answered"] == 6 and stats["generated_tokens"] >= 5 * 6
    tok = AutoTokenizer.from_pretrained(tiny_hf)
    assert all(len(tok(r["text"], add_special_tokens=False).input_ids) >= 4 for r in read(tmp_path / "beam.jsonl"))
    with pytest.raises(SystemExit):
        model_vqa(args(tiny_hf, questions, tmp_path / "x.jsonl", "--min-new-tokens", "9"))  # > --max-new-tokens 6


@pytest.mark.slow
def test_the_shared_prefix_cache_changes_no_answer(tmp_path, tiny_hf):
    """The system prompt's cache reused across batches: the same greedy answers as recomputing it."""
    questions = write_questions(tmp_path, 20)
    cached = model_vqa(args(tiny_hf, questions, tmp_path / "cached.jsonl", "--batch-size", "6"))
    plain = model_vqa(args(tiny_hf, questions, tmp_path / "plain.jsonl", "--batch-size", "6", "--no-prefix-cache"))
    a = {r["question_id"]: r["text"] for r in read(tmp_path / "cached.jsonl")}
    b = {r["question_id"]: r["text"] for r in read(tmp_path / "plain.jsonl")}
    assert a == b and len(a) == 20 and cached["generated_tokens"] == plain["generated_tokens"]
    loaded = load_pretrained_model(str(tiny_hf))
    rows = [prompt_ids(loaded, render_prompt(loaded, q, True)) for q in ("What is this?", "Count them.")]
    shared = common_prefix(rows, loaded.image_token_id)
    # The whole system prompt and "USER:", up to the image: what every LLaVA prompt shares.
    assert len(shared) >= 20 and loaded.image_token_id not in shared
    assert all(r[:len(shared)] == shared for r in rows) and rows[0][len(shared)] != rows[1][len(shared)] or \
        rows[0][len(shared)] == loaded.image_token_id


@pytest.mark.slow
def test_questions_about_one_image_share_its_tokens(tmp_path, tiny_hf):
    """Three to five questions per image: the image and its tokens run once per batch, not once per
    question, and every greedy answer is what recomputing them gives.  A missing image's questions
    become error records without taking the rest of their batch down."""
    questions = write_questions(tmp_path, 1, n_images=4)  # the images
    words = ["What is this?", "Count them.", "What colour is the object on the left of the picture?",
             "Is there a circle?", "Why?"]
    lines = [{"question_id": f"q{i}", "text": words[i % 5] + "?" * (i % 3), "image": f"{i % 5}.png"}
             for i in range(21)]  # 4.png is missing
    questions.write_text("".join(json.dumps(q) + "\n" for q in lines))
    loaded = load_pretrained_model(str(tiny_hf))
    tower_images = []
    hook = loaded.model.model.vision_tower.register_forward_hook(lambda m, i, o: tower_images.append(o[0].shape[0]))
    results = {}
    try:
        for name, extra in (("shared", []), ("plain", ["--no-image-prefix"])):
            tower_images.clear()
            margs = parse_args(args(tiny_hf, questions, "-", "--batch-size", "8", "--num-workers", "0", *extra))
            with AnswersFile(tmp_path / f"{name}.jsonl", resume=False) as writer:
                stats = run(loaded, read_questions(questions)[0], margs, writer, "m")
            results[name] = ({r["question_id"]: r["text"] for r in read(tmp_path / f"{name}.jsonl")},
                             sum(tower_images), sorted(e["question_id"] for e in stats["errors"]))
    finally:
        hook.remove()
    shared, plain = results["shared"], results["plain"]
    assert shared[0] == plain[0] and len(shared[0]) == 17
    assert shared[2] == plain[2] == sorted(f"q{i}" for i in range(4, 21, 5))
    assert plain[1] == 17 and shared[1] <= 8  # 4 images; a batch of 8 holds two images' questions, or splits one


def test_image_grouped_batches_keep_an_image_together():
    images = ["a", "b", "a", "c", "b", "a", "c", "a"]
    batches = image_grouped_batches(images, [5, 9, 6, 4, 3, 7, 8, 2], batch_size=4)
    assert sorted(i for b in batches for i in b) == list(range(8)) and all(len(b) <= 4 for b in batches)
    assert [sorted({images[i] for i in b}) for b in batches] == [["b", "c"], ["a"]]  # a's four fill a batch
    assert batches[1] == [5, 2, 0, 7]  # longest first within the image; b (9) before c (8) before a (7)
    assert image_part([[1, 2, 9, 9, 3], [1, 2, 9, 9, 4, 5]], 9) == [1, 2, 9, 9]
    assert image_part([[1, 9, 3], [2, 9, 3]], 9) is None and image_part([[1, 2, 3], [1, 2, 4]], 9) is None
    assert image_part([[1, 9, 9], [1, 9, 9, 4]], 9) is None  # a row must keep a token after the part


@pytest.mark.slow
@pytest.mark.parametrize("flag, dtype", [([], torch.float32), (["--cpu-bf16"], torch.bfloat16)])
def test_cpu_bf16_runs_the_matmuls_in_bf16(tmp_path, tiny_hf, flag, dtype):
    questions = write_questions(tmp_path, 6)
    loaded = load_pretrained_model(str(tiny_hf))
    seen = []
    loaded.model.get_output_embeddings().register_forward_hook(lambda m, i, out: seen.append(out.dtype))
    with AnswersFile(tmp_path / "a.jsonl", resume=False) as writer:
        stats = run(loaded, read_questions(questions)[0], parse_args(args(tiny_hf, questions, "-", *flag)), writer, "m")
    assert stats["answered"] == 6 and not stats["errors"]
    assert seen and set(seen) == {dtype}
    assert all(p.dtype == torch.float32 for p in loaded.model.parameters())  # the weights stay fp32
