"""Label masks from explicit spans (llava/data/label_mask.py).

The expected supervised positions are worked out here without the module's
offset arithmetic: each supervised run of tokens is turned back into text
piece by piece (SentencePiece "▁" -> space, "<0x0A>" -> byte) and must be
exactly the answer plus its end-of-turn marker; its start must be the length
of the tokenized generation prompt for that turn and its end the length of
the tokenized text up to the end of the answer.
"""

from __future__ import annotations

import re

import pytest

from llava.constants import DEFAULT_IMAGE_TOKEN, IGNORE_INDEX
from llava.conversation import USER, get_template
from llava.data.label_mask import ExampleBuilder, OverlongError, RecordError, build_example, parse_record
from llava.mm_utils import tokenize_prompt
from llava.model.processor import load_tokenizer, prepare_tokenizer

LLAMA3_SPECIALS = ["<|begin_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"]


# ---- helpers -------------------------------------------------------------------------------------
def piece_text(tok, ids) -> str:
    """The text of a run of token ids, from the pieces alone (no offsets, no decode clean-up)."""
    out = b""
    for piece in tok.convert_ids_to_tokens(list(ids)):
        m = re.fullmatch(r"<0x([0-9A-Fa-f]{2})>", piece)
        out += bytes([int(m.group(1), 16)]) if m else piece.replace("\u2581", " ").encode()
    return out.decode("utf-8")


def supervised_positions(ex) -> list[int]:
    return [i for i, lab in enumerate(ex.labels) if lab != IGNORE_INDEX]


def runs(positions: list[int]) -> list[list[int]]:
    out: list[list[int]] = []
    for p in positions:
        if out and out[-1][-1] == p - 1:
            out[-1].append(p)
        else:
            out.append([p])
    return out


def check_labels_equal_ids(ex):
    assert len(ex.labels) == len(ex.input_ids)
    for i in supervised_positions(ex):
        assert ex.labels[i] == ex.input_ids[i], i



def supervised_runs(template_name: str, tok, img):
    """The VQA record built with one template: (template, example, the runs of supervised positions)."""
    template = get_template(template_name)
    ex = build_example(VQA, template, tok, *img)
    check_labels_equal_ids(ex)
    return template, ex, runs(supervised_positions(ex))

def n_tokens(text, tok, image_token_id, n_img) -> list[int]:
    return tokenize_prompt(text, tok, image_token_id, n_img).input_ids


def expected_runs(template, conv, tok, eos, image_token_id, n_img, full_ids) -> list[list[int]]:
    """[start, end) token positions of each answer, from tokenizing prefixes of the prompt."""
    text, spans = template.render(conv.turns, eos, system=conv.system)
    out = []
    for k, (_, end) in enumerate(spans):
        prompt, _ = template.render(conv.turns[: 2 * k + 1], eos, add_generation_prompt=True, system=conv.system)
        start_ids = n_tokens(prompt, tok, image_token_id, n_img)
        end_ids = n_tokens(text[:end], tok, image_token_id, n_img)
        # Both prefixes tokenize as the start of the full prompt does (else the check means nothing).
        assert full_ids[: len(start_ids)] == start_ids
        assert full_ids[: len(end_ids)] == end_ids
        out.append(list(range(len(start_ids), len(end_ids))))
    return out


VQA = {
    "id": "vqa-1",
    "image": "a.png",
    "conversations": [
        {"from": "human", "value": "What colour is the square?\n<image>"},
        {"from": "gpt", "value": "Red"},
        {"from": "human", "value": "How many squares?"},
        {"from": "gpt", "value": "3"},
    ],
}
CAPTION = {
    "id": "cap-1",
    "image": "b.png",
    "conversations": [{"from": "human", "value": "<image>"}, {"from": "gpt", "value": "A red square."}],
}


@pytest.fixture(scope="module")
def tok(tiny_loaded):
    return tiny_loaded.tokenizer


@pytest.fixture(scope="module")
def img(tiny_loaded):
    return tiny_loaded.image_token_id, tiny_loaded.num_image_tokens


