#!/usr/bin/env bash
# Stage 2 (LLaVA-1.5's finetune.sh): full fine-tune of LLM + projector on instruction data, starting
# from the stage-1 projector.  Composes the model from --vision_tower and --model_name_or_path.
#   bash scripts/finetune.sh --vision_tower openai/clip-vit-large-patch14-336 \
#       --model_name_or_path lmsys/vicuna-7b-v1.5 --pretrain_mm_mlp_adapter checkpoints/pretrain/mm_projector.bin \
#       --data_path llava_v1_5_mix665k.json --image_folder playground/data
# scripts/finetune_task.sh is this recipe with FINETUNE_DEFAULTS=task: a LLaVA model on task data.
set -euo pipefail
source "$(dirname "$0")/_train_env.sh"
RECIPE=(--learning_rate "$(by_device 2e-5 5e-5)" --per_device_train_batch_size 16 --num_train_epochs 1
  --save_steps "$(by_device 50000 50)")
case "${FINETUNE_DEFAULTS:-stage2}" in
  task)  # the embedded base on the sample task
    DEFAULTS=(--model_name_or_path checkpoints/llava-smol-base
      --data_path playground/data/sample_task_llava/train.json --image_folder playground/data/sample_task/images
      --output_dir checkpoints/llava-smol-task-full) ;;
  stage2)  # the embedded base's stage 2: the trained tower, the LLM and the stage-1 projector, on the scene chats
    DEFAULTS=(--vision_tower checkpoints/smol-clip --model_name_or_path checkpoints/llava-smol-init-parts/llm
      --pretrain_mm_mlp_adapter checkpoints/llava-smol-stage1/mm_projector.safetensors
      --data_path playground/data/scene_captions/chat.json --image_folder playground/data/scene_captions/images
      --output_dir checkpoints/llava-smol-stage2) ;;
  *) echo "$(basename "$0"): FINETUNE_DEFAULTS is stage2 or task, not $FINETUNE_DEFAULTS" >&2; exit 2 ;;
esac
launch "${LAUNCH[@]}" llava/train/train.py --deepspeed "$ZERO" --version vicuna_v1 "${DEFAULTS[@]}" \
  "${COMMON_ARGS[@]}" "${DEVICE_ARGS[@]}" "${RECIPE[@]}" "$@"
