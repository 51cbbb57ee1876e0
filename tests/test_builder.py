"""load_pretrained_model: the three kinds of directory, decided by contents, and 4/8-bit loading."""

import builtins
import collections
import io
import json
import os
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from llava.demo.models import PRESETS, build
from llava.model.builder import load_pretrained_model
from llava.model.errors import AdapterMismatch, ModelLoadError
from llava.model.inputs import build_batch, generate, render_prompt
from llava.model.lora import language_model_linear_names
from llava.model.weights import read_state_dict

VOCAB = 32000  # the original vocabulary; rows past it are tokens we add (<image>)


def logits(loaded, image):
    batch = build_batch(loaded, [render_prompt(loaded, "What is shown in this image?", True)], [image])
    with torch.no_grad():
        return loaded.model(**batch).logits[..., :VOCAB]


def test_hf_and_original_layouts_give_the_same_logits(tiny_hf, tiny_original, noise_image):
    hf = load_pretrained_model(str(tiny_hf))
    orig = load_pretrained_model(str(tiny_original))
    assert (hf.kind, orig.kind) == ("hf", "original")
    assert orig.image_token_id == hf.image_token_id == VOCAB
    a, b = logits(hf, noise_image), logits(orig, noise_image)
    assert a.abs().max() > 0.01
    assert torch.allclose(a, b, atol=1e-5), (a - b).abs().max()


def test_kind_is_decided_by_contents_not_folder_name(tiny_original, tmp_path, noise_image):
    # Original checkpoints live in folders named anything; the original code keys on "llava" in the name.
    moved = tmp_path / "checkpoint-final"
    shutil.copytree(tiny_original, moved)
    tower = (tiny_original / json.loads((tiny_original / "config.json").read_text())["mm_vision_tower"]).resolve()
    # The relative mm_vision_tower no longer resolves from here: a clear error, then the override works.
    with pytest.raises(ModelLoadError, match="--vision-tower"):
        load_pretrained_model(str(moved))
    loaded = load_pretrained_model(str(moved), vision_tower=str(tower))
    assert loaded.kind == "original"
    ref = load_pretrained_model(str(tiny_original))
    assert torch.allclose(logits(loaded, noise_image), logits(ref, noise_image), atol=1e-6)


def test_original_release_format_fp16_single_bin_with_stored_tower(tiny_hf, tiny_root, noise_image):
    """fp16, tower weights inside the checkpoint, and mm_vision_tower a hub id that cannot be reached
    offline: the stored weights are used and the tower config is read off them."""
    out = build(tiny_root / "orig-fp16", layout="original", parts_dir=tiny_root / "parts", store_vision_tower=True)
    cfg = json.loads((out / "config.json").read_text())
    cfg["mm_vision_tower"] = "openai/clip-vit-large-patch14-336"
    (out / "config.json").write_text(json.dumps(cfg))
    state = torch.load(out / "pytorch_model.bin", weights_only=True)
    assert state["model.mm_projector.0.weight"].dtype == torch.float16
    assert any(k.startswith("model.vision_tower.vision_tower.vision_model.") for k in state)
    # Offline, the hub id cannot be read: the tower config comes off the stored weights.
    inferred = load_pretrained_model(str(out))
    vc = inferred.config.vision_config
    assert (vc.hidden_size, vc.num_hidden_layers, vc.image_size, vc.patch_size) == (32, 2, 16, 4)
    assert generate(inferred, ["What?"], [noise_image], max_new_tokens=2)
    # CLIP's heads are 64 wide but the tiny tower's are 8, which weights cannot show: the override
    # supplies the config, the weights still come from the checkpoint.
    loaded = load_pretrained_model(str(out), vision_tower=str(tiny_root / "parts" / "vision_tower"))
    ref = load_pretrained_model(str(tiny_hf))
    a, b = logits(loaded, noise_image), logits(ref, noise_image)
    assert torch.allclose(a, b, atol=2e-2), (a - b).abs().max()  # fp16 weights


def test_the_originals_four_tuple_unpacking(tiny_loaded):
    tokenizer, model, image_processor, context_len = tiny_loaded
    assert (tokenizer, model, image_processor) == (tiny_loaded.tokenizer, tiny_loaded.model,
                                                   tiny_loaded.image_processor)
    assert context_len == tiny_loaded.context_len > 0


@pytest.fixture
def config_reads(monkeypatch):
    """How often each config.json / adapter_config.json is opened, by us, transformers or peft."""
    counts = collections.Counter()
    real_open = builtins.open

    def counting_open(file, *args, **kwargs):
        if isinstance(file, (str, os.PathLike)) and Path(file).name in ("config.json", "adapter_config.json"):
            counts[Path(file).resolve()] += 1
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", counting_open)
    monkeypatch.setattr(io, "open", counting_open)  # pathlib's read_text opens through io.open
    return counts


