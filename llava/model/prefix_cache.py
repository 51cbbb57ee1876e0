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
"""

from __future__ import annotations

import copy
from typing import Sequence

import torch


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


class PrefixCache:
    def __init__(self, loaded, prefix: Sequence[int]):
        from transformers import DynamicCache

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
