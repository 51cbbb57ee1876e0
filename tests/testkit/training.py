"""A training script (scripts/*.sh) really launched through DeepSpeed on CPU, for the training tests."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from testkit import ROOT, free_port


def launch(script: str, out: Path, model: Path, task: dict, *flags: str, procs: int = 1, zero: str | None = None,
           check: bool = True, data: Path | None = None, port: int | None = None,
           cpu_bf16_weights: bool = False) -> subprocess.CompletedProcess:
    """cpu_bf16_weights=False pins fp32 weights (CPU_BF16_WEIGHTS=0), so runs compare exactly;
    True leaves the script its own choice (bf16 weights where the CPU has bf16 instructions)."""
    env = {**os.environ, "PYTHON": sys.executable, "NUM_PROCS": str(procs), "MASTER_PORT": str(port or free_port()),
           "HF_HUB_OFFLINE": "1", "CPU_BF16_WEIGHTS": "1" if cpu_bf16_weights else "0"}
    if zero:
        env["ZERO"] = f"scripts/{zero}.json"
    cmd = ["bash", f"scripts/{script}", "--model_name_or_path", str(model), "--data_path",
           str(data or task["data"]), "--image_folder", str(task["images"]), "--output_dir", str(out),
           "--per_device_train_batch_size", "4", "--lora_r", "8", "--lora_alpha", "16", "--lora_dropout", "0",
           "--learning_rate", "1e-3", "--save_steps", "1000", "--dataloader_num_workers", "0", *flags]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({proc.returncode}):\n"
                             f"{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}")
    return proc
