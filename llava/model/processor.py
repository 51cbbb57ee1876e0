"""The processor: image preprocessing, tokenizer with <image> and pad tokens, chat template.

Image preprocessing uses transformers' LlavaImageProcessorPil.  With
do_pad=True it is LLaVA's `pad` mode exactly (the image pasted centred on a
square canvas filled with the processor mean x 255, then CLIP's bicubic
resize and centre crop); a test checks it pixel for pixel against the steps
written out by hand.  The PIL backend is chosen on purpose: the torchvision
backend resizes differently by up to one grey level.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

from transformers import AutoTokenizer, LlamaTokenizer, LlavaProcessor
from transformers.models.llava.image_processing_pil_llava import LlavaImageProcessorPil

from llava.constants import DEFAULT_IMAGE_TOKEN
from llava.conversation import get_template
from llava.model.sp_tokenizer import LlamaSPTokenizer, load_sp_tokenizer, wants_sentencepiece

ASPECT_MODES = ("pad", "square")
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def make_image_processor(
    image_size: int,
    image_aspect_ratio: str = "pad",
    image_mean=CLIP_MEAN,
    image_std=CLIP_STD,
    shortest_edge: int | None = None,
) -> LlavaImageProcessorPil:
    check_aspect_mode(image_aspect_ratio)
    return LlavaImageProcessorPil(
        size={"shortest_edge": shortest_edge or image_size},
        crop_size={"height": image_size, "width": image_size},
        image_mean=list(image_mean),
        image_std=list(image_std),
        do_pad=image_aspect_ratio == "pad",
    )


def check_aspect_mode(mode: str) -> None:
    if mode not in ASPECT_MODES:
        raise ValueError(f"image_aspect_ratio must be one of {ASPECT_MODES}, got {mode!r}")


def image_processor_from_dir(path: str | Path, image_aspect_ratio: str | None = None) -> LlavaImageProcessorPil:
    """Read preprocessor_config.json (ours, llava-hf's or a CLIP tower's) into the PIL LLaVA processor.

    Without a saved do_pad and without an explicit mode, LLaVA-1.5's `pad` is used.
    """
    cfg = read_image_processor_config(path)
    crop = cfg.get("crop_size") or cfg.get("size")
    if isinstance(crop, dict):
        image_size = crop.get("height") or crop.get("shortest_edge")
    else:
        image_size = int(crop)
    size = cfg.get("size")
    shortest = size.get("shortest_edge") if isinstance(size, dict) else size
    if image_aspect_ratio is None:
        image_aspect_ratio = "pad" if cfg.get("do_pad", True) else "square"
    return make_image_processor(
        int(image_size),
        image_aspect_ratio,
        cfg.get("image_mean", CLIP_MEAN),
        cfg.get("image_std", CLIP_STD),
        shortest_edge=int(shortest) if shortest else None,
    )


def read_image_processor_config(path: str | Path) -> dict:
    """The image-processor settings of a directory: preprocessor_config.json, or the
    "image_processor" entry of processor_config.json (what transformers 5 writes)."""
    path = Path(path)
    pre, proc = path / "preprocessor_config.json", path / "processor_config.json"
    if pre.exists():
        return json.loads(pre.read_text())
    if proc.exists():
        cfg = json.loads(proc.read_text())
        if isinstance(cfg.get("image_processor"), dict):
            return cfg["image_processor"]
    raise FileNotFoundError(
        f"{path}: no preprocessor_config.json or processor_config.json; "
        "they hold the image size, mean and std of the vision tower"
    )


def load_tokenizer(path: str | Path, **kwargs):
    """The tokenizer of a directory: sentencepiece itself for Llama SentencePiece models
    (exact original ids, see sp_tokenizer.py), transformers' AutoTokenizer otherwise."""
    if wants_sentencepiece(path) and not kwargs:
        return load_sp_tokenizer(path)
    return AutoTokenizer.from_pretrained(path, **kwargs)