@pytest.mark.parametrize("case", ["hf", "original", "lora-on-hf-base", "lora-on-original-base"])
def test_each_config_file_is_read_once_per_load(case, config_reads, lora_run, tiny_hf, tiny_original):
    lora = lora_run[0]
    path, base = {"hf": (tiny_hf, None), "original": (tiny_original, None),
                  "lora-on-hf-base": (lora, tiny_hf), "lora-on-original-base": (lora, tiny_original)}[case]
    load_pretrained_model(str(path), model_base=str(base) if base else None)
    must_read = [path / "config.json"] + ([lora / "adapter_config.json", base / "config.json"] if base else [])
    assert {f.resolve() for f in must_read} <= set(config_reads), config_reads
    assert all(n == 1 for n in config_reads.values()), config_reads


def test_not_a_llava_directory(tiny_parts):
    with pytest.raises(ValueError, match="neither a llava model"):
        load_pretrained_model(str(tiny_parts / "llm"))


def test_missing_directory():
    with pytest.raises(ModelLoadError, match="no such model directory"):
        load_pretrained_model("./does/not/exist")


# ---- LoRA -------------------------------------------------------------------------------------------

def test_lora_dir_loads_with_its_base(lora_run, tiny_hf, noise_image):
    out, peft_model, base = lora_run
    batch = build_batch(base, [render_prompt(base, "What?", True)], [noise_image])
    with torch.no_grad():
        want = peft_model(**batch).logits
    loaded = load_pretrained_model(str(out), model_base=str(tiny_hf))
    assert loaded.kind == "lora"
    with torch.no_grad():
        got = loaded.model(**batch).logits
    assert torch.allclose(got, want, atol=1e-5), (got - want).abs().max()
    # Merged: a plain llava model again.
    assert type(loaded.model).__name__ == "LlavaForConditionalGeneration"


def test_lora_on_an_original_layout_base(lora_run, tiny_original, noise_image):
    out, peft_model, base = lora_run
    loaded = load_pretrained_model(str(out), model_base=str(tiny_original))
    batch = build_batch(base, [render_prompt(base, "What?", True)], [noise_image])
    with torch.no_grad():
        want = peft_model(**batch).logits[..., :VOCAB]
        got = loaded.model(**batch).logits[..., :VOCAB]
    assert torch.allclose(got, want, atol=1e-5)


def test_original_lora_run_with_bare_llm_base(lora_run, tiny_original, tiny_parts, tmp_path, noise_image):
    """The original's LoRA output: config.json of LlavaLlama, adapter and non_lora_trainables in its own
    names (.bin), base = the bare LLM (vicuna in real life)."""
    out, peft_model, base = lora_run
    orig = tmp_path / "llava-v1.5-7b-task-lora"
    orig.mkdir()
    cfg = json.loads((tiny_original / "config.json").read_text())
    cfg["mm_vision_tower"] = str((tiny_parts / "vision_tower").resolve())
    (orig / "config.json").write_text(json.dumps(cfg))
    adapter_cfg = json.loads((out / "adapter_config.json").read_text())
    adapter_cfg["target_modules"] = language_model_linear_names(base.model)  # a list, as the original saves
    (orig / "adapter_config.json").write_text(json.dumps(adapter_cfg))
    adapter = load_file(str(out / "adapter_model.safetensors"))
    torch.save({k.replace("model.language_model.", "model."): v for k, v in adapter.items()},
               orig / "adapter_model.bin")
    non_lora = load_file(str(out / "non_lora_trainables.safetensors"))
    renamed = {"base_model.model." + k.replace("multi_modal_projector.linear_1", "mm_projector.0")
               .replace("multi_modal_projector.linear_2", "mm_projector.2"): v for k, v in non_lora.items()}
    torch.save(renamed, orig / "non_lora_trainables.bin")

    loaded = load_pretrained_model(str(orig), model_base=str(tiny_parts / "llm"))
    batch = build_batch(base, [render_prompt(base, "What?", True)], [noise_image])
    with torch.no_grad():
        want = peft_model(**batch).logits[..., :VOCAB]
        got = loaded.model(**batch).logits[..., :VOCAB]
    assert torch.allclose(got, want, atol=1e-5), (got - want).abs().max()


