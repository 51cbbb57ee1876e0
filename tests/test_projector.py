"""Projector types: mlp2x_gelu is plain transformers llava; others are the llava_mmproj subclass."""

import pytest
import torch
from transformers import AutoConfig, AutoModelForImageTextToText

from llava.demo.models import build
from llava.model.builder import load_pretrained_model
from llava.model.compose import ComposeOptions
from llava.model.inputs import generate
from llava.model.projector import parse_projector_type


@pytest.mark.parametrize("ptype,layers", [("linear", 1), ("mlp3x_gelu", 3)])
def test_other_projectors_save_and_load(ptype, layers, tiny_root, noise_image):
    out = build(tiny_root / ptype, parts_dir=tiny_root / "parts", options=ComposeOptions(projector_type=ptype))
    cfg = AutoConfig.from_pretrained(out)
    assert cfg.model_type == "llava_mmproj" and cfg.projector_type == ptype
    model = AutoModelForImageTextToText.from_pretrained(out)
    names = sorted({n.split(".")[2] for n, _ in model.named_parameters() if "multi_modal_projector" in n})
    assert names == [f"linear_{i}" for i in range(1, layers + 1)]
    loaded = load_pretrained_model(str(out))
    assert generate(loaded, ["What?"], [noise_image], max_new_tokens=2)


def test_original_layout_with_linear_projector(tiny_root, noise_image):
    opts = ComposeOptions(projector_type="linear")
    hf = build(tiny_root / "lin-hf", parts_dir=tiny_root / "parts", options=opts)
    orig = build(tiny_root / "lin-orig", layout="original", parts_dir=tiny_root / "parts", options=opts,
                 original_dtype=torch.float32)
    state = torch.load(orig / "pytorch_model.bin", weights_only=True)
    assert "model.mm_projector.0.weight" in state
    a, b = load_pretrained_model(str(hf)), load_pretrained_model(str(orig))
    for name, p in a.model.named_parameters():
        if "multi_modal_projector" in name:
            assert torch.equal(p, dict(b.model.named_parameters())[name])


def test_cls_patch_and_other_layer(tiny_root):
    out = build(tiny_root / "cls", parts_dir=tiny_root / "parts",
                options=ComposeOptions(vision_feature_select="cls_patch", vision_feature_layer=-1))
    loaded = load_pretrained_model(str(out))
    assert loaded.config.vision_feature_select_strategy == "full"
    assert loaded.config.vision_feature_layer == -1
    assert loaded.num_image_tokens == 17


@pytest.mark.parametrize("bad", ["mlp", "mlp2x_nonsense", "conv", "mlp0x_gelu"])
def test_bad_projector_type(bad):
    with pytest.raises(ValueError, match="projector type"):
        parse_projector_type(bad)