@pytest.fixture(scope="module")
def llama3_tok(tiny_hf):
    """The tiny SentencePiece tokenizer with Llama-3's header tokens as special tokens (as Llama-3 has them).
    A fresh copy, so the session tokenizer other tests use is untouched."""
    t = load_tokenizer(tiny_hf)
    prepare_tokenizer(t)
    t.add_tokens(LLAMA3_SPECIALS, special_tokens=True)
    return t


# ---- vicuna_v1 -----------------------------------------------------------------------------------
def test_vicuna_two_answers_exact_positions(tok, img):
    image_id, n_img = img
    template, ex, got = supervised_runs("vicuna_v1", tok, img)
    # What is supervised is exactly each answer, its leading space and </s>.
    assert [piece_text(tok, [ex.input_ids[i] for i in r]) for r in got] == [" Red</s>", " 3</s>"]
    conv = parse_record(VQA, "x")
    assert got == expected_runs(template, conv, tok, tok.eos_token, image_id, n_img, ex.input_ids)
    # The last answer ends the sequence; the first one is followed by the next user turn.
    assert got[-1][-1] == len(ex.input_ids) - 1
    assert piece_text(tok, ex.input_ids[got[0][-1] + 1: got[1][0]]).startswith("USER: How many squares?")
    # Never supervised: BOS, the image, the system prompt, the user's text.
    assert ex.input_ids[0] == tok.bos_token_id and ex.labels[0] == IGNORE_INDEX
    image_pos = [i for i, t in enumerate(ex.input_ids) if t == image_id]
    assert len(image_pos) == n_img and image_pos == list(range(image_pos[0], image_pos[0] + n_img))
    assert all(ex.labels[i] == IGNORE_INDEX for i in image_pos)
    unsup = piece_text(tok, [t for t, lab in zip(ex.input_ids, ex.labels) if lab == IGNORE_INDEX and t != image_id])
    assert "A chat between" in unsup and "What colour is the square?" in unsup and "How many squares?" in unsup


def test_vicuna_image_placeholder_moved_to_front(tok, img):
    image_id, n_img = img
    ex = build_example(VQA, get_template("vicuna_v1"), tok, image_id, n_img)
    first = ex.input_ids.index(image_id)
    assert piece_text(tok, ex.input_ids[:first]).endswith("USER: ")
    assert piece_text(tok, ex.input_ids[first + n_img:]).startswith(" \nWhat colour is the square? ASSISTANT:")


def test_vicuna_eos_is_the_tokenizers(tiny_hf, img):
    """vicuna_v1's eos is None: the tokenizer's eos ends each answer, and is what gets supervised."""
    image_id, n_img = img
    t = load_tokenizer(tiny_hf)
    prepare_tokenizer(t)
    t.add_tokens(["<|im_end|>"], special_tokens=True)
    t.eos_token = "<|im_end|>"
    ex = build_example(VQA, get_template("vicuna_v1"), t, image_id, n_img)
    got = runs(supervised_positions(ex))
    assert [piece_text(t, [ex.input_ids[i] for i in r]) for r in got] == [" Red<|im_end|>", " 3<|im_end|>"]
    assert t.convert_tokens_to_ids("</s>") not in ex.input_ids


def test_vicuna_text_only_record(tok, img):
    image_id, n_img = img
    rec = {"id": "txt", "conversations": [{"from": "human", "value": "Say hi"}, {"from": "gpt", "value": "Hi there"}]}
    ex = build_example(rec, get_template("vicuna_v1"), tok, image_id, n_img)
    assert image_id not in ex.input_ids
    got = runs(supervised_positions(ex))
    assert [piece_text(tok, [ex.input_ids[i] for i in r]) for r in got] == [" Hi there</s>"]
    assert got[0][-1] == len(ex.input_ids) - 1
    check_labels_equal_ids(ex)


def test_chat_style_roles_and_system_turn(tok, img):
    image_id, n_img = img
    rec = {"id": "chat", "image": "x.png", "conversations": [
        {"role": "system", "value": "Be terse."},
        {"role": "user", "value": "<image>\nColour?"},
        {"role": "assistant", "value": "Blue"},
    ]}
    ex = build_example(rec, get_template("vicuna_v1"), tok, image_id, n_img)
    text = piece_text(tok, [t for t in ex.input_ids if t != image_id])
    assert "Be terse." in text and "A chat between" not in text
    got = runs(supervised_positions(ex))
    assert [piece_text(tok, [ex.input_ids[i] for i in r]) for r in got] == [" Blue</s>"]


