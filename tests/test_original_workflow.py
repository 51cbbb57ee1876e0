"""Issue 21's "done when": code written for the original LLaVA runs here unchanged and answers as our own
commands do.  examples/original_llava/quick_start.py is the original README's quick start and the API calls
of its run_llava.py (load_pretrained_model unpacked, conv_templates, tokenizer_image_token, process_images,
KeywordsStoppingCriteria, model.generate(input_ids, images=...)); examples/original_llava/inference.sh is its
eval scripts' `model_vqa_loader` call.  Both run as a user runs them, in a shell with only PATH and HOME, and
their answers equal `bash inference.sh`'s for the same questions and images."""

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

from llava.constants import IMAGE_TOKEN_INDEX
from llava.conversation import get_template
from llava.mm_utils import process_images, tokenizer_image_token
from llava.model.inputs import build_batch

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples" / "original_llava"
MAX_NEW = "24"


def shell_env() -> dict:
    """A new shell's environment with the project's Python first on PATH (as after `source .venv/bin/activate`)."""
    return {"PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin", "HOME": os.environ.get("HOME", "/root"),
            "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}


def run(cmd: list[str], **kw) -> str:
    proc = subprocess.run(cmd, cwd=ROOT, env=shell_env(), capture_output=True, text=True, timeout=600, **kw)
    assert proc.returncode == 0, f"{cmd}\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}"
    return proc.stdout


def texts(path: Path) -> dict:
    return {r["question_id"]: r["text"] for r in map(json.loads, path.read_text().splitlines())}


@pytest.fixture
def questions(tmp_path):
    rng = np.random.RandomState(7)
    (tmp_path / "images").mkdir()
    for i in range(3):
        Image.fromarray(rng.randint(0, 255, (30 + 6 * i, 40, 3)).astype("uint8")).save(tmp_path / f"images/{i}.png")
    rows = [{"question_id": n, "image": f"{n % 3}.png", "text": text} for n, text in
            enumerate(["What is shown?", "Describe the colours.", "Is there a person?", "What is on the left?"])]
    path = tmp_path / "questions.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.mark.slow
def test_original_scripts_answer_as_our_commands(tiny_hf, questions, tmp_path):
    images = tmp_path / "images"
    ours = tmp_path / "ours.jsonl"
    run(["bash", "inference.sh", "--model-path", str(tiny_hf), "--question-file", str(questions),
         "--image-folder", str(images), "--answers-file", str(ours), "--max-new-tokens", MAX_NEW, "--no-progress"])
    expected = texts(ours)
    assert sorted(expected) == [0, 1, 2, 3] and all(expected.values())

    original = tmp_path / "original.jsonl"
    run(["bash", str(EXAMPLES / "inference.sh"), str(tiny_hf), str(questions), str(images), str(original),
         "--max_new_tokens", MAX_NEW])
    assert texts(original) == expected
    assert {k for r in map(json.loads, original.read_text().splitlines()) for k in r} == {
        "question_id", "prompt", "text", "answer_id", "model_id", "metadata"}

    out = run([sys.executable, str(EXAMPLES / "quick_start.py"), str(tiny_hf), str(images / "0.png"),
               "What is shown?", MAX_NEW])
    quick, generated = out.split("model.generate:\n")
    assert quick.removeprefix("eval_model:\n").strip() == expected[0]
    assert generated.strip() == expected[0]


def test_generate_takes_the_originals_images_and_leaves_pixel_values_as_it_was(tiny_loaded, photo):
    """model.generate(input_ids with IMAGE_TOKEN_INDEX, images=...) returns the new tokens only, as the
    original's did; a call with pixel_values is transformers' own, unchanged."""
    tok, model = tiny_loaded.tokenizer, tiny_loaded.model
    image = photo.convert("RGB")
    prompt = get_template("vicuna_v1").prompt("<image>\nWhat is it?", eos_token=tok.eos_token)
    ids = tokenizer_image_token(prompt, tok, IMAGE_TOKEN_INDEX, return_tensors="pt").unsqueeze(0)
    assert (ids == IMAGE_TOKEN_INDEX).sum() == 1
    pixels = process_images([image], tiny_loaded.image_processor, model.config).to(torch.float16)
    new = model.generate(ids, images=pixels, image_sizes=[image.size], do_sample=False, max_new_tokens=6,
                         min_new_tokens=6)
    batch = build_batch(tiny_loaded, [prompt], [image])
    native = model.generate(**batch, do_sample=False, max_new_tokens=6, min_new_tokens=6)
    assert native.shape[1] == batch["input_ids"].shape[1] + 6  # transformers' own: prompt and answer
    assert torch.equal(new, native[:, batch["input_ids"].shape[1]:])
    # Two rows of different lengths, right-padded with a mask as a user might: left-padded here, same answers.
    prompt2 = get_template("vicuna_v1").prompt("<image>\nWhat colour is the thing on the far left?",
                                               eos_token=tok.eos_token)
    ids2 = tokenizer_image_token(prompt2, tok, IMAGE_TOKEN_INDEX, return_tensors="pt")
    both = torch.zeros((2, ids2.shape[0]), dtype=torch.long)
    mask = torch.zeros_like(both)
    both[0, :ids.shape[1]], mask[0, :ids.shape[1]] = ids[0], 1
    both[1], mask[1] = ids2, 1
    pair = model.generate(both, attention_mask=mask, images=torch.cat([pixels, pixels]), do_sample=False,
                          max_new_tokens=6, min_new_tokens=6)
    alone = model.generate(ids2.unsqueeze(0), images=pixels, do_sample=False, max_new_tokens=6, min_new_tokens=6)
    assert torch.equal(pair[0], new[0]) and torch.equal(pair[1], alone[0])
    with pytest.raises(ValueError, match="1 image place"):
        model.generate(ids, images=torch.cat([pixels, pixels]), max_new_tokens=2)
