"""Training flags: the original LLaVA's names, so existing scripts keep working, plus every
Hugging Face TrainingArguments flag.  An unknown flag is an error, not a silent no-op.

Defaults follow LLaVA-1.5's scripts (mlp2x_gelu, layer -2, pad, vicuna_v1), not the
original train.py's older dataclass defaults, which those scripts always override.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field

import torch.distributed as dist
import transformers
from transformers import HfArgumentParser


@dataclass
class ModelArguments:
    model_name_or_path: str = field(
        default="checkpoints/llava-smol-base",
        metadata={"help": "a llava model (transformers or original layout) to fine-tune; or, with --vision_tower, "
                          "the language model that stage-1 pretraining composes with the tower"},
    )
    version: str = field(default="vicuna_v1", metadata={"help": "conversation template: vicuna_v1 (v1), "
                                                                "llava_v1, plain, llava_llama_3"})
    freeze_backbone: bool = field(default=False, metadata={"help": "freeze the language model"})
    tune_mm_mlp_adapter: bool = field(default=False, metadata={"help": "train the projector only (stage 1)"})
    vision_tower: str | None = field(default=None, metadata={"help": "CLIP checkpoint: compose a new model "
                                                                      "from it and --model_name_or_path"})
    mm_vision_select_layer: int = -2
    mm_vision_select_feature: str = field(default="patch", metadata={"help": "patch or cls_patch"})
    pretrain_mm_mlp_adapter: str | None = field(default=None, metadata={
        "help": "projector weights from stage 1 (mm_projector.bin of the original, or ours)"})
    mm_projector_type: str = field(default="mlp2x_gelu", metadata={"help": "linear or mlp{N}x_gelu"})
    mm_use_im_start_end: bool = field(default=False, metadata={"help": "not supported (LLaVA-1.5 uses false)"})
    mm_use_im_patch_token: bool = field(default=False, metadata={"help": "not supported (LLaVA-1.5 uses false)"})
    mm_patch_merge_type: str = field(default="flat", metadata={"help": "only flat (LLaVA-1.5)"})
    unfreeze_mm_vision_tower: bool = field(default=False, metadata={"help": "train the vision tower too"})


@dataclass
class DataArguments:
    data_path: str = field(default="playground/data/sample_task_llava/train.json",
                           metadata={"help": "LLaVA conversation JSON (a list of records) or JSONL"})
    image_folder: str | None = field(default="playground/data/sample_task/images")
    image_aspect_ratio: str = field(default="pad", metadata={"help": "pad or square"})
    lazy_preprocess: bool = field(default=True, metadata={"help": "the original's: True only (always lazy)"})
    is_multimodal: bool = field(default=True, metadata={"help": "the original's: True only"})
    eval_data_path: str | None = field(default=None, metadata={"help": "optional conversation JSON for eval loss"})


@dataclass
class TrainingArguments(transformers.TrainingArguments):
    cache_dir: str | None = field(default=None, metadata={"help": "where models given by hub id are downloaded "
                                                                  "(default: the Hugging Face cache)"})
    optim: str = "adamw_torch"
    remove_unused_columns: bool = False
    freeze_mm_mlp_adapter: bool = False
    model_max_length: int = field(default=2048, metadata={"help": "longer records are truncated after the image, "
                                                                   "or reported and skipped"})
    double_quant: bool = True
    quant_type: str = field(default="nf4", metadata={"help": "nf4 or fp4 (with --bits 4)"})
    bits: int = field(default=16, metadata={"help": "4 or 8 for QLoRA; 16 for none"})
    lora_enable: bool = False
    lora_r: int = 64
    lora_alpha: int = 16
    lora_dropout: float = 0.05
    lora_weight_path: str = ""
    lora_bias: str = "none"
    mm_projector_lr: float | None = None
    mm_vision_tower_lr: float | None = None
    group_by_modality_length: bool = False
    mpt_attn_impl: str | None = field(default=None, metadata={"help": "the original's, for MPT models: refused "
                                                                        "(MPT is not supported)"})
    cpu_bf16: str = field(default="auto", metadata={
        "help": "on CPU, run matmuls in bf16 autocast (weights and optimizer stay fp32): auto = when the CPU "
                "has native bf16 instructions (AVX512-BF16 or AMX), True, or False"})
    lm_head_on_labels_only: bool = field(default=True, metadata={
        "help": "apply the LM head only at supervised positions (same loss, less compute)"})


# Flags renamed in transformers since the original's scripts were written.
_RENAMED = {"--evaluation_strategy": "--eval_strategy", "--warmup_ratio": "--warmup_steps"}


def translate_legacy_flags(argv: list[str]) -> list[str]:
    out = []
    for arg in argv:
        name, eq, value = arg.partition("=")
        if name in _RENAMED:
            arg = _RENAMED[name] + (eq + value if eq else "")
        out.append(arg)
    return out


def parse_args(argv: list[str] | None = None):
    """(ModelArguments, DataArguments, TrainingArguments); unknown flags raise with their names."""
    argv = sys.argv[1:] if argv is None else argv
    argv = translate_legacy_flags(argv)
    parser = HfArgumentParser((ModelArguments, DataArguments, TrainingArguments))
    model_args, data_args, training_args, rest = parser.parse_args_into_dataclasses(
        args=argv, return_remaining_strings=True)
    rest = [r for r in rest if not r.startswith("--local_rank")]  # the deepspeed launcher adds it
    if rest:
        raise SystemExit(f"train.py: unknown arguments: {' '.join(rest)} (see --help)")
    check_args(model_args, data_args, training_args)
    fix_cpu_deepspeed_ranks(training_args)
    return model_args, data_args, training_args


def fix_cpu_deepspeed_ranks(training_args) -> None:
    """Give the Trainer the real rank and world size when DeepSpeed runs several CPU ranks.

    accelerate (1.x) initialises DeepSpeed's process group but, finding no GPU
    backend, records one process of rank 0: every rank would then save, log,
    and read the whole dataset instead of its share.  Its state is shared
    (one dict for all PartialState instances), so correcting it once here is
    seen by the Trainer and its dataloader sharding.
    """
    if not training_args.deepspeed or not dist.is_available() or not dist.is_initialized():
        return
    state = training_args.distributed_state
    if state is None or state.num_processes == dist.get_world_size():
        return
    state.num_processes = dist.get_world_size()
    state.process_index = dist.get_rank()
    state.local_process_index = training_args.local_rank if training_args.local_rank >= 0 else dist.get_rank()


def check_args(model_args: ModelArguments, data_args: DataArguments, training_args: TrainingArguments) -> None:
    problems = []
    if model_args.mm_use_im_start_end or model_args.mm_use_im_patch_token:
        problems.append("--mm_use_im_start_end / --mm_use_im_patch_token are not supported (LLaVA-1.5 uses False)")
    if model_args.mm_patch_merge_type != "flat":
        problems.append("--mm_patch_merge_type: only 'flat' (LLaVA-1.5) is supported")
    if training_args.bits not in (4, 8, 16):
        problems.append(f"--bits must be 4, 8 or 16, got {training_args.bits}")
    if training_args.bits in (4, 8) and not training_args.lora_enable:
        problems.append("--bits 4/8 trains LoRA adapters on a quantized base: add --lora_enable True")
    if training_args.cpu_bf16 not in ("auto", "True", "False", "true", "false"):
        problems.append(f"--cpu_bf16 must be auto, True or False, got {training_args.cpu_bf16!r}")
    if data_args.image_aspect_ratio not in ("pad", "square"):
        problems.append(f"--image_aspect_ratio must be pad or square, got {data_args.image_aspect_ratio!r}")
    if training_args.mpt_attn_impl is not None:
        problems.append("--mpt_attn_impl is the original's flag for MPT language models, which are not supported "
                        "here; drop it (attention is chosen per device: SDPA, or flash-attn when installed)")
    if training_args.lora_weight_path:
        problems.append("--lora_weight_path is not supported (the original never read it either): to go on from "
                        "an adapter, merge it (scripts/merge_lora_weights.py) and fine-tune the merged model")
    if not data_args.lazy_preprocess:
        problems.append("--lazy_preprocess False is not supported: records are always tokenized as their batches "
                        "are drawn (the original's lazy mode); drop the flag")
    if not data_args.is_multimodal:
        problems.append("--is_multimodal False is not supported: training always takes the image records' images "
                        "(records without an image train as text); drop the flag")
    if model_args.tune_mm_mlp_adapter and training_args.lora_enable:
        problems.append("--tune_mm_mlp_adapter (projector only) and --lora_enable cannot be combined")
    if problems:
        raise SystemExit("train.py: " + "; ".join(problems))