# ---- plain ---------------------------------------------------------------------------------------
def test_plain_caption_exact_positions(tok, img):
    image_id, n_img = img
    template = get_template("plain")
    ex = build_example(CAPTION, template, tok, image_id, n_img)
    check_labels_equal_ids(ex)
    # The prompt is BOS and the image, nothing else; all that follows is the caption and "\n".
    assert ex.input_ids[: 1 + n_img] == [tok.bos_token_id] + [image_id] * n_img
    got = runs(supervised_positions(ex))
    assert got == [list(range(1 + n_img, len(ex.input_ids)))]
    # " A": the SentencePiece prefix space of the text after the image.
    assert piece_text(tok, ex.input_ids[1 + n_img:]) == " A red square.\n"
    conv = parse_record(CAPTION, "x")
    assert got == expected_runs(template, conv, tok, tok.eos_token, image_id, n_img, ex.input_ids)


def test_plain_drops_user_text_and_rejects_two_captions(tok, img):
    image_id, n_img = img
    rec = dict(CAPTION, conversations=[{"from": "human", "value": "Describe <image> please"},
                                       {"from": "gpt", "value": "A red square."}])
    ex = build_example(rec, get_template("plain"), tok, image_id, n_img)
    assert ex == build_example(CAPTION, get_template("plain"), tok, image_id, n_img)
    with pytest.raises(RecordError, match="vqa-1"):
        build_example(VQA, get_template("plain"), tok, image_id, n_img)


def test_bos_never_supervised_even_when_answer_starts_the_text(tok, img):
    """plain + text-only + empty user turn: the caption starts at character 0, where BOS's (0, 0) offset is."""
    image_id, n_img = img
    rec = {"id": "bos", "conversations": [{"from": "human", "value": ""}, {"from": "gpt", "value": "Caption"}]}
    ex = build_example(rec, get_template("plain"), tok, image_id, n_img)
    assert ex.input_ids[0] == tok.bos_token_id
    assert ex.labels[0] == IGNORE_INDEX
    assert supervised_positions(ex) == list(range(1, len(ex.input_ids)))
    assert piece_text(tok, ex.input_ids[1:]) == " Caption\n"


# ---- llava_llama_3 -------------------------------------------------------------------------------
def test_llama3_exact_positions(llama3_tok, img):
    image_id, n_img = img
    t = llama3_tok
    template, ex, got = supervised_runs("llava_llama_3", t, img)
    # The generation prompt ends with the header and "\n\n": only the answer and <|eot_id|> are learnt.
    assert [piece_text(t, [ex.input_ids[i] for i in r]) for r in got] == ["Red<|eot_id|>", "3<|eot_id|>"]
    conv = parse_record(VQA, "x")
    assert got == expected_runs(template, conv, t, t.eos_token, image_id, n_img, ex.input_ids)
    eot = t.convert_tokens_to_ids("<|eot_id|>")
    assert [ex.input_ids[r[-1]] for r in got] == [eot, eot]
    # The template's eos is None, but llama3 ends turns with <|eot_id|>: no tokenizer eos anywhere.
    assert t.eos_token_id not in ex.input_ids
    # Not supervised: BOS, <|begin_of_text|>, the system prompt, headers, image, user text.
    assert ex.labels[:2] == [IGNORE_INDEX, IGNORE_INDEX]
    assert ex.input_ids[:2] == [t.bos_token_id, t.convert_tokens_to_ids("<|begin_of_text|>")]
    assert all(lab == IGNORE_INDEX for tid, lab in zip(ex.input_ids, ex.labels) if tid == image_id)
    assert sum(tid == image_id for tid in ex.input_ids) == n_img


