"""scripts/merge_lora_weights.py run as the real command: a standalone directory plain transformers
loads (model and processor), whatever the folders are called; a base that does not fit is refused."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from transformers import AutoProcessor, LlavaForConditionalGeneration

from llava.demo.models import PRESETS, build
from llava.model.builder import load_pretrained_model
from llava.model.inputs import build_batch, render_prompt

ROOT = Path(__file__).resolve().parents[1]


def merge(lora: Path, base: Path, out: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "scripts/merge_lora_weights.py", "--model-path", str(lora),
                           "--model-base", str(base), "--save-model-path", str(out)],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)


@pytest.mark.slow
def test_merged_directory_loads_in_plain_transformers(lora_run, tiny_hf, tmp_path, noise_image):
    lora_dir, _, _ = lora_run
    # Folder names say nothing of what they hold (the original decides by the name).
    adapter, base = tmp_path / "run-a", tmp_path / "m0"
    shutil.copytree(lora_dir, adapter)
    shutil.copytree(tiny_hf, base)
    proc = merge(adapter, base, tmp_path / "out")
    assert proc.returncode == 0, proc.stderr[-3000:]
    reference = load_pretrained_model(str(adapter), model_base=str(base), merge_lora=False)
    merged = LlavaForConditionalGeneration.from_pretrained(tmp_path / "out", dtype=torch.float32).eval()
    processor = AutoProcessor.from_pretrained(tmp_path / "out", backend="pil")
    assert not any("lora_" in n for n, _ in merged.named_parameters())
    batch = build_batch(reference, [render_prompt(reference, "What is shown?", True)], [noise_image])
    plain = processor(images=noise_image, return_tensors="pt")["pixel_values"]
    assert torch.equal(plain, batch["pixel_values"])  # the same preprocessing without our package
    # transformers' default (torchvision) backend resizes differently by at most one grey level.
    default = AutoProcessor.from_pretrained(tmp_path / "out")(images=noise_image, return_tensors="pt")["pixel_values"]
    assert (default - plain).abs().max() * 255 * min(processor.image_processor.image_std) <= 1.0 + 1e-4
    with torch.no_grad():
        a = reference.model(**batch).logits
        b = merged(**batch).logits
    assert (a - b).abs().max() <= 1e-4
    assert processor.tokenizer.chat_template, "the chat template travels with the merged model"


@pytest.mark.slow
def test_a_base_that_does_not_fit_is_refused_naming_the_tensor(lora_run, tiny_root, tmp_path):
    wider = {"vision": PRESETS["tiny"]["vision"], "llm": dict(PRESETS["tiny"]["llm"], hidden_size=64)}
    other = build(tmp_path / "wide", preset=wider, parts_dir=tmp_path / "wide-parts")
    proc = merge(lora_run[0], other, tmp_path / "out")
    assert proc.returncode != 0
    assert "cannot merge:" in proc.stderr and "has shape (32," in proc.stderr and "(64," in proc.stderr
    assert not (tmp_path / "out").exists()
    not_lora = merge(other, other, tmp_path / "out2")
    assert not_lora.returncode != 0 and "not a LoRA output directory" in not_lora.stderr
