"""train.py takes every flag of the original LLaVA's train.py: each one works, or is refused saying what to
use instead; none is accepted and silently ignored."""

from __future__ import annotations

import shutil

import pytest

from llava.model.builder import load_pretrained_model
from llava.model.errors import ModelLoadError
from llava.train.args import parse_args
from llava.train.model_setup import load_model

# The original's ModelArguments, DataArguments and TrainingArguments fields, with a value each, as its
# scripts pass them (scripts/v1_5/*.sh and train.py's dataclasses).
ORIGINAL_FLAGS = {
    "--model_name_or_path": "lmsys/vicuna-7b-v1.5", "--version": "v1", "--freeze_backbone": "False",
    "--tune_mm_mlp_adapter": "False", "--vision_tower": "openai/clip-vit-large-patch14-336",
    "--mm_vision_select_layer": "-2", "--pretrain_mm_mlp_adapter": "mm_projector.bin",
    "--mm_projector_type": "mlp2x_gelu", "--mm_use_im_start_end": "False", "--mm_use_im_patch_token": "False",
    "--mm_patch_merge_type": "flat", "--mm_vision_select_feature": "patch",
    "--data_path": "llava_v1_5_mix665k.json", "--lazy_preprocess": "True", "--is_multimodal": "True",
    "--image_folder": "playground/data", "--image_aspect_ratio": "pad",
    "--cache_dir": "/tmp/hub-cache", "--optim": "adamw_torch", "--remove_unused_columns": "False",
    "--freeze_mm_mlp_adapter": "False", "--model_max_length": "2048", "--double_quant": "True",
    "--quant_type": "nf4", "--bits": "16", "--lora_enable": "True", "--lora_r": "128", "--lora_alpha": "256",
    "--lora_dropout": "0.05", "--lora_bias": "none", "--mm_projector_lr": "2e-5",
    "--group_by_modality_length": "True",
}


def test_every_original_flag_is_read_with_its_value(tmp_path):
    argv = [x for kv in ORIGINAL_FLAGS.items() for x in kv] + ["--output_dir", str(tmp_path), "--report_to", "none"]
    model_args, data_args, training_args = parse_args(argv)
    values = {**vars(model_args), **vars(data_args), **training_args.to_dict()}
    for flag, given in ORIGINAL_FLAGS.items():
        got = values[flag[2:]]
        assert str(got) == given or (isinstance(got, (int, float)) and float(got) == float(given)) \
            or (flag == "--optim" and str(got).endswith(given)), (flag, got)


@pytest.mark.bad_input
@pytest.mark.parametrize("flag, value, says", [
    ("--mpt_attn_impl", "triton", "MPT language models, which are not supported"),
    ("--lora_weight_path", "adapter.bin", "merge it (scripts/merge_lora_weights.py)"),
    ("--lazy_preprocess", "False", "always tokenized as their batches are drawn"),
    ("--is_multimodal", "False", "always takes the image records' images"),
])
def test_original_flags_we_cannot_honour_are_refused_saying_what_to_do(tmp_path, flag, value, says):
    with pytest.raises(SystemExit) as exc:
        parse_args(["--output_dir", str(tmp_path), flag, value])
    assert flag in str(exc.value.code) and says in str(exc.value.code)


def hub_cache(model_dir, cache, repo="test-org/tiny-llava", revision="0" * 40):
    """The Hugging Face hub cache layout (models--ORG--NAME/{refs/main, snapshots/REV/...}) holding
    model_dir's files, as a download would leave it."""
    root = cache / f"models--{repo.replace('/', '--')}"
    shutil.copytree(model_dir, root / "snapshots" / revision)
    (root / "refs").mkdir()
    (root / "refs" / "main").write_text(revision)
    return repo


def test_cache_dir_is_where_hub_ids_are_found(tiny_hf, tmp_path):
    """Offline (the tests' HF_HUB_OFFLINE=1), a hub id resolves from --cache_dir's snapshot, and only from it."""
    repo = hub_cache(tiny_hf, tmp_path / "cache")
    with pytest.raises(ModelLoadError, match="test-org/tiny-llava"):
        load_pretrained_model(repo)
    loaded = load_pretrained_model(repo, cache_dir=str(tmp_path / "cache"))
    assert loaded.model.config.model_type == "llava"

    model_args, data_args, training_args = parse_args([
        "--model_name_or_path", repo, "--cache_dir", str(tmp_path / "cache"), "--output_dir", str(tmp_path / "out"),
        "--report_to", "none", "--use_cpu", "True"])
    model, processor = load_model(model_args, data_args, training_args)
    assert sum(p.numel() for p in model.parameters()) == sum(p.numel() for p in loaded.model.parameters())