def test_llama3_with_plain_sentencepiece_tokenizer(tok, img):
    """Without header tokens in the vocabulary "<|eot_id|>" is ordinary text and its last "|>" merges
    with the next header's "<" into one token; the overlap rule then supervises that token too.
    The last answer, with nothing after it, is supervised exactly."""
    image_id, n_img = img
    ex = build_example(VQA, get_template("llava_llama_3"), tok, image_id, n_img)
    check_labels_equal_ids(ex)
    got = runs(supervised_positions(ex))
    texts = [piece_text(tok, [ex.input_ids[i] for i in r]) for r in got]
    assert len(texts) == 2
    assert texts[1] == "3<|eot_id|>"
    assert texts[0].startswith("Red<|eot_id|>")
    # ...and only the one straddling token beyond it: without it the eot would be incomplete.
    assert not piece_text(tok, [ex.input_ids[i] for i in got[0][:-1]]).startswith("Red<|eot_id|>")
    assert all(ex.labels[i] == IGNORE_INDEX for i, tid in enumerate(ex.input_ids) if tid == image_id)


# ---- malformed records ---------------------------------------------------------------------------
def _rec(convs, image="a.png", rid="bad-7"):
    rec = {"id": rid, "conversations": convs}
    if image is not None:
        rec["image"] = image
    return rec


H = lambda v: {"from": "human", "value": v}  # noqa: E731
G = lambda v: {"from": "gpt", "value": v}  # noqa: E731

