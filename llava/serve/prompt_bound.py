"""A lower bound on a prompt's length in tokens from its length in characters, so that a text far longer
than the model's context is refused without tokenizing it (tokenizing a body of many megabytes keeps
a CPU busy for a long time, all for a 400; docs/serving.md has the numbers).

The bound: no token stands for more characters than the longest entry of the tokenizer's vocabulary (L),
so a text of N characters, once normalized the way the tokenizer normalizes it, is at least ceil(N / L)
tokens.  That holds only for tokenizers whose tokens cover every character of the text:

- SentencePiece with byte fallback (Llama, Vicuna, Mistral): an unknown character becomes byte tokens,
  each standing for one byte of one character ("<0x0A>" is 6 characters long: only overcounted);
- byte-level BPE (GPT-2, SmolLM2, Qwen), or BPE with byte fallback: each character of a byte-level
  vocabulary entry stands for one byte, and a character of text is at least one byte.

Normalizing first (with the tokenizer's own normalizer) matters because a normalizer may merge or drop
characters (NFKC, collapsing whitespace).  Tokenizers that may drop text in other ways (WordPiece's one
[UNK] for a long word, SentencePiece without byte fallback turning a run of unknown characters into one
<unk>, pre-tokenizers that remove whitespace) get no bound: their prompts are tokenized in full, as before.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Callable

from llava.constants import DEFAULT_IMAGE_TOKEN

# Pre-tokenizers that keep every character; Split and Punctuation only unless their behavior is "removed".
_KEEPING = {"ByteLevel", "Metaspace", "Split", "Digits", "Punctuation", "UnicodeScripts", "Sequence"}


@dataclass(frozen=True)
class TokenBound:
    longest: int  # L: the most characters one vocabulary entry has
    normalize: Callable[[str], str] | None = None  # the tokenizer's normalizer, when it has one

    @classmethod
    def of(cls, tokenizer) -> TokenBound | None:
        """The bound for `tokenizer`, or None when no bound from the length is safe for it."""
        longest = max(map(len, tokenizer.get_vocab()))  # added tokens ("<image>", "</s>") included
        sp = getattr(tokenizer, "sp_model", None)
        if sp is not None:
            if not any(sp.IsByte(i) for i in range(sp.GetPieceSize())):
                return None  # no byte fallback: a run of unknown characters is a single <unk>
            return cls(longest, sp.normalize)
        backend = getattr(tokenizer, "backend_tokenizer", None)
        if backend is None:
            return None
        spec = json.loads(backend.to_str())
        model = spec.get("model") or {}
        kinds, keeps_all = _pre_tokenizers(spec.get("pre_tokenizer"))
        if model.get("type") != "BPE" or not keeps_all or not (model.get("byte_fallback") or "ByteLevel" in kinds):
            return None
        normalizer = backend.normalizer
        return cls(longest, normalizer.normalize_str if normalizer is not None else None)

    def at_least(self, text: str) -> int:
        """The fewest tokens `text` can be, however the tokenizer splits it."""
        n = len(self.normalize(text)) if self.normalize is not None and text else len(text)
        return -(-n // self.longest)

    def prompt_at_least(self, prompt: str) -> int:
        """The fewest tokens a rendered prompt can be: its text pieces around the image placeholders are
        tokenized one by one (llava.mm_utils.tokenize_prompt), and the image adds tokens of its own."""
        return sum(self.at_least(chunk) for chunk in prompt.split(DEFAULT_IMAGE_TOKEN))


def _pre_tokenizers(spec) -> tuple[set[str], bool]:
    """The pre-tokenizer types in `spec` (a Sequence's too), and whether all of them keep every character."""
    if spec is None:
        return set(), True
    kinds, keeps = {spec.get("type")}, spec.get("type") in _KEEPING and spec.get("behavior") != "Removed"
    for inner in spec.get("pretokenizers") or ():
        inner_kinds, inner_keeps = _pre_tokenizers(inner)
        kinds |= inner_kinds
        keeps = keeps and inner_keeps
    return kinds, keeps
