"""LoRA output directories: what is in them and how they go back onto a base model.

A LoRA run leaves (ours and the original LLaVA's alike):
  adapter_config.json, adapter_model.safetensors|.bin    peft's adapter
  non_lora_trainables.safetensors|.bin                   fully trained parts (projector)
  config.json (+ processor files in ours)                the model's config

The original names modules its own way (model.layers.*, model.mm_projector.*);
adapter and non-LoRA tensors are renamed onto transformers' llava before
loading, and every tensor must find its place with the right shape, else the
load stops naming the tensor.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

import torch
from peft import LoraConfig, get_peft_model, set_peft_model_state_dict

from llava.model.convert import ConversionError, original_key_to_hf
from llava.model.errors import ModelLoadError
from llava.model.weights import load_tensor_file, read_json_object

log = logging.getLogger(__name__)

ADAPTER_FILES = ("adapter_model.safetensors", "adapter_model.bin")
NON_LORA_FILES = ("non_lora_trainables.safetensors", "non_lora_trainables.bin")
_HF_PREFIXES = ("model.language_model.", "model.multi_modal_projector.", "model.vision_tower.", "lm_head.")


class AdapterMismatch(ModelLoadError):
    """Base model and adapter do not fit together."""


def is_lora_dir(path: str | Path) -> bool:
    return (Path(path) / "adapter_config.json").exists()


def _first(path: Path, names) -> Path | None:
    return next((path / n for n in names if (path / n).exists()), None)


def to_hf_name(name: str, projector_type: str = "mlp2x_gelu") -> str | None:
    """A module/tensor name from either naming, in transformers llava's naming."""
    if name.startswith("base_model.model."):
        name = name[len("base_model.model."):]
    if name.startswith(_HF_PREFIXES):
        return name
    return original_key_to_hf(name, projector_type)


def read_non_lora_trainables(lora_dir: str | Path) -> dict[str, torch.Tensor]:
    """Non-LoRA tensors still in the naming they were saved with (prefix stripped)."""
    f = _first(Path(lora_dir), NON_LORA_FILES)
    if f is None:
        return {}
    state = load_tensor_file(f)
    return {k[len("base_model.model."):] if k.startswith("base_model.model.") else k: v for k, v in state.items()}


def load_non_lora_into(model, state: dict[str, torch.Tensor], projector_type: str, source: str) -> None:
    """Copy non-LoRA trainables into `model`; every tensor must exist there with its shape."""
    params = dict(model.named_parameters())
    for key, tensor in state.items():
        name = to_hf_name(key, projector_type)
        if name is None:
            continue
        if name not in params:
            raise AdapterMismatch(f"{source}: tensor {key} has no place in the base model (as {name})")
        target = params[name]
        if target.shape != tensor.shape:
            raise AdapterMismatch(
                f"{source}: tensor {key} has shape {tuple(tensor.shape)} but the base model's {name} "
                f"has shape {tuple(target.shape)}"
            )
        with torch.no_grad():
            target.copy_(tensor.to(target.dtype))


def language_model_linear_names(model) -> list[str]:
    """Suffixes of the LLM's Linear layers: what LoRA targets (never tower, projector or lm_head)."""
    names = set()
    for name, module in model.get_submodule(_llm_path(model)).named_modules():
        parts = name.split(".")
        if any(p.startswith("lora_") for p in parts):
            continue  # inside an existing LoRA layer
        if isinstance(module, torch.nn.Linear) or type(module).__name__ in ("Linear4bit", "Linear8bitLt"):
            names.add(parts[-2] if parts[-1] == "base_layer" else parts[-1])
    return sorted(names)


def _llm_path(model) -> str:
    for name, _ in model.named_modules():
        if name.endswith("language_model"):
            return name
    raise ValueError("model has no language_model")


def llm_target_regex(suffixes) -> str:
    """peft target_modules as a regex confined to the language model.

    A bare list like ["q_proj", ...] would also match CLIP's q_proj/k_proj/v_proj
    in transformers' llava (the original attached LoRA before the tower existed).
    """
    alt = "|".join(re.escape(s) for s in sorted(suffixes))
    return rf".*\.language_model\..*\.({alt})"


