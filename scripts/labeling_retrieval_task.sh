#!/usr/bin/env bash
# Batch labeling and retrieval end to end on the embedded default, before and after fine-tuning:
#   sample task -> label the test images with the base -> category accuracy -> retrieval table from
#   those labels -> precision@5 of image queries -> LoRA fine-tune on labeling conversations -> merge
#   -> the same with the fine-tuned model.  Needs the embedded base (`make demo` builds it).
#
# Environment: BASE (default checkpoints/llava-smol-base), STEPS (LoRA steps, 80), PYTHON.
set -euo pipefail
source "$(dirname "$0")/_task.sh"
STEPS=${STEPS:-80}
DATA=playground/data/labeling
LORA=checkpoints/llava-smol-labeling-lora
MERGED=checkpoints/llava-smol-labeling-merged
OUT=$DATA/runs
task_start

echo "== 1/4 sample labeling task -> $DATA"
build_once "$DATA" "$PY" -m llava.demo.labeling_task --output-dir "$DATA"
mkdir -p "$OUT"

run() {  # run MODEL NAME: label, score, build the table, query it
  local model=$1 name=$2
  "$PY" -m llava.tasks.labeling --model-path "$model" --images "$DATA/test" --categories "$DATA/categories.txt" \
    --output "$OUT/$name/labels.csv" --no-progress
  "$PY" -m llava.tasks.labeling_data score --labels "$OUT/$name/labels.csv" --truth "$DATA/test_truth.csv" \
    > "$OUT/$name/labeling_scores.json"
  "$PY" -m llava.tasks.retrieval build --labels "$OUT/$name/labels.csv" --images "$DATA/test" --db "$OUT/$name/catalogue.lancedb"
  "$PY" -m llava.tasks.labeling_data retrieval-score --model-path "$model" --db "$OUT/$name/catalogue.lancedb" \
    --queries "$DATA/queries" --truth "$DATA/queries_truth.csv" --table-truth "$DATA/test_truth.csv" \
    > "$OUT/$name/retrieval_scores.json"
}

echo "== 2/4 the base before fine-tuning"
run "$BASE" base

echo "== 3/4 LoRA fine-tune on the labeling conversations ($STEPS steps), merge -> $MERGED"
lora_step "$DATA/train.json" "$DATA/train_images"
merge_step "$LORA"

echo "== 4/4 the fine-tuned model"
run "$MERGED" merged
"$PY" - "$OUT" <<'PYEOF'
import json, sys
out = sys.argv[1]
lab = {n: json.load(open(f"{out}/{n}/labeling_scores.json")) for n in ("base", "merged")}
ret = {n: json.load(open(f"{out}/{n}/retrieval_scores.json")) for n in ("base", "merged")}
print("\n| labeling / retrieval (held out) | base | fine-tuned |\n|---|---|---|")
print(f"| category accuracy ({lab['base']['images']} images) | {lab['base']['category_accuracy']:.3f} | {lab['merged']['category_accuracy']:.3f} |")
print(f"| categories mapped (flagged) | {lab['base']['flagged']} | {lab['merged']['flagged']} |")
print(f"| retrieval precision@5 ({ret['base']['queries']} queries) | {ret['base']['precision_at_5']:.3f} | {ret['merged']['precision_at_5']:.3f} |")
PYEOF
