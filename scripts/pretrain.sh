#!/usr/bin/env bash
# Stage 1 (LLaVA-1.5's pretrain.sh): train the projector only, on image-caption pairs, plain template.
# Composes a new LLaVA from --vision_tower (CLIP) and --model_name_or_path (the LLM).
# Leaves mm_projector.safetensors (for stage 2's --pretrain_mm_mlp_adapter) and the whole model.
#   bash scripts/pretrain.sh --vision_tower openai/clip-vit-large-patch14-336 \
#       --model_name_or_path lmsys/vicuna-7b-v1.5 --data_path blip_laion_cc_sbu_558k.json --image_folder images
set -euo pipefail
source "$(dirname "$0")/_train_env.sh"
RECIPE=(--learning_rate 1e-3 --per_device_train_batch_size "$(by_device 32 16)" --num_train_epochs 1
  --save_steps "$(by_device 24000 50)")
launch "${LAUNCH[@]}" llava/train/train.py --deepspeed "$ZERO" --tune_mm_mlp_adapter True --version plain \
  --vision_tower checkpoints/smol-clip \
  --model_name_or_path checkpoints/llava-smol-init-parts/llm \
  --data_path playground/data/scene_captions/captions.json \
  --image_folder playground/data/scene_captions/images \
  --output_dir checkpoints/llava-smol-stage1 \
  "${COMMON_ARGS[@]}" "${DEVICE_ARGS[@]}" "${RECIPE[@]}" "$@"
