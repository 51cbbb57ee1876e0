"""The original LLaVA's names, as its scripts call them: `python -m llava.eval.model_vqa_loader` with its
flags, `get_model_name_from_path`, `tokenizer_image_token(..., return_tensors="pt")` (issue 21)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import AutoTokenizer

from llava.eval.model_vqa import main as model_vqa
from llava.mm_utils import get_model_name_from_path, tokenizer_image_token

ROOT = Path(__file__).resolve().parents[1]


def answers(path: Path) -> dict[str, dict]:
    return {r["question_id"]: r for r in map(json.loads, path.read_text().splitlines())}


@pytest.mark.slow
def test_model_vqa_loader_with_the_original_flags_answers_as_model_vqa(tmp_path, tiny_hf):
    rng = np.random.RandomState(1)
    (tmp_path / "images").mkdir()
    for i in range(3):
        Image.fromarray(rng.randint(0, 255, (24 + 4 * i, 32, 3)).astype("uint8")).save(tmp_path / f"images/{i}.jpg")
    questions = tmp_path / "llava-bench.jsonl"
    questions.write_text("".join(json.dumps({"question_id": n, "image": f"{n % 3}.jpg", "text": text,
                                             "category": "conv"}) + "\n"
                                 for n, text in enumerate(["What is in the image?", "Describe the colours.",
                                                           "Is there a person?", "What is on the left?"])))
    # As the original's scripts/v1_5/eval/*.sh call it (underscore spellings and all).
    original = tmp_path / "original.jsonl"
    proc = subprocess.run(
        [sys.executable, "-m", "llava.eval.model_vqa_loader", "--model-path", str(tiny_hf), "--question-file",
         str(questions), "--image-folder", str(tmp_path / "images"), "--answers-file", str(original),
         "--temperature", "0", "--conv-mode", "vicuna_v1", "--max_new_tokens", "6", "--num_beams", "1",
         "--top_p", "0.9", "--num-chunks", "1", "--chunk-idx", "0"],
        cwd=ROOT, env={**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}, capture_output=True,
        text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ours = tmp_path / "ours.jsonl"
    model_vqa(["--model-path", str(tiny_hf), "--question-file", str(questions), "--image-folder",
               str(tmp_path / "images"), "--answers-file", str(ours), "--max-new-tokens", "6", "--no-progress",
               "--num-workers", "0"])
    a, b = answers(original), answers(ours)
    # Ours writes every question_id as a string (the original kept an integer an integer: left for issue 21).
    assert sorted(a) == sorted(b) == ["0", "1", "2", "3"]
    assert {q: r["text"] for q, r in a.items()} == {q: r["text"] for q, r in b.items()}
    assert all(set(r) == {"question_id", "prompt", "text", "answer_id", "model_id", "metadata"} for r in a.values())
    assert a["1"]["prompt"] == "Describe the colours." and a["1"]["model_id"] == Path(tiny_hf).name


@pytest.mark.parametrize("path, name", [
    ("liuhaotian/llava-v1.5-7b", "llava-v1.5-7b"),
    ("checkpoints/llava-v1.5-13b-task-lora/", "llava-v1.5-13b-task-lora"),
    ("/runs/llava-v1.5-7b-task/checkpoint-500", "llava-v1.5-7b-task_checkpoint-500"),
    ("checkpoint-500", "checkpoint-500"),
])
def test_get_model_name_from_path_names_models_as_the_original_does(path, name):
    # The original's builder looked for "lora" and "llava" in this name; scripts still pass it.
    assert get_model_name_from_path(path) == name


def test_tokenizer_image_token_returns_a_tensor_when_asked(tiny_hf):
    tok = AutoTokenizer.from_pretrained(tiny_hf)
    prompt = "USER: <image>\nWhat is it? ASSISTANT:"
    ids = tokenizer_image_token(prompt, tok)
    tensor = tokenizer_image_token(prompt, tok, return_tensors="pt")
    assert isinstance(ids, list) and tensor.dtype == torch.long and tensor.tolist() == ids
    assert tensor.unsqueeze(0).shape == (1, len(ids))
    with pytest.raises(ValueError, match="only None or 'pt'"):
        tokenizer_image_token(prompt, tok, return_tensors="np")
