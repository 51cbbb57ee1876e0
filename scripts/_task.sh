# Sourced by the *_task.sh scripts (tag rating, labeling and retrieval, captioning): one task end to end
# on the embedded base, before and after a LoRA fine-tune.  It finds the Python and answers --help
# (_env.sh), brings the completion markers and build_once (_steps.sh), and gives the steps they share.
# A script sources it, sets DATA, LORA, MERGED, OUT and STEPS, then calls task_start.
# Environment: BASE (the embedded base, default checkpoints/llava-smol-base), PYTHON.
source "$(dirname "${BASH_SOURCE[0]}")/_env.sh"
source scripts/_steps.sh
PY=$PYTHON
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
BASE=${BASE:-checkpoints/llava-smol-base}

# The base must be there.  An adapter or results made before the base was (re)built belong to another
# base: start over, rather than merge an old adapter into a new base or resume its answers.
task_start() {
  [ -f "$BASE/config.json" ] || { echo "no embedded base at $BASE: run make demo first" >&2; exit 1; }
  local d
  for d in "$LORA" "$OUT"; do
    if [ -e "$d" ] && ! [ "$d" -nt "$BASE/config.json" ]; then
      echo "   $d is older than $BASE: removing it and what was made from it"; rm -rf "$LORA" "$MERGED" "$OUT"
    fi
  done
  return 0
}

# lora_step TRAIN_JSON IMAGE_FOLDER [train.py flags...]: LoRA fine-tune of $BASE into $LORA, $STEPS
# steps, once.  Skipped when $LORA is complete (or, from before the markers, has its wall time and whole
# weights); else trained (an interrupted run resumes from its last checkpoint), its wall time written to
# $LORA/wall_seconds.txt, and marked complete.
lora_step() {
  if complete "$LORA" || { [ -f "$LORA/wall_seconds.txt" ] && weights_whole "$LORA/adapter_model.safetensors"; }; then
    echo "   (exists)"; return 0
  fi
  local data=$1 images=$2 t0
  shift 2
  t0=$(date +%s)
  # CPU_BF16_WEIGHTS=0: the recipe as measured in docs/ (fp32 weights under CPU bf16 autocast).
  CPU_BF16_WEIGHTS=0 bash scripts/finetune_task_lora.sh --model_name_or_path "$BASE" --data_path "$data" \
    --image_folder "$images" --output_dir "$LORA" --max_steps "$STEPS" "$@"
  echo "$(( $(date +%s) - t0 ))" > "$LORA/wall_seconds.txt"
  mark_complete "$LORA" "scripts/finetune_task_lora.sh"
}

# merge_step ADAPTER: ADAPTER merged into $BASE -> $MERGED, once.
merge_step() {
  build_once "$MERGED" "$PY" scripts/merge_lora_weights.py --model-path "$1" --model-base "$BASE" \
    --save-model-path "$MERGED"
}
