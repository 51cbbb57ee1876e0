"""Model directories that cannot be loaded, and merge / convert pointed at the wrong paths.

Loading raises one type, ModelLoadError, whose message names the file at fault; merge and convert turn
it into one line and exit non-zero, and refuse before any work a save path that is one of their
inputs, so a model is never overwritten by a failed or misdirected run."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import shutil
import sys
from pathlib import Path

import pytest

from llava.model.builder import load_pretrained_model
from llava.model.convert import main
from llava.model.errors import ModelLoadError

ROOT = Path(__file__).resolve().parents[1]


def digest(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir()) if p.is_file()}


# ---- the builder: every kind of directory ---------------------------------------------------------

def _break_hf(model: Path, case: str) -> str:
    """Damage a copy of the tiny HF directory; returns what the message must contain."""
    weights, config = model / "model.safetensors", model / "config.json"
    if case == "safetensors-header-too-large":
        weights.write_bytes(b"\xff" * 64)  # the first 8 bytes are the header's length: far too large
        return f"{weights}: not a readable safetensors file (Error while deserializing header: header too large)"
    if case == "safetensors-truncated":
        data = weights.read_bytes()
        weights.write_bytes(data[: len(data) // 2])
        return f"{weights}: not a readable safetensors file"
    if case == "config-json-array":
        config.write_text("[1, 2]")
        return f"{config}: expected a JSON object {{...}}, got a JSON array"
    if case == "config-invalid-json":
        config.write_text('{"model_type": "llava",')
        return f"{config}: not valid JSON"
    if case == "config-empty":
        config.write_text("")
        return f"{config}: empty file"
    if case == "config-not-utf8":
        config.write_bytes(b'{"model_type": "llava\xff"}')
        return f"{config}: not UTF-8 text (byte 0xff"
    if case == "config-is-a-directory":
        config.unlink()
        config.mkdir()
        return f"{config}: not a file"
    if case == "config-missing":
        config.unlink()
        return f"{config}: missing"
    if case == "no-weights":
        weights.unlink()
        return f"{model}: no weights found"
    raise AssertionError(case)


HF_CASES = ["safetensors-header-too-large", "safetensors-truncated", "config-json-array", "config-invalid-json",
            "config-empty", "config-not-utf8", "config-is-a-directory", "config-missing", "no-weights"]


@pytest.mark.bad_input
@pytest.mark.parametrize("case", HF_CASES)
def test_a_damaged_model_directory_is_named(tiny_hf, tmp_path, case):
    model = tmp_path / "model"
    shutil.copytree(tiny_hf, model)
    expected = _break_hf(model, case)
    with pytest.raises(ModelLoadError) as info:
        load_pretrained_model(str(model))
    assert expected in str(info.value)


@pytest.mark.bad_input
@pytest.mark.parametrize("case", ["missing", "a-file"])
def test_a_model_path_that_is_not_a_directory(tiny_hf, case):
    path = str(tiny_hf / "nowhere") if case == "missing" else str(tiny_hf / "config.json")
    with pytest.raises(ModelLoadError, match="no such model directory" if case == "missing" else
                       "a file, not a model directory"):
        load_pretrained_model(path)


@pytest.mark.bad_input
@pytest.mark.parametrize("case", ["bin-shard-damaged", "index-names-a-missing-shard", "index-invalid-json"])
def test_a_damaged_original_checkpoint_is_named(tiny_original, tmp_path, case):
    model = tmp_path / "orig"
    shutil.copytree(tiny_original, model)
    index = model / "pytorch_model.bin.index.json"
    shard = model / sorted(set(json.loads(index.read_text())["weight_map"].values()))[0]
    if case == "bin-shard-damaged":
        shard.write_bytes(shard.read_bytes()[:1000])
        expected = f"{shard}: cannot read weights"
    elif case == "index-names-a-missing-shard":
        shard.unlink()
        expected = f"{index} names shards that are not there: {shard.name}"
    else:
        index.write_text("{")
        expected = f"{index}: not valid JSON"
    with pytest.raises(ModelLoadError) as info:
        load_pretrained_model(str(model))
    assert expected in str(info.value)


@pytest.mark.bad_input
@pytest.mark.parametrize("case", ["adapter-weights-damaged", "adapter-config-invalid", "non-lora-damaged",
                                  "base-missing", "base-is-a-lora-dir", "base-without-config"])
def test_a_damaged_lora_run_or_wrong_base_is_named(lora_run, tiny_hf, tmp_path, case):
    lora = tmp_path / "run"
    shutil.copytree(lora_run[0], lora)
    base = str(tiny_hf)
    if case == "adapter-weights-damaged":
        (lora / "adapter_model.safetensors").write_bytes(b"\x08\0\0\0\0\0\0\0{}garbage")
        expected = f"{lora}/adapter_model.safetensors: cannot read weights"
    elif case == "adapter-config-invalid":
        (lora / "adapter_config.json").write_text('{"r": 4,')
        expected = f"{lora}/adapter_config.json: not valid JSON"
    elif case == "non-lora-damaged":
        (lora / "non_lora_trainables.safetensors").write_bytes(b"PK\x03\x04")
        expected = f"{lora}/non_lora_trainables.safetensors: cannot read weights"
    elif case == "base-missing":
        base = str(tmp_path / "no-base")
        expected = f"--model-base {base}: no such model directory"
    elif case == "base-is-a-lora-dir":
        base = str(lora_run[0])
        expected = f"--model-base {base}: a LoRA output directory itself"
    else:
        (tmp_path / "empty").mkdir()
        base = str(tmp_path / "empty")
        expected = f"{base}/config.json: missing"
    with pytest.raises(ModelLoadError) as info:
        load_pretrained_model(str(lora), base)
    assert expected in str(info.value)


# ---- merge_lora_weights.py ------------------------------------------------------------------------

def merge_main():
    spec = importlib.util.spec_from_file_location("merge_lora_weights", ROOT / "scripts" / "merge_lora_weights.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main


MERGE_CASES = ["base-missing", "base-not-a-model", "base-is-the-lora-dir", "save-path-is-a-file",
               "save-path-under-a-file", "save-path-is-model-path", "save-path-is-model-base",
               "save-path-is-the-adapters-own-base", "model-path-missing", "adapter-damaged"]


@pytest.mark.bad_input
@pytest.mark.parametrize("case", MERGE_CASES)
def test_merge_refuses_with_one_line(run_main, lora_run, tiny_hf, tmp_path, case):
    lora, base, out = tmp_path / "run", tmp_path / "base", tmp_path / "merged"
    shutil.copytree(lora_run[0], lora)
    shutil.copytree(tiny_hf, base)
    args = {"--model-path": lora, "--model-base": base, "--save-model-path": out}
    if case == "base-missing":
        args["--model-base"] = tmp_path / "nope"
        expected = f"--model-base {tmp_path / 'nope'}: no such model directory"
    elif case == "base-not-a-model":
        (tmp_path / "notes").mkdir()
        (tmp_path / "notes" / "readme.txt").write_text("hello")
        args["--model-base"] = tmp_path / "notes"
        expected = f"{tmp_path / 'notes'}/config.json: missing"
    elif case == "base-is-the-lora-dir":
        args["--model-base"] = shutil.copytree(lora_run[0], tmp_path / "other-run")
        expected = "a LoRA output directory itself"
    elif case == "save-path-is-a-file":
        out.write_text("notes")
        expected = f"--save-model-path {out}: a file, not a directory"
    elif case == "save-path-under-a-file":
        (tmp_path / "f").write_text("x")
        args["--save-model-path"] = out = tmp_path / "f" / "merged"
        expected = f"{tmp_path / 'f'} is a file, not a directory"
    elif case == "save-path-is-model-path":
        args["--save-model-path"] = out = lora
        expected = f"--save-model-path {lora} is the same file as --model-path"
    elif case == "save-path-is-model-base":
        args["--save-model-path"] = out = Path(str(base) + "/")  # spelled differently, the same folder
        expected = "is the same file as --model-base"
    elif case == "save-path-is-the-adapters-own-base":
        cfg = json.loads((lora / "adapter_config.json").read_text())
        cfg["base_model_name_or_path"] = str(base)
        (lora / "adapter_config.json").write_text(json.dumps(cfg))
        del args["--model-base"]
        args["--save-model-path"] = out = base
        expected = "is the same file as --model-base"
    elif case == "model-path-missing":
        args["--model-path"] = tmp_path / "gone"
        expected = f"--model-path {tmp_path / 'gone'}: no such directory"
    else:
        (lora / "adapter_model.safetensors").write_bytes(b"\xff" * 64)
        expected = f"{lora}/adapter_model.safetensors: cannot read weights"
    before = {d: digest(d) for d in (lora, base)}
    result = run_main(merge_main(), [x for kv in args.items() for x in kv])
    assert result.code != 0 and expected in result.err, result
    assert {d: digest(d) for d in (lora, base)} == before  # the inputs are untouched
    if case not in ("save-path-is-model-path", "save-path-is-model-base", "save-path-is-the-adapters-own-base",
                    "save-path-is-a-file"):
        assert not out.exists()


# ---- convert_llava_to_hf.py (llava.model.convert) -------------------------------------------------

@pytest.mark.bad_input
@pytest.mark.parametrize("case", ["output-is-the-input", "output-is-a-file", "input-is-already-hf",
                                  "input-is-a-lora-dir", "input-missing", "input-config-array"])
def test_convert_refuses_with_one_line(run_main, tiny_original, tiny_hf, lora_run, tmp_path, case):
    orig, out = tmp_path / "orig", tmp_path / "out"
    shutil.copytree(tiny_original, orig)
    args = {"--model-path": orig, "--output-dir": out}
    if case == "output-is-the-input":
        args["--output-dir"] = out = Path(f"{tmp_path}/./orig")
        expected = "is the same file as --model-path"
    elif case == "output-is-a-file":
        out.write_text("x")
        expected = f"--output-dir {out}: a file, not a directory"
    elif case == "input-is-already-hf":
        args["--model-path"] = tiny_hf
        expected = f"{tiny_hf}/config.json: not an original LLaVA checkpoint (a transformers llava directory already"
    elif case == "input-is-a-lora-dir":
        args["--model-path"] = lora_run[0]
        expected = f"{lora_run[0]}/config.json: not an original LLaVA checkpoint (a LoRA output directory: merge it"
    elif case == "input-missing":
        args["--model-path"] = tmp_path / "nope"
        expected = f"{tmp_path / 'nope'}/config.json: missing"
    else:
        (orig / "config.json").write_text("[]")
        expected = f"{orig}/config.json: expected a JSON object"
    before = digest(orig)
    result = run_main(main, [x for kv in args.items() for x in kv])
    assert result.code != 0 and expected in result.err, result
    assert digest(orig) == before
    if case != "output-is-the-input":
        assert not out.is_dir()


@pytest.mark.slow
@pytest.mark.bad_input
@pytest.mark.parametrize("entry", ["llava.serve.openai_api", "llava.serve.web", "llava.eval.model_vqa"])
def test_servers_and_batch_runs_name_a_damaged_model_in_one_line(tiny_hf, tmp_path, run_process, entry):
    model = tmp_path / "model"
    shutil.copytree(tiny_hf, model)
    (model / "config.json").write_text("[1, 2]")
    extra = []
    if entry == "llava.eval.model_vqa":
        (tmp_path / "q.jsonl").write_text('{"question_id": "q1", "text": "Hi?"}\n')
        extra = ["--question-file", tmp_path / "q.jsonl", "--answers-file", tmp_path / "a.jsonl"]

    r = run_process([sys.executable, "-m", entry, "--model-path", model, *extra], timeout=300)
    assert r.code == 1, r
    assert f"{model / 'config.json'}: expected a JSON object" in r.err, r
