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
source "$(dirname "$0")/_env.sh"
source scripts/_steps.sh
PY=$PYTHON
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
BASE=${BASE:-checkpoints/llava-smol-base}
STEPS=${STEPS:-120}
SAVE=${SAVE:-40}
DATA=playground/data/captioning
LORA=checkpoints/llava-smol-caption-lora
MERGED=checkpoints/llava-smol-caption-merged
OUT=$DATA/answers
# Beam search with a minimum and maximum length, for batch inference and checkpoint selection alike.
GEN=(--num-beams 3 --min-new-tokens 6 --max-new-tokens 40 --batch-size 8)

[ -f "$BASE/config.json" ] || { echo "no embedded base at $BASE: run make demo first" >&2; exit 1; }
# An adapter or results made before the base was (re)built belong to another base: start over, rather
# than merge an old adapter into a new base or resume its answers.
for d in "$LORA" "$OUT"; do
  if [ -e "$d" ] && ! [ "$d" -nt "$BASE/config.json" ]; then
    echo "   $d is older than $BASE: removing it and what was made from it"; rm -rf "$LORA" "$MERGED" "$OUT"
  fi
done
echo "== 1/6 sample captioning task -> $DATA"
if complete "$DATA"; then echo "   (exists)"; else clear_partial "$DATA"; "$PY" -m llava.demo.caption_task --output-dir "$DATA"; fi

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
if complete "$LORA" || { [ -f "$LORA/wall_seconds.txt" ] && weights_whole "$LORA/adapter_model.safetensors"; }; then echo "   (exists)"; else
  t0=$(date +%s)
  EXTRA=()
  [ "${TOWER:-False}" = True ] && EXTRA=(--unfreeze_mm_vision_tower True --mm_vision_tower_lr 2e-5)
  # CPU_BF16_WEIGHTS=0: the recipe as measured in docs/ (fp32 weights under CPU bf16 autocast).
  CPU_BF16_WEIGHTS=0 bash scripts/finetune_task_lora.sh --model_name_or_path "$BASE" --data_path "$DATA/train.json" \
    --image_folder "$DATA/images" --output_dir "$LORA" --max_steps "$STEPS" --save_steps "$SAVE" \
    --save_total_limit 10 "${EXTRA[@]}"
  echo "$(( $(date +%s) - t0 ))" > "$LORA/wall_seconds.txt"
  mark_complete "$LORA" "scripts/finetune_task_lora.sh"
fi

echo "== 4/6 the best checkpoint by validation CIDEr-D -> $LORA/best"
[ -f "$LORA/checkpoint_scores.json" ] && echo "   (exists)" || \
  "$PY" scripts/select_checkpoint.py --run-dir "$LORA" --model-base "$BASE" --metric caption --key cider_d \
    --question-file "$DATA/val_questions.jsonl" --image-folder "$DATA/images" \
    --annotation-file "$DATA/val_answers.jsonl" "${GEN[@]}"

echo "== 5/6 merge the best -> $MERGED"
if complete "$MERGED"; then echo "   (exists)"; else clear_partial "$MERGED"
  "$PY" scripts/merge_lora_weights.py --model-path "$LORA/best" --model-base "$BASE" --save-model-path "$MERGED"; fi

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
