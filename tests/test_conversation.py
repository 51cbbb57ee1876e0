import pytest
from jinja2 import Environment

from llava.conversation import ASSISTANT, USER, first_turn_with_image, get_template

SYSTEM = (
    "A chat between a curious user and an artificial intelligence assistant. "
    "The assistant gives helpful, detailed, and polite answers to the user's questions."
)


def test_vicuna_v1_single_turn_prompt_is_llavas_byte_for_byte():
    # What the original's conv_vicuna_v1.get_prompt() returns for model_vqa.
    expected = SYSTEM + " USER: <image>\nWhat color is the ball? ASSISTANT:"
    assert get_template("vicuna_v1").prompt("<image>\nWhat color is the ball?") == expected


def test_vicuna_v1_multi_turn_and_assistant_spans():
    turns = [(USER, "<image>\nQ1"), (ASSISTANT, "A1"), (USER, "Q2"), (ASSISTANT, "A two")]
    text, spans = get_template("vicuna_v1").render(turns)
    assert text == SYSTEM + " USER: <image>\nQ1 ASSISTANT: A1</s>USER: Q2 ASSISTANT: A two</s>"
    assert [text[a:b] for a, b in spans] == ["A1</s>", "A two</s>"]


def test_eos_follows_the_tokenizer():
    text, spans = get_template("vicuna_v1").render([(USER, "q"), (ASSISTANT, "a")], eos_token="<|im_end|>")
    assert text.endswith("ASSISTANT: a<|im_end|>")
    assert text[spans[0][0]:spans[0][1]] == "a<|im_end|>"


def test_plain_template_is_image_then_caption():
    text, spans = get_template("plain").render([(USER, "<image>\nignored words"), (ASSISTANT, "a red circle")])
    assert text == "<image>a red circle\n"
    assert text[spans[0][0]:spans[0][1]] == "a red circle\n"


def test_llama3_template():
    text, spans = get_template("llava_llama_3").render([(USER, "<image>\nQ"), (ASSISTANT, "A")], system="S")
    assert text == (
        "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nS<|eot_id|>"
        "<|start_header_id|>user<|end_header_id|>\n\n<image>\nQ<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\nA<|eot_id|>"
    )
    assert text[spans[0][0]:spans[0][1]] == "A<|eot_id|>"


def test_roles_must_alternate():
    with pytest.raises(ValueError, match="turn 1 has role 'user'"):
        get_template("vicuna_v1").render([(USER, "a"), (USER, "b")])


def test_unknown_template_names_the_known_ones():
    with pytest.raises(ValueError, match="vicuna_v1"):
        get_template("vicuna_v2")


def test_aliases_of_the_original():
    assert get_template("v1").name == "vicuna_v1"


def test_image_goes_first():
    assert first_turn_with_image("What is it?\n<image>") == "<image>\nWhat is it?"


@pytest.mark.parametrize("name", ["vicuna_v1", "llava_v1", "plain", "llava_llama_3"])
def test_jinja_twin_renders_the_same(name):
    template = get_template(name)
    env = Environment()
    jinja = env.from_string(template.chat_template)
    messages = [
        {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Q1"}]},
        {"role": "assistant", "content": "A1"},
        {"role": "user", "content": [{"type": "text", "text": "Q2"}]},
    ]
    got = jinja.render(messages=messages, eos_token="</s>", add_generation_prompt=True)
    turns = [(USER, "<image>\nQ1"), (ASSISTANT, "A1"), (USER, "Q2")]
    want, _ = template.render(turns, eos_token="</s>", add_generation_prompt=True)
    assert got == want
    # A system message overrides the default system prompt in both.
    got_sys = jinja.render(messages=[{"role": "system", "content": "Be brief."}] + messages[:1],
                           eos_token="</s>", add_generation_prompt=True)
    want_sys, _ = template.render(turns[:1], eos_token="</s>", add_generation_prompt=True, system="Be brief.")
    assert got_sys == want_sys
