"""Model directories: which kind a directory is, what it holds, and how its weight names map.

Every --model-path / --model-base is one of:

    lora      adapter_config.json (peft's), adapter_model.safetensors|.bin, maybe
              non_lora_trainables.safetensors|.bin (fully trained parts: the projector) and
              config.json (+ processor files in ours); its base comes from --model-base or
              adapter_config.json's base_model_name_or_path
    hf        config.json with text_config and vision_config: transformers' llava (what we save), or the
              model_type of another family (llava/model/families: mllama, blip-2, llava_next, qwen2_vl)
    original  config.json of LlavaLlamaForCausalLM (mm_vision_tower, model_type llava_llama, ...)
    other     any other config.json: a plain language model is one (the base of an original LoRA run)

The kind comes from the files and config.json's fields, never from the folder's name (the original
keys on "llava" / "lora" in the name).  `detect` reads config.json and adapter_config.json once;
the parsed dicts travel in the ModelDir, so nothing downstream reads them again.

Weight names: the original's (model.layers.*, model.mm_projector.{0,2}.*, lm_head.*) and
transformers llava's (model.language_model.layers.*, model.multi_modal_projector.linear_{1,2}.*)
map through RENAMES and the projector's layer numbering below, in both directions; peft's wrapping
(base_model.model., modules_to_save) is peeled off by `plain_name`.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path

import torch
from huggingface_hub import constants as hf_constants
from huggingface_hub import snapshot_download
from transformers import CONFIG_MAPPING, PreTrainedConfig

from llava.model.errors import ConversionError, ModelLoadError
from llava.model.families import LLAVA, Family, family_of
from llava.model.weights import load_tensor_file, read_json_object

log = logging.getLogger(__name__)

CONFIG = "config.json"
ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_FILES = ("adapter_model.safetensors", "adapter_model.bin")
NON_LORA_FILES = ("non_lora_trainables.safetensors", "non_lora_trainables.bin")

# model_type of the original checkpoints -> the transformers model_type of their LLM.
ORIGINAL_MODEL_TYPES = {"llava": "llama", "llava_llama": "llama", "llava_mistral": "mistral"}
ORIGINAL_ARCHITECTURES = {"LlavaLlamaForCausalLM": "llama", "LlavaMistralForCausalLM": "mistral"}


# ---- reading -----------------------------------------------------------------------------------------

def read_config_json(path: str | Path) -> dict:
    """config.json of a model directory, as a dict; ModelLoadError naming it when missing or not an object.
    The one place a load reads it (tests count the reads)."""
    return read_json_object(Path(path) / CONFIG)


def is_lora_dir(path: str | Path) -> bool:
    return (Path(path) / ADAPTER_CONFIG).exists()


def read_adapter_config(path: str | Path) -> dict:
    return read_json_object(Path(path) / ADAPTER_CONFIG)


def is_original_config(cfg: dict) -> bool:
    """True for the original LLaVA layout, decided by config.json's contents only."""
    if "text_config" in cfg:
        return False
    archs = cfg.get("architectures") or []
    return (
        "mm_vision_tower" in cfg
        or cfg.get("model_type") in ("llava_llama", "llava_mistral")
        or any(a in ORIGINAL_ARCHITECTURES for a in archs)
    )


def kind_of_config(cfg: dict) -> str:
    family = family_of(cfg)
    if family is not None and not family.native:
        return "hf"  # e.g. Qwen2-VL's released config.json is flat (no text_config)
    if "text_config" in cfg and "vision_config" in cfg:
        return "hf"
    if is_original_config(cfg):
        return "original"
    return "other"


