#!/usr/bin/env bash
# The main job end to end on the embedded default (run by `make demo`):
#   embedded base (built and trained once, cached) -> sample task -> preprocess -> LoRA fine-tune
#   -> merge -> batch inference (inference.sh) -> scores, with the base's scores before fine-tuning.
#
#   bash scripts/demo.sh                 # every step; finished steps are skipped
#   bash scripts/demo.sh --steps 6,7     # only these steps (numbers as printed)
#
# A step is skipped only when its output is complete: the generators stage their folders and mark
# them complete last (llava/staged_dir.py), and this script marks a training step's output once the
# training script has returned.  A partial output of an interrupted run is removed and built again
# (training steps resume from their last checkpoint), with a line saying so.  A step whose input
# changed since it ran is done again (delete checkpoints/llava-smol-task-lora to retrain the task
# adapter; the merge and the answers follow).
set -euo pipefail
source "$(dirname "$0")/_env.sh"
source scripts/_steps.sh
PY=$PYTHON
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false

INIT=checkpoints/llava-smol-init           # random CLIP tower + SmolLM2-135M-Instruct, composed
TOWER=checkpoints/smol-clip                # the tower after learning to see the scenes
STAGE1=checkpoints/llava-smol-stage1       # + projector aligned on captions (stage 1)
BASE=checkpoints/llava-smol-base           # stage 2, LLM + projector on scene chats: the embedded base
STAGE2_STEPS=320                           # 1.28 epochs of the 4000 chats (docs/training.md)
LORA=checkpoints/llava-smol-task-lora      # the task adapter
MERGED=checkpoints/llava-smol-task-merged  # the adapter merged: what inference.sh answers with
CAPS=playground/data/scene_captions
RAW=playground/data/sample_task
DATA=playground/data/sample_task_llava
KEY=$DATA/val_answers.jsonl
ANS=$DATA/answers                          # inference.sh's default answers folder

STEPS=all
while [ $# -gt 0 ]; do
  case "$1" in
    --steps) STEPS=${2:?--steps needs a list such as 6,7}; shift 2 ;;
    --steps=*) STEPS=${1#--steps=}; shift ;;
    *) echo "demo.sh: unknown flag $1 (--help lists the flags)" >&2; exit 2 ;;
  esac
done
[[ $STEPS == all || $STEPS =~ ^[0-9]+(,[0-9]+)*$ ]] || { echo "demo.sh: --steps takes numbers like 6,7" >&2; exit 2; }
want() { [ "$STEPS" = all ] || [[ ",$STEPS," == *",$1,"* ]]; }

step() { echo; echo "== $*"; }
elapsed() { echo "   ($(( $(date +%s) - $1 )) s)"; }

if want 1; then
  step "1/12 embedded model parts: CLIP tower (64 px, random) + SmolLM2-135M-Instruct -> $INIT"
  build_once "$INIT" "$PY" -m llava.demo.models --preset smol --output-dir "$INIT"
fi

if want 2; then
  step "2/12 caption data for the base: synthetic scenes, other seeds than the task -> $CAPS"
  build_once "$CAPS" "$PY" -m llava.demo.scene_captions --output-dir "$CAPS"
fi

if want 3; then
  step "3/12 teach the tower to see (no pretrained CLIP offline) -> $TOWER"
  # tower_pretrain.json is written last; a tower from before the position head (no col_acc) is rebuilt.
  if grep -q col_acc "$TOWER/tower_pretrain.json" 2>/dev/null; then echo "   (exists)"; else
    [ -e "$TOWER" ] && { echo "   $TOWER is incomplete or outdated: building it again"; rm -rf "$TOWER"; }
    "$PY" -m llava.demo.tower_pretrain --tower "$INIT-parts/vision_tower" --output-dir "$TOWER" --steps 1200 --pool 12000
  fi
fi

if want 4; then
  step "4/12 stage 1: align the projector on captions (scripts/pretrain.sh) -> $STAGE1"
  if ! complete "$STAGE1" && [ "$STAGE1/mm_projector.safetensors" -nt "$TOWER/tower_pretrain.json" ] \
     && weights_whole "$STAGE1/mm_projector.safetensors"; then
    mark_complete "$STAGE1" "scripts/pretrain.sh (checked whole)"  # finished before this script wrote markers
  fi
  if complete "$STAGE1" && [ "$STAGE1/mm_projector.safetensors" -nt "$TOWER/tower_pretrain.json" ]; then
    echo "   (exists)"
  else
    t0=$(date +%s)
    # Built from an older tower: start over (its checkpoints would be resumed from). An interrupted
    # run (not marked complete) resumes from its last checkpoint.
    complete "$STAGE1" && { echo "   $STAGE1 was built from an older tower: training it again"; rm -rf "$STAGE1"; }
    bash scripts/pretrain.sh --vision_tower "$TOWER" --model_name_or_path "$INIT-parts/llm" --output_dir "$STAGE1"
    mark_complete "$STAGE1" "scripts/pretrain.sh"
    elapsed "$t0"
  fi
