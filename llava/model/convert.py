"""Original LLaVA checkpoints (LlavaLlamaForCausalLM) <-> transformers llava.

The original layout: a Llama config.json with mm_* fields, weights named
model.layers.* / model.embed_tokens / lm_head plus model.mm_projector.{0,2}.*,
the vision tower named by `mm_vision_tower` (a hub id or a path) and only
sometimes stored under model.vision_tower.vision_tower.*, a SentencePiece
tokenizer without an <image> token (the original splices id -200 instead).

`load_original` turns such a directory into (LlavaConfig, state_dict,
processor) for `from_pretrained(None, config=..., state_dict=...)`, so the
same quantization and device-placement code serves both layouts.
`save_original` writes the layout back; the tiny model uses it so tests load
a real original-layout checkpoint.

    python -m llava.model.convert --model-path ORIGINAL_DIR --output-dir HF_DIR [--vision-tower PATH]
"""

from __future__ import annotations

import argparse
import json
import logging
import re
import shutil
import tempfile
from pathlib import Path

import torch
from huggingface_hub import hf_hub_download
from transformers import AutoConfig, AutoTokenizer, CLIPVisionConfig, CLIPVisionModel

from llava.file_guard import refuse_outputs_over_inputs
from llava.model.directories import (
    ORIGINAL_ARCHITECTURES,
    ORIGINAL_MODEL_TYPES,
    ModelDir,
    detect,
    hf_key_to_original,
    original_key_to_hf,
)
from llava.model.errors import ConversionError, ModelLoadError, loading
from llava.model.processor import (
    CLIP_MEAN,
    CLIP_STD,
    HF_TO_SELECT,
    SELECT_TO_HF,
    image_processor_from_dir,
    load_tokenizer,
    make_image_processor,
    make_processor,
    num_image_tokens,
    prepare_tokenizer,
    save_processor,
)
from llava.model.projector import make_config, model_class_for, parse_projector_type, projector_type_of
from llava.model.weights import read_state_dict

log = logging.getLogger(__name__)

# config.json fields of the original that describe the multimodal parts, not the LLM.
_NOT_LLM_FIELDS = re.compile(
    r"^(mm_|tune_mm_|freeze_mm_|unfreeze_mm_|use_mm_|image_aspect_ratio|image_grid|tokenizer_|architectures$"
    r"|model_type$|_name_or_path$|transformers_version$|torch_dtype$|dtype$)"
)


def _llm_type(cfg: dict) -> str:
    for arch in cfg.get("architectures") or []:
        if arch in ORIGINAL_ARCHITECTURES:
            return ORIGINAL_ARCHITECTURES[arch]
    mt = cfg.get("model_type", "llava")
    if mt not in ORIGINAL_MODEL_TYPES:
        raise ConversionError(
            f"model_type {mt!r} is not an original LLaVA type we convert ({', '.join(ORIGINAL_MODEL_TYPES)})"
        )
    return ORIGINAL_MODEL_TYPES[mt]


# ---- vision tower ----------------------------------------------------------------------------------

def resolve_tower(name: str, checkpoint_dir: Path, override: str | None) -> str:
    """Where to load the tower from: the override, a path (absolute, or relative to the
    checkpoint or the working directory), or else the hub id as written."""
    if override:
        if not Path(override).exists():
            raise ModelLoadError(f"--vision-tower {override}: no such directory")
        return override
    for candidate in (Path(name), checkpoint_dir / name):
        if candidate.is_dir():
            return str(candidate)
    return name


