"""The prompt prefix every question shares (the template's system prompt and "USER:"), run through
the language model once, its key/value cache reused by every batch.

Batch inference spends most of its time on the prompt when answers are short,
and in LLaVA prompts the first ~40 tokens are the same for every question.
With a shared prefix the batch is laid out as

    [prefix] [pad ... pad] [rest of the prompt]      attention mask 1..1 0..0 1..1

and generate() starts from the prefix's cache: position ids follow the
attention mask, so each row sees exactly what it would see left-padded, and
greedy answers are the same (tested).  The prefix stops before the first image
token: image features differ per question.

Questions often come several to an image (a VQA file asks 3-10 per image).  Then
the user turn up to its last image token (" USER:" and the image's tokens) is the
same for all of them too: `image_batch` runs it once per distinct image in the
batch, on top of the system prompt's cache, and copies the result to each
question's row, so only "\n<question> ASSISTANT:" is computed per question.
`image_grouped_batches` keeps an image's questions in one batch.
"""

from __future__ import annotations

import copy
from typing import Sequence

import torch
from transformers import DynamicCache


def common_prefix(rows: Sequence[Sequence[int]], stop_id: int) -> list[int]:
    """The longest token prefix of every row, ending before stop_id and leaving each row a token."""
    if not rows:
        return []
    limit = min(len(r) for r in rows) - 1
    prefix = []
    for i in range(max(limit, 0)):
        token = rows[0][i]
        if token == stop_id or any(r[i] != token for r in rows):
            break
        prefix.append(token)
    return prefix


def image_part(rows: Sequence[Sequence[int]], image_token_id: int) -> list[int] | None:
    """What every row starts with, up to and including its last image token, leaving each row a token;
    None when a row has no image or the rows differ there (e.g. the image is not in the first turn)."""
    if not rows or image_token_id not in rows[0]:
        return None
    first = list(rows[0])
    end = len(first) - first[::-1].index(image_token_id)
    part = first[:end]
    if any(len(r) <= end or list(r[:end]) != part for r in rows):
        return None
    return part


def image_grouped_batches(images: Sequence[str], lengths: Sequence[int], batch_size: int) -> list[list[int]]:
    """Batches of indices that keep the questions about one image together (longest first); an image
    with more than batch_size questions is split."""
    groups: dict[str, list[int]] = {}
    for i, image in enumerate(images):
        groups.setdefault(image, []).append(i)
    chunks = []
    for members in groups.values():
        members.sort(key=lambda i: (-lengths[i], i))
        chunks += [members[k:k + batch_size] for k in range(0, len(members), batch_size)]
    chunks.sort(key=lambda c: (-lengths[c[0]], c[0]))
    batches: list[list[int]] = [[]]
    for chunk in chunks:
        if len(batches[-1]) + len(chunk) > batch_size:
            batches.append([])
        batches[-1] += chunk
    return [b for b in batches if b]


def _llava(model):
    """The LlavaModel inside (under a PeftModel too): the forward that merges image features."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return base.model


class PrefixCache:
    def __init__(self, loaded, prefix: Sequence[int]):
        self.ids = torch.tensor([list(prefix)], dtype=torch.long)
        model = loaded.model
        self.cache = DynamicCache(config=model.config.get_text_config())
        with torch.inference_mode():
            model.get_decoder()(input_ids=self.ids.to(model.device), cache=self.cache, use_cache=True)

    def __len__(self) -> int:
        return self.ids.shape[1]

    def batch(self, input_ids: torch.Tensor, attention: torch.Tensor) -> dict:
        """Prefix + the left-padded rests: input_ids, attention_mask and a cache for this batch."""
        b = input_ids.shape[0]
        ids = torch.cat([self.ids.expand(b, -1), input_ids], dim=1)
        mask = torch.cat([torch.ones((b, len(self)), dtype=attention.dtype), attention], dim=1)
        cache = copy.deepcopy(self.cache)
        cache.batch_repeat_interleave(b)
        return {"input_ids": ids, "attention_mask": mask, "cache": cache}

    def image_batch(self, model, part: Sequence[int], pixels: torch.Tensor, image_rows: Sequence[int],
                    input_ids: torch.Tensor, attention: torch.Tensor) -> dict:
        """As batch(), with `part` (the user turn up to the image's last token) after the prefix: run once
        for each of the distinct images `pixels`; row i of the batch belongs to image image_rows[i]."""
        n = pixels.shape[0]
        part_ids = torch.tensor([list(part)], dtype=torch.long)
        cache = copy.deepcopy(self.cache)
        cache.batch_repeat_interleave(n)
        with torch.inference_mode():
            _llava(model)(input_ids=part_ids.expand(n, -1).to(model.device), pixel_values=pixels, cache=cache,
                          use_cache=True)
        cache.reorder_cache(torch.as_tensor(list(image_rows), dtype=torch.long))
        b = input_ids.shape[0]
        head = torch.cat([self.ids, part_ids], dim=1)
        ids = torch.cat([head.expand(b, -1), input_ids], dim=1)
        mask = torch.cat([torch.ones((b, head.shape[1]), dtype=attention.dtype), attention], dim=1)
        return {"input_ids": ids, "attention_mask": mask, "cache": cache}
