"""llava/eval/evaluate.py run as the real command on small answer / key files."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from llava.eval.evaluate import evaluate, format_table

ROOT = Path(__file__).resolve().parents[1]

KEY = [
    {"question_id": "q1", "answers": ["red"], "category": "color"},
    {"question_id": "q2", "answers": ["2", "two"], "category": "counting"},
    {"question_id": "q3", "answers": ["2"] * 3 + ["3"] * 7, "category": "counting"},  # VQAv2-style: 10 answers
    {"question_id": "q4", "answers": ["blue"], "category": "color"},
    {"question_id": "q5", "answers": ["B"], "category": "animal", "choices": ["cat", "dog"], "answer_letter": "B"},
    {"question_id": "q6", "answers": ["yes"], "category": None},
]
ANSWERS = [
    {"question_id": "q1", "prompt": "p", "text": "green", "answer_id": "a0", "model_id": "m", "metadata": {}},
    {"question_id": "q2", "prompt": "p", "text": "two", "answer_id": "a1", "model_id": "m", "metadata": {}},
    {"question_id": "q3", "prompt": "p", "text": "2", "answer_id": "a2", "model_id": "m", "metadata": {}},
    {"question_id": "q4", "error": "image missing"},
    {"question_id": "q5", "prompt": "p", "text": "B) dog", "answer_id": "a4", "model_id": "m", "metadata": {}},
    {"question_id": "zz", "prompt": "p", "text": "what?", "answer_id": "a5", "model_id": "m", "metadata": {}},
    {"question_id": "q1", "prompt": "p", "text": "Red.", "answer_id": "a6", "model_id": "m", "metadata": {}},  # retry
]


def write_jsonl(path: Path, rows) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def run(*args):
    return subprocess.run([sys.executable, "-m", "llava.eval.evaluate", *map(str, args)], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)


def test_vqa_table_json_and_counts(tmp_path):
    answers = write_jsonl(tmp_path / "answers.jsonl", ANSWERS)
    key = write_jsonl(tmp_path / "key.jsonl", KEY)
    proc = run("--answers-file", answers, "--annotation-file", key)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    # q1 1 (last answer wins), q2 1, q3 0.9 (3 of 10 annotators), q4 0 (error), q5 1 (choice B), q6 0 (none)
    assert "| VQA accuracy | 0.6500 |" in out
    assert "| exact match | 0.6667 |" in out          # q3's "2" is one of its answers
    assert "| multiple-choice accuracy | 1.0000 |" in out
    assert "| multiple-choice questions | 1 |" in out
    for line in ["| questions | 6 |", "| answered | 4 |", "| missing answers | 2 |", "| errors | 1 |",
                 "| unknown question ids (not scored) | 1 |", "| duplicate answers (last kept) | 1 |"]:
        assert line in out
    table = out[out.index("| category |"):].splitlines()
    assert table[0] == "| category | count | VQA accuracy | exact match |"
    assert table[2:6] == ["| (none) | 1 | 0.0000 | 0.0000 |", "| animal | 1 | 1.0000 | 1.0000 |",
                          "| color | 2 | 0.5000 | 0.5000 |", "| counting | 2 | 0.9500 | 1.0000 |"]

    saved = json.loads((tmp_path / "answers_scores.json").read_text())  # default: beside the answers
    assert saved["metric"] == "vqa"
    assert saved["scores"]["vqa_accuracy"] == pytest.approx(0.65)
    assert saved["counts"] == {"questions": 6, "answered": 4, "missing": 2, "errors": 1,
                               "unknown_question_ids": 1, "duplicate_answers": 1}
    assert saved["per_category"]["counting"] == pytest.approx({"count": 2, "vqa_accuracy": 0.95, "exact_match": 1.0})
    assert saved["per_question"]["q3"] == pytest.approx(0.9)
    assert list(saved["per_category"]) == ["(none)", "animal", "color", "counting"]


def test_same_input_same_output(tmp_path):
    answers = write_jsonl(tmp_path / "answers.jsonl", ANSWERS)
    key = write_jsonl(tmp_path / "key.jsonl", KEY)
    first, second = run("--answers-file", answers, "--annotation-file", key, "--output", tmp_path / "a.json"), \
        run("--answers-file", answers, "--annotation-file", key, "--output", tmp_path / "b.json")
    assert first.stdout.split("\nscores written")[0] == second.stdout.split("\nscores written")[0]
    assert (tmp_path / "a.json").read_text() == (tmp_path / "b.json").read_text()


def test_caption_metric(tmp_path):
    key = write_jsonl(tmp_path / "key.jsonl", [
        {"question_id": 1, "answers": ["A red car on the road."], "category": "street"},
        {"question_id": 2, "answers": ["blue sky above hills"], "category": "nature"}])
    answers = write_jsonl(tmp_path / "answers.jsonl", [{"question_id": 1, "text": "a red car on the road"}])
    proc = run("--answers-file", answers, "--annotation-file", key, "--metric", "caption",
               "--output", tmp_path / "s.json")
    assert proc.returncode == 0, proc.stderr
    saved = json.loads((tmp_path / "s.json").read_text())
    # image 1 is a perfect match (CIDEr-D 10, ROUGE-L 1), image 2 has no answer (0 each)
    assert saved["scores"]["cider_d"] == pytest.approx(5.0)
    assert saved["scores"]["rouge_l"] == pytest.approx(0.5)
    assert saved["per_category"]["street"]["bleu_4"] == pytest.approx(1.0)
    assert saved["per_category"]["nature"]["cider_d"] == 0.0
    assert saved["counts"]["missing"] == 1
    assert "| CIDEr-D | 5.0000 |" in proc.stdout


def test_rating_metric(tmp_path):
    key = write_jsonl(tmp_path / "key.jsonl", [
        {"question_id": "r1", "answers": [4], "category": "x"},
        {"question_id": "r2", "answers": ["3"], "category": "x"},
        {"question_id": "r3", "answers": [1], "category": "y"},
        {"question_id": "r4", "answers": [5], "category": "y"}])
    answers = write_jsonl(tmp_path / "answers.jsonl", [
        {"question_id": "r1", "text": '{"explanation": "fine", "score": 4}'},
        {"question_id": "r2", "text": "Score: 1"},
        {"question_id": "r3", "text": "no idea"},
        {"question_id": "r4", "error": "CUDA out of memory"}])
    proc = run("--answers-file", answers, "--annotation-file", key, "--metric", "rating",
               "--output", tmp_path / "s.json")
    assert proc.returncode == 0, proc.stderr
    saved = json.loads((tmp_path / "s.json").read_text())
    assert saved["scores"] == pytest.approx({"mae": 1.0, "exact_accuracy": 0.5, "within_1_accuracy": 0.5,
                                             "spearman": 1.0, "valid": 2, "invalid": 1})
    assert saved["counts"]["missing"] == 1 and saved["counts"]["errors"] == 1
    assert saved["per_category"]["y"] == {"count": 2, "valid": 0, "mae": None, "exact_accuracy": None}
    assert "| invalid (unparseable) scores | 1 |" in proc.stdout


@pytest.mark.parametrize("which, lines, message", [
    ("answers", ['{"question_id": "q1", "text": "red"}', '{"question_id": "q2", "text": '], ":2: malformed JSON ("),
    ("answers", ['{"question_id": "q1", "text": "red"}', '{"text": "red"}'], ":2: missing 'question_id'"),
    ("answers", ['{"question_id": "q1"}'], ":1: answer has neither a 'text' string nor an 'error'"),
    ("key", ["", '{"question_id": "q1", "answers": ["red"]}', '{"answers": ["x"]}'], ":3: missing 'question_id'"),
    ("key", ['{"question_id": "q1", "answers": ["red"]}', '{"question_id": "q1", "answers": ["x"]}'],
     ":2: duplicate question_id 'q1' (first on line 1)"),
])
def test_bad_input_names_file_and_line(tmp_path, which, lines, message):
    files = {"answers": write_jsonl(tmp_path / "answers.jsonl", ['{"question_id": "q1", "text": "red"}']),
             "key": write_jsonl(tmp_path / "key.jsonl", ['{"question_id": "q1", "answers": ["red"]}'])}
    files[which] = write_jsonl(tmp_path / f"{which}.jsonl", lines)
    proc = run("--answers-file", files["answers"], "--annotation-file", files["key"])
    assert proc.returncode != 0
    assert f"{files[which]}{message}" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_library_call_without_subprocess():
    result = evaluate(ANSWERS, KEY)
    assert result["scores"]["vqa_accuracy"] == pytest.approx(0.65)
    assert "| errors | 1 |" in format_table(result)
    with pytest.raises(ValueError, match="unknown metric"):
        evaluate(ANSWERS, KEY, metric="bleu")


def test_batch_inference_errors_file_is_counted(tmp_path):
    """model_vqa writes unusable questions to ANSWERS.errors.jsonl: the table counts them as errors."""
    answers = write_jsonl(tmp_path / "answers.jsonl", ANSWERS[:3])
    write_jsonl(tmp_path / "answers.errors.jsonl", [{"line": 4, "question_id": "q4", "error": "no such file"},
                                                     {"line": 9, "question_id": None, "error": "malformed JSON"}])
    proc = run("--answers-file", answers, "--annotation-file", write_jsonl(tmp_path / "key.jsonl", KEY))
    assert proc.returncode == 0, proc.stderr
    assert "| errors | 2 |" in proc.stdout and "| missing answers | 3 |" in proc.stdout
    saved = json.loads((tmp_path / "answers_scores.json").read_text())
    assert saved["errors_file"] == str(tmp_path / "answers.errors.jsonl")


def test_clip_score_with_an_open_clip_model(tmp_path, tiny_clip):
    """CLIPScore = 2.5 * max(cos(image, caption), 0), computed here with open_clip directly."""
    import open_clip
    import torch
    from PIL import Image

    from llava.eval.evaluate import main as evaluate_main

    (tmp_path / "imgs").mkdir()
    captions = {"a": "a red square", "b": "a blue circle on grass", "c": "nothing at all"}
    questions, answers, key = [], [], []
    for i, (qid, cap) in enumerate(captions.items()):
        Image.new("RGB", (50, 40), (80 * i, 120, 200 - 60 * i)).save(tmp_path / "imgs" / f"{qid}.png")
        questions.append({"question_id": qid, "image": f"{qid}.png", "text": "Caption it."})
        answers.append({"question_id": qid, "text": cap})
        key.append({"question_id": qid, "answers": ["a shape"]})
    for name, rows in (("q", questions), ("a", answers), ("k", key)):
        (tmp_path / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    evaluate_main(["--answers-file", str(tmp_path / "a.jsonl"), "--annotation-file", str(tmp_path / "k.jsonl"),
                   "--metric", "caption", "--clip-model", f"local-dir:{tiny_clip}", "--question-file",
                   str(tmp_path / "q.jsonl"), "--image-folder", str(tmp_path / "imgs"), "--output",
                   str(tmp_path / "s.json")])
    result = json.loads((tmp_path / "s.json").read_text())
    model, _, preprocess = open_clip.create_model_and_transforms(f"local-dir:{tiny_clip}")
    tok = open_clip.get_tokenizer(f"local-dir:{tiny_clip}")
    expected = {}
    with torch.no_grad():
        for qid, cap in captions.items():
            img = model.encode_image(preprocess(Image.open(tmp_path / "imgs" / f"{qid}.png").convert("RGB"))[None])
            txt = model.encode_text(tok([cap]))
            cos = torch.nn.functional.cosine_similarity(img, txt).item()
            expected[qid] = 2.5 * max(cos, 0.0)
    assert result["per_question_clip_score"] == pytest.approx(expected, abs=1e-5)
    assert result["scores"]["clip_score"] == pytest.approx(sum(expected.values()) / 3, abs=1e-5)
