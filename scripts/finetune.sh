#!/usr/bin/env bash
# Stage 2 (LLaVA-1.5's finetune.sh): full fine-tune of LLM + projector on instruction data, starting
# from the stage-1 projector.  Composes the model from --vision_tower and --model_name_or_path.
#   bash scripts/finetune.sh --vision_tower openai/clip-vit-large-patch14-336 \
#       --model_name_or_path lmsys/vicuna-7b-v1.5 --pretrain_mm_mlp_adapter checkpoints/pretrain/mm_projector.bin \
#       --data_path llava_v1_5_mix665k.json --image_folder playground/data
set -euo pipefail
source "$(dirname "$0")/_train_env.sh"
if [ "$ON_GPU" = 1 ]; then
  RECIPE=(--learning_rate 2e-5 --per_device_train_batch_size 16 --num_train_epochs 1 --save_steps 50000)
else
  RECIPE=(--learning_rate 5e-5 --per_device_train_batch_size 16 --num_train_epochs 1 --save_steps 50)
fi
launch "${LAUNCH[@]}" llava/train/train.py --deepspeed "$ZERO" --version vicuna_v1 \
  --vision_tower checkpoints/smol-clip \
  --model_name_or_path checkpoints/llava-smol-init-parts/llm \
  --pretrain_mm_mlp_adapter checkpoints/llava-smol-stage1/mm_projector.safetensors \
  --data_path playground/data/scene_captions/chat.json \
  --image_folder playground/data/scene_captions/images \
  --output_dir checkpoints/llava-smol-stage2 \
  "${COMMON_ARGS[@]}" "${DEVICE_ARGS[@]}" "${RECIPE[@]}" "$@"
