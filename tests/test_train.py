"""Training, really launched: the `deepspeed` launcher runs scripts/finetune_task_lora.sh (and the
QLoRA script) on the tiny model, on CPU, with ZeRO-2, ZeRO-3 and two ranks."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from transformers import LlavaForConditionalGeneration

from llava.demo.vqa_task import make_sample_task
from llava.model.builder import load_pretrained_model
from llava.model.cpu_features import cpu_has_native_bf16
from llava.train import shm_cleanup

from testkit import free_port
from testkit.training import launch

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.deepspeed


@pytest.fixture(scope="session")
def tiny_task(tmp_path_factory):
    """The sample task at a small size, preprocessed into LLaVA conversations."""
    root = tmp_path_factory.mktemp("task")
    make_sample_task(root / "raw", num_train_images=24, num_test_images=0, seed=0)
    subprocess.run([sys.executable, str(ROOT / "scripts/task_data_preprocessing.py"), "--input",
                    str(root / "raw/train.csv"), "--image-folder", str(root / "raw/images"), "--image-template",
                    "SYN_{image_id:012d}.jpg", "--output-dir", str(root / "data"), "--short-answer",
                    "--no-progress"], check=True, capture_output=True)
    return {"data": root / "data/train.json", "images": root / "raw/images", "root": root}


def losses(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "loss_log.jsonl").read_text().splitlines() if line.strip()]


def first_step(out: Path) -> dict:
    return next(r for r in losses(out) if r["step"] == 1)


# ZeRO-2 with the script's own dtype is the CPU recipe (bf16 weights where the CPU has bf16
# instructions); ZeRO-3 runs in bf16 as the GPU recipe does, where the weights loaded inside
# zero.Init and the LoRA weights made after it must reach DeepSpeed in one dtype.
@pytest.mark.parametrize("zero", ["zero2", "zero3"])
def test_lora_script_trains_and_saves_a_loadable_adapter(tmp_path, tiny_hf, tiny_task, zero):
    out = tmp_path / "lora"
    launch("finetune_task_lora.sh", out, tiny_hf, tiny_task, "--max_steps", "3",
           *(["--bf16", "True", "--use_cpu", "True"] if zero == "zero3" else []), zero=zero,
           cpu_bf16_weights=zero == "zero2")
    rows = losses(out)
    assert [r["step"] for r in rows] == [1, 2, 3]
    assert all(r["loss"] > 0 for r in rows)
    for name in ("adapter_config.json", "adapter_model.safetensors", "non_lora_trainables.safetensors",
                 "config.json", "loss_curve.png", "tokenizer_config.json"):
        assert (out / name).exists(), name

    with safe_open(out / "adapter_model.safetensors", "pt") as f:
        saved = {f.get_tensor(k).dtype for k in f.keys()}
    assert saved == {torch.bfloat16 if zero == "zero3" or cpu_has_native_bf16() else torch.float32}
    adapter = json.loads((out / "adapter_config.json").read_text())
    targets = adapter["target_modules"]
    targets = targets if isinstance(targets, str) else "|".join(targets)
    assert "language_model" in targets and "vision_tower" not in targets and "lm_head" not in targets
    base = load_pretrained_model(str(tiny_hf), merge_lora=False).model
    tuned = load_pretrained_model(str(out), model_base=str(tiny_hf)).model
    name = "model.multi_modal_projector.linear_1.weight"
    # The projector trains fully alongside LoRA, so the loaded model carries the trained one.
    assert not torch.equal(dict(base.named_parameters())[name], dict(tuned.named_parameters())[name])
    if zero == "zero2":
        check_merge(tmp_path, out, tiny_hf, tuned)
    base_tower = {n: p for n, p in base.named_parameters() if "vision_tower" in n}
    tuned_params = dict(tuned.named_parameters())
    assert base_tower and all(torch.equal(p, tuned_params[n]) for n, p in base_tower.items())


def check_merge(tmp_path, lora_dir, base_dir, unmerged_reference):
    """scripts/merge_lora_weights.py writes a directory plain transformers loads, with the same logits."""
    merged_dir = tmp_path / "merged"
    subprocess.run([sys.executable, "scripts/merge_lora_weights.py", "--model-path", str(lora_dir),
                    "--model-base", str(base_dir), "--save-model-path", str(merged_dir)],
                   cwd=ROOT, check=True, capture_output=True)
    adapter = load_pretrained_model(str(lora_dir), model_base=str(base_dir), merge_lora=False)
    merged = LlavaForConditionalGeneration.from_pretrained(merged_dir, dtype=torch.float32).eval()
    ids = torch.tensor([[1] + [adapter.image_token_id] * adapter.num_image_tokens + [300, 400, 500]])
    pixels = torch.randn(1, 3, *([adapter.model.config.vision_config.image_size] * 2))
    with torch.no_grad():
        a = adapter.model(input_ids=ids, pixel_values=pixels).logits
        b = merged(input_ids=ids, pixel_values=pixels).logits
    assert (a - b).abs().max() <= 1e-4


def test_two_ranks_give_the_same_first_step_loss_as_one(tmp_path, tiny_hf, tiny_task):
    """Same global batch of 8: one rank x 8 against two ranks x 4 (ZeRO-2 data parallel)."""
    one, two = tmp_path / "one", tmp_path / "two"
    launch("finetune_task_lora.sh", one, tiny_hf, tiny_task, "--max_steps", "2",
           "--per_device_train_batch_size", "8", procs=1)
    port = free_port()
    launch("finetune_task_lora.sh", two, tiny_hf, tiny_task, "--max_steps", "2", procs=2, port=port)
    # DeepSpeed's CPU all-reduce gives each rank a 69 MB /dev/shm segment and never removes it;
    # train.py does, or every run would keep that memory until reboot.
    assert not list(shm_cleanup.SHM_DIR.glob(f"deepspeed_allreduce_buffer_{os.getuid()}_*_{port}_*"))
    a, b = first_step(one), first_step(two)
    assert a["loss"] == pytest.approx(b["loss"], abs=1e-4)
    assert a["grad_norm"] == pytest.approx(b["grad_norm"], rel=1e-3)
    # Each rank read its own half: two ranks x 4 cover the same epoch fraction as one rank x 8.
    assert a["epoch"] == pytest.approx(b["epoch"])


def test_loss_decreases_on_a_repeated_batch(tmp_path, tiny_hf, tiny_task):
    records = json.loads(Path(tiny_task["data"]).read_text())[:4]
    data = tmp_path / "four.json"
    data.write_text(json.dumps(records))
    out = tmp_path / "repeat"
    launch("finetune_task_lora.sh", out, tiny_hf, tiny_task, "--max_steps", "12", "--learning_rate", "1e-2",
           "--lr_scheduler_type", "constant", "--warmup_ratio", "0", "--lora_r", "16", data=data)
    seq = [r["loss"] for r in losses(out)]
    # The tiny model's LLM is random, so it learns slowly; but on one batch every step should help.
    assert seq[-1] < seq[0] - 0.3, seq
    assert sum(b < a for a, b in zip(seq, seq[1:])) >= 0.8 * (len(seq) - 1), seq


def test_resume_gives_the_same_next_step_loss(tmp_path, tiny_hf, tiny_task):
    """An interrupted run (only checkpoint-2 left) resumes and logs step 3 as the uninterrupted one."""
    full, resumed = tmp_path / "full", tmp_path / "resumed"
    flags = ("--max_steps", "4", "--save_steps", "2", "--save_total_limit", "5", "--lora_dropout", "0.1")
    launch("finetune_task_lora.sh", full, tiny_hf, tiny_task, *flags)
    resumed.mkdir()
    shutil.copytree(full / "checkpoint-2", resumed / "checkpoint-2")
    proc = launch("finetune_task_lora.sh", resumed, tiny_hf, tiny_task, *flags)
    assert "resuming from" in proc.stdout + proc.stderr
    by_step = {r["step"]: r["loss"] for r in losses(full)}
    again = {r["step"]: r["loss"] for r in losses(resumed)}
    assert sorted(again) == [3, 4]  # steps 1-2 were not trained again
    assert again[3] == pytest.approx(by_step[3], abs=1e-6)
    assert again[4] == pytest.approx(by_step[4], abs=1e-6)


def test_qlora_trains_on_cpu(tmp_path, tiny_hf, tiny_task):
    out = tmp_path / "qlora"
    proc = launch("finetune_task_qlora.sh", out, tiny_hf, tiny_task, "--max_steps", "2")
    assert [r["step"] for r in losses(out)] == [1, 2]
    config = json.loads((out / "adapter_config.json").read_text())
    assert config["r"] == 8

    found = re.search(r"quantized base for QLoRA: (\d+) Linear4bit layers", proc.stdout + proc.stderr)
    assert found and int(found.group(1)) > 0, proc.stderr[-3000:]
    assert (out / "adapter_model.safetensors").exists()


def test_wandb_runs_offline_without_a_key(tmp_path, tiny_hf, tiny_task, monkeypatch):
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.delenv("WANDB_MODE", raising=False)
    out = tmp_path / "wandb"
    launch("finetune_task_lora.sh", out, tiny_hf, tiny_task, "--max_steps", "1", "--report_to", "wandb")
    assert list((out / "wandb").glob("offline-run-*")), list(out.iterdir())


def test_unknown_flag_is_an_error(tmp_path):
    proc = subprocess.run([sys.executable, "llava/train/train.py", "--output_dir", str(tmp_path),
                           "--lora_enabel", "True"], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode != 0
    assert "unknown arguments: --lora_enabel" in proc.stderr


def test_bad_record_stops_the_run_naming_it(tmp_path, tiny_hf, tiny_task):
    records = json.loads(Path(tiny_task["data"]).read_text())[:3]
    records[1]["conversations"][1]["from"] = "human"
    data = tmp_path / "bad.json"
    data.write_text(json.dumps(records))
    proc = subprocess.run([sys.executable, "llava/train/train.py", "--model_name_or_path", str(tiny_hf),
                           "--data_path", str(data), "--image_folder", str(tiny_task["images"]),
                           "--output_dir", str(tmp_path / "out"), "--max_steps", "1", "--report_to", "none",
                           "--use_cpu", "True"], cwd=ROOT, capture_output=True, text=True,
                          env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert proc.returncode != 0
    assert f"record 1 (id {records[1]['id']!r})" in proc.stderr
    assert not (tmp_path / "out" / "loss_log.jsonl").exists()
