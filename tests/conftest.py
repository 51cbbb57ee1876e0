"""Shared fixtures: the tiny embedded model, built once per test session in both layouts."""

from __future__ import annotations

import os

import numpy as np
import pytest
from PIL import Image

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def tiny_root(tmp_path_factory):
    return tmp_path_factory.mktemp("tiny")


@pytest.fixture(scope="session")
def tiny_hf(tiny_root):
    """The tiny model as a transformers llava directory (what we save)."""
    from llava.model.tiny import build

    return build(tiny_root / "tiny-llava", parts_dir=tiny_root / "parts")


@pytest.fixture(scope="session")
def tiny_parts(tiny_hf, tiny_root):
    return tiny_root / "parts"


@pytest.fixture(scope="session")
def tiny_original(tiny_hf, tiny_root):
    """The same weights in the original LLaVA layout, fp32 so logits can be compared exactly;
    tower weights not stored (loaded from mm_vision_tower), two .bin shards with an index."""
    import torch

    from llava.model.tiny import build

    out = tiny_root / "tiny-original"
    build(out, layout="original", parts_dir=tiny_root / "parts", shards=2, original_dtype=torch.float32)
    return out


@pytest.fixture(scope="session")
def tiny_loaded(tiny_hf):
    from llava.model.builder import load_pretrained_model

    return load_pretrained_model(str(tiny_hf))


@pytest.fixture
def photo():
    """A real photograph (scikit-image's astronaut), non-square after cropping."""
    from skimage import data

    return Image.fromarray(data.astronaut()[40:300, :, :])


@pytest.fixture
def noise_image():
    return Image.fromarray(np.random.RandomState(0).randint(0, 255, (30, 50, 3)).astype("uint8"))


@pytest.fixture(scope="session")
def lora_run(tiny_hf, tmp_path_factory):
    """A LoRA directory as training writes it: adapter with non-zero B, trained projector."""
    import torch
    from peft import LoraConfig, get_peft_model

    from llava.model.builder import load_pretrained_model
    from llava.model.lora import language_model_linear_names, llm_target_regex, save_lora

    base = load_pretrained_model(str(tiny_hf))
    cfg = LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0,
                     target_modules=llm_target_regex(language_model_linear_names(base.model)))
    peft_model = get_peft_model(base.model, cfg)
    torch.manual_seed(1)
    for name, p in peft_model.named_parameters():
        if "lora_B" in name:
            p.data.normal_(0, 0.5)
        if "multi_modal_projector" in name:
            p.requires_grad_(True)
            p.data.add_(0.1)
    assert not any("vision_tower" in n for n, _ in peft_model.named_parameters() if "lora_" in n)
    out = save_lora(peft_model, tmp_path_factory.mktemp("lora") / "run", base.processor)
    return out, peft_model, base


@pytest.fixture(scope="session")
def tiny_clip(tmp_path_factory):
    """A tiny random open_clip model saved as a local-dir (config + weights): no weights can be fetched here."""
    import json

    import open_clip
    import torch

    d = tmp_path_factory.mktemp("tiny-clip")
    cfg = {"embed_dim": 32, "vision_cfg": {"image_size": 32, "layers": 1, "width": 64, "patch_size": 16,
                                            "head_width": 32},
           "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 1}}
    torch.manual_seed(0)
    torch.save(open_clip.model.CLIP(**cfg).state_dict(), d / "open_clip_pytorch_model.bin")
    (d / "open_clip_config.json").write_text(json.dumps({"model_cfg": cfg, "preprocess_cfg": {
        "mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5]}}))
    return d
