"""Model families besides LLaVA-1.5 (llava/model/families) through the real loading and inference code:
a tiny random model of each (llava.demo.family_models), its prompt, its image inputs, batched answers,
4-bit, the terminal chat and the OpenAI API."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from testkit import ROOT
from testkit import api_server as api

FAMILIES = ["mllama", "blip2", "llava_next", "qwen2_vl"]

# What each family's prompt for one question about one image must be, exactly (the tiny models' chat
# templates are written in each family's released format; BLIP-2 has none and uses "Question: ... Answer:").
PROMPTS = {
    "mllama": "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\n<|image|>What colour is it?<|eot_id|>"
              "<|start_header_id|>assistant<|end_header_id|>\n\n",
    "blip2": "Question: What colour is it? Answer:",
    "llava_next": "<s>[INST] <image>\nWhat colour is it? [/INST]",
    "qwen2_vl": "<|im_start|>user\n<|vision_start|><|image_pad|><|vision_end|>What colour is it?<|im_end|>\n"
                "<|im_start|>assistant\n",
}
# The image tensors each family's processor must hand to generate().
IMAGE_INPUTS = {
    "mllama": {"pixel_values", "aspect_ratio_ids", "aspect_ratio_mask", "cross_attention_mask"},
    "blip2": {"pixel_values"},
    "llava_next": {"pixel_values", "image_sizes"},
    "qwen2_vl": {"pixel_values", "image_grid_thw"},
}


@pytest.fixture(scope="module")
def family_dirs(tmp_path_factory):
    from llava.demo.family_models import build  # noqa: PLC0415 - torch and transformers only when used

    root = tmp_path_factory.mktemp("families")
    return {f: build(f, root / f"tiny-{f}") for f in FAMILIES}


@pytest.fixture(scope="module")
def loaded(family_dirs):
    from llava.model.builder import load_pretrained_model  # noqa: PLC0415

    return {f: load_pretrained_model(str(d)) for f, d in family_dirs.items()}


@pytest.fixture(scope="module")
def images():
    from skimage import data  # noqa: PLC0415

    photo = Image.fromarray(data.astronaut()[40:300, :, :])
    return [photo, Image.fromarray(data.coffee()), Image.new("RGB", (20, 50), "blue")]


QUESTIONS = ["What colour is it?", "How many circles are there?", "Describe the image in one sentence please."]


def test_family_comes_from_model_type_not_the_folder_name(family_dirs, tmp_path):
    from llava.model.directories import detect  # noqa: PLC0415

    for family, path in family_dirs.items():
        renamed = shutil.copytree(path, tmp_path / f"llava-v1.5-7b-lora-{family}")  # a misleading name
        found = detect(renamed)
        assert (found.kind, found.family.name) == ("hf", family)


@pytest.mark.parametrize("family", FAMILIES)
def test_prompt_and_image_inputs_are_the_familys(loaded, images, family):
    from llava.model.inputs import build_batch, render_prompt  # noqa: PLC0415

    lm = loaded[family]
    assert lm.family.name == family
    prompt = render_prompt(lm, "What colour is it?", True)
    print(family, repr(prompt))
    assert prompt == PROMPTS[family]
    batch = build_batch(lm, [prompt, render_prompt(lm, "Hi?", True)], images[:2])
    assert IMAGE_INPUTS[family] <= set(batch)
    ids = batch["input_ids"]
    # padded on the left of the text (BLIP-2's processor puts its query tokens before the padding)
    assert (batch["attention_mask"] == 0).any() and batch["attention_mask"][:, -1].all()
    image_tokens = (ids == lm.image_token_id).sum(1)
    if family == "blip2":  # the processor puts the Q-Former's query tokens in front
        assert image_tokens.tolist() == [lm.model.config.num_query_tokens] * 2
    elif family == "mllama":  # one <|image|>; the image enters through cross-attention
        assert image_tokens.tolist() == [1, 1]
    else:  # expanded to the image's own token count, which depends on its size
        assert (image_tokens > 1).all()


@pytest.mark.parametrize("family", FAMILIES)
def test_batched_answers_equal_one_at_a_time(loaded, images, family):
    from llava.model.inputs import generate  # noqa: PLC0415

    lm = loaded[family]
    batched = generate(lm, QUESTIONS, images, max_new_tokens=6)
    single = [generate(lm, [q], [im], max_new_tokens=6)[0] for q, im in zip(QUESTIONS, images)]
    assert batched == single
    assert len(set(batched)) > 1  # different images and questions, different answers: the inputs reach the model


@pytest.mark.parametrize("family", FAMILIES)
def test_4bit_loads_and_generates_with_the_vision_side_in_full_precision(family_dirs, images, family):
    from llava.model.builder import load_pretrained_model  # noqa: PLC0415
    from llava.model.inputs import generate  # noqa: PLC0415

    lm = load_pretrained_model(str(family_dirs[family]), load_4bit=True)
    quantized = [n for n, m in lm.model.named_modules() if type(m).__name__ == "Linear4bit"]
    assert quantized
    assert not [n for n in quantized if any(n.startswith(p) for p in lm.family.full_precision)]
    assert all(n.startswith(lm.family.language_model) for n in quantized)
    answers = generate(lm, QUESTIONS[:2], images[:2], max_new_tokens=4)
    assert all(isinstance(a, str) for a in answers) and len(answers) == 2


@pytest.mark.bad_input
def test_blip2_refuses_what_it_cannot_do(loaded):
    from llava.model.families import FamilyError  # noqa: PLC0415
    from llava.model.inputs import render_prompt  # noqa: PLC0415

    lm = loaded["blip2"]
    with pytest.raises(FamilyError, match="answers about an image"):
        render_prompt(lm, "Hello?", has_image=False)
    with pytest.raises(FamilyError, match="no system prompt"):
        render_prompt(lm, "Hello?", has_image=True, system="Be brief.")
    assert render_prompt(lm, "", True) == ""  # a caption: no prompt at all
    from llava.model.inputs import check_image_count, prompt_ids  # noqa: PLC0415

    typed = render_prompt(lm, "What is <image> here?", True)  # BLIP-2's own image token, typed in
    with pytest.raises(ValueError, match="typed into the text"):
        check_image_count(lm, prompt_ids(lm, typed), True)
    assert render_prompt(lm, "And now?", True, history=[("What is it?", "a cat")]) == \
        "Question: What is it? Answer: a cat Question: And now? Answer:"


def _run_vqa(model: Path, folder: Path, answers: Path, batch_size: int) -> dict:
    from llava.eval import model_vqa  # noqa: PLC0415

    model_vqa.main(["--model-path", str(model), "--question-file", str(folder / "q.jsonl"), "--image-folder",
                    str(folder / "img"), "--answers-file", str(answers), "--batch-size", str(batch_size),
                    "--max-new-tokens", "5", "--no-progress"])
    return {r["question_id"]: r["text"] for r in map(json.loads, answers.read_text().splitlines())}


@pytest.fixture(scope="module")
def question_folder(tmp_path_factory, images):
    folder = tmp_path_factory.mktemp("vqa")
    (folder / "img").mkdir()
    for i, im in enumerate(images):
        im.save(folder / "img" / f"{i}.png")
    (folder / "img" / "broken.png").write_bytes(b"not an image")
    rows = [{"question_id": i, "image": f"{i % 3}.png", "text": q} for i, q in enumerate(QUESTIONS * 2)]
    rows += [{"question_id": "text-only", "text": "Is water wet?"},
             {"question_id": "broken", "image": "broken.png", "text": "What colour is it?"}]
    (folder / "q.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return folder


@pytest.mark.parametrize("family", FAMILIES)
def test_batch_inference_answers_each_question_as_one_at_a_time(family_dirs, question_folder, tmp_path, family):
    batched = _run_vqa(family_dirs[family], question_folder, tmp_path / "batched.jsonl", 4)
    single = _run_vqa(family_dirs[family], question_folder, tmp_path / "single.jsonl", 1)
    assert batched == single
    errors = {r["question_id"]: r["error"] for r in
              map(json.loads, (tmp_path / "batched.errors.jsonl").read_text().splitlines())}
    assert "cannot read image" in errors.pop("broken")
    if family == "blip2":
        assert "answers about an image" in errors.pop("text-only")
    else:
        assert "text-only" in batched
    assert not errors
    assert sorted(k for k in batched if k != "text-only") == list(range(6))


def test_terminal_chat_in_4bit(family_dirs, question_folder):
    pexpect = pytest.importorskip("pexpect")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT), "TOKENIZERS_PARALLELISM": "false"}
    child = pexpect.spawn(sys.executable, ["-m", "llava.serve.cli", "--model-path", str(family_dirs["mllama"]),
                                           "--image-file", str(question_folder / "img" / "0.png"), "--load-4bit",
                                           "--max-new-tokens", "4", "--temperature", "0"],
                          cwd=str(ROOT), env=env, encoding="utf-8", timeout=120)
    child.expect("ready: an image; (\\d+) bitsandbytes-quantized layers")
    assert int(child.match.group(1)) > 0
    for question in ("What colour is it?", "And the background?"):  # two turns: the history is rendered too
        child.expect_exact("USER: ")
        child.sendline(question)
        child.expect_exact("ASSISTANT: ")
    child.expect_exact("USER: ")
    child.sendline("\\exit")
    child.expect(pexpect.EOF)


@pytest.mark.bad_input
def test_conv_mode_is_refused_for_a_family_with_its_own_template(family_dirs, question_folder, tmp_path):
    result = subprocess.run([sys.executable, "-m", "llava.eval.model_vqa", "--model-path",
                             str(family_dirs["qwen2_vl"]), "--question-file", str(question_folder / "q.jsonl"),
                             "--image-folder", str(question_folder / "img"), "--answers-file",
                             str(tmp_path / "a.jsonl"), "--conv-mode", "vicuna_v1"],
                            cwd=ROOT, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert result.returncode != 0
    assert "--conv-mode vicuna_v1" in result.stderr and "Qwen2-VL" in result.stderr


@pytest.mark.slow
def test_openai_api_answers_the_real_client(family_dirs, tmp_path, images):
    import base64  # noqa: PLC0415

    import openai  # noqa: PLC0415

    from llava.model.builder import load_pretrained_model  # noqa: PLC0415
    from llava.serve.chat import ChatSession  # noqa: PLC0415

    image = images[0]
    url = "data:image/png;base64," + base64.b64encode(api.png_bytes(image)).decode()
    for family in ("mllama", "blip2"):
        server = api.launch(family_dirs[family], tmp_path / f"{family}.log", "--api-key", api.KEY)
        try:
            api.wait_ready(server)
            client = server.client()
            content = [{"type": "text", "text": "What colour is it?"}, {"type": "image_url", "image_url": {"url": url}}]
            reply = client.chat.completions.create(model=family_dirs[family].name, max_tokens=5, temperature=0,
                                                   messages=[{"role": "user", "content": content}])
            chat = ChatSession(load_pretrained_model(str(family_dirs[family])), image=image, temperature=0,
                               max_new_tokens=5)
            "".join(chat.ask("What colour is it?"))
            assert reply.choices[0].message.content == chat.history[-1][1]  # the answer as the session keeps it
            if family == "blip2":
                with pytest.raises(openai.BadRequestError, match="no system prompt"):
                    client.chat.completions.create(model=family_dirs[family].name, max_tokens=5, messages=[
                        {"role": "system", "content": "Be brief."}, {"role": "user", "content": content}])
        finally:
            api.stop(server)


# What training supervises for each family, exactly: the answers and each one's end-of-turn token.
CHAT = [{"from": "human", "value": "<image>\nWhat colour is it?"}, {"from": "gpt", "value": "Red"},
        {"from": "human", "value": "And the shape?"}, {"from": "gpt", "value": "A square"}]
SUPERVISED = {  # (the two-answer chat, a text-only record)
    "mllama": ["Red<|eot_id|>A square<|eot_id|>", "Yes<|eot_id|>"],
    "llava_next": [" Red</s> A square</s>", " Yes</s>"],  # Mistral's [/INST] leaves the space to the answer
    "qwen2_vl": ["Red<|im_end|>A square<|im_end|>", "Yes<|im_end|>"],  # not the "\n" after <|im_end|>
}


@pytest.mark.parametrize("family", FAMILIES)
def test_supervised_mask_covers_exactly_the_answers(loaded, question_folder, tmp_path, family):
    from llava.constants import IGNORE_INDEX  # noqa: PLC0415
    from llava.data.collate import FamilyCollator  # noqa: PLC0415
    from llava.data.dataset import LazySupervisedDataset  # noqa: PLC0415
    from llava.data.family_examples import FamilyExampleBuilder  # noqa: PLC0415

    lm = loaded[family]
    if family == "blip2":  # one question and answer per record, or a caption
        records = [{"id": "qa", "image": "0.png", "conversations": CHAT[:2]},
                   {"id": "caption", "image": "1.png", "conversations": [{"from": "human", "value": "<image>"},
                                                                         {"from": "gpt", "value": "A red square."}]}]
        expected = [" Red</s>", "A red square.</s>"]
    else:
        records = [{"id": "chat", "image": "0.png", "conversations": CHAT},
                   {"id": "text", "conversations": [{"from": "human", "value": "Is water wet?"},
                                                    {"from": "gpt", "value": "Yes"}]}]
        expected = SUPERVISED[family]
    data = tmp_path / "train.json"
    data.write_text(json.dumps(records))
    builder = FamilyExampleBuilder(lm.family, lm.processor, lm.image_token_id)
    dataset = LazySupervisedDataset(data, image_folder=question_folder / "img", tokenizer=lm.tokenizer,
                                    image_processor=None, template="vicuna_v1", image_token_id=lm.image_token_id,
                                    num_image_tokens=0, model_max_length=None, builder=builder)
    batch = FamilyCollator(lm.family, lm.processor, lm.image_token_id)([dataset[0], dataset[1]])
    for row, want in enumerate(expected):
        labels = batch["labels"][row]
        kept = labels != IGNORE_INDEX
        print(family, records[row]["id"], "supervised:", repr(lm.tokenizer.decode(labels[kept])))
        assert lm.tokenizer.decode(labels[kept]) == want
        assert (labels[kept] == batch["input_ids"][row][kept]).all()  # labels are the tokens themselves
        assert not (batch["input_ids"][row][kept] == lm.image_token_id).any()
    assert (batch["input_ids"] == lm.image_token_id).any()  # the image placeholder was expanded and kept


@pytest.mark.bad_input
def test_a_record_the_family_cannot_train_on_is_named(loaded, tmp_path, question_folder):
    from llava.data.dataset import DatasetError, LazySupervisedDataset  # noqa: PLC0415
    from llava.data.family_examples import FamilyExampleBuilder  # noqa: PLC0415

    lm = loaded["blip2"]
    data = tmp_path / "train.json"
    data.write_text(json.dumps([{"id": "two-turns", "image": "0.png", "conversations": CHAT},
                                {"id": "no-image", "conversations": [{"from": "human", "value": "Is water wet?"},
                                                                     {"from": "gpt", "value": "Yes"}]}]))
    builder = FamilyExampleBuilder(lm.family, lm.processor, lm.image_token_id)
    with pytest.raises(DatasetError) as err:
        LazySupervisedDataset(data, image_folder=question_folder / "img", tokenizer=lm.tokenizer,
                              image_processor=None, template="vicuna_v1", image_token_id=lm.image_token_id,
                              num_image_tokens=0, model_max_length=None, builder=builder)
    assert "'two-turns'" in str(err.value) and "one question" in str(err.value)
    assert "'no-image'" in str(err.value) and "image records only" in str(err.value)


def test_tag_rating_and_labeling_run_on_other_families(family_dirs, question_folder, tmp_path):
    """The tasks through their real entry points: BLIP-2 rates (its random answers never parse, so each pair
    goes through constrained decoding, whose batch BLIP-2's processor pads after its query tokens), Qwen2-VL
    labels a folder."""
    import csv  # noqa: PLC0415

    from llava.tasks import labeling, tag_rating  # noqa: PLC0415

    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text("".join(json.dumps({"id": f"p{i}", "image": f"{i}.png", "tag": tag}) + "\n"
                             for i, tag in enumerate(["astronaut", "coffee", "blue square"])))
    tag_rating.main(["--model-path", str(family_dirs["blip2"]), "--input", str(pairs), "--image-folder",
                     str(question_folder / "img"), "--output", str(tmp_path / "ratings.jsonl"), "--max-new-tokens", "6",
                     "--no-progress"])
    ratings = [json.loads(line) for line in (tmp_path / "ratings.jsonl").read_text().splitlines()]
    assert sorted(r["question_id"] for r in ratings) == ["p0", "p1", "p2"]
    assert all(r["score"] in range(6) and r["flagged"] for r in ratings)

    images = tmp_path / "images"
    images.mkdir()
    for name in ("0.png", "1.png"):
        (images / name).write_bytes((question_folder / "img" / name).read_bytes())
    cats = tmp_path / "cats.txt"
    cats.write_text("person\nfood\nanimal\n")
    labeling.main(["--model-path", str(family_dirs["qwen2_vl"]), "--images", str(images), "--categories", str(cats),
                   "--output", str(tmp_path / "labels.csv"), "--max-new-tokens", "6", "--no-progress"])
    with open(tmp_path / "labels.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert sorted(r["image"] for r in rows) == ["0.png", "1.png"]
    assert all(r["category"] in ("person", "food", "animal") for r in rows)


@pytest.mark.bad_input
def test_preprocessing_refuses_options_the_family_cannot_train_on(tmp_path):
    result = subprocess.run([sys.executable, "scripts/task_data_preprocessing.py", "--input", str(tmp_path / "t.csv"),
                             "--image-folder", str(tmp_path), "--output-dir", str(tmp_path / "out"),
                             "--model-family", "blip2", "--turns-per-image", "3"],
                            cwd=ROOT, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert result.returncode == 2
    assert "--turns-per-image 3: BLIP-2" in result.stderr and not (tmp_path / "out").exists()


def test_blip2_beam_search_batched_as_one_at_a_time(family_dirs, question_folder, tmp_path):
    """Captioning's decoding (beam search 5, as the captioning system our users come from) on BLIP-2."""
    from llava.eval import model_vqa  # noqa: PLC0415

    def answers(batch_size: int) -> dict:
        out = tmp_path / f"beam{batch_size}.jsonl"
        model_vqa.main(["--model-path", str(family_dirs["blip2"]), "--question-file", str(question_folder / "q.jsonl"),
                        "--image-folder", str(question_folder / "img"), "--answers-file", str(out),
                        "--batch-size", str(batch_size), "--max-new-tokens", "6", "--num-beams", "5",
                        "--no-progress"])
        return {r["question_id"]: r["text"] for r in map(json.loads, out.read_text().splitlines())}

    batched = answers(4)
    assert batched == answers(1) and len(batched) == 6


@pytest.mark.bad_input
def test_a_model_type_of_no_family_is_refused_naming_the_families(tmp_path):
    from llava.model.builder import load_pretrained_model  # noqa: PLC0415
    from llava.model.errors import ModelLoadError  # noqa: PLC0415

    (tmp_path / "config.json").write_text(json.dumps({"model_type": "idefics3", "text_config": {},
                                                      "vision_config": {}}))
    with pytest.raises(ModelLoadError, match="model_type 'idefics3' is not a family") as err:
        load_pretrained_model(str(tmp_path))
    assert "Llama-3.2-Vision (mllama)" in str(err.value) and "BLIP-2 (blip-2)" in str(err.value)
