#!/usr/bin/env bash
# The main job end to end on the embedded default (run by `make demo`):
#   embedded base (built and trained once, cached) -> sample task -> preprocess -> LoRA fine-tune
#   -> merge -> batch inference (inference.sh) -> scores, with the base's scores before fine-tuning.
# Steps whose output already exists, and is newer than what it was built from, are skipped, so a
# second run only fine-tunes again if asked (delete checkpoints/llava-smol-task-lora to retrain; the
# merge and the answers follow).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
export PYTHON=$PY HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false

INIT=checkpoints/llava-smol-init           # random CLIP tower + SmolLM2-135M-Instruct, composed
TOWER=checkpoints/smol-clip                # the tower after learning to see the scenes
STAGE1=checkpoints/llava-smol-stage1       # + projector aligned on captions (stage 1)
BASE=checkpoints/llava-smol-base           # stage 2, LLM + projector on scene chats: the embedded base
STAGE2_STEPS=320                           # 1.28 epochs of the 4000 chats (docs/training.md: 160 left yes/no at chance)
LORA=checkpoints/llava-smol-task-lora      # the task adapter
MERGED=checkpoints/llava-smol-task-merged  # the adapter merged: what inference.sh answers with
CAPS=playground/data/scene_captions
RAW=playground/data/sample_task
DATA=playground/data/sample_task_llava
KEY=$DATA/val_answers.jsonl
ANS=$DATA/answers                          # inference.sh's default answers folder

step() { echo; echo "== $*"; }
elapsed() { echo "   ($(( $(date +%s) - $1 )) s)"; }

step "1/12 embedded model parts: CLIP tower (64 px, random) + SmolLM2-135M-Instruct -> $INIT"
[ -f "$INIT/config.json" ] && echo "   (exists)" || "$PY" -m llava.model.tiny --preset smol --output-dir "$INIT"

step "2/12 caption data for the base: synthetic scenes, other seeds than the task -> $CAPS"
[ -f "$CAPS/captions.json" ] && echo "   (exists)" || "$PY" -m llava.data.scene_captions --output-dir "$CAPS"

step "3/12 teach the tower to see (no pretrained CLIP offline) -> $TOWER"
# A tower from before the position head (its report has no col_acc) is rebuilt, and what follows with it.
if grep -q col_acc "$TOWER/tower_pretrain.json" 2>/dev/null; then echo "   (exists)"; else
  "$PY" -m llava.model.tower_pretrain --tower "$INIT-parts/vision_tower" --output-dir "$TOWER" --steps 1200 --pool 12000
fi

step "4/12 stage 1: align the projector on captions (scripts/pretrain.sh) -> $STAGE1"
if [ "$STAGE1/mm_projector.safetensors" -nt "$TOWER/tower_pretrain.json" ]; then echo "   (exists)"; else
  t0=$(date +%s)
  # Built from an older tower: start over (its checkpoints would be resumed from). An interrupted
  # run (no final output yet) resumes.
  [ -f "$STAGE1/mm_projector.safetensors" ] && rm -rf "$STAGE1"
  bash scripts/pretrain.sh --vision_tower "$TOWER" --model_name_or_path "$INIT-parts/llm" --output_dir "$STAGE1"
  elapsed "$t0"
fi

step "5/12 stage 2: LLM + projector on scene chats, questions answered in sentences (scripts/finetune.sh) -> $BASE"
if [ "$BASE/config.json" -nt "$STAGE1/mm_projector.safetensors" ] \
   && [ "$(cat "$BASE/stage2_steps.txt" 2>/dev/null)" = "$STAGE2_STEPS" ]; then echo "   (exists)"; else
  t0=$(date +%s)
  [ -f "$BASE/config.json" ] && rm -rf "$BASE"  # built from an older stage 1, or for another step count
  bash scripts/finetune.sh --vision_tower "$TOWER" --model_name_or_path "$INIT-parts/llm" \
    --pretrain_mm_mlp_adapter "$STAGE1/mm_projector.safetensors" --data_path "$CAPS/chat.json" \
    --image_folder "$CAPS/images" --output_dir "$BASE" --max_steps "$STAGE2_STEPS" --learning_rate 1e-4 \
    --mm_projector_lr 5e-4 --save_steps 1000
  rm -rf "$BASE"/checkpoint-*  # the run is complete: its resume state (optimizer and all, 2.5 GB) goes
  echo "$STAGE2_STEPS" > "$BASE/stage2_steps.txt"
  elapsed "$t0"
