# Sourced by the training scripts: the launcher and the defaults that depend on the device.
# On a GPU: the original LLaVA-1.5 recipe (bf16, tf32, gradient checkpointing, ZeRO-3).
# On a CPU: fp32, ZeRO-2, no gradient checkpointing (it only costs time there).
# Environment: NUM_PROCS (ranks: GPUs, or CPU processes), ZERO (a DeepSpeed config),
# MASTER_PORT (rendezvous port; random by default so runs can overlap), PYTHON (see _env.sh),
# DEEPSPEED (a launcher command; default: the DeepSpeed of $PYTHON).
# --dry-run (anywhere in the flags): print the launch command instead of running it.
source "$(dirname "${BASH_SOURCE[0]}")/_env.sh"
# The launcher as a module of $PYTHON, not `deepspeed` from the PATH, which may belong to another Python.
if [ -n "${DEEPSPEED:-}" ]; then LAUNCHER=("$DEEPSPEED"); else LAUNCHER=("$PYTHON" -m deepspeed.launcher.runner); fi
"$PYTHON" -c "import importlib.util as u, sys; sys.exit(not u.find_spec('deepspeed'))" 2>/dev/null || [ -n "${DEEPSPEED:-}" ] || {
  echo "$(basename "$0"): $PYTHON has no deepspeed: pip install -e '.[train]' (make install does)" >&2; exit 2; }
DRY_RUN=0
_args=()
for _a in "$@"; do [ "$_a" = --dry-run ] && DRY_RUN=1 || _args+=("$_a"); done
set -- ${_args[@]+"${_args[@]}"}
unset _args _a
# by_device ON_GPU ON_CPU: the value of a recipe flag for this device.
by_device() { if [ "$ON_GPU" = 1 ]; then echo "$1"; else echo "$2"; fi; }
# Run the launch command (the caller's last line), or print it under --dry-run.
launch() {
  if [ "$DRY_RUN" = 1 ]; then printf '%q ' "$@"; echo; exit 0; fi
  exec "$@"
}
export TOKENIZERS_PARALLELISM=false
PORT=${MASTER_PORT:-$((29500 + RANDOM % 2000))}
if "$PYTHON" -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)"; then
  ON_GPU=1
  NUM_PROCS=${NUM_PROCS:-$("$PYTHON" -c "import torch; print(torch.cuda.device_count())")}
  LAUNCH=("${LAUNCHER[@]}" --num_gpus "$NUM_PROCS" --master_port "$PORT")
  ZERO=${ZERO:-scripts/zero3.json}
  DEVICE_ARGS=(--bf16 True --tf32 True --gradient_checkpointing True --dataloader_num_workers 4)
else
  ON_GPU=0
  NUM_PROCS=${NUM_PROCS:-1}
  LAUNCH=("${LAUNCHER[@]}" --num_accelerators "$NUM_PROCS" --master_port "$PORT")
  ZERO=${ZERO:-scripts/zero2.json}
  DEVICE_ARGS=(--bf16 False --fp16 False --gradient_checkpointing False --dataloader_num_workers 1)
fi
# Flags every recipe shares (the original scripts' values); the caller's "$@" comes last and wins.
COMMON_ARGS=(--mm_projector_type mlp2x_gelu --mm_vision_select_layer -2 --image_aspect_ratio pad
  --group_by_modality_length True --lr_scheduler_type cosine --warmup_ratio 0.03 --weight_decay 0.
  --logging_steps 1 --save_strategy steps --save_total_limit 1 --model_max_length 2048
  --lazy_preprocess True --report_to none)
