"""Batches for training: right-padded ids, IGNORE_INDEX-padded labels, stacked images.

Records without an image add no pixel_values, so a batch may mix image and
text-only records; a batch with no image at all has no "pixel_values" key.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import torch

from llava.constants import IGNORE_INDEX


@dataclass
class DataCollator:
    pad_token_id: int
    pad_to_multiple_of: int | None = None  # e.g. 8 for tensor cores; None pads to the longest only

    def __call__(self, items: Sequence[dict[str, Any]]) -> dict[str, torch.Tensor]:
        longest = max(len(it["input_ids"]) for it in items)
        if self.pad_to_multiple_of:
            m = self.pad_to_multiple_of
            longest = (longest + m - 1) // m * m
        n = len(items)
        input_ids = torch.full((n, longest), self.pad_token_id, dtype=torch.long)
        labels = torch.full((n, longest), IGNORE_INDEX, dtype=torch.long)
        attention_mask = torch.zeros((n, longest), dtype=torch.long)
        for row, it in enumerate(items):
            k = len(it["input_ids"])
            input_ids[row, :k] = it["input_ids"]
            labels[row, :k] = it["labels"]
            attention_mask[row, :k] = 1
        batch = {"input_ids": input_ids, "labels": labels, "attention_mask": attention_mask}
        images = [it["pixel_values"] for it in items if "pixel_values" in it]
        if images:
            batch["pixel_values"] = torch.stack(images)
        return batch