def apply_lora(model, lora_dir: str | Path, projector_type: str, merge: bool = True):
    """Put the adapter in `lora_dir` onto `model`; merge it in unless asked not to."""
    lora_dir = Path(lora_dir)
    read_json_object(lora_dir / "adapter_config.json")  # a damaged one named here, not deep inside peft
    try:
        config = LoraConfig.from_pretrained(str(lora_dir))
    except (TypeError, ValueError) as exc:  # fields peft does not know, or of the wrong kind
        raise ModelLoadError(f"{lora_dir}/adapter_config.json: not a LoRA config peft can read ({exc})") from None
    if not isinstance(config.target_modules, str):
        config.target_modules = llm_target_regex(config.target_modules)
    config.modules_to_save = None  # restored from non_lora_trainables / the adapter file below
    config.inference_mode = True
    adapter_file = _first(lora_dir, ADAPTER_FILES)
    if adapter_file is None:
        raise ModelLoadError(f"{lora_dir}: adapter_config.json but no {' or '.join(ADAPTER_FILES)}")
    raw = load_tensor_file(adapter_file)
    peft_model = get_peft_model(model, config)
    expected = {k: v for k, v in peft_model.state_dict().items() if "lora_" in k}
    state = {}
    extra_full = {}
    for key, tensor in raw.items():
        if "lora_" not in key:
            extra_full[key] = tensor  # modules_to_save style full tensors
            continue
        module, _, rest = key.partition(".lora_")
        name = to_hf_name(module + ".weight", projector_type)
        if name is None:
            continue
        module_hf = name[: -len(".weight")]
        state["base_model.model." + module_hf + ".lora_" + rest] = tensor
    _check_adapter(state, expected, adapter_file)
    set_peft_model_state_dict(peft_model, state)
    if extra_full:
        cleaned = {re.sub(r"\.modules_to_save\.default|\.original_module", "", k): v for k, v in extra_full.items()}
        load_non_lora_into(peft_model.base_model.model, cleaned, projector_type, str(adapter_file))
    if not merge:
        return peft_model
    return peft_model.merge_and_unload()


def _check_adapter(state: dict, expected: dict, source: Path) -> None:
    # peft stores keys with the adapter name ("...lora_A.default.weight"); saved files drop it.
    want = {re.sub(r"\.default(?=\.|$)", "", k): v for k, v in expected.items()}
    for key, tensor in state.items():
        if key not in want:
            raise AdapterMismatch(f"{source}: adapter tensor {key} has no LoRA module to go to in the base model")
        if tuple(want[key].shape) != tuple(tensor.shape):
            raise AdapterMismatch(
                f"{source}: adapter tensor {key} has shape {tuple(tensor.shape)} but the base model expects "
                f"{tuple(want[key].shape)}; is --model-base the model this adapter was trained on?"
            )
    missing = sorted(set(want) - set(state))
    if missing:
        raise AdapterMismatch(
            f"{source}: {len(missing)} LoRA tensors the config asks for are not in the file, e.g. {missing[0]}"
        )


def save_lora(peft_model, output_dir: str | Path, processor=None, state_dict: dict | None = None) -> Path:
    """Write a LoRA output directory that load_pretrained_model(dir, model_base=...) reads back.

    Non-LoRA parameters that were trained (the projector, an unfrozen tower)
    go to non_lora_trainables.safetensors under transformers' names.
    `state_dict` lets a ZeRO-3 caller pass already gathered tensors.
    """
    from safetensors.torch import save_file

    from llava.model.processor import save_processor

    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    peft_model.save_pretrained(out, state_dict=state_dict)
    source = state_dict if state_dict is not None else {
        n: p for n, p in peft_model.named_parameters() if p.requires_grad
    }
    trainable = {n for n, p in peft_model.named_parameters() if p.requires_grad}
    non_lora = {}
    for name, tensor in source.items():
        if name not in trainable or "lora_" in name:
            continue
        clean = re.sub(r"\.modules_to_save\.default|\.original_module", "", name)
        clean = clean[len("base_model.model."):] if clean.startswith("base_model.model.") else clean
        non_lora[clean] = tensor.detach().cpu().contiguous()
    if non_lora:
        save_file(non_lora, str(out / NON_LORA_FILES[0]))
    base = peft_model.get_base_model()
    base.config.save_pretrained(out)
    if processor is not None:
        save_processor(processor, out)
    return out


def lora_dir_config(lora_dir: str | Path) -> dict | None:
    f = Path(lora_dir) / "config.json"
    return read_json_object(f) if f.exists() else None
