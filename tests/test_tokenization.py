"""Prompt tokenization matches the original LLaVA's (slow Llama tokenizer, legacy=False)."""

import random

import pytest
import sentencepiece as spm
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import AutoTokenizer, PreTrainedTokenizerFast

from llava.constants import IMAGE_TOKEN_INDEX
from llava.demo.models import sentencepiece_model_path
from llava.mm_utils import tokenize_prompt, tokenizer_image_token
from llava.model.processor import load_tokenizer

PROMPT = (
    "A chat between a curious user and an artificial intelligence assistant. The assistant gives helpful, "
    "detailed, and polite answers to the user's questions. USER: <image>\nWhat is shown in this image? ASSISTANT:"
)
IMAGE = IMAGE_TOKEN_INDEX
# From the issue: the original's tokenizer_image_token with mistral-common's tokenizer.model.v1.
EXPECTED = [1, 330, 10706, 1444, 264, 13903, 2188, 304, 396, 18278, 10895, 13892, 28723, 415, 13892, 5212,
            10865, 28725, 10537, 28725, 304, 27057, 11194, 298, 272, 2188, 28742, 28713, 4224, 28723, 2223,
            725, 28747, 28705, IMAGE, 28705, 13, 3195, 349, 4894, 297, 456, 3469, 28804, 8602, 8048, 12738, 28747]


@pytest.mark.parametrize("layout", ["original", "hf"])
def test_reference_prompt_ids(layout, tiny_original, tiny_hf):
    tok = load_tokenizer(tiny_original if layout == "original" else tiny_hf)
    assert tokenizer_image_token(PROMPT, tok) == EXPECTED


def test_image_expands_to_image_tokens(tiny_hf):
    tok = load_tokenizer(tiny_hf)
    out = tokenize_prompt(PROMPT, tok, image_token_id=32000, num_image_tokens=5)
    i = EXPECTED.index(IMAGE)
    assert out.input_ids == EXPECTED[:i] + [32000] * 5 + EXPECTED[i + 1:]
    # Image tokens point at the placeholder; text tokens at their own characters.
    start = PROMPT.index("<image>")
    assert set(out.offsets[i:i + 5]) == {(start, start + len("<image>"))}
    assert PROMPT[slice(*out.offsets[-1])] == ":"


def test_sentencepiece_agreement_on_awkward_text(tiny_hf):
    """Runs of spaces, leading spaces, tabs, unicode: the ids sentencepiece itself gives."""
    sp = spm.SentencePieceProcessor(model_file=str(sentencepiece_model_path()))
    tok = load_tokenizer(tiny_hf)
    rng = random.Random(0)
    alphabet = "ab c\n\t.,!é🙂  xyzQ▁"
    texts = ["  two  spaces", " leading", "tab\there", "½ café", ""] + [
        "".join(rng.choice(alphabet) for _ in range(rng.randint(1, 25))) for _ in range(300)
    ]
    for text in texts:
        assert tok(text).input_ids == [1] + sp.encode(text), repr(text)


def test_transformers_fast_tokenizer_differs_which_is_why_we_use_sentencepiece(tiny_hf):
    """Documents the measured difference; if transformers ever matches, this test says so."""
    fast = AutoTokenizer.from_pretrained(tiny_hf)
    sp = spm.SentencePieceProcessor(model_file=str(sentencepiece_model_path()))
    assert fast("  two  spaces").input_ids != [1] + sp.encode("  two  spaces")


def test_special_tokens_in_text_are_split_like_the_slow_tokenizer(tiny_hf):
    tok = load_tokenizer(tiny_hf)
    ids, offsets = tok.encode_with_offsets("A</s>USER: hi")
    assert tok.convert_ids_to_tokens(ids) == ["<s>", "▁A", "</s>", "USER", ":", "▁hi"]
    text = "A</s>USER: hi"
    assert [text[a:b] for a, b in offsets] == ["", "A", "</s>", "USER", ":", " hi"]


def test_fast_tokenizers_use_their_offsets():
    """A non-SentencePiece tokenizer (GPT-2 style BPE, as SmolLM2's) goes through transformers."""
    vocab = {c: i for i, c in enumerate(["<s>", "</s>", "a", "b", "Ġ", "Ċ", "Ġa", "ab"])}
    t = Tokenizer(models.BPE(vocab=vocab, merges=[("Ġ", "a"), ("a", "b")]))
    t.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok = PreTrainedTokenizerFast(tokenizer_object=t, bos_token="<s>", eos_token="</s>")
    out = tokenize_prompt("ab a<image>\nab", tok, image_token_id=99, num_image_tokens=2)
    assert out.input_ids == [7, 6, 99, 99, 5, 7]
    assert out.offsets == [(0, 2), (2, 4), (4, 11), (4, 11), (11, 12), (12, 14)]
