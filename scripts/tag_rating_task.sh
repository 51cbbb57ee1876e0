#!/usr/bin/env bash
# Tag-relevance rating end to end on the embedded default, with the metrics before and after:
#   sample rating task -> rate with the base -> LoRA fine-tune (the same training script) -> merge
#   -> rate with the merged model -> MAE / exact / within-1 / Spearman, before vs after.
# Needs the embedded base (`make demo` builds it, or steps 1-5 of scripts/demo.sh).
#
#   bash scripts/tag_rating_task.sh                      # defaults below
#   STEPS=60 LIMIT=150 bash scripts/tag_rating_task.sh   # shorter
#
# Environment: BASE (default checkpoints/llava-smol-base), STEPS (LoRA steps, default 100),
# LIMIT (test pairs rated, default all 450), PYTHON.
set -euo pipefail
source "$(dirname "$0")/_task.sh"
STEPS=${STEPS:-100}
DATA=playground/data/tag_rating
LORA=checkpoints/llava-smol-rating-lora
MERGED=checkpoints/llava-smol-rating-merged
OUT=$DATA/ratings
task_start

echo "== 1/5 sample rating task -> $DATA"
build_once "$DATA" "$PY" -m llava.demo.rating_task --output-dir "$DATA"
PAIRS=$DATA/test/pairs.jsonl
if [ -n "${LIMIT:-}" ]; then head -n "$LIMIT" "$DATA/test/pairs.jsonl" > "$DATA/test/pairs_$LIMIT.jsonl"; PAIRS=$DATA/test/pairs_$LIMIT.jsonl; fi
mkdir -p "$OUT"

rate() {  # rate MODEL NAME
  "$PY" -m llava.tasks.tag_rating --model-path "$1" --input "$PAIRS" --image-folder "$DATA/images" \
    --output "$OUT/$2.jsonl" --no-progress
  "$PY" -m llava.eval.evaluate --metric rating --answers-file "$OUT/$2.jsonl" \
    --annotation-file "$DATA/test/answers.jsonl" --output "$OUT/$2.scores.json" >/dev/null
}

echo "== 2/5 the base before fine-tuning -> $OUT/base.jsonl"
rate "$BASE" base

echo "== 3/5 LoRA fine-tune on the rating conversations ($STEPS steps) -> $LORA"
lora_step "$DATA/train/conversations.json" "$DATA/images"

echo "== 4/5 merge -> $MERGED"
merge_step "$LORA"

echo "== 5/5 the fine-tuned model -> $OUT/merged.jsonl"
rate "$MERGED" merged
"$PY" - "$OUT" <<'EOF'
import json, sys
out = sys.argv[1]
rows = {name: json.load(open(f"{out}/{name}.scores.json"))["scores"] for name in ("base", "merged")}
stats = {name: json.load(open(f"{out}/{name}.stats.json")) for name in ("base", "merged")}
print("\n| tag rating (held out) | base | fine-tuned |\n|---|---|---|")
for key in ("mae", "exact_accuracy", "within_1_accuracy", "spearman", "valid", "invalid"):
    fmt = lambda v: "n/a" if v is None else (f"{v:.3f}" if isinstance(v, float) else str(v))
    print(f"| {key} | {fmt(rows['base'].get(key))} | {fmt(rows['merged'].get(key))} |")
for key in ("flagged", "tokens_per_second", "peak_rss_mib"):
    print(f"| {key} | {stats['base'][key]} | {stats['merged'][key]} |")
EOF
