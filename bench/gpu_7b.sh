#!/usr/bin/env bash
# A LLaVA-1.5-7B-shaped model (random weights) on one GPU: batch inference in bf16 and 4-bit
# (bench/inference_throughput.py) and LoRA training throughput and MFU (bench/train_throughput.py).
#
#   bash bench/gpu_7b.sh TOKENIZER_MODEL DATA_DIR LOG_DIR
#   PARTS=train-variants bash bench/gpu_7b.sh ...     # only the training variants below
#
# PARTS (default "inference train") picks what runs:
#   inference       bf16, bf16 without the image prefix, 4-bit; batch 16 against one at a time
#   train           LoRA r128, bf16 frozen weights, fp32 adapters, gradient checkpointing, batch 16
#   train-variants  the same with the adapters in bf16 and fp32 master copies in AdamW (DeepSpeed's
#                   bf16 mode), and that again with each decoder layer torch.compile'd (an untimed
#                   round first, compiling); each variant is its own process, one after another
# DATA_DIR holds train.json, val_questions.jsonl and images/ in the sample task's format (a few
# hundred records are enough).  Each step logs to LOG_DIR and a failing step does not stop the
# next.  SIZE=small runs the same on a tiny shape (a CPU check).
set -u
tok=${1:?tokenizer.model}; data=${2:?data dir}; logs=${3:?log dir}
py=${PYTHON:-python3}
parts=" ${PARTS:-inference train} "
export HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1
mkdir -p "$logs"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$logs/gpu.txt"
SECONDS=0
ckpt=$($py bench/load_7b.py --workdir /tmp/llava7b --tokenizer-model "$tok" --size "${SIZE:-7b}" --write-only 2>"$logs/write.err" | tail -1)
echo "checkpoint: $ckpt (${SECONDS}s)"
if [[ $parts == *" inference "* ]]; then
  for mode in bf16 bf16-no-image-prefix 4bit; do
    flag=""; [ "$mode" = 4bit ] && flag=--load-4bit; [ "$mode" = bf16-no-image-prefix ] && flag=--no-image-prefix
    timeout 150 $py bench/inference_throughput.py --model-path "$ckpt" --questions "$data/val_questions.jsonl" \
        --image-folder "$data/images" --batch-size 16 --limit 48 --rounds 1 --max-new-tokens 16 \
        --num-workers 2 $flag >"$logs/inference_$mode.txt" 2>&1
    echo "inference $mode: rc $? (${SECONDS}s)"; tail -8 "$logs/inference_$mode.txt"
  done
fi
train() {  # name seconds flags...
  local name=$1 limit=$2; shift 2
  timeout "$limit" $py bench/train_throughput.py --model "$ckpt" --data "$data/train.json" \
      --image-folder "$data/images" --batch-size 16 --lora-r 128 --bf16 --gradient-checkpointing "$@" \
      >"$logs/train_$name.txt" 2>&1
  echo "train $name: rc $? (${SECONDS}s)"; grep -E "^round|^warm-up|^\| |ratio" "$logs/train_$name.txt"
}
[[ $parts == *" train "* ]] && train fp32-adapters 220 --steps 6 --rounds 2
if [[ $parts == *" train-variants "* ]]; then
  train bf16-adapters 150 --steps 5 --rounds 2 --bf16-adapters
  train bf16-compiled 240 --steps 4 --rounds 2 --warmup-rounds 1 --bf16-adapters --compile
fi
exit 0
