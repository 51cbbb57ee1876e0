"""LoRA on llava models: which modules it targets, putting a run's adapter back onto its base, saving a run.

What a LoRA output directory holds, and how the original's names map onto transformers' llava, is
llava/model/directories.py.  Here adapter and non-LoRA tensors are renamed through it before loading,
and every tensor must find its place with the right shape, else the load stops naming the tensor.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

import torch
from peft import LoraConfig, get_peft_model, set_peft_model_state_dict
from safetensors.torch import save_file

from llava.model.directories import ADAPTER_CONFIG, NON_LORA_FILES, ModelDir, plain_name, to_hf_name
from llava.model.errors import AdapterMismatch, ModelLoadError
from llava.model.processor import save_processor
from llava.model.weights import load_tensor_file

log = logging.getLogger(__name__)


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


def language_model_linear_names(model, llm_path: str | None = None) -> list[str]:
    """Suffixes of the LLM's Linear layers: what LoRA targets (never tower, projector or lm_head).
    llm_path: the language model's module path (a family's); found by name for LLaVA."""
    names = set()
    for name, module in model.get_submodule(llm_path or _llm_path(model)).named_modules():
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


def llm_target_regex(suffixes, llm_path: str | None = None) -> str:
    """peft target_modules as a regex confined to the language model (at llm_path, a family's, when given).

    A bare list like ["q_proj", ...] would also match CLIP's q_proj/k_proj/v_proj
    in transformers' llava (the original attached LoRA before the tower existed).
    """
    alt = "|".join(re.escape(s) for s in sorted(suffixes))
    if llm_path:
        return rf"(.*\.)?{re.escape(llm_path)}\..*\.({alt})"
    return rf".*\.language_model\..*\.({alt})"


def lora_config(lora: ModelDir) -> LoraConfig:
    """peft's LoraConfig from adapter_config.json as `detect` read it (what LoraConfig.from_pretrained
    makes of the file, without reading it again)."""
    fields = {k: v for k, v in lora.adapter_config.items() if k != "runtime_config"}  # runtime-only, as peft drops it
    try:
        config = LoraConfig.from_peft_type(**LoraConfig.check_kwargs(**fields))
    except (TypeError, ValueError) as exc:  # fields peft does not know, or of the wrong kind
        raise ModelLoadError(f"{lora.path}/{ADAPTER_CONFIG}: not a LoRA config peft can read ({exc})") from None
    return config


def apply_lora(model, lora: ModelDir, projector_type: str, merge: bool = True):
    """Put the adapter of the LoRA directory `lora` onto `model`; merge it in unless asked not to."""
    config = lora_config(lora)
    if not isinstance(config.target_modules, str):
        config.target_modules = llm_target_regex(config.target_modules)
    config.modules_to_save = None  # restored from non_lora_trainables / the adapter file below
    config.inference_mode = True
    adapter_file = lora.adapter_file
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
        cleaned = {plain_name(k): v for k, v in extra_full.items()}
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
        non_lora[plain_name(name)] = tensor.detach().cpu().contiguous()
    if non_lora:
        save_file(non_lora, str(out / NON_LORA_FILES[0]))
    base = peft_model.get_base_model()
    base.config.save_pretrained(out)
    if processor is not None:
        save_processor(processor, out)
    return out
