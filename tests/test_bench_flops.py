"""bench/train_throughput.py's MFU numerator: its analytic FLOP count of a LoRA step against
torch's own count of the matmuls and convolutions that step really runs."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
from PIL import Image
from torch.utils.flop_counter import FlopCounterMode

from llava.data.collate import DataCollator
from llava.train.args import parse_args
from llava.train.loss import answer_positions_loss
from llava.train.model_setup import configure_trainable, load_model
from llava.train.train import make_dataset

ROOT = Path(__file__).resolve().parents[1]


def _bench():
    spec = importlib.util.spec_from_file_location("train_throughput", ROOT / "bench/train_throughput.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _task(root: Path) -> Path:
    rng = np.random.RandomState(0)
    (root / "images").mkdir()
    records = []
    for i in range(4):
        Image.fromarray(rng.randint(0, 255, (24, 32, 3)).astype("uint8")).save(root / "images" / f"{i}.png")
        records.append({"id": str(i), "image": f"{i}.png", "conversations": [
            {"from": "human", "value": "<image>\nWhat colour is the square?" + " Look closely." * i},
            {"from": "gpt", "value": "red" if i % 2 else "a dark blue square"}]})
    (root / "train.json").write_text(json.dumps(records))
    return root / "train.json"


def test_flop_count_matches_torch(tiny_hf, tmp_path):
    bench = _bench()

    data = _task(tmp_path)
    model_args, data_args, training_args = parse_args([
        "--model_name_or_path", str(tiny_hf), "--data_path", str(data), "--image_folder", str(tmp_path / "images"),
        "--output_dir", str(tmp_path / "out"), "--lora_enable", "True", "--lora_r", "4", "--lora_alpha", "8",
        "--lora_dropout", "0", "--report_to", "none", "--use_cpu", "True"])
    model, processor = load_model(model_args, data_args, training_args)
    model = configure_trainable(model, model_args, training_args)
    dataset = make_dataset(str(data), data_args, training_args, model_args, processor, model.config)
    batch = DataCollator(pad_token_id=processor.tokenizer.pad_token_id)([dataset[i] for i in range(4)])
    assert batch["attention_mask"].sum() < batch["attention_mask"].numel()  # padding is not counted

    head = model.get_base_model().get_output_embeddings()
    with FlopCounterMode(display=False) as counter:
        answer_positions_loss(model, head, batch).backward()
    ops = counter.get_flop_counts()["Global"]
    # torch's counter leaves out CPU attention kernels; compare what it does count.
    measured = sum(v for op, v in ops.items() if "scaled_dot_product" not in str(op))
    # logits_to_keep=1 still runs the model's own head on one position per row (forward only): run, not needed.
    measured -= 2 * head.weight.numel() * batch["input_ids"].shape[0]
    parts = bench.flop_counter(model)(batch)
    counted = sum(v for k, v in parts.items() if k != "attention")
    assert parts["lm_head"] > 0.2 * counted  # the head at supervised positions only is a real share here
    assert abs(counted - measured) / measured < 0.03, (counted, measured, parts, ops)
