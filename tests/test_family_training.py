"""Training the other families (llava/model/families) through the real commands: a LoRA run under a real
DeepSpeed launch (scripts/finetune_task_lora.sh) overfits four records, scripts/merge_lora_weights.py
merges it into a directory plain transformers loads, with the adapter model's logits; QLoRA for
Llama-3.2-Vision (the rating system's recipe: 4-bit, LoRA on the language model)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from testkit import ROOT
from testkit.training import launch

pytestmark = pytest.mark.deepspeed

FAMILIES = ["mllama", "blip2", "llava_next", "qwen2_vl"]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    from llava.demo.family_models import build  # noqa: PLC0415 - torch and transformers only when used
    from llava.demo.vqa_task import make_sample_task  # noqa: PLC0415

    root = tmp_path_factory.mktemp("family-training")
    make_sample_task(root / "raw", num_train_images=4, num_test_images=0, seed=0)
    subprocess.run([sys.executable, str(ROOT / "scripts/task_data_preprocessing.py"), "--input",
                    str(root / "raw/train.csv"), "--image-folder", str(root / "raw/images"), "--image-template",
                    "SYN_{image_id:012d}.jpg", "--output-dir", str(root / "data"), "--short-answer", "--val-fraction",
                    "0", "--no-progress"], check=True, capture_output=True)
    records = json.loads((root / "data/train.json").read_text())[:4]
    (root / "four.json").write_text(json.dumps(records))
    task = {"data": root / "four.json", "images": root / "raw/images", "records": records}
    return root, task, {f: build(f, root / f"tiny-{f}") for f in FAMILIES}


def losses(out: Path) -> list[float]:
    return [json.loads(line)["loss"] for line in (out / "loss_log.jsonl").read_text().splitlines() if line.strip()]


def model_inputs(processor, family, records, images: Path) -> dict:
    """A batch of the records' questions with their images, as the family's processor makes it."""
    from PIL import Image  # noqa: PLC0415

    questions = [r["conversations"][0]["value"].replace("<image>", "").strip() for r in records]
    prompts = [family.render(processor, q, True) for q in questions]
    pictures = [Image.open(images / r["image"]).convert("RGB") for r in records]
    return family.inputs(processor, prompts, pictures)


@pytest.mark.parametrize("family", FAMILIES)
def test_lora_run_overfits_and_merges_into_a_plain_transformers_model(setup, tmp_path, family):
    from transformers import AutoModelForImageTextToText, AutoProcessor  # noqa: PLC0415

    from llava.model.builder import load_pretrained_model  # noqa: PLC0415

    root, task, dirs = setup
    out = tmp_path / "lora"
    launch("finetune_task_lora.sh", out, dirs[family], task, "--max_steps", "20", "--learning_rate", "1e-2",
           "--lr_scheduler_type", "constant", "--warmup_ratio", "0", "--lora_r", "16", "--lora_alpha", "32")
    seq = losses(out)
    print(family, "loss", seq[0], "->", seq[-1])
    assert seq[-1] < 0.3 * seq[0], seq
    adapter = json.loads((out / "adapter_config.json").read_text())
    language_model = load_pretrained_model(str(dirs[family])).family.language_model
    assert adapter["target_modules"].startswith(f"(.*\\.)?{re.escape(language_model)}")  # never the vision side

    merged = tmp_path / "merged"
    subprocess.run([sys.executable, "scripts/merge_lora_weights.py", "--model-path", str(out), "--model-base",
                    str(dirs[family]), "--save-model-path", str(merged)], cwd=ROOT, check=True, capture_output=True)
    unmerged = load_pretrained_model(str(out), str(dirs[family]), merge_lora=False)
    assert hasattr(unmerged.model, "peft_config")  # the adapter as trained, not merged
    plain = AutoModelForImageTextToText.from_pretrained(merged).eval()  # plain transformers, none of our code
    processor = AutoProcessor.from_pretrained(merged)
    batch = model_inputs(processor, unmerged.family, task["records"], task["images"])
    # In float64, so that what differs is the merge, not fp32 rounding in two orders of summation (the
    # tiny models' wide weights make logits of ~10, where fp32 rounding alone reaches 2e-4).
    batch = {k: v.double() if v.is_floating_point() else v for k, v in batch.items()}
    with torch.no_grad():
        a = unmerged.model.double()(**batch).logits
        b = plain.double()(**batch).logits
    assert (a - b).abs().max().item() <= 1e-4
    # and the trained adapter changed the model: the base gives other logits
    base = AutoModelForImageTextToText.from_pretrained(dirs[family]).eval().double()
    with torch.no_grad():
        assert (base(**batch).logits - b).abs().max().item() > 1e-2


def test_qlora_llama_vision_recipe(setup, tmp_path):
    """4-bit base, LoRA on the language model only (--freeze_mm_mlp_adapter): the rating system's recipe."""
    root, task, dirs = setup
    out = tmp_path / "qlora"
    proc = launch("finetune_task_qlora.sh", out, dirs["mllama"], task, "--max_steps", "2",
                  "--freeze_mm_mlp_adapter", "True")
    found = re.search(r"quantized base for QLoRA: (\d+) Linear4bit layers", proc.stdout + proc.stderr)
    assert found and int(found.group(1)) > 0, proc.stderr[-3000:]
    assert len(losses(out)) == 2
    assert not (out / "non_lora_trainables.safetensors").exists()  # the language model's adapter only
    from PIL import Image  # noqa: PLC0415

    from llava.model.builder import load_pretrained_model  # noqa: PLC0415
    from llava.model.inputs import generate  # noqa: PLC0415

    lm = load_pretrained_model(str(out), str(dirs["mllama"]), load_4bit=True)
    image = Image.open(task["images"] / task["records"][0]["image"]).convert("RGB")
    assert isinstance(generate(lm, ["What colour is it?"], [image], max_new_tokens=3)[0], str)
