"""load_pretrained_model: the single door to a model, whatever its directory holds.

    (a) a transformers llava directory (what we save; llava-hf's releases), or a model of another family
        (Llama-3.2-Vision, BLIP-2, LLaVA-NeXT, Qwen2-VL: llava/model/families), chosen by its model_type
    (b) an original LLaVA checkpoint (LlavaLlamaForCausalLM), converted on load
    (c) a LoRA output directory, with --model-base naming its base

It reads top to bottom: detect what the directories are (llava.model.directories, which reads each
config.json once), load the model (HF, or an original converted in memory), apply the LoRA run,
finish quantization.  4-bit / 8-bit go through bitsandbytes, which quantizes as the weights load;
the vision tower, projector and lm_head stay in full precision, as in the original, which also
keeps image features exact.

Whatever is wrong with a directory (missing, a damaged weight file, a config.json
that is not an object, a LoRA directory given as the base), loading raises
ModelLoadError (llava.model.errors) with a message naming the file, which every
entry point prints as one line.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch
from transformers import AutoModelForImageTextToText, BitsAndBytesConfig

from llava.model.convert import load_original
from llava.model.directories import ModelDir, lora_base, open_model_dir, read_non_lora_trainables
from llava.model.errors import ModelLoadError, loading
from llava.model.families import FAMILIES, LLAVA, Family, image_token_id_of
from llava.model.lora import apply_lora, load_non_lora_into
from llava.model.original_generate import attach as attach_original_generate
from llava.model.processor import load_processor, num_image_tokens
from llava.model.projector import model_class_for, projector_type_of
from llava.model.weights import check_safetensors, weight_files

log = logging.getLogger(__name__)



@dataclass
class LoadedModel:
    model: torch.nn.Module
    processor: object  # transformers LlavaProcessor
    kind: str  # "hf" | "original" | "lora"
    context_len: int
    family: Family = LLAVA

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
    def conv_mode(self) -> str | None:
        """LLaVA-1.5's template (llava/conversation.py); None for a family that renders its own."""
        if not self.family.native:
            return None
        return getattr(self.model.config, "llava_conv_mode", None) or "vicuna_v1"

    @property
    def num_image_tokens(self) -> int:
        return num_image_tokens(self.model.config)

    @property
    def image_token_id(self) -> int:
        return image_token_id_of(self.model.config)

    def __iter__(self):
        """The original's `tokenizer, model, image_processor, context_len = load_pretrained_model(...)`."""
        return iter((self.tokenizer, self.model, self.image_processor, self.context_len))


def device_of(device_map, device: str | None) -> str:
    """One device from the original's pair: `device` when given, else a single-device device_map."""
    if device not in (None, "auto"):
        return device
    if isinstance(device_map, dict):
        places = set(device_map.values())
        if len(places) != 1:
            raise ValueError(f"device_map {device_map!r}: one device only (a model split over several is not "
                             "supported); give device='cuda:0', or device_map={'': 'cuda:0'}")
        return _device_name(places.pop())
    if device_map not in (None, "auto"):
        return _device_name(device_map)
    return "auto"


def _device_name(place) -> str:
    return f"cuda:{place}" if isinstance(place, int) else str(place)  # accelerate's {"": 0} is GPU 0


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
        try:  # optional, GPU only, in no extra: probed here so that a CPU run never loads its CUDA kernels
            import flash_attn  # noqa: F401, PLC0415

            return "flash_attention_2"
        except ImportError:
            pass
    return "sdpa"


def load_pretrained_model(
    model_path: str,
    model_base: str | None = None,
    model_name: str | None = None,  # accepted for compatibility with the original; never used
    load_8bit: bool = False,
    load_4bit: bool = False,
    device_map: str | dict | None = "auto",  # the original's: "auto", a device, or {"": device}
    device: str | None = None,
    use_flash_attn: bool = False,  # the original's: flash-attn on a GPU (ours picks it there by itself)
    *,
    dtype: torch.dtype | None = None,
    torch_dtype: torch.dtype | None = None,  # the original's name for dtype
    vision_tower: str | None = None,
    image_aspect_ratio: str | None = None,
    merge_lora: bool = True,
    attn_implementation: str | None = None,
    quant_type: str = "nf4",
    double_quant: bool = True,
    cache_dir: str | None = None,
) -> LoadedModel:
    """The first eight parameters are the original LLaVA's, in its order, so its positional calls work
    unchanged; the rest are keyword-only.  The result unpacks as the original's
    `tokenizer, model, image_processor, context_len`."""
    if load_4bit and load_8bit:
        raise ValueError("choose one of load_4bit and load_8bit")
    device = device_of(device_map, device)
    dtype = dtype or torch_dtype
    with loading(model_path):  # anything else that goes wrong, as ModelLoadError naming the directory
        device = resolve_device(device)
        if use_flash_attn and attn_implementation is None and device.startswith("cuda"):
            attn_implementation = "flash_attention_2"
        dtype = dtype or default_dtype(device)

        # 1. detect: what the path is, and for a LoRA run what its base is
        target = open_model_dir(model_path, cache_dir=cache_dir)
        lora = target if target.kind == "lora" else None
        if lora:
            base_path = lora_base(lora, model_base)
            base = open_model_dir(base_path, "--model-base", cache_dir)
            if base.kind == "lora":
                raise ModelLoadError(f"--model-base {base_path}: a LoRA output directory itself "
                                     f"(adapter_config.json); give the model {lora.path} was trained on")
        else:
            if model_base:
                log.warning("--model-base %s ignored: %s is a complete model, not a LoRA directory",
                            model_base, target.path)
            base = target
        non_lora = read_non_lora_trainables(lora) if lora else {}
        family = base.family if base.kind == "hf" else LLAVA
        kwargs = from_pretrained_kwargs(device, dtype, attn_implementation or attention_implementation(device),
                                        load_4bit, load_8bit, quant_type, double_quant, family.full_precision)

        # 2. load: a transformers llava directory, or an original checkpoint converted in memory
        model, processor = _load(base, kwargs, vision_tower, image_aspect_ratio, lora, non_lora, cache_dir)

        # 3. apply LoRA: the fully trained parts (projector; a bare-LLM base has them already, and a
        # second copy changes nothing), then the adapter
        if lora:
            ptype = projector_type_of(model.config) if family.native else None  # None: names as saved
            load_non_lora_into(model, non_lora, ptype, str(lora.path))
            merge = merge_lora and not (load_4bit or load_8bit)
            if merge_lora and not merge:
                log.info("4-bit/8-bit base: the adapter stays unmerged "
                         "(merging into quantized weights loses precision)")
            model = apply_lora(model, lora, ptype, merge=merge)

        # 4. quantize: bitsandbytes did as the weights loaded; what is left is its CPU fix-up
        if load_4bit:
            keep_bnb_cpu_packing_to_fitting_layers(model)
        return _ready(model, processor, target.kind, family)


