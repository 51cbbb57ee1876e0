#!/usr/bin/env bash
# Full fine-tune on task data (LLaVA-1.5's finetune_task.sh): every LLM weight and the projector.
#   bash scripts/finetune_task.sh [--model_name_or_path M --data_path D --image_folder I --output_dir O ...]
# Stage 2's recipe (scripts/finetune.sh) with the task's defaults: checkpoints/llava-smol-base, the sample task.
FINETUNE_DEFAULTS=task source "$(dirname "$0")/finetune.sh"
