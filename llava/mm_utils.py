"""Prompt tokenization shared by training, inference and serving (images: llava.image_decode).

Tokenization follows the original LLaVA's `tokenizer_image_token`: the prompt
is split at each "<image>", every piece is tokenized on its own (so a Llama
SentencePiece tokenizer puts a lone "▁" on each side of the image, as the
original does), one BOS is kept, and the image placeholder goes between the
pieces.  A model fine-tuned with the original code therefore sees the same
ids here.  Tokenizing the whole prompt at once, as transformers'
LlavaProcessor does, gives different ids around the image.
"""

from __future__ import annotations

from dataclasses import dataclass

from llava.constants import DEFAULT_IMAGE_TOKEN, IMAGE_TOKEN_INDEX

# Image loading lives in llava.image_decode (one set of caps for every entry); much of the code
# imports these names from here.
from llava.image_decode import MAX_IMAGE_BYTES, MAX_IMAGE_PIXELS, ImageError, load_image  # noqa: F401


@dataclass
class TokenizedPrompt:
    input_ids: list[int]
    # [start, end) character range of each token in the prompt; image tokens
    # get the range of the "<image>" placeholder they stand for.
    offsets: list[tuple[int, int]]


def encode_with_offsets(tokenizer, text: str) -> tuple[list[int], list[tuple[int, int]]]:
    """Ids (with the tokenizer's special tokens) and character offsets of each."""
    if hasattr(tokenizer, "encode_with_offsets"):  # our exact SentencePiece tokenizer
        return tokenizer.encode_with_offsets(text)
    enc = tokenizer(text, add_special_tokens=True, return_offsets_mapping=True)
    return enc["input_ids"], [tuple(o) for o in enc["offset_mapping"]]


def special_affixes(tokenizer) -> tuple[list[int], list[int]]:
    """The special ids the tokenizer puts before and after any text (BOS, sometimes EOS)."""
    with_special = tokenizer("a", add_special_tokens=True).input_ids
    without = tokenizer("a", add_special_tokens=False).input_ids
    for n in range(len(with_special) - len(without) + 1):
        if with_special[n : n + len(without)] == without:
            return with_special[:n], with_special[n + len(without) :]
    return [], []


def tokenize_prompt(
    prompt: str,
    tokenizer,
    image_token_id: int = IMAGE_TOKEN_INDEX,
    num_image_tokens: int = 1,
    add_bos: bool = True,
) -> TokenizedPrompt:
    """Token ids of `prompt`, each "<image>" replaced by `num_image_tokens` copies of `image_token_id`.

    With image_token_id=IMAGE_TOKEN_INDEX and num_image_tokens=1 the ids equal
    the original LLaVA's tokenizer_image_token(prompt, tokenizer).
    """
    chunks = prompt.split(DEFAULT_IMAGE_TOKEN)
    prefix, suffix = special_affixes(tokenizer)
    ids: list[int] = list(prefix) if add_bos else []
    offsets: list[tuple[int, int]] = [(0, 0)] * len(ids)
    pos = 0
    for i, chunk in enumerate(chunks):
        if i > 0:
            ids.extend([image_token_id] * num_image_tokens)
            offsets.extend([(pos, pos + len(DEFAULT_IMAGE_TOKEN))] * num_image_tokens)
            pos += len(DEFAULT_IMAGE_TOKEN)
        if chunk:
            # Tokenized with special tokens, then stripped of them, as the
            # original does: a SentencePiece-style tokenizer keeps the leading
            # "▁" a fresh sequence gets; an eos some tokenizers append is dropped.
            enc_ids, enc_offsets = encode_with_offsets(tokenizer, chunk)
            end = len(enc_ids) - len(suffix)
            chunk_ids = enc_ids[len(prefix) : end]
            chunk_offsets = enc_offsets[len(prefix) : end]
            ids.extend(chunk_ids)
            offsets.extend((pos + s, pos + e) for s, e in chunk_offsets)
        pos += len(chunk)
    return TokenizedPrompt(ids, offsets)


def tokenizer_image_token(prompt: str, tokenizer, image_token_index: int = IMAGE_TOKEN_INDEX,
                          return_tensors: str | None = None):
    """Drop-in for the original LLaVA function of the same name: a list of ids, or with
    return_tensors="pt" a 1-D LongTensor (add `.unsqueeze(0)` for a batch of one, as the original's callers do)."""
    ids = tokenize_prompt(prompt, tokenizer, image_token_index, 1).input_ids
    if return_tensors is None:
        return ids
    if return_tensors == "pt":
        # Here, not at the top: preprocessing imports this module and has no other use for torch (seconds).
        import torch  # noqa: PLC0415

        return torch.tensor(ids, dtype=torch.long)
    raise ValueError(f"return_tensors={return_tensors!r}: only None or 'pt'")


def get_model_name_from_path(model_path: str) -> str:
    """The original's model name for a checkpoint path: its last folder, or for a Trainer checkpoint
    (".../run/checkpoint-500") the run's folder and the checkpoint's, joined by "_"."""
    parts = model_path.strip("/").split("/")
    if len(parts) > 1 and parts[-1].startswith("checkpoint-"):
        return f"{parts[-2]}_{parts[-1]}"
    return parts[-1]


def process_images(images, image_processor, model_cfg=None):
    """Drop-in for the original's `process_images(images, image_processor, model.config)`: the images as
    one (N, 3, H, W) tensor for the model. How an image is fitted to the square (pad, or squash) is the
    processor's own setting, saved with the model, so model_cfg is accepted and not needed."""
    return image_processor(list(images), return_tensors="pt")["pixel_values"]


def __getattr__(name: str):
    """KeywordsStoppingCriteria is built on transformers' StoppingCriteria when first asked for: this module is
    imported by preprocessing, which must start without transformers (seconds)."""
    if name == "KeywordsStoppingCriteria":
        cls = _keywords_stopping_criteria()
        globals()[name] = cls
        return cls
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _keywords_stopping_criteria():
    import torch  # noqa: PLC0415 - see __getattr__
    from transformers import StoppingCriteria  # noqa: PLC0415

    class KeywordsStoppingCriteria(StoppingCriteria):
        """Drop-in for the original's `KeywordsStoppingCriteria(keywords, tokenizer, input_ids)`, passed to
        `model.generate(..., stopping_criteria=[...])`: a row is done once the text it generated after the
        prompt (`input_ids`, the prompt batch) contains one of the keywords, such as the template's "</s>".
        Each row stops on its own (the original stopped the batch only when every row had)."""

        def __init__(self, keywords, tokenizer, input_ids):
            self.keywords = [k for k in keywords if k]
            self.tokenizer = tokenizer
            self.start_len = input_ids.shape[-1]
            # The keywords' own token ids, checked first: cheaper than decoding.
            self.keyword_ids = []
            for k in self.keywords:
                ids = tokenizer(k, add_special_tokens=False).input_ids
                if ids:
                    self.keyword_ids.append(ids)
            self.window = max((len(i) for i in self.keyword_ids), default=1) + 4  # tokens decoded per check

        def __call__(self, input_ids, scores, **kwargs):
            done = []
            for row in input_ids:
                new = row[self.start_len:].tolist()
                hit = any(len(new) >= len(k) and new[-len(k):] == k for k in self.keyword_ids)
                if not hit and new:
                    text = self.tokenizer.decode(new[-self.window:], skip_special_tokens=False)
                    hit = any(k in text for k in self.keywords)
                done.append(hit)
            return torch.tensor(done, dtype=torch.bool, device=input_ids.device)

    return KeywordsStoppingCriteria
