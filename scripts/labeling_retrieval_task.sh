#!/usr/bin/env bash
# Batch labeling and retrieval end to end on the embedded default, before and after fine-tuning:
#   sample task -> label the test images with the base -> category accuracy -> retrieval table from
#   those labels -> precision@5 of image queries -> LoRA fine-tune on labeling conversations -> merge
#   -> the same with the fine-tuned model.  Needs the embedded base (`make demo` builds it).
#
# Environment: BASE (default checkpoints/llava-smol-base), STEPS (LoRA steps, 80), PYTHON.
set -euo pipefail
source "$(dirname "$0")/_env.sh"
source scripts/_steps.sh
PY=$PYTHON
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
BASE=${BASE:-checkpoints/llava-smol-base}
STEPS=${STEPS:-80}
DATA=playground/data/labeling
LORA=checkpoints/llava-smol-labeling-lora
MERGED=checkpoints/llava-smol-labeling-merged
OUT=$DATA/runs

[ -f "$BASE/config.json" ] || { echo "no embedded base at $BASE: run make demo first" >&2; exit 1; }
# An adapter or results made before the base was (re)built belong to another base: start over, rather
# than merge an old adapter into a new base or resume its answers.
for d in "$LORA" "$OUT"; do
  if [ -e "$d" ] && ! [ "$d" -nt "$BASE/config.json" ]; then
    echo "   $d is older than $BASE: removing it and what was made from it"; rm -rf "$LORA" "$MERGED" "$OUT"
  fi
done
echo "== 1/4 sample labeling task -> $DATA"
if complete "$DATA"; then echo "   (exists)"; else clear_partial "$DATA"; "$PY" -m llava.demo.labeling_task --output-dir "$DATA"; fi
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
if ! { complete "$LORA" || { [ -f "$LORA/wall_seconds.txt" ] && weights_whole "$LORA/adapter_model.safetensors"; }; }; then
  t0=$(date +%s)
  # CPU_BF16_WEIGHTS=0: the recipe as measured in docs/ (fp32 weights under CPU bf16 autocast).
  CPU_BF16_WEIGHTS=0 bash scripts/finetune_task_lora.sh --model_name_or_path "$BASE" --data_path "$DATA/train.json" \
    --image_folder "$DATA/train_images" --output_dir "$LORA" --max_steps "$STEPS"
  echo "$(( $(date +%s) - t0 ))" > "$LORA/wall_seconds.txt"
  mark_complete "$LORA" "scripts/finetune_task_lora.sh"
fi
complete "$MERGED" || { clear_partial "$MERGED"; "$PY" scripts/merge_lora_weights.py --model-path "$LORA" --model-base "$BASE" \
  --save-model-path "$MERGED"; }

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
