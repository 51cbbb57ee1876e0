#!/usr/bin/env bash
# Batch JSONL inference (llava/eval/model_vqa.py): question JSONL in, answer JSONL out.
#
#   bash inference.sh                      # the demo's merged model on the sample task's held-out questions
#   bash inference.sh --model-path liuhaotian/llava-v1.5-7b --question-file q.jsonl \
#       --image-folder images --answers-file answers.jsonl --batch-size 32 --load-4bit
#
# Any flag given here goes to model_vqa and overrides the defaults below (the last one wins).
# Killed? Run the same command again: it answers only what is missing.
# Score with: python -m llava.eval.evaluate --answers-file A --annotation-file val_answers.jsonl
set -euo pipefail
LLAVA_HELP_MODULE=llava.eval.model_vqa  # --help lists its flags too
source "$(dirname "$0")/scripts/_env.sh"
export TOKENIZERS_PARALLELISM=false  # HF_HUB_OFFLINE is the caller's: a hub id given by --model-path downloads
MODEL=checkpoints/llava-smol-task-merged
if [[ " $* " != *" --model-path"* ]] && [ ! -f "$MODEL/config.json" ]; then
  echo "inference.sh: $MODEL does not exist yet: \`make demo\` builds it (or pass --model-path and the other flags)" >&2
  exit 2
fi
exec "$PYTHON" -m llava.eval.model_vqa \
  --model-path "$MODEL" \
  --question-file playground/data/sample_task_llava/val_questions.jsonl \
  --image-folder playground/data/sample_task/images \
  --answers-file playground/data/sample_task_llava/answers/llava-smol-task-merged.jsonl \
  --batch-size 16 --max-new-tokens 16 \
  "$@"
