#!/usr/bin/env bash
# Captioning end to end on the embedded default, with the metrics before and after:
#   sample captioning task -> caption the test images with the base -> LoRA fine-tune (checkpoints kept)
#   -> pick the best checkpoint by validation CIDEr-D -> merge -> caption the test images -> scores.
# Needs the embedded base (`make demo` builds it).
#
#   bash scripts/captioning_task.sh
#   STEPS=60 TOWER=True bash scripts/captioning_task.sh     # shorter; unfreeze the vision tower too
#
# Environment: BASE (default checkpoints/llava-smol-base), STEPS (LoRA steps, 120), SAVE (checkpoint
# every N steps, 40), TOWER (True: train the vision tower too, lr 2e-5), PYTHON.
set -euo pipefail
source "$(dirname "$0")/_task.sh"
STEPS=${STEPS:-120}
SAVE=${SAVE:-40}
DATA=playground/data/captioning
LORA=checkpoints/llava-smol-caption-lora
MERGED=checkpoints/llava-smol-caption-merged
OUT=$DATA/answers
# Beam search with a minimum and maximum length, for batch inference and checkpoint selection alike.
GEN=(--num-beams 3 --min-new-tokens 6 --max-new-tokens 40 --batch-size 8)
task_start

echo "== 1/6 sample captioning task -> $DATA"
build_once "$DATA" "$PY" -m llava.demo.caption_task --output-dir "$DATA"

caption() {  # caption MODEL NAME [model_vqa flags]
  local model=$1 name=$2; shift 2
  bash inference.sh --model-path "$model" --question-file "$DATA/test_questions.jsonl" --image-folder "$DATA/images" \
    --answers-file "$OUT/$name.jsonl" "${GEN[@]}" --no-progress "$@"
  "$PY" -m llava.eval.evaluate --metric caption --answers-file "$OUT/$name.jsonl" \
    --annotation-file "$DATA/test_answers.jsonl" --output "$OUT/$name.scores.json" >/dev/null
}

echo "== 2/6 the base before fine-tuning -> $OUT/base.jsonl"
caption "$BASE" base

echo "== 3/6 LoRA fine-tune on the captions ($STEPS steps, a checkpoint every $SAVE) -> $LORA"
TOWER_FLAGS=()
[ "${TOWER:-False}" = True ] && TOWER_FLAGS=(--unfreeze_mm_vision_tower True --mm_vision_tower_lr 2e-5)
lora_step "$DATA/train.json" "$DATA/images" --save_steps "$SAVE" --save_total_limit 10 "${TOWER_FLAGS[@]}"

echo "== 4/6 the best checkpoint by validation CIDEr-D -> $LORA/best"
[ -f "$LORA/checkpoint_scores.json" ] && echo "   (exists)" || \
  "$PY" scripts/select_checkpoint.py --run-dir "$LORA" --model-base "$BASE" --metric caption --key cider_d \
    --question-file "$DATA/val_questions.jsonl" --image-folder "$DATA/images" \
    --annotation-file "$DATA/val_answers.jsonl" "${GEN[@]}"

echo "== 5/6 merge the best -> $MERGED"
merge_step "$LORA/best"

echo "== 6/6 the fine-tuned model -> $OUT/merged.jsonl"
caption "$MERGED" merged
"$PY" - "$OUT" "$LORA" <<'PYEOF'
import json, sys
out, lora = sys.argv[1], sys.argv[2]
rows = {n: json.load(open(f"{out}/{n}.scores.json"))["scores"] for n in ("base", "merged")}
best = json.load(open(f"{lora}/checkpoint_scores.json"))
print("\nvalidation CIDEr-D per checkpoint: " + ", ".join(f"{c['checkpoint']} {c['cider_d']:.3f}" for c in best["checkpoints"])
      + f"; kept {best['best']}")
print("\n| captioning (held out) | base | fine-tuned |\n|---|---|---|")
for key in ("bleu_4", "rouge_l", "cider_d"):
    print(f"| {key} | {rows['base'][key]:.3f} | {rows['merged'][key]:.3f} |")
PYEOF