MALFORMED = {
    "gpt first": _rec([G("Red"), H("<image>\nColour?")]),
    "two humans": _rec([H("<image>\nColour?"), H("again"), G("Red")]),
    "empty answer": _rec([H("<image>\nColour?"), G("   ")]),
    "two placeholders": _rec([H("<image>\nColour? <image>"), G("Red")]),
    "placeholder in later turn": _rec([H("Colour?"), G("Red"), H("<image>\nAnd now?"), G("Blue")]),
    "placeholder without image": _rec([H("<image>\nColour?"), G("Red")], image=None),
    "unanswered last turn": _rec([H("<image>\nColour?"), G("Red"), H("More?")]),
    "unknown role": _rec([{"from": "bot", "value": "hi"}, G("Red")]),
    "no conversations": _rec([]),
    "two images": _rec([H("<image>\nColour?"), G("Red")], image=["a.png", "b.png"]),
    "system turn not first": _rec([H("<image>\nColour?"), {"from": "system", "value": "x"}, G("Red")]),
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_malformed_record_raises_naming_it(case, tok, img):
    image_id, n_img = img
    with pytest.raises(RecordError) as info:
        build_example(MALFORMED[case], get_template("vicuna_v1"), tok, image_id, n_img)
    assert "bad-7" in str(info.value)
    assert not isinstance(info.value, OverlongError)
    # parse_record, which the dataset runs at load time without a tokenizer, catches it too.
    with pytest.raises(RecordError, match="train.json record 3"):
        parse_record(MALFORMED[case], "train.json record 3")


def test_well_formed_twin_of_malformed_cases_is_fine(tok, img):
    """The fixtures above differ from a good record only in their defect."""
    image_id, n_img = img
    good = _rec([H("<image>\nColour?"), G("Red")])
    ex = build_example(good, get_template("vicuna_v1"), tok, image_id, n_img)
    assert len(supervised_positions(ex)) > 0
    # A record with an image but no placeholder gets one, in front.
    no_ph = build_example(_rec([H("Colour?"), G("Red")]), get_template("vicuna_v1"), tok, image_id, n_img)
    assert no_ph == ex


@pytest.mark.parametrize("has_image", [True, False])
def test_mask_that_cannot_be_computed_names_the_record(has_image, tok, img):
    """A system prompt holding "<image>" puts image tokens where none are expected: the image token
    count no longer matches, and the record is refused by name instead of trained on wrongly."""
    image_id, n_img = img
    rec = _rec([{"from": "system", "value": "See <image> here."}, H("Colour?"), G("Red")],
               image="a.png" if has_image else None, rid="sys-img")
    with pytest.raises(RecordError, match="sys-img") as info:
        build_example(rec, get_template("vicuna_v1"), tok, image_id, n_img)
    assert "image tokens" in str(info.value)


def test_name_argument_used_in_errors(tok, img):
    image_id, n_img = img
    with pytest.raises(RecordError, match=r"data\.json record 12"):
        build_example(MALFORMED["empty answer"], get_template("vicuna_v1"), tok, image_id, n_img,
                      name="data.json record 12")


# ---- truncation ----------------------------------------------------------------------------------
LONG = {
    "id": "long-1",
    "image": "a.png",
    "conversations": [
        H("<image>\nWhat colour is the square?"), G("Red"),
        H("Describe it at length."), G(" ".join(["a very long answer"] * 20)),
    ],
}


def test_truncation_cuts_at_the_end_keeping_answers(tok, img):
    image_id, n_img = img
    template = get_template("vicuna_v1")
    full = build_example(LONG, template, tok, image_id, n_img)
    sup = runs(supervised_positions(full))
    assert len(sup) == 2
    limit = sup[1][0] + 5  # into the second answer
    assert limit < len(full.input_ids)
    cut = build_example(LONG, template, tok, image_id, n_img, max_length=limit)
    assert len(cut.input_ids) == limit
    assert cut.input_ids == full.input_ids[:limit] and cut.labels == full.labels[:limit]
    assert cut.input_ids.count(image_id) == n_img
    got = runs(supervised_positions(cut))
    assert piece_text(tok, [cut.input_ids[i] for i in got[0]]) == " Red</s>"
    assert got[1] == list(range(sup[1][0], limit))
    # Not longer than the limit: untouched.
    assert build_example(LONG, template, tok, image_id, n_img, max_length=len(full.input_ids)) == full


def test_truncation_into_the_image_is_overlong(tok, img):
    image_id, n_img = img
    template = get_template("vicuna_v1")
    full = build_example(LONG, template, tok, image_id, n_img)
    last_image = max(i for i, t in enumerate(full.input_ids) if t == image_id)
    with pytest.raises(OverlongError, match="long-1") as info:
        build_example(LONG, template, tok, image_id, n_img, max_length=last_image)  # drops the last image token
    assert "image" in str(info.value)
    assert info.value.length == len(full.input_ids)
    assert isinstance(info.value, RecordError)


@pytest.mark.parametrize("where", ["after image", "before answer"])
def test_truncation_leaving_no_answer_is_overlong(where, tok, img):
    image_id, n_img = img
    template = get_template("vicuna_v1")
    full = build_example(LONG, template, tok, image_id, n_img)
    last_image = max(i for i, t in enumerate(full.input_ids) if t == image_id)
    first_answer = supervised_positions(full)[0]
    limit = last_image + 1 if where == "after image" else first_answer
    with pytest.raises(OverlongError, match="long-1") as info:
        build_example(LONG, template, tok, image_id, n_img, max_length=limit)
    assert "no answer" in str(info.value)
    assert info.value.length == len(full.input_ids)
    # One more token and the first answer's first token survives.
    ok = build_example(LONG, template, tok, image_id, n_img, max_length=first_answer + 1)
    assert supervised_positions(ok) == [first_answer]


def test_truncation_text_only_record(tok, img):
    image_id, n_img = img
    rec = {"id": "txt-long", "conversations": [H("word " * 40), G("short")]}
    template = get_template("vicuna_v1")
    full = build_example(rec, template, tok, image_id, n_img)
    with pytest.raises(OverlongError, match="txt-long"):
        build_example(rec, template, tok, image_id, n_img, max_length=20)
    assert build_example(rec, template, tok, image_id, n_img, max_length=len(full.input_ids) - 1).labels[-1] != \
        IGNORE_INDEX


def test_builder_reusable_across_records(tok, img):
    image_id, n_img = img
    builder = ExampleBuilder(get_template("vicuna_v1"), tok, image_id, n_img)
    assert builder.n_prefix == 1
    assert builder(VQA) == build_example(VQA, get_template("vicuna_v1"), tok, image_id, n_img)
    assert builder(CAPTION) != builder(VQA)
    assert DEFAULT_IMAGE_TOKEN in VQA["conversations"][0]["value"]  # the record itself is not modified
    assert parse_record(VQA, "x").turns[0] == (USER, "<image>\nWhat colour is the square?")
