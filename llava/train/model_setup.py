"""The model a training run starts from, and which of its parameters train.

Two starts, as in the original:
  * --vision_tower CLIP --model_name_or_path LLM: compose a new LLaVA (stage 1),
    optionally with --pretrain_mm_mlp_adapter projector weights (stage 2);
  * --model_name_or_path LLAVA: any directory load_pretrained_model reads
    (transformers llava, original LLaVA), for task fine-tuning.

What trains:
  --tune_mm_mlp_adapter    the projector only
  --lora_enable            LoRA on every Linear of the LLM (never the tower,
                           projector or lm_head) + the projector in full
  otherwise                the LLM (unless --freeze_backbone) and the projector
  --unfreeze_mm_vision_tower adds the tower to any of these
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training
from transformers.integrations import is_deepspeed_zero3_enabled

from llava.conversation import get_template
from llava.model.builder import attention_implementation, load_pretrained_model
from llava.model.compose import ComposeOptions, compose_from_pretrained
from llava.model.cpu_attention import register_cpu_sdpa_fp32
from llava.model.directories import plain_name, to_hf_name
from llava.model.families import family_of_model
from llava.model.lora import language_model_linear_names, llm_target_regex, load_non_lora_into
from llava.model.projector import projector_type_of
from llava.model.weights import load_tensor_file

log = logging.getLogger(__name__)

PROJECTOR = "multi_modal_projector"


def training_device(training_args) -> str:
    if torch.cuda.is_available() and not training_args.use_cpu:
        return f"cuda:{training_args.local_process_index}" if training_args.local_process_index >= 0 else "cuda"
    return "cpu"


def load_model(model_args, data_args, training_args):
    """(model, processor) in full precision (or 4/8-bit for QLoRA), before any freezing."""
    get_template(model_args.version)
    device = training_device(training_args)
    # Training on a CPU: attention in fp32 around bf16 layers is faster there (llava/model/cpu_attention.py).
    attn = register_cpu_sdpa_fp32() if device == "cpu" else attention_implementation(device)
    if model_args.vision_tower:
        options = ComposeOptions(
            projector_type=model_args.mm_projector_type,
            vision_feature_layer=model_args.mm_vision_select_layer,
            vision_feature_select=model_args.mm_vision_select_feature,
            image_aspect_ratio=data_args.image_aspect_ratio,
            conv_mode=model_args.version if model_args.version != "plain" else "vicuna_v1",
        )
        model, processor = compose_from_pretrained(model_args.vision_tower, model_args.model_name_or_path, options,
                                                   seed=training_args.seed, cache_dir=training_args.cache_dir)
        model.config._attn_implementation = attn
    else:
        loaded = load_pretrained_model(
            model_args.model_name_or_path,
            device=device if training_args.bits in (4, 8) else "cpu",
            dtype=torch.float32 if training_args.bits == 16 else _compute_dtype(training_args),
            load_4bit=training_args.bits == 4,
            load_8bit=training_args.bits == 8,
            image_aspect_ratio=data_args.image_aspect_ratio,
            attn_implementation=attn,
            quant_type=training_args.quant_type,
            double_quant=training_args.double_quant,
            cache_dir=training_args.cache_dir,
        )
        model, processor = loaded.model, loaded.processor
        if training_args.bits in (4, 8):
            names = [type(m).__name__ for m in model.modules()]
            kinds = sorted({name for name in names if name in ("Linear4bit", "Linear8bitLt")})
            n = sum(name in kinds for name in names)
            log.info("quantized base for QLoRA: %d %s layers (bitsandbytes, %d-bit)",
                     n, "/".join(kinds), training_args.bits)
    family = family_of_model(model)
    if not family.native:
        # Another family renders with its own processor and chat template: LLaVA's template, pad-to-square
        # and projector files do not apply.
        if model_args.pretrain_mm_mlp_adapter:
            raise SystemExit(f"train.py: --pretrain_mm_mlp_adapter is LLaVA-1.5's; {family.title} models have "
                             "their projector already")
        log.info("%s model: conversations rendered with its processor's chat template (--version not used)",
                 family.title)
        model.config.use_cache = False
        return model, processor
    processor.image_processor.do_pad = data_args.image_aspect_ratio == "pad"
    if model_args.pretrain_mm_mlp_adapter:
        load_projector(model, model_args.pretrain_mm_mlp_adapter)
    if model_args.version != "plain":
        # The template a fine-tuned model is used with; stage-1's plain is a training format only.
        model.config.llava_conv_mode = get_template(model_args.version).name
    model.config.use_cache = False
    return model, processor


def _compute_dtype(training_args) -> torch.dtype:
    if training_args.bf16:
        return torch.bfloat16
    if training_args.fp16:
        return torch.float16
    return torch.float32


def load_projector(model, path: str) -> None:
    """Stage-1 projector weights: the original's mm_projector.bin or ours (either naming)."""
    p = Path(path)
    if p.is_dir():
        candidates = [p / n for n in ("mm_projector.safetensors", "mm_projector.bin")]
        p = next((c for c in candidates if c.exists()), candidates[0])
    if not p.exists():
        raise FileNotFoundError(f"--pretrain_mm_mlp_adapter {path}: no such file")
    state = load_tensor_file(p)
    ptype = projector_type_of(model.config)
    state = {k: v for k, v in state.items() if PROJECTOR in (to_hf_name(k, ptype) or "")}
    if not state:
        raise ValueError(f"--pretrain_mm_mlp_adapter {path}: holds no projector weights")
    load_non_lora_into(model, state, ptype, str(p))
    log.info("loaded projector weights from %s", p)


