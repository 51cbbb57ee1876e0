"""llava/eval/evaluate.py run as the real command on small answer / key files."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image

from llava.eval.evaluate import evaluate, format_table
from llava.eval.evaluate import main as evaluate_main

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
    """Dicts as JSON, strings as they are, bytes as they are (not UTF-8, say), a line each."""
    path.write_bytes(b"".join((r if isinstance(r, bytes) else (r if isinstance(r, str) else json.dumps(r)).encode())
                              + b"\n" for r in rows))
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


@pytest.mark.slow
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


BAD_LINES = {
    # which file, its lines, what the message says after FILE:LINE
    "answers-malformed-json": ("answers", ['{"question_id": "q2", "text": '], ":2: malformed JSON ("),
    "answers-no-question-id": ("answers", ['{"text": "red"}'], ":2: missing 'question_id'"),
    "answers-no-text-nor-error": ("answers", ['{"question_id": "q2"}'], ":2: answer has neither a 'text' string"),
    "answers-not-utf8": ("answers", [b'{"question_id": "q2", "text": "\xff"}'], ":2: not UTF-8 text (byte 0xff"),
    "answers-lone-surrogate": ("answers", ['{"question_id": "q2", "text": "\\ud83d"}'], ":2: field 'text' holds an "
                               "unpaired surrogate"),
    "answers-json-list": ("answers", ["[1, 2]"], ":2: expected a JSON object, got list"),
    "answers-json-null": ("answers", ["null"], ":2: expected a JSON object, got NoneType"),
    "answers-id-bool": ("answers", ['{"question_id": true, "text": "x"}'], ":2: question_id True is a bool"),
    "answers-nested-deep": ("answers", ["[" * 100_000], ":2: malformed JSON (nested too deeply)"),
    "answers-line-over-16MiB": ("answers", [b'{"question_id": "q2", "text": "' + b"a" * (17 * 2**20) + b'"}'],
                                ":2: line is longer than 16 MiB"),
    "key-no-question-id": ("key", ['{"answers": ["x"]}'], ":2: missing 'question_id'"),
    "key-duplicate": ("key", ['{"question_id": "q1", "answers": ["x"]}'], ":2: duplicate question_id 'q1' (first on "
                      "line 1)"),
    "key-not-utf8": ("key", [b'{"question_id": "q2", "answers": ["\xe9t\xe9"]}'], ":2: not UTF-8 text"),
    "key-answers-object": ("key", ['{"question_id": "q2", "answers": {"a": 1}}'], ":2: 'answers' must be a string"),
    "key-answers-empty": ("key", ['{"question_id": "q2", "answers": []}'], ":2: 'answers' is empty"),
    "key-choices-not-a-list": ("key", ['{"question_id": "q2", "answers": ["A"], "choices": 5, "answer_letter": "A"}'],
                               ":2: 'choices' must be a list"),
    "key-id-fraction": ("key", ['{"question_id": 2.5, "answers": ["x"]}'], ":2: question_id 2.5 is a float"),
}


@pytest.mark.bad_input
@pytest.mark.parametrize("kind", list(BAD_LINES))
def test_a_bad_line_is_named_left_out_and_the_rest_scored(tmp_path, run_main, kind):
    """A bad line in either file is named with FILE:LINE, listed in the scores file and counted; every
    other line is scored as usual (q1 right: accuracy 1 over the one usable key question)."""
    which, lines, message = BAD_LINES[kind]
    good = {"answers": '{"question_id": "q1", "text": "red"}', "key": '{"question_id": "q1", "answers": ["red"]}'}
    files = {name: write_jsonl(tmp_path / f"{name}.jsonl", [line, *(lines if name == which else [])])
             for name, line in good.items()}
    result = run_main(evaluate_main, ["--answers-file", files["answers"], "--annotation-file", files["key"],
                                      "--output", tmp_path / "s.json"], expect_code=0)
    assert f"{files[which]}{message}" in result.err
    saved = json.loads((tmp_path / "s.json").read_text())
    assert saved["counts"]["bad_lines"] == 1 and saved["bad_lines"][0]["line"] == 2
    assert saved["bad_lines"][0]["file"] == str(files[which])
    assert saved["scores"]["vqa_accuracy"] == 1.0 and saved["counts"]["questions"] == 1
    assert "| unreadable lines (left out) | 1 |" in result.out


@pytest.mark.bad_input
@pytest.mark.parametrize("kind", ["bom", "crlf"])
def test_a_byte_order_mark_and_crlf_are_read(tmp_path, run_main, kind):
    key = tmp_path / "key.jsonl"
    answers = tmp_path / "answers.jsonl"
    if kind == "bom":
        key.write_bytes(b'\xef\xbb\xbf{"question_id": "q1", "answers": ["red"]}\n')
        answers.write_bytes(b'\xef\xbb\xbf{"question_id": "q1", "text": "red"}\n')
    else:
        key.write_bytes(b'{"question_id": "q1", "answers": ["red"]}\r\n{"question_id": "q2", "answers": ["x"]}\r\n')
        answers.write_bytes(b'{"question_id": "q1", "text": "red"}\r\n')
    result = run_main(evaluate_main, ["--answers-file", answers, "--annotation-file", key, "--output",
                                      tmp_path / "s.json"], expect_code=0)
    saved = json.loads((tmp_path / "s.json").read_text())
    assert saved["per_question"]["q1"] == 1.0 and "bad_lines" not in saved, result


@pytest.mark.bad_input
def test_a_gold_rating_out_of_range_is_a_bad_line(tmp_path, run_main):
    key = write_jsonl(tmp_path / "key.jsonl", [{"question_id": "r1", "answers": [4]},
                                               {"question_id": "r2", "answers": [9]}])
    answers = write_jsonl(tmp_path / "a.jsonl", [{"question_id": "r1", "text": "4"},
                                                 {"question_id": "r2", "text": "1"}])
    result = run_main(evaluate_main, ["--answers-file", answers, "--annotation-file", key, "--metric", "rating",
                                      "--output", tmp_path / "s.json"], expect_code=0)
    assert f"{key}:2: rating answer [9] is not an integer 0-5" in result.err
    saved = json.loads((tmp_path / "s.json").read_text())
    assert saved["scores"]["exact_accuracy"] == 1.0 and saved["counts"]["questions"] == 1


@pytest.mark.bad_input
@pytest.mark.parametrize("kind", ["empty", "all-lines-bad"])
def test_a_key_with_nothing_usable_is_refused(tmp_path, run_main, kind):
    key = tmp_path / "key.jsonl"
    key.write_bytes(b"" if kind == "empty" else b"[1]\n\xff\n")
    answers = write_jsonl(tmp_path / "a.jsonl", [{"question_id": "q1", "text": "red"}])
    result = run_main(evaluate_main, ["--answers-file", answers, "--annotation-file", key])
    assert result.code == 1 and f"{key}: no usable annotation record" in result.err
    assert not (tmp_path / "a_scores.json").exists()


@pytest.mark.bad_input
def test_an_errors_file_that_is_not_utf8_is_still_counted(tmp_path, run_main):
    answers = write_jsonl(tmp_path / "answers.jsonl", [{"question_id": "q1", "text": "red"}])
    (tmp_path / "answers.errors.jsonl").write_bytes(b'{"line": 2, "error": "\xff"}\n')
    key = write_jsonl(tmp_path / "key.jsonl", KEY[:1])
    result = run_main(evaluate_main, ["--answers-file", answers, "--annotation-file", key], expect_code=0)
    assert "| errors | 1 |" in result.out


@pytest.mark.bad_input
@pytest.mark.parametrize("kind", ["answers-file", "annotation-file", "default-is-the-key", "errors-file",
                                  "question-file", "hard-link-to-answers"])
def test_scores_over_an_input_are_refused_before_any_work(tmp_path, run_main, kind):
    """`--output` equal to the answers file replaced the answers (issue 18): every input is refused."""
    answers = write_jsonl(tmp_path / "answers.jsonl", ANSWERS)
    key = write_jsonl(tmp_path / "key.jsonl", KEY)
    errors = write_jsonl(tmp_path / "answers.errors.jsonl", [{"line": 1, "question_id": "q4", "error": "x"}])
    questions = write_jsonl(tmp_path / "q.jsonl", [{"question_id": "q1", "text": "?", "image": "a.png"}])
    args = ["--answers-file", answers, "--annotation-file", key]
    if kind == "default-is-the-key":  # <answers stem>_scores.json is where the key is
        key = key.rename(tmp_path / "answers_scores.json")
        args = ["--answers-file", answers, "--annotation-file", key]
    elif kind == "hard-link-to-answers":
        os.link(answers, tmp_path / "link.json")
        args += ["--output", tmp_path / "link.json"]
    elif kind == "question-file":
        args += ["--output", questions, "--question-file", questions]
    else:
        args += ["--output", {"answers-file": answers, "annotation-file": key, "errors-file": errors}[kind]]
    before = {p: p.read_bytes() for p in (answers, key, errors, questions)}
    result = run_main(evaluate_main, args)
    assert result.code == 1 and "is the same file as" in result.err and "writing it would destroy" in result.err
    assert {p: p.read_bytes() for p in before} == before


@pytest.mark.bad_input
@pytest.mark.parametrize("kind", ["output-a-directory", "output-under-a-file", "answers-missing",
                                  "answers-a-directory", "key-missing", "question-file-missing"])
def test_a_bad_path_is_named_before_any_work(tmp_path, run_main, kind):
    answers = write_jsonl(tmp_path / "answers.jsonl", ANSWERS)
    key = write_jsonl(tmp_path / "key.jsonl", KEY)
    (tmp_path / "dir").mkdir()
    flag, path, message = {
        "output-a-directory": ("--output", tmp_path / "dir", "is a directory"),
        "output-under-a-file": ("--output", key / "s.json", f"{key} is a file, not a folder"),
        "answers-missing": ("--answers-file", tmp_path / "nope.jsonl", "no such file"),
        "answers-a-directory": ("--answers-file", tmp_path / "dir", "is a directory, not a file"),
        "key-missing": ("--annotation-file", tmp_path / "nope.jsonl", "no such file"),
        "question-file-missing": ("--question-file", tmp_path / "nope.jsonl", "no such file"),
    }[kind]
    args = {"--answers-file": answers, "--annotation-file": key, "--output": tmp_path / "s.json"}
    args[flag] = path
    result = run_main(evaluate_main, [x for kv in args.items() for x in kv])
    assert result.code == 1 and f"{flag} {path}: {message}" in result.err
    assert not (tmp_path / "s.json").exists() and not (tmp_path / "answers_scores.json").exists()


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
    # open_clip (the `tasks` extra) takes seconds to import: only this test of the file needs it.
    import open_clip  # noqa: PLC0415

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
