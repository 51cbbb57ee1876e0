"""The original LLaVA's names, as its scripts call them: `python -m llava.eval.model_vqa_loader` with its
flags, `get_model_name_from_path`, `tokenizer_image_token(..., return_tensors="pt")`, `conv_templates`
(issue 21)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import AutoTokenizer

from llava.conversation import VICUNA_SYSTEM, SeparatorStyle, conv_templates, default_conversation, get_template
from llava.eval.model_vqa import main as model_vqa
from llava.eval.run_llava import eval_model
from llava.eval.run_llava import main as run_llava_main
from llava.image_decode import load_image
from llava.mm_utils import get_model_name_from_path, process_images, tokenizer_image_token
from llava.model.inputs import build_batch, generate, generate_batch

ROOT = Path(__file__).resolve().parents[1]


def answers(path: Path) -> dict:
    return {r["question_id"]: r for r in map(json.loads, path.read_text().splitlines())}


@pytest.mark.slow
def test_model_vqa_loader_with_the_original_flags_answers_as_model_vqa(tmp_path, tiny_hf):
    rng = np.random.RandomState(1)
    (tmp_path / "images").mkdir()
    for i in range(3):
        Image.fromarray(rng.randint(0, 255, (24 + 4 * i, 32, 3)).astype("uint8")).save(tmp_path / f"images/{i}.jpg")
    questions = tmp_path / "llava-bench.jsonl"
    questions.write_text("".join(json.dumps({"question_id": n, "image": f"{n % 3}.jpg", "text": text,
                                             "category": "conv"}) + "\n"
                                 for n, text in enumerate(["What is in the image?", "Describe the colours.",
                                                           "Is there a person?", "What is on the left?"])))
    # As the original's scripts/v1_5/eval/*.sh call it (underscore spellings and all).
    original = tmp_path / "original.jsonl"
    proc = subprocess.run(
        [sys.executable, "-m", "llava.eval.model_vqa_loader", "--model-path", str(tiny_hf), "--question-file",
         str(questions), "--image-folder", str(tmp_path / "images"), "--answers-file", str(original),
         "--temperature", "0", "--conv-mode", "vicuna_v1", "--max_new_tokens", "6", "--num_beams", "1",
         "--top_p", "0.9", "--num-chunks", "1", "--chunk-idx", "0"],
        cwd=ROOT, env={**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}, capture_output=True,
        text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ours = tmp_path / "ours.jsonl"
    model_vqa(["--model-path", str(tiny_hf), "--question-file", str(questions), "--image-folder",
               str(tmp_path / "images"), "--answers-file", str(ours), "--max-new-tokens", "6", "--no-progress",
               "--num-workers", "0"])
    a, b = answers(original), answers(ours)
    # An integer id stays an integer, as the original writes it (VQAv2's submission converters need ints).
    assert sorted(a) == sorted(b) == [0, 1, 2, 3]
    assert {q: r["text"] for q, r in a.items()} == {q: r["text"] for q, r in b.items()}
    assert all(set(r) == {"question_id", "prompt", "text", "answer_id", "model_id", "metadata"} for r in a.values())
    # Resuming over integer ids answers nothing twice.
    again = model_vqa(["--model-path", str(tiny_hf), "--question-file", str(questions), "--image-folder",
                       str(tmp_path / "images"), "--answers-file", str(original), "--max-new-tokens", "6",
                       "--no-progress", "--num-workers", "0"])
    assert again["answered"] == 0 and len(original.read_text().splitlines()) == 4
    assert a[1]["prompt"] == "Describe the colours." and a[1]["model_id"] == Path(tiny_hf).name


@pytest.mark.parametrize("path, name", [
    ("liuhaotian/llava-v1.5-7b", "llava-v1.5-7b"),
    ("checkpoints/llava-v1.5-13b-task-lora/", "llava-v1.5-13b-task-lora"),
    ("/runs/llava-v1.5-7b-task/checkpoint-500", "llava-v1.5-7b-task_checkpoint-500"),
    ("checkpoint-500", "checkpoint-500"),
])
def test_get_model_name_from_path_names_models_as_the_original_does(path, name):
    # The original's builder looked for "lora" and "llava" in this name; scripts still pass it.
    assert get_model_name_from_path(path) == name


def test_tokenizer_image_token_returns_a_tensor_when_asked(tiny_hf):
    tok = AutoTokenizer.from_pretrained(tiny_hf)
    prompt = "USER: <image>\nWhat is it? ASSISTANT:"
    ids = tokenizer_image_token(prompt, tok)
    tensor = tokenizer_image_token(prompt, tok, return_tensors="pt")
    assert isinstance(ids, list) and tensor.dtype == torch.long and tensor.tolist() == ids
    assert tensor.unsqueeze(0).shape == (1, len(ids))
    with pytest.raises(ValueError, match="only None or 'pt'"):
        tokenizer_image_token(prompt, tok, return_tensors="np")


def test_conv_templates_build_the_prompt_the_original_builds():
    conv = conv_templates["vicuna_v1"].copy()
    conv.append_message(conv.roles[0], "<image>\nWhat colour is the square?")
    conv.append_message(conv.roles[1], "Red")
    conv.append_message(conv.roles[0], "And the circle?")
    conv.append_message(conv.roles[1], None)
    # The original's SeparatorStyle.TWO: system, sep " ", "USER: ...", sep2 "</s>" after each answer.
    assert conv.get_prompt() == (VICUNA_SYSTEM + " USER: <image>\nWhat colour is the square? ASSISTANT: Red</s>"
                                 "USER: And the circle? ASSISTANT:")
    assert conv.sep_style == SeparatorStyle.TWO and (conv.sep, conv.sep2) == (" ", "</s>")
    assert conv_templates["vicuna_v1"].messages == []  # copy() left the template alone
    one = conv_templates["llava_v1"].copy()
    one.append_message(one.roles[0], ("<image>\nWhat is it?", "an image object", "Pad"))  # the web demo's tuple
    one.append_message(one.roles[1], None)
    assert one.get_prompt() == get_template("llava_v1").prompt("<image>\nWhat is it?")
    assert default_conversation.version == "vicuna_v1" and conv_templates["v1"].version == "vicuna_v1"
    bad = conv_templates["vicuna_v1"].copy()
    bad.append_message(bad.roles[0], None)
    bad.append_message(bad.roles[1], "Red")
    with pytest.raises(ValueError, match="only the last message may be"):
        bad.get_prompt()


@pytest.fixture(scope="module")
def photo_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("run_llava") / "photo.png"
    Image.fromarray(np.random.RandomState(2).randint(0, 255, (40, 56, 3)).astype("uint8")).save(path)
    return path


def test_eval_model_as_the_original_readme_calls_it(tiny_hf, tiny_loaded, photo_path, capsys):
    model_path = str(tiny_hf)
    # The original README's snippet, word for word but for the paths.
    args = type("Args", (), {
        "model_path": model_path, "model_base": None, "model_name": get_model_name_from_path(model_path),
        "query": "What is shown?", "conv_mode": None, "image_file": str(photo_path), "sep": ",",
        "temperature": 0, "top_p": None, "num_beams": 1, "max_new_tokens": 8})()
    answer = eval_model(args)
    assert answer == generate(tiny_loaded, ["What is shown?"], [load_image(photo_path)], max_new_tokens=8)[0]
    assert capsys.readouterr().out == answer + "\n"
    # <image-placeholder> puts the image where it stands (else it goes first).
    args.query = "Look: <image-placeholder> What is shown?"
    placed = eval_model(args)
    prompt = get_template("vicuna_v1").prompt("Look: <image> What is shown?", eos_token=tiny_loaded.tokenizer.eos_token)
    texts, _ = generate_batch(tiny_loaded, build_batch(tiny_loaded, [prompt], [load_image(photo_path)]),
                              max_new_tokens=8)
    assert placed == texts[0]


@pytest.mark.bad_input
@pytest.mark.parametrize("image_files, code, says", [
    (["missing.png"], 1, "no such file"),
    (["a.png", "b.png"], 2, "names 2 images"),
])
def test_run_llava_refuses_a_missing_or_second_image_in_one_line(tiny_hf, tmp_path, run_main, image_files, code,
                                                                  says):
    image_file = ",".join(str(tmp_path / name) for name in image_files)
    result = run_main(run_llava_main, ["--model-path", tiny_hf, "--image-file", image_file, "--query", "What?"],
                      expect_code=code)
    assert says in result.err


def test_process_images_gives_the_pixels_the_model_is_given(tiny_loaded, photo_path):
    image = load_image(photo_path)
    pixels = process_images([image], tiny_loaded.image_processor, tiny_loaded.model.config)
    prompt = get_template("vicuna_v1").prompt("<image>\nWhat?", eos_token=tiny_loaded.tokenizer.eos_token)
    batch = build_batch(tiny_loaded, [prompt], [image])
    assert pixels.shape[:2] == (1, 3) and torch.equal(pixels.to(batch["pixel_values"].dtype),
                                                          batch["pixel_values"])


def test_load_pretrained_model_takes_the_originals_positional_order(tiny_hf):
    from llava.model.builder import load_pretrained_model  # noqa: PLC0415

    path = str(tiny_hf)
    # (model_path, model_base, model_name, load_8bit, load_4bit, device_map, device, use_flash_attn)
    tokenizer, model, image_processor, context_len = load_pretrained_model(
        path, None, get_model_name_from_path(path), False, False, "auto", "cpu", True)
    assert model.device.type == "cpu" and context_len > 0 and image_processor is not None
    _, model, _, _ = load_pretrained_model(path, None, None, device_map={"": "cpu"}, torch_dtype=torch.float32)
    assert model.device.type == "cpu" and model.dtype == torch.float32
    with pytest.raises(ValueError, match="one device only"):
        load_pretrained_model(path, device_map={"model": "cpu", "lm_head": "cuda:0"})


def test_keywords_stopping_criteria_stops_each_row_at_its_keyword(tiny_loaded, photo_path):
    from llava.mm_utils import KeywordsStoppingCriteria  # noqa: PLC0415 - built when first asked for

    image = load_image(photo_path)
    prompt = get_template("vicuna_v1").prompt("<image>\nWhat is it?", eos_token=tiny_loaded.tokenizer.eos_token)
    batch = build_batch(tiny_loaded, [prompt], [image])
    tok = tiny_loaded.tokenizer
    free = tiny_loaded.model.generate(**batch, max_new_tokens=8, do_sample=False, min_new_tokens=8)
    new = free[0, batch["input_ids"].shape[1]:].tolist()
    keyword = tok.decode(new[:3], skip_special_tokens=True).strip().split()[-1]  # a word it says early on
    stop = KeywordsStoppingCriteria([keyword], tok, batch["input_ids"])
    cut = tiny_loaded.model.generate(**batch, max_new_tokens=8, do_sample=False, min_new_tokens=8,
                                     stopping_criteria=[stop])
    said = tok.decode(cut[0, batch["input_ids"].shape[1]:], skip_special_tokens=True)
    assert keyword in said and cut.shape[1] < free.shape[1]  # stopped once the keyword was out, not at 8


def test_single_pred_prompt_appends_the_originals_multiple_choice_line(tiny_hf, photo_path, tmp_path):
    questions = tmp_path / "q.jsonl"
    row = {"question_id": 1, "image": photo_path.name, "text": "Which? A. red B. blue"}
    questions.write_text(json.dumps(row) + "\n")
    out = tmp_path / "a.jsonl"
    model_vqa(["--model-path", str(tiny_hf), "--question-file", str(questions), "--image-folder",
               str(photo_path.parent), "--answers-file", str(out), "--max-new-tokens", "2", "--no-progress",
               "--single-pred-prompt"])
    assert answers(out)[1]["prompt"] == ("Which? A. red B. blue\n"
                                         "Answer with the option's letter from the given choices directly.")


@pytest.mark.bad_input
def test_a_hub_id_is_looked_up_unless_the_caller_sets_offline(tmp_path, photo_path):
    """inference.sh does not force offline mode: without HF_HUB_OFFLINE it goes to the hub (here an endpoint
    that refuses connections: this machine has no hub); with it, the error says so and names the model."""
    questions = tmp_path / "q.jsonl"
    questions.write_text(json.dumps({"question_id": 1, "image": photo_path.name, "text": "What?"}) + "\n")
    flags = ["--model-path", "someorg/some-model", "--question-file", str(questions), "--image-folder",
             str(photo_path.parent), "--answers-file", str(tmp_path / "a.jsonl")]
    env = {k: v for k, v in os.environ.items() if k != "HF_HUB_OFFLINE"}
    env.update(HF_ENDPOINT="http://127.0.0.1:9", PYTHON=sys.executable)
    online = subprocess.run(["bash", "inference.sh", *flags], cwd=ROOT, env=env, capture_output=True, text=True,
                            timeout=300)
    assert online.returncode != 0 and "Connection refused" in online.stderr, online.stderr[-2000:]
    offline = subprocess.run(["bash", "inference.sh", *flags], cwd=ROOT, env={**env, "HF_HUB_OFFLINE": "1"},
                             capture_output=True, text=True, timeout=300)
    assert offline.returncode != 0
    assert "HF_HUB_OFFLINE is set while someorg/some-model is not in the Hugging Face cache" in offline.stderr


def test_train_mem_is_the_originals_name_for_train(tmp_path):
    proc = subprocess.run([sys.executable, "llava/train/train_mem.py", "--help"], cwd=ROOT, capture_output=True,
                          text=True, timeout=300, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "--lora_enable" in proc.stdout and "--mm_projector_type" in proc.stdout