@dataclass(frozen=True)
class ModelDir:
    """A directory, its kind, and its config files as parsed once by `detect`."""

    path: Path
    kind: str  # "hf" | "original" | "lora" | "other"
    config: dict | None  # config.json; None only for a LoRA directory without one
    adapter_config: dict | None = None  # adapter_config.json of a LoRA directory

    @property
    def config_file(self) -> Path:
        return self.path / CONFIG

    @property
    def adapter_file(self) -> Path:
        found = _first(self.path, ADAPTER_FILES)
        if found is None:
            raise ModelLoadError(f"{self.path}: {ADAPTER_CONFIG} but no {' or '.join(ADAPTER_FILES)}")
        return found

    @property
    def family(self) -> Family:
        """The model family of a complete model (LLaVA-1.5 for the original layout)."""
        return (family_of(self.config) if self.config else None) or LLAVA

    @property
    def is_original(self) -> bool:
        """An original checkpoint, or a LoRA run of the original (its config.json is the original's)."""
        return self.config is not None and is_original_config(self.config)

    def not_a_llava_model(self) -> ModelLoadError:
        return ModelLoadError(
            f"{self.config_file} is neither a llava model (no text_config/vision_config) nor an original LLaVA "
            f"checkpoint (no mm_vision_tower); model_type is {self.config.get('model_type')!r}. A plain language "
            "model is a base for training (--model_name_or_path), not a model to load here."
        )

    def transformers_config(self) -> PreTrainedConfig:
        """config.json as transformers' config object, built from the dict already read
        (what AutoConfig.from_pretrained does, without reading the file again)."""
        model_type = self.config.get("model_type")
        if model_type not in CONFIG_MAPPING:
            raise ModelLoadError(f"{self.config_file}: model_type {model_type!r} is not one transformers knows")
        return CONFIG_MAPPING[model_type].from_dict(dict(self.config), name_or_path=str(self.path))


def detect(path: str | Path) -> ModelDir:
    """The kind of a local directory, with its config.json (and adapter_config.json) read once."""
    path = Path(path)
    if is_lora_dir(path):
        adapter_config = read_adapter_config(path)  # a damaged one named here, not deep inside peft
        config = read_config_json(path) if (path / CONFIG).exists() else None
        return ModelDir(path, "lora", config, adapter_config)
    config = read_config_json(path)
    return ModelDir(path, kind_of_config(config), config)


# Weights in formats other than PyTorch's, which a hub repo may carry too (openai/clip-vit-large-patch14-336 has
# TensorFlow and Flax copies): not downloaded.
NOT_TORCH = ["*.h5", "*.msgpack", "*.onnx", "*.onnx_data", "*.ot", "*.tflite", "*.mlmodel", "*.mlpackage/*"]


def local_dir(path: str, flag: str = "--model-path", cache_dir: str | None = None) -> Path:
    """The local directory a --model-path names: a directory, or a hub id (org/name) downloaded
    (into cache_dir when given: the original's --cache_dir; else the Hugging Face cache)."""
    p = Path(path)
    if p.is_dir():
        return p
    if p.exists():
        raise ModelLoadError(f"{flag} {path}: a file, not a model directory")
    if p.is_absolute() or path.startswith(("./", "../")) or path.count("/") != 1:
        raise ModelLoadError(f"{flag} {path}: no such model directory")
    try:
        return Path(snapshot_download(path, cache_dir=cache_dir, ignore_patterns=NOT_TORCH))
    except Exception as exc:
        if hf_constants.HF_HUB_OFFLINE:
            raise ModelLoadError(f"{flag} {path}: not a local directory, and HF_HUB_OFFLINE is set while {path} is "
                                 f"not in the Hugging Face cache ({cache_dir or hf_constants.HF_HUB_CACHE}): run once "
                                 "with HF_HUB_OFFLINE unset to download it, or give a local directory") from exc
        raise ModelLoadError(f"{flag} {path}: not a local directory, and not available from the hub ({exc})") from exc


def open_model_dir(path: str, flag: str = "--model-path", cache_dir: str | None = None) -> ModelDir:
    return detect(local_dir(path, flag, cache_dir))


