"""Projector types beyond transformers' fixed two-layer MLP.

LLaVA names its projectors `linear` and `mlp{N}x_gelu`.  `mlp2x_gelu` (the
LLaVA-1.5 default) is exactly transformers' LlavaMultiModalProjector, so such
models are plain `LlavaForConditionalGeneration` and load anywhere
transformers does (vLLM, TGI).  The other types need a different projector
module, so they get a thin subclass with its own model_type, `llava_mmproj`,
registered with the Auto classes when this package is imported.  Layers are
named linear_1 ... linear_N in both cases, so mlp2x_gelu weights line up.
"""

from __future__ import annotations

import re

from torch import nn
from transformers import AutoConfig, AutoModel, AutoModelForImageTextToText, LlavaConfig
from transformers.activations import ACT2FN
from transformers.models.llava.modeling_llava import (
    LlavaForConditionalGeneration,
    LlavaModel,
    LlavaPreTrainedModel,
)

DEFAULT_PROJECTOR = "mlp2x_gelu"
_MLP = re.compile(r"^mlp(\d+)x_(\w+)$")


def parse_projector_type(projector_type: str) -> tuple[int, str]:
    """'linear' -> (1, ''), 'mlp2x_gelu' -> (2, 'gelu')."""
    if projector_type == "linear":
        return 1, ""
    m = _MLP.match(projector_type)
    if not m or int(m.group(1)) < 1 or m.group(2) not in ACT2FN:
        raise ValueError(
            f"unknown projector type {projector_type!r}: use 'linear' or 'mlp{{N}}x_{{act}}' such as 'mlp2x_gelu'"
        )
    return int(m.group(1)), m.group(2)


class LlavaMMProjConfig(LlavaConfig):
    model_type = "llava_mmproj"
    projector_type: str = DEFAULT_PROJECTOR


class MultiLayerProjector(nn.Module):
    """linear_1, act, linear_2, act, ..., linear_N (N=1: a single linear layer)."""

    def __init__(self, config: LlavaConfig, projector_type: str):
        super().__init__()
        depth, act = parse_projector_type(projector_type)
        layers = 1 if isinstance(config.vision_feature_layer, int) else len(config.vision_feature_layer)
        dims = [config.vision_config.hidden_size * layers] + [config.text_config.hidden_size] * depth
        bias = config.multimodal_projector_bias
        self.depth = depth
        for i in range(depth):
            setattr(self, f"linear_{i + 1}", nn.Linear(dims[i], dims[i + 1], bias=bias))
        self.act = ACT2FN[act] if act else nn.Identity()

    def forward(self, x):
        for i in range(1, self.depth + 1):
            if i > 1:
                x = self.act(x)
            x = getattr(self, f"linear_{i}")(x)
        return x


class LlavaMMProjModel(LlavaModel):
    config_class = LlavaMMProjConfig

    def __init__(self, config: LlavaMMProjConfig):
        # Same parts as LlavaModel, with our projector; built here rather than
        # replaced after super().__init__() so a 7B LLM is not constructed twice.
        LlavaPreTrainedModel.__init__(self, config)
        self.vision_tower = AutoModel.from_config(config.vision_config)
        self.multi_modal_projector = MultiLayerProjector(config, config.projector_type)
        self.language_model = AutoModel.from_config(config.text_config)
        self.post_init()


class LlavaMMProjForConditionalGeneration(LlavaForConditionalGeneration):
    config_class = LlavaMMProjConfig

    def __init__(self, config: LlavaMMProjConfig):
        LlavaPreTrainedModel.__init__(self, config)
        self.model = LlavaMMProjModel(config)
        self.lm_head = nn.Linear(config.text_config.hidden_size, config.text_config.vocab_size, bias=False)
        self.post_init()


AutoConfig.register(LlavaMMProjConfig.model_type, LlavaMMProjConfig, exist_ok=True)
AutoModel.register(LlavaMMProjConfig, LlavaMMProjModel, exist_ok=True)
AutoModelForImageTextToText.register(LlavaMMProjConfig, LlavaMMProjForConditionalGeneration, exist_ok=True)


def make_config(projector_type: str = DEFAULT_PROJECTOR, **kwargs) -> LlavaConfig:
    """A LlavaConfig for mlp2x_gelu (plain transformers), else a LlavaMMProjConfig."""
    parse_projector_type(projector_type)
    if projector_type == DEFAULT_PROJECTOR:
        return LlavaConfig(projector_hidden_act="gelu", **kwargs)
    return LlavaMMProjConfig(projector_type=projector_type, **kwargs)


def projector_type_of(config: LlavaConfig) -> str:
    if isinstance(config, LlavaMMProjConfig):
        return config.projector_type
    return f"mlp2x_{config.projector_hidden_act}"


def model_class_for(config: LlavaConfig) -> type[LlavaForConditionalGeneration]:
    if isinstance(config, LlavaMMProjConfig):
        return LlavaMMProjForConditionalGeneration
    return LlavaForConditionalGeneration
