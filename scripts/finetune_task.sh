#!/usr/bin/env bash
# Full fine-tune on task data (LLaVA-1.5's finetune_task.sh): every LLM weight and the projector.
#   bash scripts/finetune_task.sh [--model_name_or_path M --data_path D --image_folder I --output_dir O ...]
set -euo pipefail
source "$(dirname "$0")/_train_env.sh"
if [ "$ON_GPU" = 1 ]; then
  RECIPE=(--learning_rate 2e-5 --per_device_train_batch_size 16 --num_train_epochs 1 --save_steps 50000)
else
  RECIPE=(--learning_rate 5e-5 --per_device_train_batch_size 16 --num_train_epochs 1 --save_steps 50)
fi
launch "${LAUNCH[@]}" llava/train/train.py --deepspeed "$ZERO" \
  --model_name_or_path checkpoints/llava-smol-base --version vicuna_v1 \
  --data_path playground/data/sample_task_llava/train.json \
  --image_folder playground/data/sample_task/images \
  --output_dir checkpoints/llava-smol-task-full \
  "${COMMON_ARGS[@]}" "${DEVICE_ARGS[@]}" "${RECIPE[@]}" "$@"