def lora_base(lora: ModelDir, model_base: str | None) -> str:
    """The base a LoRA directory goes onto: --model-base, else the local path adapter_config.json names."""
    if model_base:
        return model_base
    base = lora.adapter_config.get("base_model_name_or_path")
    if isinstance(base, str) and base and Path(base).exists():
        log.info("no --model-base given; using %s from %s", base, ADAPTER_CONFIG)
        return base
    raise ModelLoadError(
        f"{lora.path} is a LoRA directory: pass --model-base with the model it was trained on"
        + (f" ({ADAPTER_CONFIG} names {base!r}, which is not a local directory)" if base else "")
    )


def read_non_lora_trainables(lora: ModelDir) -> dict[str, torch.Tensor]:
    """A LoRA run's fully trained tensors (the projector), in the naming they were saved with, unwrapped."""
    f = _first(lora.path, NON_LORA_FILES)
    if f is None:
        return {}
    return {plain_name(k): v for k, v in load_tensor_file(f).items()}


def _first(path: Path, names) -> Path | None:
    return next((path / n for n in names if (path / n).exists()), None)


# ---- weight names ------------------------------------------------------------------------------------

# Original prefix -> transformers llava prefix; both directions read this table, first match wins.
# transformers 4's CLIPVisionModel (the original's) had a `vision_model.` level; transformers 5's has not.
RENAMES = (
    ("model.vision_tower.vision_tower.vision_model.", "model.vision_tower."),
    ("model.vision_tower.vision_tower.", "model.vision_tower."),
    ("model.embed_tokens.", "model.language_model.embed_tokens."),
    ("model.layers.", "model.language_model.layers."),
    ("model.norm.", "model.language_model.norm."),
    ("lm_head.", "lm_head."),
)
# The projector's layers: the original's nn.Sequential indices 0, 2, 4 (GELUs between) are linear_1, 2, 3.
_ORIGINAL_PROJECTOR = re.compile(r"^model\.mm_projector\.(?:(\d+)\.)?(weight|bias)$")
_HF_PROJECTOR = re.compile(r"^model\.multi_modal_projector\.linear_(\d+)\.(weight|bias)$")
HF_PREFIXES = ("model.language_model.", "model.multi_modal_projector.", "model.vision_tower.", "lm_head.")
_PEFT_WRAPPING = re.compile(r"\.modules_to_save\.default|\.original_module")


def original_key_to_hf(key: str, projector_type: str) -> str | None:
    """Map one original weight name to transformers llava's; None for tensors to drop."""
    if key.endswith("rotary_emb.inv_freq"):  # a buffer old checkpoints saved; recomputed at load
        return None
    m = _ORIGINAL_PROJECTOR.match(key)
    if m:
        index, kind = m.groups()
        if projector_type == "linear":
            if index not in (None, "0"):
                raise ConversionError(f"{key}: a linear projector has one layer")
            return f"model.multi_modal_projector.linear_1.{kind}"
        if index is None or int(index) % 2:
            raise ConversionError(f"{key}: unexpected in a {projector_type} projector")
        return f"model.multi_modal_projector.linear_{int(index) // 2 + 1}.{kind}"
    for original, hf in RENAMES:
        if key.startswith(original):
            return hf + key[len(original):]
    raise ConversionError(f"{key}: not a weight of an original LLaVA checkpoint (unknown name)")


def hf_key_to_original(key: str) -> str:
    m = _HF_PROJECTOR.match(key)
    if m:
        return f"model.mm_projector.{(int(m.group(1)) - 1) * 2}.{m.group(2)}"
    for original, hf in RENAMES:
        if key.startswith(hf):
            return original + key[len(hf):]
    return key


def plain_name(key: str) -> str:
    """A tensor name without peft's wrapping: base_model.model. and modules_to_save's levels."""
    return _PEFT_WRAPPING.sub("", key).removeprefix("base_model.model.")


def to_hf_name(name: str, projector_type: str | None) -> str | None:
    """A module/tensor name from either naming (peft-wrapped or not), in transformers llava's naming.
    projector_type None: a model of another family, whose names have one form only (peft's peeled off)."""
    name = plain_name(name)
    if projector_type is None:
        return name
    if name.startswith(HF_PREFIXES):
        return name
    return original_key_to_hf(name, projector_type)
