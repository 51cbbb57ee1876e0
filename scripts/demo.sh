#!/usr/bin/env bash
# The main job end to end on the embedded default (run by `make demo`):
#   embedded base (built and trained once, cached) -> sample task -> preprocess -> LoRA fine-tune,
#   with the held-out accuracy before and after.
# Steps whose output already exists are skipped, so a second run only fine-tunes again if asked
# (delete checkpoints/llava-smol-task-lora to retrain).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
export PYTHON=$PY HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false

INIT=checkpoints/llava-smol-init           # random CLIP tower + SmolLM2-135M-Instruct, composed
TOWER=checkpoints/smol-clip                # the tower after learning to see the scenes
STAGE1=checkpoints/llava-smol-stage1       # + projector aligned on captions (stage 1)
STAGE2=checkpoints/llava-smol-stage2-lora  # + LoRA on captions in chat format (stage 2)
BASE=checkpoints/llava-smol-base           # stage 2 merged: the embedded base
LORA=checkpoints/llava-smol-task-lora      # the task adapter
CAPS=playground/data/scene_captions
RAW=playground/data/sample_task
DATA=playground/data/sample_task_llava
EVAL=(--questions "$DATA/val_questions.jsonl" --answers "$DATA/val_answers.jsonl" --image-folder "$RAW/images")

step() { echo; echo "== $*"; }
elapsed() { echo "   ($(( $(date +%s) - $1 )) s)"; }

step "1/9 embedded model parts: CLIP tower (64 px, random) + SmolLM2-135M-Instruct -> $INIT"
[ -f "$INIT/config.json" ] && echo "   (exists)" || "$PY" -m llava.model.tiny --preset smol --output-dir "$INIT"

step "2/9 caption data for the base: synthetic scenes, other seeds than the task -> $CAPS"
[ -f "$CAPS/captions.json" ] && echo "   (exists)" || "$PY" -m llava.data.scene_captions --output-dir "$CAPS"

step "3/9 teach the tower to see (no pretrained CLIP offline) -> $TOWER"
[ -f "$TOWER/tower_pretrain.json" ] && echo "   (exists)" || \
  "$PY" -m llava.model.tower_pretrain --tower "$INIT-parts/vision_tower" --output-dir "$TOWER" --steps 1200 --pool 12000

step "4/9 stage 1: align the projector on captions (scripts/pretrain.sh) -> $STAGE1"
if [ -f "$STAGE1/mm_projector.safetensors" ]; then echo "   (exists)"; else
  t0=$(date +%s)
  bash scripts/pretrain.sh --vision_tower "$TOWER" --model_name_or_path "$INIT-parts/llm" --output_dir "$STAGE1"
  elapsed "$t0"
fi

step "5/9 stage 2: LoRA + projector on captions in the chat template, merged -> $BASE"
if [ -f "$BASE/config.json" ]; then echo "   (exists)"; else
  t0=$(date +%s)
  [ -f "$STAGE2/adapter_config.json" ] || bash scripts/finetune_task_lora.sh --model_name_or_path "$STAGE1" \
    --data_path "$CAPS/captions.json" --image_folder "$CAPS/images" --output_dir "$STAGE2" --max_steps 160
  "$PY" scripts/merge_lora_weights.py --model-path "$STAGE2" --model-base "$STAGE1" --save-model-path "$BASE"
  elapsed "$t0"
fi

step "6/9 sample task (raw CSV + images, as a competition ships it) -> $RAW"
[ -f "$RAW/train.csv" ] && echo "   (exists)" || "$PY" -m llava.data.sample_task --output-dir "$RAW"

step "7/9 preprocess into LLaVA conversations (3 questions per image per record) -> $DATA"
"$PY" scripts/task_data_preprocessing.py --input "$RAW/train.csv" --image-folder "$RAW/images" \
  --image-template 'SYN_{image_id:012d}.jpg' --output-dir "$DATA" --short-answer --val-fraction 0.1 --seed 0 \
  --turns-per-image 3 --no-progress

step "8/9 held-out accuracy of the base, before fine-tuning"
[ -f "$BASE/val_accuracy.json" ] || "$PY" -m llava.eval.task_accuracy --model-path "$BASE" "${EVAL[@]}" \
  --output "$BASE/val_accuracy.json"

step "9/9 LoRA fine-tune on the sample task (scripts/finetune_task_lora.sh, DeepSpeed) -> $LORA"
if [ -f "$LORA/adapter_config.json" ]; then echo "   (exists)"; else
  t0=$(date +%s)
  bash scripts/finetune_task_lora.sh --model_name_or_path "$BASE" --data_path "$DATA/train.json" \
    --image_folder "$RAW/images" --output_dir "$LORA"
  echo "$(( $(date +%s) - t0 ))" > "$LORA/wall_seconds.txt"
  elapsed "$t0"
fi
[ -f "$LORA/val_accuracy.json" ] || "$PY" -m llava.eval.task_accuracy --model-path "$LORA" --model-base "$BASE" \
  "${EVAL[@]}" --output "$LORA/val_accuracy.json"

"$PY" - "$BASE/val_accuracy.json" "$LORA/val_accuracy.json" "$LORA/wall_seconds.txt" <<'EOF'
import json, sys
before, after = (json.load(open(p)) for p in sys.argv[1:3])
try:
    secs = open(sys.argv[3]).read().strip()
except FileNotFoundError:
    secs = "(not measured: the adapter was already there)"
print("\n| held-out (%d questions) | accuracy |\n|---|---|" % after["num_questions"])
print("| base, before fine-tuning | %.3f |" % before["accuracy"])
print("| after LoRA fine-tuning | %.3f |" % after["accuracy"])
print("\nfine-tune wall time: %s s" % secs)
EOF
echo
echo "adapter: $LORA   (base: $BASE; loss curve: $LORA/loss_curve.png)"
echo "load it: load_pretrained_model('$LORA', model_base='$BASE')"