def from_pretrained_kwargs(device: str, dtype: torch.dtype, attn_implementation: str, load_4bit: bool,
                           load_8bit: bool, quant_type: str, double_quant: bool,
                           full_precision=LLAVA.full_precision) -> dict:
    """from_pretrained's keyword arguments: dtype, attention, device placement, bitsandbytes' quantization
    (the modules `full_precision` names stay unquantized)."""
    kwargs = {"dtype": dtype, "attn_implementation": attn_implementation}
    if load_4bit:
        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type=quant_type,
            bnb_4bit_use_double_quant=double_quant,
            bnb_4bit_compute_dtype=dtype,
            llm_int8_skip_modules=list(full_precision),
        )
    elif load_8bit:
        kwargs["quantization_config"] = BitsAndBytesConfig(load_in_8bit=True,
                                                           llm_int8_skip_modules=list(full_precision))
    if device != "cpu" or load_4bit or load_8bit:
        kwargs["device_map"] = {"": device}
    return kwargs


def _load(base: ModelDir, kwargs: dict, vision_tower, image_aspect_ratio, lora: ModelDir | None, non_lora: dict,
          cache_dir: str | None = None):
    """(model, processor) of `base`: the model itself, or the base of the LoRA run `lora`."""
    if lora and lora.is_original and base.kind == "other":
        # The original's usual LoRA run: the base is the bare LLM (e.g. vicuna-7b-v1.5); the LoRA
        # directory's config names the tower and non_lora_trainables holds the projector.
        config, state, processor = load_original(
            lora, vision_tower, image_aspect_ratio, llm_weights=base.path, extra_state=non_lora, cache_dir=cache_dir
        )
        return model_class_for(config).from_pretrained(None, config=config, state_dict=state, **kwargs), processor
    if base.kind == "hf" and not base.family.native:
        check_safetensors(weight_files(base.path))
        config = base.transformers_config()
        base.family.check_config(config)
        model = AutoModelForImageTextToText.from_pretrained(base.path, config=config, **kwargs)
        has_processor = lora and (lora.path / "tokenizer_config.json").exists()  # ours: saved with the run
        return model, base.family.load_processor(lora.path if has_processor else base.path)
    if base.kind == "hf":
        model_type = base.config.get("model_type")
        if model_type is not None and model_type not in LLAVA.model_types:
            known = ", ".join(f"{f.title} ({'/'.join(f.model_types)})" for f in FAMILIES)
            raise ModelLoadError(f"{base.config_file}: model_type {model_type!r} is not a family these commands run "
                                 f"({known}; docs/models.md)")
        check_safetensors(weight_files(base.path))  # a damaged file named here; safetensors' own error names none
        config = base.transformers_config()
        model = model_class_for(config).from_pretrained(base.path, config=config, **kwargs)
        processor = load_processor(base.path, model.config, image_aspect_ratio)
    elif base.kind == "original":
        config, state, processor = load_original(base, vision_tower, image_aspect_ratio, cache_dir=cache_dir)
        model = model_class_for(config).from_pretrained(None, config=config, state_dict=state, **kwargs)
    else:
        raise base.not_a_llava_model()
    if lora and (lora.path / "tokenizer_config.json").exists() and lora.config and "text_config" in lora.config:
        processor = load_processor(lora.path, model.config, image_aspect_ratio)  # ours: saved with the run
    return model, processor


def _ready(model, processor, kind: str, family: Family = LLAVA) -> LoadedModel:
    """Eval mode, and generation that pads and stops with the tokenizer's tokens."""
    model.eval()
    tok = processor.tokenizer
    model.generation_config.pad_token_id = tok.pad_token_id
    if model.generation_config.eos_token_id is None:
        model.generation_config.eos_token_id = tok.eos_token_id
    context_len = getattr(model.config.get_text_config(), "max_position_embeddings", 2048)
    if family.native:  # the original's generate(input_ids, images=...), beside transformers' own
        attach_original_generate(model, image_token_id_of(model.config), num_image_tokens(model.config))
    return LoadedModel(model, processor, kind, context_len, family)


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