def save_processor(processor: LlavaProcessor, output_dir: str | Path) -> None:
    """processor.save_pretrained, plus what plain transformers needs for a SentencePiece tokenizer:
    a tokenizer.json and tokenizer_class "LlamaTokenizer" (our exact tokenizer is not in transformers)."""
    out = Path(output_dir)
    processor.save_pretrained(out)
    tok = processor.tokenizer
    if not isinstance(tok, LlamaSPTokenizer):
        return
    cfg_file = out / "tokenizer_config.json"
    cfg = json.loads(cfg_file.read_text())
    cfg.update(tokenizer_class="LlamaTokenizer", add_bos_token=tok.add_bos_token,
               add_eos_token=tok.add_eos_token, legacy=False)
    for key in ("special_tokens_pattern", "backend", "sp_model_kwargs", "vocab_file"):
        cfg.pop(key, None)
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "tokenizer.model").write_bytes((out / "tokenizer.model").read_bytes())
        fast = LlamaTokenizer.from_pretrained(tmp, legacy=False, add_bos_token=tok.add_bos_token,
                                              add_eos_token=tok.add_eos_token)
        fast_vocab = fast.get_vocab()
        extra = [t for t in tok.get_vocab() if t not in fast_vocab]
        if extra:
            fast.add_special_tokens({"additional_special_tokens": extra})
        fast.pad_token = tok.pad_token
        fast.save_pretrained(tmp)
        (out / "tokenizer.json").write_bytes((Path(tmp) / "tokenizer.json").read_bytes())
    cfg_file.write_text(json.dumps(cfg, indent=2))


def prepare_tokenizer(tokenizer) -> int:
    """Give the tokenizer an <image> token and a pad token; return how many tokens were added.

    The pad token follows LLaVA: the unk token where there is one (vicuna_v1
    pads with unk), otherwise a new <pad>.  It must differ from eos, or
    end-of-answer tokens would be mistaken for padding.
    """
    before = len(tokenizer)
    if DEFAULT_IMAGE_TOKEN not in tokenizer.get_vocab():
        tokenizer.add_special_tokens({"additional_special_tokens": [DEFAULT_IMAGE_TOKEN]})
    if tokenizer.pad_token is None or tokenizer.pad_token_id == tokenizer.eos_token_id:
        if tokenizer.unk_token is not None and tokenizer.unk_token_id != tokenizer.eos_token_id:
            tokenizer.pad_token = tokenizer.unk_token
        else:
            tokenizer.add_special_tokens({"pad_token": "<pad>"})
    return len(tokenizer) - before


def make_processor(tokenizer, image_processor, patch_size: int, select_strategy: str, conv_mode: str) -> LlavaProcessor:
    """Assemble the LlavaProcessor that is saved next to the model.

    num_additional_image_tokens=1 accounts for CLIP's CLS token, which the
    `default` (LLaVA: `patch`) strategy drops again.
    """
    return LlavaProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        patch_size=patch_size,
        vision_feature_select_strategy=select_strategy,
        num_additional_image_tokens=1,
        chat_template=get_template(conv_mode).chat_template,
        image_token=DEFAULT_IMAGE_TOKEN,
    )


def load_processor(path: str | Path, config, image_aspect_ratio: str | None = None) -> LlavaProcessor:
    """Processor of a saved llava directory, with the PIL image backend (see module docstring)."""
    path = Path(path)
    tokenizer = load_tokenizer(path)
    prepare_tokenizer(tokenizer)
    image_processor = image_processor_from_dir(path, image_aspect_ratio)
    chat_file = path / "chat_template.jinja"
    conv_mode = getattr(config, "llava_conv_mode", "vicuna_v1")
    processor = make_processor(
        tokenizer,
        image_processor,
        config.vision_config.patch_size,
        config.vision_feature_select_strategy,
        conv_mode,
    )
    if chat_file.exists():
        processor.chat_template = chat_file.read_text()
    return processor


def num_image_tokens(config) -> int:
    """Image tokens per image: one per patch, plus CLS with the `full` (cls_patch) strategy."""
    vc = config.vision_config
    n = (vc.image_size // vc.patch_size) ** 2
    return n + (1 if config.vision_feature_select_strategy == "full" else 0)


# LLaVA's names for the feature selection and transformers' names for the same thing.
SELECT_TO_HF = {"patch": "default", "cls_patch": "full"}
HF_TO_SELECT = {v: k for k, v in SELECT_TO_HF.items()}
