"""llava/model/cpu_attention.py: SDPA cast up to fp32 on CPU gives transformers' SDPA results,
respects padding, and is what training on a CPU uses."""

import copy

import torch

from llava.model.builder import load_pretrained_model
from llava.model.cpu_attention import CPU_SDPA_FP32, register_cpu_sdpa_fp32
from llava.model.inputs import build_batch, render_prompt
from llava.train.args import parse_args
from llava.train.model_setup import load_model


def two_prompts(loaded, image):
    """A padded batch of two prompts of different lengths, with the same image."""
    prompts = [render_prompt(loaded, q, True) for q in ("What is shown?", "What colour is the largest shape here?")]
    return build_batch(loaded, prompts, [image, image])


def logits(model, batch, impl):
    model.set_attn_implementation(impl)
    with torch.no_grad():
        return model(**batch).logits.float()


def test_fp32_model_gives_sdpa_results_exactly(tiny_hf, noise_image):
    loaded = load_pretrained_model(str(tiny_hf), dtype=torch.float32)
    batch = two_prompts(loaded, noise_image)
    ours, sdpa = logits(loaded.model, batch, register_cpu_sdpa_fp32()), logits(loaded.model, batch, "sdpa")
    assert torch.equal(ours, sdpa)


def test_bf16_model_gives_sdpa_results_to_rounding_with_padding(tiny_hf, noise_image):
    loaded = load_pretrained_model(str(tiny_hf), dtype=torch.float32)
    batch = two_prompts(loaded, noise_image)
    reference = logits(loaded.model, batch, "sdpa")
    real = batch["attention_mask"].bool()
    assert not real.all(), "the batch must have padding for this test"
    bf16 = copy.deepcopy(loaded.model).to(torch.bfloat16)
    ours, sdpa = logits(bf16, batch, register_cpu_sdpa_fp32()), logits(bf16, batch, "sdpa")
    # Padding masked as in SDPA: at real positions the two agree to bf16 rounding ...
    assert (ours[real] - sdpa[real]).abs().max() < 0.1 * reference[real].abs().max()
    assert (ours[real] - reference[real]).abs().max() < 0.1 * reference[real].abs().max()


def test_training_on_cpu_uses_it_and_saved_configs_do_not_name_it(tiny_hf, tmp_path):
    model_args, data_args, training_args = parse_args([
        "--model_name_or_path", str(tiny_hf), "--data_path", "unused.json", "--output_dir", str(tmp_path / "out"),
        "--report_to", "none", "--use_cpu", "True"])
    model, _ = load_model(model_args, data_args, training_args)
    assert model.config.text_config._attn_implementation == CPU_SDPA_FP32
    model.save_pretrained(tmp_path / "saved")
    assert CPU_SDPA_FP32 not in (tmp_path / "saved/config.json").read_text()
