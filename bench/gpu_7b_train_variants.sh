#!/usr/bin/env bash
# LoRA training throughput of a LLaVA-1.5-7B-shaped model (random weights) on one GPU, in the
# GPU recipe's setting (LoRA r128, bf16, gradient checkpointing, batch 16) with three variants:
#   fp32-adapters      the adapters and AdamW in fp32, the frozen weights in bf16 (bench/gpu_7b.sh's run)
#   bf16-adapters      the adapters in bf16 with fp32 master copies in AdamW (DeepSpeed's bf16 mode)
#   bf16-compiled      the same, each decoder layer torch.compile'd (--torch_compile in a real run)
#
#   bash bench/gpu_7b_train_variants.sh TOKENIZER_MODEL DATA_DIR LOG_DIR
#
# Each variant is its own process on the same machine, one after another; each prints its
# naive/ours ratio and per-round tokens/s (the compiled variant first runs an untimed round, compiling).
set -u
tok=${1:?tokenizer.model}; data=${2:?data dir}; logs=${3:?log dir}
py=${PYTHON:-python3}
export HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1
mkdir -p "$logs"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$logs/gpu.txt"
SECONDS=0
ckpt=$($py bench/load_7b.py --workdir /tmp/llava7b --tokenizer-model "$tok" --size "${SIZE:-7b}" --write-only 2>"$logs/write.err" | tail -1)
echo "checkpoint: $ckpt (${SECONDS}s)"
common=(--model "$ckpt" --data "$data/train.json" --image-folder "$data/images" --batch-size 16
        --lora-r 128 --bf16 --gradient-checkpointing)
run() {  # name seconds flags...
    local name=$1 limit=$2; shift 2
    timeout "$limit" $py bench/train_throughput.py "${common[@]}" "$@" >"$logs/train_$name.txt" 2>&1
    echo "== $name: rc $? (${SECONDS}s)"; grep -E "^round|^\| |ratio" "$logs/train_$name.txt"
}
run fp32-adapters 150 --steps 5 --rounds 2
run bf16-adapters 150 --steps 5 --rounds 2 --bf16-adapters
run bf16-compiled 240 --steps 4 --rounds 2 --warmup-rounds 1 --bf16-adapters --compile
