#!/usr/bin/env bash
# LoRA fine-tune on task data (LLaVA-1.5's finetune_task_lora.sh), under DeepSpeed.
#
#   bash scripts/finetune_task_lora.sh                       # embedded default on the sample task
#   bash scripts/finetune_task_lora.sh --model_name_or_path liuhaotian/llava-v1.5-7b \
#       --data_path my_task/train.json --image_folder my_task/images --output_dir checkpoints/my-lora
#
# Any train.py flag may follow and overrides the defaults below (the last one given wins); all of
# them: `python llava/train/train.py --help`.  --dry-run prints the launch command instead of running it.
# Environment: NUM_PROCS, ZERO (e.g. scripts/zero3_offload.json), MASTER_PORT, PYTHON, CPU_BF16_WEIGHTS.
set -euo pipefail
source "$(dirname "$0")/_train_env.sh"
if [ "$ON_GPU" = 1 ]; then
  # The original recipe: rank 128, alpha 256, lr 2e-4, projector lr 2e-5, 16 per GPU.
  RECIPE=(--lora_r 128 --lora_alpha 256 --learning_rate 2e-4 --mm_projector_lr 2e-5
    --per_device_train_batch_size 16 --gradient_accumulation_steps 1 --num_train_epochs 1 --save_steps 50000)
else
  # Sized for minutes on a 2-core CPU: rank 32 keeps the sample task's epoch inside the time the demo
  # allows it, at a small cost in accuracy; the projector keeps the original's low lr, since at the
  # adapters' lr the first steps on a new answer format would undo the stage-1/2 alignment.  Why:
  # docs/training.md, "The scripts"; what each choice measured, and the command: its "Measurements".
  RECIPE=(--lora_r 32 --lora_alpha 64 --learning_rate 5e-4 --mm_projector_lr 2e-5
    --per_device_train_batch_size 16 --gradient_accumulation_steps 1 --num_train_epochs 1 --save_steps 50)
  # Where the CPU has bf16 instructions, DeepSpeed's bf16 mode (weights in bf16, fp32 master copies in
  # the optimizer) instead of fp32 weights under autocast: faster at about the same accuracy
  # (docs/training.md, "Measurements").  --bf16 False or CPU_BF16_WEIGHTS=0 keeps fp32 weights (bf16
  # autocast still, --cpu_bf16 auto); the other task scripts and QLoRA set the latter.
  if [ "${CPU_BF16_WEIGHTS:-1}" = 1 ] && "$PYTHON" -c "import sys; from llava.model.cpu_features import cpu_has_native_bf16 as f; sys.exit(0 if f() else 1)"; then
    RECIPE+=(--bf16 True --use_cpu True)
  fi
fi
launch "${LAUNCH[@]}" llava/train/train.py --deepspeed "$ZERO" --lora_enable True \
  --model_name_or_path checkpoints/llava-smol-base --version vicuna_v1 \
  --data_path playground/data/sample_task_llava/train.json \
  --image_folder playground/data/sample_task/images \
  --output_dir checkpoints/llava-smol-task-lora \
  "${COMMON_ARGS[@]}" "${DEVICE_ARGS[@]}" "${RECIPE[@]}" "$@"
