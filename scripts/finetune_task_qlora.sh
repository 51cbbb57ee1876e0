#!/usr/bin/env bash
# QLoRA: finetune_task_lora.sh on a 4-bit (NF4, double-quantized) base via bitsandbytes.
# ZeRO-2 by default: ZeRO-3 cannot partition 4-bit weights.  Same flags and defaults otherwise.
set -euo pipefail
source "$(dirname "$0")/_env.sh"  # --help shows this text; PYTHON is found once, here
export ZERO=${ZERO:-scripts/zero2.json}
# fp32 LoRA weights on a CPU: the LoRA script's CPU bf16 weights are measured for 16-bit bases only.
CPU_BF16_WEIGHTS=0 exec bash scripts/finetune_task_lora.sh --bits 4 --output_dir checkpoints/llava-smol-task-qlora "$@"