def configure_trainable(model, model_args, training_args):
    """Freeze, wrap in LoRA where asked; return the model to train."""
    family = family_of_model(model)
    model.requires_grad_(False)
    if training_args.bits in (4, 8):
        model = prepare_model_for_kbit_training(
            model, use_gradient_checkpointing=training_args.gradient_checkpointing)
    if training_args.lora_enable:
        llm = None if family.native else family.language_model  # LLaVA: the regex it always had
        config = LoraConfig(
            r=training_args.lora_r,
            lora_alpha=training_args.lora_alpha,
            lora_dropout=training_args.lora_dropout,
            bias=training_args.lora_bias,
            target_modules=llm_target_regex(language_model_linear_names(model, llm), llm),
            task_type="CAUSAL_LM",
        )
        model = get_peft_model(model, config)
    elif not model_args.tune_mm_mlp_adapter and not model_args.freeze_backbone:
        _set(model, lambda n: family.is_language_model(plain_name(n)), True)
    if not training_args.freeze_mm_mlp_adapter:
        _set(model, lambda n: f".{family.projector}." in f".{plain_name(n)}", True)
    if model_args.unfreeze_mm_vision_tower:
        _set(model, lambda n: f".{family.vision}." in f".{plain_name(n)}", True)
    if training_args.gradient_checkpointing:
        # Frozen embeddings would cut the graph at the first checkpointed layer.
        model.enable_input_require_grads()
    _match_zero3_dtype(model, training_args)
    trainable = sum(_numel(p) for p in model.parameters() if p.requires_grad)
    total = sum(_numel(p) for p in model.parameters())
    if trainable == 0:
        raise SystemExit("train.py: nothing to train with these flags")
    log.info("trainable parameters: %s of %s (%.2f%%)", f"{trainable:,}", f"{total:,}", 100 * trainable / total)
    return model


def _numel(p) -> int:
    return getattr(p, "ds_numel", p.numel())  # a ZeRO-3 partitioned weight is empty here


def _match_zero3_dtype(model, training_args) -> None:
    """Under ZeRO-3 the loaded weights are partitioned in the run's dtype as they load
    (transformers builds the model inside deepspeed.zero.Init); weights made afterwards, LoRA's,
    are fp32, and DeepSpeed's stage-3 optimizer takes one dtype only (it keeps fp32 master copies
    itself).  Seen on a GPU with --bf16: an AssertionError in its defragment()."""
    dtype = _compute_dtype(training_args)
    if training_args.bits != 16 or dtype == torch.float32 or not is_deepspeed_zero3_enabled():
        return
    for p in model.parameters():
        if not hasattr(p, "ds_id") and p.dtype.is_floating_point and p.dtype != dtype:
            p.data = p.data.to(dtype)


def _set(model, pick, value: bool) -> None:
    for name, p in model.named_parameters():
        if pick(name) and p.dtype.is_floating_point:
            p.requires_grad_(value)