fi

if want 5; then
  step "5/12 stage 2: LLM + projector on scene chats, questions answered in sentences (scripts/finetune.sh) -> $BASE"
  # stage2_steps.txt is written once the run is complete: it is this step's marker.
  if [ "$BASE/config.json" -nt "$STAGE1/mm_projector.safetensors" ] \
     && [ "$(cat "$BASE/stage2_steps.txt" 2>/dev/null)" = "$STAGE2_STEPS" ]; then echo "   (exists)"; else
    t0=$(date +%s)
    # Built from an older stage 1, for another step count, or cut off while saving: start over.
    # (An interrupted run has only checkpoints, no config.json yet, and resumes from the last.)
    [ -f "$BASE/config.json" ] && { echo "   $BASE is outdated or incomplete: training it again"; rm -rf "$BASE"; }
    bash scripts/finetune.sh --vision_tower "$TOWER" --model_name_or_path "$INIT-parts/llm" \
      --pretrain_mm_mlp_adapter "$STAGE1/mm_projector.safetensors" --data_path "$CAPS/chat.json" \
      --image_folder "$CAPS/images" --output_dir "$BASE" --max_steps "$STAGE2_STEPS" --learning_rate 1e-4 \
      --mm_projector_lr 5e-4 --save_steps 1000
    rm -rf "$BASE"/checkpoint-*  # the run is complete: its resume state (optimizer and all, gigabytes) goes
    echo "$STAGE2_STEPS" > "$BASE/stage2_steps.txt.tmp" && mv "$BASE/stage2_steps.txt.tmp" "$BASE/stage2_steps.txt"
    elapsed "$t0"
  fi
fi

if want 6; then
  step "6/12 sample task (raw CSV + images, as a competition ships it) -> $RAW"
  build_once "$RAW" "$PY" -m llava.demo.vqa_task --output-dir "$RAW"
fi

if want 7; then
  step "7/12 preprocess into LLaVA conversations (3 questions per image per record) -> $DATA"
  # Always run: it is quick, and it writes all its files at once (temporary files, then renames).
  "$PY" scripts/task_data_preprocessing.py --input "$RAW/train.csv" --image-folder "$RAW/images" \
    --image-template 'SYN_{image_id:012d}.jpg' --output-dir "$DATA" --short-answer --val-fraction 0.1 --seed 0 \
    --turns-per-image 3 --no-progress
fi

if want 8; then
  step "8/12 the base before fine-tuning: batch inference on the held-out questions, scored"
  # Answers of an older base would be kept by the resume logic: start over when the model is newer.
  [ "$BASE/config.json" -nt "$ANS/llava-smol-base.jsonl" ] && rm -f "$ANS/llava-smol-base.jsonl"
  bash inference.sh --model-path "$BASE" --answers-file "$ANS/llava-smol-base.jsonl" --no-progress
  "$PY" -m llava.eval.evaluate --answers-file "$ANS/llava-smol-base.jsonl" --annotation-file "$KEY" >/dev/null
fi

if want 9; then
  step "9/12 LoRA fine-tune on the sample task (scripts/finetune_task_lora.sh, DeepSpeed) -> $LORA"
  if ! complete "$LORA" && [ -f "$LORA/wall_seconds.txt" ] && weights_whole "$LORA/adapter_model.safetensors"; then
    mark_complete "$LORA" "scripts/finetune_task_lora.sh (checked whole)"  # from before the markers
  fi
  if complete "$LORA" && [ "$LORA/adapter_model.safetensors" -nt "$BASE/config.json" ]; then echo "   (exists)"; else
    t0=$(date +%s)
    complete "$LORA" && { echo "   $LORA is the adapter of an older base: training it again"; rm -rf "$LORA"; }
    bash scripts/finetune_task_lora.sh --model_name_or_path "$BASE" --data_path "$DATA/train.json" \
      --image_folder "$RAW/images" --output_dir "$LORA"
    echo "$(( $(date +%s) - t0 ))" > "$LORA/wall_seconds.txt"
    mark_complete "$LORA" "scripts/finetune_task_lora.sh"
    elapsed "$t0"
  fi
fi

if want 10; then
  step "10/12 merge the adapter into a standalone transformers llava directory -> $MERGED"
  if complete "$MERGED" && [ "$MERGED/config.json" -nt "$LORA/adapter_model.safetensors" ]; then echo "   (exists)"; else
    clear_partial "$MERGED"
    "$PY" scripts/merge_lora_weights.py --model-path "$LORA" --model-base "$BASE" --save-model-path "$MERGED"
  fi
fi

if want 11; then
  step "11/12 batch inference with the merged model (bash inference.sh) -> $ANS/llava-smol-task-merged.jsonl"
  [ "$MERGED/config.json" -nt "$ANS/llava-smol-task-merged.jsonl" ] && rm -f "$ANS/llava-smol-task-merged.jsonl"
  bash inference.sh --no-progress
fi

want 12 || exit 0
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
