"""The slow SentencePiece Llama tokenizer the original LLaVA trained with, for exact ids.

The original loads `AutoTokenizer.from_pretrained(..., use_fast=False)`: a
SentencePiece-backed LlamaTokenizer with legacy=False.  transformers 5 builds
Llama tokenizers on the `tokenizers` library instead, and that BPE does not
give SentencePiece's ids everywhere: runs of spaces and a leading space come
out differently, and a tokenizer.model next to a llava config.json loads with
no "▁" before "\\n".  So for models that ship a tokenizer.model we tokenize
with sentencepiece itself, as the original did, and also report character
offsets (from sentencepiece's own alignment), which training uses to mark the
assistant's tokens.

Saved directories still carry tokenizer.json and tokenizer_class
"LlamaTokenizer", so plain transformers loads its own fast tokenizer.
"""

from __future__ import annotations

import json
from pathlib import Path

from transformers.tokenization_utils_sentencepiece import SPIECE_UNDERLINE, SentencePieceBackend

LLAMA_CLASSES = {"LlamaTokenizer", "LlamaTokenizerFast", "CodeLlamaTokenizer", "CodeLlamaTokenizerFast"}


class LlamaSPTokenizer(SentencePieceBackend):
    """transformers-4.3x `LlamaTokenizer(legacy=False)` behaviour on the sentencepiece backend."""

    model_input_names = ["input_ids", "attention_mask"]

    def __init__(self, vocab_file, unk_token="<unk>", bos_token="<s>", eos_token="</s>", pad_token=None,
                 add_bos_token=True, add_eos_token=False, legacy=False, add_prefix_space=True, **kwargs):
        self.add_bos_token = add_bos_token
        self.add_eos_token = add_eos_token
        self.add_prefix_space = add_prefix_space
        pattern = {(True, False): "bos", (True, True): "bos_eos", (False, True): "eos"}.get(
            (add_bos_token, add_eos_token), "none")
        kwargs.pop("special_tokens_pattern", None)
        for key in ("tokenizer_class", "backend", "tokenizer_file"):
            kwargs.pop(key, None)
        super().__init__(vocab_file=vocab_file, unk_token=unk_token, bos_token=bos_token, eos_token=eos_token,
                         pad_token=pad_token, legacy=legacy, add_bos_token=add_bos_token,
                         add_eos_token=add_eos_token, add_prefix_space=add_prefix_space,
                         special_tokens_pattern=pattern, **kwargs)

    # -- ids -------------------------------------------------------------------------------------
    def tokenize(self, text, **kwargs):
        ids, _ = self._encode_segments(text)
        return self.convert_ids_to_tokens(ids)

    def encode_with_offsets(self, text: str, add_special_tokens: bool = True):
        """(ids, [start, end) character offsets into `text`) — what the slow tokenizer gives, with positions."""
        ids, offsets = self._encode_segments(text)
        if add_special_tokens:
            if self.add_bos_token:
                ids, offsets = [self.bos_token_id] + ids, [(0, 0)] + offsets
            if self.add_eos_token:
                ids, offsets = ids + [self.eos_token_id], offsets + [(len(text), len(text))]
        return ids, offsets

    def _encode_segments(self, text: str):
        if not text:
            return [], []
        # The slow tokenizer's tokenize(): "▁" in the text counts as a space, and
        # (legacy=False) one "▁" is put in front of the whole text, not of every piece.
        body = text.replace(SPIECE_UNDERLINE, " ")
        lead = SPIECE_UNDERLINE if (self.add_prefix_space and not self.legacy) else ""
        full = lead + body
        segments = self.tokens_trie.split(full)
        specials = set(self._added_tokens_encoder) | set(self.all_special_tokens)
        ids, offsets = [], []
        pos = 0
        for i, seg in enumerate(segments):
            start, pos = pos, pos + len(seg)
            if not seg:
                continue
            if seg in specials:
                ids.append(self._convert_token_to_id_with_added_voc(seg))
                offsets.append(self._clip(start - len(lead), pos - len(lead), len(text)))
                continue
            if i == 0 and seg == lead and len(segments) > 1 and segments[1] in specials:
                continue  # the slow tokenizer drops a lone prefix before a special token
            for pid, b, e in self._pieces(seg):
                offsets.append(self._clip(start + b - len(lead), start + e - len(lead), len(text)))
                ids.append(pid)
        return ids, offsets

    @staticmethod
    def _clip(b: int, e: int, n: int) -> tuple[int, int]:
        return max(0, min(b, n)), max(0, min(e, n))

    def _pieces(self, seg: str):
        """SentencePieceBackend._tokenize, returning (id, char_begin, char_end) per piece."""
        if self.legacy or not seg.startswith((SPIECE_UNDERLINE, " ")):
            s, skip, shift = seg, 0, 0
        else:
            # Encode "<unk>" + text and drop the pieces of "<unk>": with the dummy
            # prefix disabled, this is how a leading space survives sentencepiece.
            s = str(self.unk_token) + seg
            skip, shift = len(self.sp_model.encode(str(self.unk_token))), len(str(self.unk_token))
        proto = self.sp_model.encode(s, return_type="proto")
        char_of_byte = _byte_to_char(s)
        for piece in list(proto.pieces)[skip:]:
            yield piece.id, char_of_byte[piece.begin] - shift, char_of_byte[piece.end] - shift


def _byte_to_char(s: str) -> list[int]:
    """char index for each UTF-8 byte offset of s (and one past the end)."""
    out = []
    for i, ch in enumerate(s):
        out.extend([i] * len(ch.encode("utf-8")))
    out.append(len(s))
    return out


def wants_sentencepiece(path: str | Path) -> bool:
    """A directory with tokenizer.model whose config names a Llama tokenizer."""
    path = Path(path)
    cfg_file = path / "tokenizer_config.json"
    if not (path / "tokenizer.model").exists() or not cfg_file.exists():
        return False
    cfg = json.loads(cfg_file.read_text())
    return cfg.get("tokenizer_class") in LLAMA_CLASSES


def load_sp_tokenizer(path: str | Path) -> LlamaSPTokenizer:
    path = Path(path)
    cfg = json.loads((path / "tokenizer_config.json").read_text())
    keep = {k: v for k, v in cfg.items() if k in (
        "unk_token", "bos_token", "eos_token", "pad_token", "add_bos_token", "add_eos_token", "legacy",
        "model_max_length", "padding_side", "clean_up_tokenization_spaces", "extra_special_tokens")}
    for key in ("unk_token", "bos_token", "eos_token", "pad_token"):
        if isinstance(keep.get(key), dict):  # older configs store AddedToken dicts
            keep[key] = keep[key].get("content")
    keep.setdefault("legacy", False)
    tok = LlamaSPTokenizer(vocab_file=str(path / "tokenizer.model"), **keep)
    added = path / "added_tokens.json"
    if added.exists():
        extra = sorted(json.loads(added.read_text()).items(), key=lambda kv: kv[1])
        tok.add_tokens([t for t, _ in extra], special_tokens=True)
    return tok
