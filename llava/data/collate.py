"""Batches for training: right-padded ids, IGNORE_INDEX-padded labels, stacked images.

Records without an image add no pixel_values, so a batch may mix image and
text-only records; a batch with no image at all has no "pixel_values" key.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import torch

from llava.constants import IGNORE_INDEX
from llava.data.family_examples import align_labels


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


@dataclass
class FamilyCollator:
    """Batches for another family (llava/model/families): its processor renders the batch from the items'
    texts and images (expanding image placeholders, making the family's image tensors, padding on the
    right), and each row's labels are carried over to the expanded ids (llava.data.family_examples)."""

    family: Any
    processor: Any
    image_token_id: int

    def __call__(self, items: Sequence[dict[str, Any]]) -> dict[str, torch.Tensor]:
        tok = self.processor.tokenizer
        texts = [it["text"] for it in items]
        kwargs = {"padding": True, "return_tensors": "pt"}
        if tok.bos_token and all(t.startswith(tok.bos_token) for t in texts):
            kwargs["add_special_tokens"] = False
        images = [it.get("image") for it in items]
        if any(im is not None for im in images):
            kwargs["images"] = ([[im] if im is not None else [] for im in images] if self.family.nested_images
                                else [im for im in images if im is not None])
        side, tok.padding_side = tok.padding_side, "right"
        try:
            batch = dict(self.processor(text=texts, **kwargs))
        finally:
            tok.padding_side = side
        labels = torch.full_like(batch["input_ids"], IGNORE_INDEX)
        for row, it in enumerate(items):
            real = batch["attention_mask"][row].bool()
            expanded = batch["input_ids"][row][real].tolist()
            aligned = align_labels(expanded, it["input_ids"].tolist(), it["labels"].tolist(), self.image_token_id,
                                   it["name"])
            labels[row, real.nonzero().squeeze(1)] = torch.tensor(aligned, dtype=torch.long)
        batch["labels"] = labels
        return batch
