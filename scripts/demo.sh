#!/usr/bin/env bash
# The main job end to end on the embedded default (run by `make demo`).
# Steps that already have their output are skipped, so a second run is quick.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false

BASE=checkpoints/llava-smol-base
RAW=playground/data/sample_task
DATA=playground/data/sample_task_llava

echo "== 1/3 embedded model: CLIP tower (64 px, random) + SmolLM2-135M-Instruct -> $BASE"
if [ ! -f "$BASE/config.json" ]; then
  "$PY" -m llava.model.tiny --preset smol --output-dir "$BASE"
else
  echo "   (exists)"
fi

echo "== 2/3 sample task (raw CSV + images, as a competition ships it) -> $RAW"
if [ ! -f "$RAW/train.csv" ]; then
  "$PY" -m llava.data.sample_task --output-dir "$RAW"
else
  echo "   (exists)"
fi

echo "== 3/3 preprocess into LLaVA conversations -> $DATA"
"$PY" scripts/task_data_preprocessing.py --input "$RAW/train.csv" --image-folder "$RAW/images" \
  --image-template 'SYN_{image_id:012d}.jpg' --output-dir "$DATA" --short-answer --val-fraction 0.1 --seed 0

echo
echo "embedded model: $BASE"
echo "training data:  $DATA/train.json  (held out: $DATA/val_questions.jsonl, key: $DATA/val_answers.jsonl)"