fi

step "6/12 sample task (raw CSV + images, as a competition ships it) -> $RAW"
[ -f "$RAW/train.csv" ] && echo "   (exists)" || "$PY" -m llava.data.sample_task --output-dir "$RAW"

step "7/12 preprocess into LLaVA conversations (3 questions per image per record) -> $DATA"
"$PY" scripts/task_data_preprocessing.py --input "$RAW/train.csv" --image-folder "$RAW/images" \
  --image-template 'SYN_{image_id:012d}.jpg' --output-dir "$DATA" --short-answer --val-fraction 0.1 --seed 0 \
  --turns-per-image 3 --no-progress

step "8/12 the base before fine-tuning: batch inference on the held-out questions, scored"
# Answers of an older base would be kept by the resume logic: start over when the model is newer.
[ "$BASE/config.json" -nt "$ANS/llava-smol-base.jsonl" ] && rm -f "$ANS/llava-smol-base.jsonl"
bash inference.sh --model-path "$BASE" --answers-file "$ANS/llava-smol-base.jsonl" --no-progress
"$PY" -m llava.eval.evaluate --answers-file "$ANS/llava-smol-base.jsonl" --annotation-file "$KEY" >/dev/null

step "9/12 LoRA fine-tune on the sample task (scripts/finetune_task_lora.sh, DeepSpeed) -> $LORA"
if [ "$LORA/adapter_model.safetensors" -nt "$BASE/config.json" ]; then echo "   (exists)"; else
  t0=$(date +%s)
  [ -f "$LORA/adapter_model.safetensors" ] && rm -rf "$LORA"  # the adapter of an older base
  bash scripts/finetune_task_lora.sh --model_name_or_path "$BASE" --data_path "$DATA/train.json" \
    --image_folder "$RAW/images" --output_dir "$LORA"
  echo "$(( $(date +%s) - t0 ))" > "$LORA/wall_seconds.txt"
  elapsed "$t0"
fi

step "10/12 merge the adapter into a standalone transformers llava directory -> $MERGED"
if [ "$MERGED/config.json" -nt "$LORA/adapter_model.safetensors" ]; then echo "   (exists)"; else
  "$PY" scripts/merge_lora_weights.py --model-path "$LORA" --model-base "$BASE" --save-model-path "$MERGED"
fi

step "11/12 batch inference with the merged model (bash inference.sh) -> $ANS/llava-smol-task-merged.jsonl"
[ "$MERGED/config.json" -nt "$ANS/llava-smol-task-merged.jsonl" ] && rm -f "$ANS/llava-smol-task-merged.jsonl"
bash inference.sh --no-progress

step "12/12 scores (python -m llava.eval.evaluate)"
"$PY" -m llava.eval.evaluate --answers-file "$ANS/llava-smol-task-merged.jsonl" --annotation-file "$KEY"

"$PY" - "$ANS/llava-smol-base_scores.json" "$ANS/llava-smol-task-merged_scores.json" "$LORA/wall_seconds.txt" <<'PYEOF'
import json, sys
before, after = (json.load(open(p)) for p in sys.argv[1:3])
try:
    secs = open(sys.argv[3]).read().strip() + " s"
except FileNotFoundError:
    secs = "(not measured: the adapter was already there)"
print("\n| held-out questions (%d) | VQA accuracy | exact match |\n|---|---|---|" % after["counts"]["questions"])
for name, r in (("base, before fine-tuning", before), ("LoRA fine-tuned, merged", after)):
    print("| %s | %.3f | %.3f |" % (name, r["scores"]["vqa_accuracy"], r["scores"]["exact_match"]))
print("\nLoRA fine-tune wall time: %s" % secs)
PYEOF
echo
echo "adapter: $LORA (loss curve: $LORA/loss_curve.png)"
echo "merged model: $MERGED (plain transformers loads it: LlavaForConditionalGeneration.from_pretrained)"
echo "answers: $ANS/llava-smol-task-merged.jsonl"
