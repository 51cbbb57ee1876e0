"""The converter command: original LLaVA checkpoint -> a directory plain transformers loads."""

import json
import shutil
import subprocess
import sys

import pytest
import torch
from transformers import AutoProcessor, LlavaForConditionalGeneration

from llava.model.builder import load_pretrained_model
from llava.model.directories import hf_key_to_original, original_key_to_hf
from llava.model.errors import ConversionError
from llava.model.inputs import build_batch, render_prompt


@pytest.mark.slow
def test_convert_command_output_loads_in_plain_transformers(tiny_original, tmp_path, noise_image):
    out = tmp_path / "converted"
    proc = subprocess.run(
        [sys.executable, "-m", "llava.model.convert", "--model-path", str(tiny_original),
         "--output-dir", str(out), "--dtype", "float32"],
        capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert "wrote" in proc.stdout

    # Plain transformers, no llava package code involved.
    model = LlavaForConditionalGeneration.from_pretrained(out)
    processor = AutoProcessor.from_pretrained(out)
    assert processor.image_token == "<image>"
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What is shown?"}]}]
    prompt = processor.apply_chat_template(messages, add_generation_prompt=True)
    assert prompt.endswith("USER: <image>\nWhat is shown? ASSISTANT:")
    inputs = processor(images=noise_image, text=prompt, return_tensors="pt")
    assert (inputs["input_ids"] == model.config.image_token_id).sum() == 16
    with torch.no_grad():
        plain = model(**inputs).logits
    assert torch.isfinite(plain).all()

    # Our loader on the converted directory and on the original agree.
    ours = load_pretrained_model(str(out))
    orig = load_pretrained_model(str(tiny_original))
    batch = build_batch(ours, [render_prompt(ours, "What is shown?", True)], [noise_image])
    with torch.no_grad():
        a, b = ours.model(**batch).logits, orig.model(**batch).logits
    assert torch.allclose(a[..., :32000], b[..., :32000], atol=1e-5)


def test_key_mapping_round_trips():
    keys = [
        "model.embed_tokens.weight", "model.layers.3.self_attn.q_proj.weight", "model.norm.weight",
        "lm_head.weight", "model.mm_projector.0.weight", "model.mm_projector.2.bias",
        "model.vision_tower.vision_tower.vision_model.encoder.layers.0.mlp.fc1.weight",
    ]
    for key in keys:
        assert hf_key_to_original(original_key_to_hf(key, "mlp2x_gelu")) == key
    assert (original_key_to_hf("model.mm_projector.4.weight", "mlp3x_gelu")
            == "model.multi_modal_projector.linear_3.weight")
    assert original_key_to_hf("model.mm_projector.weight", "linear") == "model.multi_modal_projector.linear_1.weight"
    assert original_key_to_hf("model.layers.0.self_attn.rotary_emb.inv_freq", "mlp2x_gelu") is None


def test_unknown_weight_name_is_named():
    with pytest.raises(ConversionError, match="model.image_newline"):
        original_key_to_hf("model.image_newline", "mlp2x_gelu")


def test_start_end_tokens_are_refused_clearly(tiny_original, tmp_path):
    bad = tmp_path / "ckpt"
    shutil.copytree(tiny_original, bad)
    cfg = json.loads((bad / "config.json").read_text())
    cfg["mm_use_im_start_end"] = True
    (bad / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ConversionError, match="mm_use_im_start_end"):
        load_pretrained_model(str(bad))