def infer_clip_vision_config(state: dict[str, torch.Tensor], prefix: str) -> CLIPVisionConfig:
    """A CLIP vision config read off stored tower weights, for when the tower's own config
    cannot be had (a hub id while offline).  Head count assumes CLIP's 64-dim heads."""
    patch = state[prefix + "embeddings.patch_embedding.weight"]
    positions = state[prefix + "embeddings.position_embedding.weight"].shape[0]
    hidden, patch_size = patch.shape[0], patch.shape[-1]
    layer_key = re.compile(re.escape(prefix) + r"encoder\.layers\.(\d+)\.")
    layers = {int(m.group(1)) for k in state if (m := layer_key.match(k))}
    grid = round((positions - 1) ** 0.5)
    return CLIPVisionConfig(
        hidden_size=hidden,
        intermediate_size=state[prefix + "encoder.layers.0.mlp.fc1.weight"].shape[0],
        num_hidden_layers=len(layers),
        num_attention_heads=max(1, hidden // 64),
        image_size=grid * patch_size,
        patch_size=patch_size,
    )


def _tower_config(source: str, cache_dir: str | None = None) -> CLIPVisionConfig:
    cfg = AutoConfig.from_pretrained(source, cache_dir=cache_dir)
    return cfg.vision_config if hasattr(cfg, "vision_config") else cfg


# ---- loading ---------------------------------------------------------------------------------------

def load_original(
    model_dir: ModelDir,
    vision_tower: str | None = None,
    image_aspect_ratio: str | None = None,
    llm_weights: str | Path | None = None,
    extra_state: dict[str, torch.Tensor] | None = None,
    cache_dir: str | None = None,
):
    """(config, state_dict, processor) of an original LLaVA checkpoint, from its config.json as
    `detect` read it.

    llm_weights: read the weights from this directory instead of the checkpoint's
    (an original LoRA run keeps only config and adapter; its base is the LLM).
    extra_state: more original-named tensors (LoRA runs' non_lora_trainables).
    cache_dir: where a tower named by hub id is downloaded to (default: the Hugging Face cache).
    """
    path, cfg = model_dir.path, model_dir.config
    if cfg.get("mm_use_im_start_end"):
        raise ConversionError(
            f"{path}/config.json: mm_use_im_start_end=true checkpoints (<im_start>/<im_end> around the image) "
            "are not supported; LLaVA-1.5 releases use false"
        )
    projector_type = cfg.get("mm_projector_type", "linear")
    parse_projector_type(projector_type)
    select = cfg.get("mm_vision_select_feature", "patch")
    if select not in SELECT_TO_HF:
        raise ConversionError(f"{path}/config.json: mm_vision_select_feature {select!r} is not patch or cls_patch")

    raw = read_state_dict(llm_weights or path)
    raw.update(extra_state or {})
    state = {}
    for key, tensor in raw.items():
        new = original_key_to_hf(key, projector_type)
        if new is not None:
            state[new] = tensor

    tower_name = cfg.get("mm_vision_tower") or cfg.get("vision_tower")
    stored_tower = any(k.startswith("model.vision_tower.") for k in state)
    if not tower_name and not stored_tower:
        raise ConversionError(f"{path}/config.json: no mm_vision_tower, and no tower weights stored")
    source = resolve_tower(tower_name or "", path, vision_tower) if (tower_name or vision_tower) else None
    try:
        vision_config = _tower_config(source, cache_dir) if source else None
    except (OSError, ValueError) as exc:
        if not stored_tower:
            raise ModelLoadError(
                f"vision tower {source!r} (mm_vision_tower in {path}/config.json) cannot be loaded: {exc}. "
                "Pass --vision-tower PATH to a local CLIP checkpoint."
            ) from exc
        vision_config = None
    reachable = vision_config is not None
    if not reachable:
        log.warning("tower %r not available; its config is read off the stored tower weights", source)
        vision_config = infer_clip_vision_config(state, "model.vision_tower.")
    if not stored_tower:
        # config= : the tower's config.json was read once above
        tower = CLIPVisionModel.from_pretrained(source, config=vision_config, dtype=next(iter(state.values())).dtype,
                                                cache_dir=cache_dir)
        state.update({"model.vision_tower." + k: v for k, v in tower.state_dict().items()})

    # Image processor: the tower's, else CLIP defaults at the tower's resolution.
    aspect = image_aspect_ratio or cfg.get("image_aspect_ratio", "pad")
    aspect = "square" if aspect not in ("pad",) else "pad"
    try:
        if not reachable:
            raise FileNotFoundError(source)
        image_processor = image_processor_from_dir(_local_dir(source, cache_dir), aspect)
    except (FileNotFoundError, TypeError, OSError):
        image_processor = make_image_processor(vision_config.image_size, aspect, CLIP_MEAN, CLIP_STD)

    tokenizer = load_tokenizer(_tokenizer_dir(path, llm_weights))
    prepare_tokenizer(tokenizer)
    text_fields = {k: v for k, v in cfg.items() if not _NOT_LLM_FIELDS.match(k)}
    text_fields["model_type"] = _llm_type(cfg)
    vocab = state["model.language_model.embed_tokens.weight"].shape[0]
    text_fields["vocab_size"] = max(vocab, len(tokenizer))
    text_fields["pad_token_id"] = tokenizer.pad_token_id
    config = make_config(
        projector_type,
        vision_config=vision_config.to_dict(),
        text_config=text_fields,
        image_token_index=tokenizer.convert_tokens_to_ids("<image>"),
        vision_feature_layer=cfg.get("mm_vision_select_layer", -2),
        vision_feature_select_strategy=SELECT_TO_HF[select],
        tie_word_embeddings=bool(cfg.get("tie_word_embeddings", False)),
    )
    config.image_seq_length = num_image_tokens(config)
    config.llava_conv_mode = "vicuna_v1"
    config.pad_token_id = tokenizer.pad_token_id
    _grow_vocab(state, config.text_config.vocab_size, config.tie_word_embeddings)
    processor = make_processor(
        tokenizer, image_processor, vision_config.patch_size, config.vision_feature_select_strategy, "vicuna_v1"
    )
    return config, state, processor


def _tokenizer_dir(path: Path, llm_weights) -> Path:
    """The checkpoint's own tokenizer, else (an original LoRA run saves none) the base LLM's."""
    names = ("tokenizer.json", "tokenizer.model", "tokenizer_config.json")
    if any((path / n).exists() for n in names) or llm_weights is None:
        return path
    return Path(llm_weights)


def _local_dir(source: str | None, cache_dir: str | None = None) -> str:
    if source and Path(source).is_dir():
        return source
    return str(Path(hf_hub_download(source, "preprocessor_config.json", cache_dir=cache_dir)).parent)


def _grow_vocab(state: dict, vocab_size: int, tied: bool) -> None:
    """Append rows for the tokens the original never had (<image>, maybe <pad>).

    Rows are the mean of the existing ones: deterministic, and an <image>
    embedding is never read anyway (image features replace it).
    """
    for key in ("model.language_model.embed_tokens.weight", "lm_head.weight"):
        if key not in state:
            if key == "lm_head.weight" and tied:
                continue
            raise ConversionError(f"checkpoint has no {key}")
        w = state[key]
        extra = vocab_size - w.shape[0]
        if extra > 0:
            mean = w.float().mean(0, keepdim=True).to(w.dtype)
            state[key] = torch.cat([w, mean.expand(extra, -1)], 0)


# ---- writing the original layout ------------------------------------------------------------------

def save_original(
    model,
    processor,
    output_dir: str | Path,
    vision_tower_ref: str,
    include_vision_tower: bool = False,
    shards: int = 1,
    dtype: torch.dtype = torch.float16,
    sentencepiece_model: str | Path | None = None,
) -> Path:
    """Write `model` as the original LLaVA would have saved it (for tests and round trips).

    The <image> (and added pad) rows are dropped again, since the original
    vocabulary never had them.  With shards > 1 the weights are written as
    pytorch_model-0000i-of-0000n.bin with an index, as the 7B release is.
    """
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    config = model.config
    tokenizer = processor.tokenizer
    base_vocab = _original_vocab_size(tokenizer)
    state = {}
    for key, tensor in model.state_dict().items():
        if key.startswith("model.vision_tower.") and not include_vision_tower:
            continue
        if key in ("model.language_model.embed_tokens.weight", "lm_head.weight"):
            tensor = tensor[:base_vocab]
        state[hf_key_to_original(key)] = tensor.detach().to(dtype).contiguous().clone()
    if config.tie_word_embeddings:
        state.pop("lm_head.weight", None)
    tc = config.text_config.to_dict()
    orig = {k: tc[k] for k in _ORIGINAL_LLAMA_FIELDS if k in tc}
    orig["rope_theta"] = (tc.get("rope_parameters") or {}).get("rope_theta", tc.get("rope_theta", 10000.0))
    orig["rope_scaling"] = None
    orig.update(
        architectures=["LlavaLlamaForCausalLM"],
        model_type="llava",
        vocab_size=base_vocab,
        torch_dtype=str(dtype).replace("torch.", ""),
        mm_vision_tower=vision_tower_ref,
        mm_hidden_size=config.vision_config.hidden_size,
        mm_projector_type=projector_type_of(config),
        mm_vision_select_layer=config.vision_feature_layer,
        mm_vision_select_feature=HF_TO_SELECT[config.vision_feature_select_strategy],
        mm_use_im_start_end=False,
        mm_use_im_patch_token=False,
        image_aspect_ratio="pad" if processor.image_processor.do_pad else "square",
        tie_word_embeddings=bool(config.tie_word_embeddings),
        use_mm_proj=True,
        tune_mm_mlp_adapter=False,
        freeze_mm_mlp_adapter=False,
    )
    (out / "config.json").write_text(json.dumps(orig, indent=2))
    _write_bins(state, out, shards)
    if sentencepiece_model:
        # The original ships the SentencePiece file and a slow-tokenizer config.
        shutil.copy(sentencepiece_model, out / "tokenizer.model")
        (out / "tokenizer_config.json").write_text(json.dumps({
            "tokenizer_class": "LlamaTokenizer", "add_bos_token": True, "add_eos_token": False,
            "legacy": False, "bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>",
            "pad_token": "<unk>", "model_max_length": 2048, "padding_side": "right",
        }, indent=2))
    else:
        _save_tokenizer_without_added(tokenizer, out)
    return out


# The Llama fields a transformers-4.31 era config.json carries (LLaVA-1.5's release).
_ORIGINAL_LLAMA_FIELDS = (
    "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads",
    "hidden_act", "max_position_embeddings", "initializer_range", "rms_norm_eps", "use_cache", "pad_token_id",
    "bos_token_id", "eos_token_id", "pretraining_tp", "attention_bias",
)


def _original_vocab_size(tokenizer) -> int:
    added = [t for t in ("<image>", "<pad>") if t in tokenizer.get_vocab()]
    ids = sorted(tokenizer.convert_tokens_to_ids(t) for t in added)
    n = len(tokenizer)
    while ids and ids[-1] == n - 1:
        ids.pop()
        n -= 1
    return n


def _save_tokenizer_without_added(tokenizer, out: Path) -> None:
    """Save the tokenizer without the tokens the original vocabulary lacks."""
    with tempfile.TemporaryDirectory() as tmp:
        tokenizer.save_pretrained(tmp)
        cfg_file = Path(tmp) / "tokenizer_config.json"
        cfg = json.loads(cfg_file.read_text())
        cfg["extra_special_tokens"] = [t for t in cfg.get("extra_special_tokens", []) if t != "<image>"]
        if cfg.get("pad_token") == "<pad>":
            cfg.pop("pad_token")
        cfg_file.write_text(json.dumps(cfg, indent=2))
        tj = Path(tmp) / "tokenizer.json"
        data = json.loads(tj.read_text())
        data["added_tokens"] = [t for t in data["added_tokens"] if t["content"] not in ("<image>", "<pad>")]
        tj.write_text(json.dumps(data))
        AutoTokenizer.from_pretrained(tmp).save_pretrained(out)


def _write_bins(state: dict, out: Path, shards: int) -> None:
    keys = list(state)
    if shards <= 1:
        torch.save(state, out / "pytorch_model.bin")
        return
    per = -(-len(keys) // shards)
    weight_map = {}
    for i in range(shards):
        name = f"pytorch_model-{i + 1:05d}-of-{shards:05d}.bin"
        part = {k: state[k] for k in keys[i * per:(i + 1) * per]}
        torch.save(part, out / name)
        weight_map.update({k: name for k in part})
    total = sum(t.numel() * t.element_size() for t in state.values())
    index = {"metadata": {"total_size": total}, "weight_map": weight_map}
    (out / "pytorch_model.bin.index.json").write_text(json.dumps(index, indent=2))


# ---- command ---------------------------------------------------------------------------------------

def convert(model_path: str, output_dir: str, vision_tower: str | None = None, dtype: str = "float16") -> Path:
    """Original checkpoint -> HF llava directory that plain transformers loads."""
    with loading(model_path):
        model_dir = detect(model_path)
        if model_dir.kind != "original":
            what = {"hf": "a transformers llava directory already: it loads as it is",
                    "lora": "a LoRA output directory: merge it with scripts/merge_lora_weights.py"}.get(
                model_dir.kind, f"model_type {model_dir.config.get('model_type')!r}, no mm_vision_tower")
            raise ConversionError(f"{model_dir.config_file}: not an original LLaVA checkpoint ({what})")
        config, state, processor = load_original(model_dir, vision_tower)
        torch_dtype = getattr(torch, dtype)
        model = model_class_for(config).from_pretrained(None, config=config, state_dict=state, dtype=torch_dtype)
    out = Path(output_dir)
    model.save_pretrained(out)
    save_processor(processor, out)
    return out


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model-path", required=True, help="original LLaVA checkpoint directory")
    ap.add_argument("--output-dir", required=True, help="where to write the transformers llava directory")
    ap.add_argument("--vision-tower", default=None, help="local CLIP checkpoint, overriding mm_vision_tower")
    ap.add_argument("--dtype", default="float16", choices=["float16", "bfloat16", "float32"])
    args = ap.parse_args(argv)
    # Before any work: writing the converted files over the checkpoint would destroy it.
    refuse_outputs_over_inputs({"--output-dir": args.output_dir},
                               {"--model-path": args.model_path, "--vision-tower": args.vision_tower})
    out = Path(args.output_dir)
    if out.exists() and not out.is_dir():
        raise SystemExit(f"error: --output-dir {out}: a file, not a directory")
    try:
        out = convert(args.model_path, args.output_dir, args.vision_tower, args.dtype)
    except ModelLoadError as exc:
        raise SystemExit(f"error: {exc}") from None
    except OSError as exc:  # while writing: a full disk, no permission
        raise SystemExit(f"error: cannot write --output-dir {out}: {exc}") from None
    print(f"wrote {out} (loads with transformers.LlavaForConditionalGeneration.from_pretrained)")


if __name__ == "__main__":
    main()