def test_lora_without_base_says_what_to_pass(lora_run, tmp_path):
    out, _, _ = lora_run
    moved = tmp_path / "x"
    shutil.copytree(out, moved)
    cfg = json.loads((moved / "adapter_config.json").read_text())
    cfg["base_model_name_or_path"] = "/nowhere/base"
    (moved / "adapter_config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match="--model-base"):
        load_pretrained_model(str(moved))


def test_mismatched_base_names_tensor_and_shapes(lora_run, tiny_root):
    """An adapter trained on one LLM size loaded onto another: stop, naming the tensor and both shapes."""
    wider = {"vision": PRESETS["tiny"]["vision"], "llm": dict(PRESETS["tiny"]["llm"], hidden_size=64)}
    out, _, _ = lora_run
    other = build(tiny_root / "wider", preset=wider, parts_dir=tiny_root / "wider-parts")
    with pytest.raises(AdapterMismatch, match=r"tensor model\.multi_modal_projector\.linear_1\.\w+ has shape "
                                              r"\(32,.*\) but the base model's .* has shape \(64,.*\)"):
        load_pretrained_model(str(out), model_base=str(other))
    # Without the projector file, the adapter tensors themselves are checked.
    (out.parent / "no-proj").mkdir(exist_ok=True)
    for f in out.iterdir():
        if f.name != "non_lora_trainables.safetensors":
            shutil.copy(f, out.parent / "no-proj" / f.name)
    with pytest.raises(AdapterMismatch, match=r"adapter tensor \S+lora_[AB]\.weight has shape \(\d+, \d+\) but "
                                              r"the base model expects .*is --model-base the model"):
        load_pretrained_model(str(out.parent / "no-proj"), model_base=str(other))


# ---- quantization -----------------------------------------------------------------------------------

def _linear_kinds(model):
    kinds = {}
    for name, module in model.named_modules():
        kind = type(module).__name__
        if kind in ("Linear", "Linear4bit", "Linear8bitLt"):
            part = "language_model" if ".language_model." in name else name.split(".")[1] if "." in name else name
            kinds.setdefault(part, set()).add(kind)
    return kinds


def test_4bit_loads_with_bitsandbytes_and_generates(tiny_hf, noise_image):
    loaded = load_pretrained_model(str(tiny_hf), load_4bit=True)
    kinds = _linear_kinds(loaded.model)
    assert kinds["language_model"] == {"Linear4bit"}
    assert kinds["vision_tower"] == {"Linear"} and kinds["multi_modal_projector"] == {"Linear"}
    q = loaded.model.model.language_model.layers[0].self_attn.q_proj
    assert q.weight.quant_state.quant_type == "nf4"
    answers = generate(loaded, ["What is it?", "Describe it."], [noise_image, noise_image], max_new_tokens=4)
    assert len(answers) == 2 and all(isinstance(a, str) for a in answers)
    # Quantized logits stay close to full precision on this tiny model.
    full = load_pretrained_model(str(tiny_hf))
    assert (logits(loaded, noise_image) - logits(full, noise_image)).abs().max() < 0.5


def test_4bit_with_a_lora_adapter_stays_unmerged(lora_run, tiny_hf, noise_image):
    out, _, _ = lora_run
    loaded = load_pretrained_model(str(out), model_base=str(tiny_hf), load_4bit=True)
    assert type(loaded.model).__name__ == "PeftModel"
    assert generate(loaded, ["What?"], [noise_image], max_new_tokens=3)


def test_8bit_loads(tiny_hf):
    loaded = load_pretrained_model(str(tiny_hf), load_8bit=True)
    assert _linear_kinds(loaded.model)["language_model"] == {"Linear8bitLt"}


def test_4bit_and_8bit_together_is_an_error(tiny_hf):
    with pytest.raises(ValueError, match="one of"):
        load_pretrained_model(str(tiny_hf), load_4bit=True, load_8bit=True)


def test_original_layout_in_sharded_safetensors(tiny_original, tmp_path, noise_image):
    """Later original releases ship model-0000N-of-0000M.safetensors with an index."""
    out = tmp_path / "st"
    shutil.copytree(tiny_original, out, ignore=shutil.ignore_patterns("pytorch_model*"))
    cfg = json.loads((out / "config.json").read_text())
    cfg["mm_vision_tower"] = str((tiny_original / cfg["mm_vision_tower"]).resolve())
    cfg["model_type"] = "llava_llama"
    (out / "config.json").write_text(json.dumps(cfg))
    state = read_state_dict(tiny_original)
    keys = sorted(state)
    halves = {"model-00001-of-00002.safetensors": keys[: len(keys) // 2],
              "model-00002-of-00002.safetensors": keys[len(keys) // 2:]}
    for name, ks in halves.items():
        save_file({k: state[k].contiguous() for k in ks}, str(out / name))
    index = {"weight_map": {k: name for name, ks in halves.items() for k in ks}}
    (out / "model.safetensors.index.json").write_text(json.dumps(index))
    a = load_pretrained_model(str(out))
    b = load_pretrained_model(str(tiny_original))
    assert a.kind == "original"
    assert torch.equal(logits(a, noise_image), logits(b, noise_image))
