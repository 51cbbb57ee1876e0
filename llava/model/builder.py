"""load_pretrained_model: the single door to a model, whatever its directory holds.

    (a) a transformers llava directory (what we save; llava-hf's releases)
    (b) an original LLaVA checkpoint (LlavaLlamaForCausalLM), converted on load
    (c) a LoRA output directory, with --model-base naming its base

The kind is decided by the files in the directory, never by its name (the
original breaks when a LoRA path lacks "llava" or "lora").  4-bit / 8-bit go
through bitsandbytes; the vision tower, projector and lm_head stay in full
precision, as in the original, which also keeps image features exact.

Whatever is wrong with a directory (missing, a damaged weight file, a config.json
that is not an object, a LoRA directory given as the base), loading raises
ModelLoadError (llava.model.errors) with a message naming the file, which every
entry point prints as one line.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import AutoConfig, BitsAndBytesConfig

from llava.model.convert import is_original_config, load_original, read_config_json
from llava.model.errors import ModelLoadError, loading
from llava.model.lora import apply_lora, is_lora_dir, load_non_lora_into, lora_dir_config, read_non_lora_trainables
from llava.model.processor import load_processor, num_image_tokens
from llava.model.projector import model_class_for, projector_type_of
from llava.model.weights import check_safetensors, read_json_object, weight_files

log = logging.getLogger(__name__)

# Full module paths: transformers matches these from the start of the name (or as a suffix).
QUANT_SKIP = ["model.vision_tower", "model.multi_modal_projector", "lm_head"]


@dataclass
class LoadedModel:
    model: torch.nn.Module
    processor: object  # transformers LlavaProcessor
    kind: str  # "hf" | "original" | "lora"
    context_len: int

    @property
    def tokenizer(self):
        return self.processor.tokenizer

    @property
    def image_processor(self):
        return self.processor.image_processor

    @property
    def config(self):
        return self.model.config

    @property
    def conv_mode(self) -> str:
        return getattr(self.model.config, "llava_conv_mode", None) or "vicuna_v1"

    @property
    def num_image_tokens(self) -> int:
        return num_image_tokens(self.model.config)

    @property
    def image_token_id(self) -> int:
        return self.model.config.image_token_id


def resolve_device(device: str | None) -> str:
    if device in (None, "auto"):
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def default_dtype(device: str) -> torch.dtype:
    if device.startswith("cuda"):
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.float32


def attention_implementation(device: str) -> str:
    """flash-attn when it is installed and there is a GPU; PyTorch SDPA otherwise."""
    if device.startswith("cuda"):
        try:
            import flash_attn  # noqa: F401

            return "flash_attention_2"
        except ImportError:
            pass
    return "sdpa"


def detect_kind(path: Path) -> str:
    if is_lora_dir(path):
        return "lora"
    cfg = read_config_json(path)
    if "text_config" in cfg and "vision_config" in cfg:
        return "hf"
    if is_original_config(cfg):
        return "original"
    raise ModelLoadError(
        f"{path}/config.json is neither a llava model (no text_config/vision_config) nor an original LLaVA "
        f"checkpoint (no mm_vision_tower); model_type is {cfg.get('model_type')!r}. A plain language model "
        "is a base for training (--model_name_or_path), not a model to load here."
    )


def _local(path: str, flag: str = "--model-path") -> Path:
    p = Path(path)
    if p.is_dir():
        return p
    if p.exists():
        raise ModelLoadError(f"{flag} {path}: a file, not a model directory")
    if p.is_absolute() or path.startswith(("./", "../")) or path.count("/") != 1:
        raise ModelLoadError(f"{flag} {path}: no such model directory")
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(path))
    except Exception as exc:
        raise ModelLoadError(f"{flag} {path}: not a local directory, and not available from the hub ({exc})") from exc


def load_pretrained_model(
    model_path: str,
    model_base: str | None = None,
    model_name: str | None = None,  # accepted for compatibility with the original; never used
    load_8bit: bool = False,
    load_4bit: bool = False,
    device: str | None = "auto",
    dtype: torch.dtype | None = None,
    vision_tower: str | None = None,
    image_aspect_ratio: str | None = None,
    merge_lora: bool = True,
    attn_implementation: str | None = None,
    quant_type: str = "nf4",
    double_quant: bool = True,
) -> LoadedModel:
    if load_4bit and load_8bit:
        raise ValueError("choose one of load_4bit and load_8bit")
    with loading(model_path):  # anything else that goes wrong, as ModelLoadError naming the directory
        device = resolve_device(device)
        dtype = dtype or default_dtype(device)
        kwargs = {"dtype": dtype, "attn_implementation": attn_implementation or attention_implementation(device)}
        if load_4bit:
            kwargs["quantization_config"] = BitsAndBytesConfig(
                load_in_4bit=True,
                bnb_4bit_quant_type=quant_type,
                bnb_4bit_use_double_quant=double_quant,
                bnb_4bit_compute_dtype=dtype,
                llm_int8_skip_modules=QUANT_SKIP,
            )
        elif load_8bit:
            kwargs["quantization_config"] = BitsAndBytesConfig(load_in_8bit=True, llm_int8_skip_modules=QUANT_SKIP)
        if device != "cpu" or load_4bit or load_8bit:
            kwargs["device_map"] = {"": device}

        path = _local(model_path)
        kind = detect_kind(path)
        if kind == "lora":
            model, processor = _load_lora(path, model_base, kwargs, vision_tower, image_aspect_ratio, merge_lora)
        else:
            if model_base:
                log.warning("--model-base %s ignored: %s is a complete model, not a LoRA directory", model_base, path)
            model, processor = _load_full(path, kind, kwargs, vision_tower, image_aspect_ratio)
        if load_4bit:
            keep_bnb_cpu_packing_to_fitting_layers(model)
        model.eval()
        tok = processor.tokenizer
        model.generation_config.pad_token_id = tok.pad_token_id
        if model.generation_config.eos_token_id is None:
            model.generation_config.eos_token_id = tok.eos_token_id
        context_len = getattr(model.config.text_config, "max_position_embeddings", 2048)
        return LoadedModel(model, processor, kind, context_len)


def keep_bnb_cpu_packing_to_fitting_layers(model) -> int:
    """Turn off bitsandbytes' packed-weight CPU inference for 4-bit layers it cannot pack.

    On CPUs with AVX512-BF16, bitsandbytes (0.50) repacks a Linear4bit's weight on its
    first no-grad forward, assuming in_features is a multiple of the quantization
    block (64) and out_features of 32; for other layers (tiny models) it crashes
    with "shape '[32, 0]' is invalid".  Those layers keep the plain 4-bit path;
    real models' layers all fit and keep the fast one.  Returns how many were changed.
    """
    changed = 0
    for module in model.modules():
        if type(module).__name__ != "Linear4bit" or not getattr(module, "support_avx512bf16_for_cpu", False):
            continue
        state = getattr(module.weight, "quant_state", None)
        block = getattr(state, "blocksize", 64) or 64
        if module.in_features % block or module.out_features % 32:
            module.support_avx512bf16_for_cpu = False
            changed += 1
    return changed


def _load_full(path: Path, kind: str, kwargs: dict, vision_tower, image_aspect_ratio):
    if kind == "hf":
        check_safetensors(weight_files(path))  # a damaged file named here; safetensors' own error names none
        config = AutoConfig.from_pretrained(path)
        model = model_class_for(config).from_pretrained(path, **kwargs)
        return model, load_processor(path, model.config, image_aspect_ratio)
    config, state, processor = load_original(path, vision_tower, image_aspect_ratio)
    model = model_class_for(config).from_pretrained(None, config=config, state_dict=state, **kwargs)
    return model, processor


def _load_lora(path: Path, model_base, kwargs, vision_tower, image_aspect_ratio, merge):
    base = model_base or _base_from_adapter_config(path)
    base_path = _local(base, "--model-base")
    if is_lora_dir(base_path):
        raise ModelLoadError(f"--model-base {base}: a LoRA output directory itself (adapter_config.json); give "
                             f"the model {path} was trained on")
    quantized = "quantization_config" in kwargs
    lora_cfg = lora_dir_config(path)
    non_lora = read_non_lora_trainables(path)
    base_cfg = read_config_json(base_path)
    if lora_cfg and is_original_config(lora_cfg) and not _is_multimodal(base_cfg):
        # The original's usual case: the base is the bare LLM (e.g. vicuna-7b-v1.5); the LoRA
        # directory's config names the tower and non_lora_trainables holds the projector.
        config, state, processor = load_original(
            path, vision_tower, image_aspect_ratio, llm_weights=base_path, extra_state=non_lora
        )
        model = model_class_for(config).from_pretrained(None, config=config, state_dict=state, **kwargs)
        non_lora = {}
    else:
        model, processor = _load_full(base_path, detect_kind(base_path), kwargs, vision_tower, image_aspect_ratio)
        if (path / "tokenizer_config.json").exists() and (lora_cfg and "text_config" in lora_cfg):
            processor = load_processor(path, model.config, image_aspect_ratio)
    ptype = projector_type_of(model.config)
    if non_lora:
        load_non_lora_into(model, non_lora, ptype, str(path))
    if quantized and merge:
        log.info("4-bit/8-bit base: the adapter stays unmerged (merging into quantized weights loses precision)")
        merge = False
    model = apply_lora(model, path, ptype, merge=merge)
    return model, processor


def _is_multimodal(cfg: dict) -> bool:
    return "vision_config" in cfg or is_original_config(cfg)


def _base_from_adapter_config(path: Path) -> str:
    base = read_json_object(path / "adapter_config.json").get("base_model_name_or_path")
    if isinstance(base, str) and base and Path(base).exists():
        log.info("no --model-base given; using %s from adapter_config.json", base)
        return base
    raise ModelLoadError(
        f"{path} is a LoRA directory: pass --model-base with the model it was trained on"
        + (f" (adapter_config.json names {base!r}, which is not a local directory)" if base else "")
    )
