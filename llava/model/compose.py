"""Compose a LLaVA-1.5 model from a CLIP vision tower and a Llama-family LLM.

This is where stage-1 pretraining starts: the tower and the LLM keep their
pretrained weights, the projector is new.  The result is transformers'
LlavaForConditionalGeneration (or the llava_mmproj subclass for projector
types other than mlp2x_gelu) plus its LlavaProcessor.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, CLIPVisionModel, PreTrainedModel
from transformers.models.llava.modeling_llava import LlavaMultiModalProjector
from transformers.utils import logging as hf_logging

from llava.conversation import get_template
from llava.model.directories import local_dir
from llava.model.processor import (
    SELECT_TO_HF,
    check_aspect_mode,
    image_processor_from_dir,
    load_tokenizer,
    make_processor,
    num_image_tokens,
    prepare_tokenizer,
)
from llava.model.projector import (
    DEFAULT_PROJECTOR,
    LlavaMMProjConfig,
    MultiLayerProjector,
    make_config,
    model_class_for,
)


@dataclass
class ComposeOptions:
    """LLaVA's knobs, by their original names."""

    projector_type: str = DEFAULT_PROJECTOR  # mm_projector_type
    vision_feature_layer: int = -2  # mm_vision_select_layer
    vision_feature_select: str = "patch"  # mm_vision_select_feature: patch | cls_patch
    image_aspect_ratio: str = "pad"  # pad | square
    conv_mode: str = "vicuna_v1"

    def check(self) -> None:
        if self.vision_feature_select not in SELECT_TO_HF:
            raise ValueError(
                f"vision feature selection must be one of {sorted(SELECT_TO_HF)}, got {self.vision_feature_select!r}"
            )
        check_aspect_mode(self.image_aspect_ratio)
        get_template(self.conv_mode)


def compose(
    vision_tower: CLIPVisionModel,
    language_model: PreTrainedModel,
    tokenizer,
    image_processor,
    options: ComposeOptions | None = None,
    seed: int = 0,
):
    """Build (model, processor) around existing modules; no weights are copied.

    The LLM's embeddings grow by the tokens prepare_tokenizer adds (<image>,
    maybe <pad>); the projector is freshly initialised from `seed`.
    """
    options = options or ComposeOptions()
    options.check()
    torch.manual_seed(seed)
    added = prepare_tokenizer(tokenizer)
    if added:
        # mean_resizing draws new rows from the old rows' distribution, so new
        # tokens start as ordinary tokens rather than zero vectors.
        verbosity = hf_logging.get_verbosity()
        hf_logging.set_verbosity_error()  # it logs a paragraph about the method each time
        try:
            language_model.resize_token_embeddings(len(tokenizer), mean_resizing=True)
        finally:
            hf_logging.set_verbosity(verbosity)
    text_config = language_model.config
    vision_config = vision_tower.config
    config = make_config(
        options.projector_type,
        vision_config=vision_config.to_dict(),
        text_config=text_config.to_dict(),
        image_token_index=tokenizer.convert_tokens_to_ids("<image>"),
        vision_feature_layer=options.vision_feature_layer,
        vision_feature_select_strategy=SELECT_TO_HF[options.vision_feature_select],
        tie_word_embeddings=bool(getattr(text_config, "tie_word_embeddings", False)),
    )
    config.image_seq_length = num_image_tokens(config)
    config.llava_conv_mode = options.conv_mode
    config.pad_token_id = tokenizer.pad_token_id
    config.text_config.pad_token_id = tokenizer.pad_token_id

    cls = model_class_for(config)
    with torch.device("meta"):
        model = cls(config)
    # Swap in the real modules; only the projector is new.
    model.model.vision_tower = vision_tower
    model.model.language_model = language_model.model
    model.lm_head = language_model.lm_head
    # One config object per part, as from_pretrained would leave it.
    vision_tower.config = config.vision_config
    language_model.model.config = config.text_config
    model.model.multi_modal_projector = _new_projector(config, language_model.dtype)
    if config.tie_word_embeddings:
        model.lm_head.weight = model.model.language_model.embed_tokens.weight
    model.config = config
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.bos_token_id = tokenizer.bos_token_id
    processor = make_processor(
        tokenizer, image_processor, vision_config.patch_size, config.vision_feature_select_strategy, options.conv_mode
    )
    return model, processor


def _new_projector(config, dtype):
    if isinstance(config, LlavaMMProjConfig):
        proj = MultiLayerProjector(config, config.projector_type)
    else:
        proj = LlavaMultiModalProjector(config)
    for m in proj.modules():
        if isinstance(m, torch.nn.Linear):
            # LLaVA's projector starts with PyTorch's default Linear init.
            m.reset_parameters()
    return proj.to(dtype)


def compose_from_pretrained(
    vision_tower: str | Path,
    language_model: str | Path,
    options: ComposeOptions | None = None,
    dtype: torch.dtype = torch.float32,
    gguf_file: str | None = None,
    seed: int = 0,
    cache_dir: str | None = None,
):
    """compose() from checkpoint directories (or hub names when online).

    vision_tower: a CLIP checkpoint (CLIPModel or CLIPVisionModel) with its
    preprocessor_config.json.  language_model: any Llama-family causal LM, or
    a directory holding `gguf_file`.
    """
    options = options or ComposeOptions()
    # Hub ids are downloaded first (into cache_dir when given), so both parts are read from directories.
    vision_tower = local_dir(str(vision_tower), "--vision_tower", cache_dir)
    language_model = local_dir(str(language_model), "--model_name_or_path", cache_dir)
    tower = CLIPVisionModel.from_pretrained(vision_tower, dtype=dtype)
    kwargs = {"gguf_file": gguf_file} if gguf_file else {}
    llm = AutoModelForCausalLM.from_pretrained(language_model, dtype=dtype, **kwargs)
    tokenizer = load_tokenizer(language_model, **kwargs)
    image_processor = image_processor_from_dir(vision_tower, options.image_aspect_ratio)
    return compose(tower, llm, tokenizer, image_processor, options, seed)
