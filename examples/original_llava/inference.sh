#!/bin/bash
# Batch answers the way the original LLaVA's scripts/v1_5/eval/*.sh ask for them, unchanged but for the
# paths: its module, its flags, its answer records (question_id, prompt, text, answer_id, model_id, metadata).
#
#   bash examples/original_llava/inference.sh MODEL_PATH QUESTIONS.jsonl IMAGE_FOLDER ANSWERS.jsonl [more flags]
#
# tests/test_original_workflow.py runs it and checks its answers equal `bash inference.sh`'s.
CKPT=$1
QUESTIONS=$2
IMAGES=$3
ANSWERS=$4
shift 4

python -m llava.eval.model_vqa_loader \
    --model-path "$CKPT" \
    --question-file "$QUESTIONS" \
    --image-folder "$IMAGES" \
    --answers-file "$ANSWERS" \
    --temperature 0 \
    --conv-mode vicuna_v1 "$@"
