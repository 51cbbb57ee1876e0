"""Captioning: the sample task's files, and checkpoint selection on a real (tiny) LoRA run with several
saved checkpoints, each answered with beam search and scored with CIDEr-D."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from llava.demo.caption_task import CAPTION_PROMPT, house_caption, make_caption_task, references
from llava.demo.scenes import SceneObject
from llava.eval.evaluate import evaluate, read_annotations, read_answers
from llava.eval.model_vqa import main as model_vqa

from testkit.training import launch

ROOT = Path(__file__).resolve().parents[1]


def test_house_style_and_references():
    objs = [SceneObject("blue", "square", 60, 50, 16, "right", "bottom"), SceneObject("red", "circle", 10, 10, 16,
                                                                                        "left", "top")]
    assert house_caption(objs) == "2 shapes: red circle (top left), blue square (bottom right)."
    assert references(objs)[1:] == ["2 shapes: blue square (bottom right), red circle (top left).",
                                    "Shapes: red circle top left, blue square bottom right."]
    assert house_caption(objs[:1]) == "1 shape: blue square (bottom right)."


@pytest.fixture(scope="module")
def caption_task(tmp_path_factory):
    out = tmp_path_factory.mktemp("captions")
    make_caption_task(out, num_train_images=24, num_test_images=4, num_val_images=4, seed=5)
    return out


def test_caption_task_files(caption_task):
    train = json.loads((caption_task / "train.json").read_text())
    assert len(train) == 24 and train[0]["conversations"][0]["value"] == "<image>\n" + CAPTION_PROMPT
    splits = {}
    for split in ("val", "test"):
        qs = [json.loads(line) for line in (caption_task / f"{split}_questions.jsonl").read_text().splitlines()]
        keys = [json.loads(line) for line in (caption_task / f"{split}_answers.jsonl").read_text().splitlines()]
        assert len(qs) == 4 and [q["question_id"] for q in qs] == [k["question_id"] for k in keys]
        assert all(len(k["answers"]) == 3 for k in keys)
        splits[split] = {q["image"] for q in qs}
    assert splits["val"].isdisjoint(splits["test"]) and splits["val"].isdisjoint({r["image"] for r in train})


@pytest.mark.deepspeed
def test_select_checkpoint_keeps_the_best_by_cider(caption_task, tiny_hf, tmp_path):
    task = {"data": caption_task / "train.json", "images": caption_task / "images"}
    run = tmp_path / "run"
    launch("finetune_task_lora.sh", run, tiny_hf, task, "--max_steps", "4", "--save_steps", "2",
           "--save_total_limit", "3")
    assert sorted(p.name for p in run.glob("checkpoint-*")) == ["checkpoint-2", "checkpoint-4"]
    common = ["--model-base", str(tiny_hf), "--question-file", str(caption_task / "val_questions.jsonl"),
              "--image-folder", str(caption_task / "images"), "--annotation-file",
              str(caption_task / "val_answers.jsonl"), "--metric", "caption"]
    gen = ["--num-beams", "2", "--min-new-tokens", "3", "--max-new-tokens", "8", "--batch-size", "2"]
    proc = subprocess.run([sys.executable, "scripts/select_checkpoint.py", "--run-dir", str(run), *common, *gen],
                          cwd=ROOT, capture_output=True, text=True, timeout=600,
                          env={"HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads((run / "checkpoint_scores.json").read_text())
    names = [c["checkpoint"] for c in summary["checkpoints"]]
    assert names == ["checkpoint-2", "checkpoint-4", "final"] and summary["key"] == "cider_d"
    best = max(summary["checkpoints"], key=lambda c: c["cider_d"])
    assert summary["best"] == best["checkpoint"]
    best_dir = run / "best"
    assert (best_dir / "adapter_model.safetensors").is_file()
    assert (best_dir / "non_lora_trainables.safetensors").is_file()
    assert not (best_dir / "optimizer.pt").exists() and not list(best_dir.glob("global_step*"))
    # The copy is the checkpoint it names: answered again, it scores the same.
    answers = tmp_path / "best.jsonl"
    model_vqa(["--model-path", str(best_dir), "--model-base", str(tiny_hf), "--question-file",
               str(caption_task / "val_questions.jsonl"), "--image-folder", str(caption_task / "images"),
               "--answers-file", str(answers), "--no-progress", *gen])
    again = evaluate(read_answers(answers), read_annotations(caption_task / "val_answers.jsonl"), "caption")
    assert again["scores"]["cider_d"] == pytest.approx(best["cider_d"])
