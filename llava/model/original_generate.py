"""The original LLaVA's `model.generate(input_ids, images=..., image_sizes=...)` on a transformers LLaVA model.

Code written for the original calls generate with prompt ids that hold IMAGE_TOKEN_INDEX (-200) where
an image goes (`tokenizer_image_token`), the images as one pixel tensor (`process_images`), and decodes
what generate returns as the answer: the original generated from inputs_embeds, so its output is the
new tokens only.  `attach(model)` gives one loaded LLaVA model a `generate` that also takes that form:

- each -200 becomes the model's image token, repeated once per image feature; images become
  `pixel_values` on the vision tower's device and in its dtype; `image_sizes` is accepted and, for
  LLaVA-1.5's fixed-size images, not needed;
- rows are left-padded (an attention_mask given drops the pads it marks first), and the output is the
  new tokens only, as the original's;
- a `KeywordsStoppingCriteria` built from the unexpanded ids counts from the end of the expanded prompt.

A call without `images=` goes to transformers' own generate unchanged (pixel_values, streamers, every
other keyword), so the transformers-native path is the same object it always was: the attachment is an
attribute of that one instance, the class is not touched, and save_pretrained never sees it.
"""

from __future__ import annotations

import types

import torch

from llava.constants import IMAGE_TOKEN_INDEX


def _rows(input_ids: torch.Tensor, attention_mask: torch.Tensor | None) -> list[list[int]]:
    ids = input_ids if input_ids.dim() == 2 else input_ids.unsqueeze(0)
    if attention_mask is None:
        return [row.tolist() for row in ids]
    mask = attention_mask if attention_mask.dim() == 2 else attention_mask.unsqueeze(0)
    return [row[m.bool()].tolist() for row, m in zip(ids, mask)]


def expand(rows: list[list[int]], image_token_id: int, per_image: int, pad_id: int):
    """(input_ids, attention_mask), left-padded, with each IMAGE_TOKEN_INDEX made per_image image tokens."""
    expanded = []
    for row in rows:
        out: list[int] = []
        for tok in row:
            out.extend([image_token_id] * per_image if tok == IMAGE_TOKEN_INDEX else [tok])
        expanded.append(out)
    width = max(len(r) for r in expanded)
    ids = torch.full((len(expanded), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(expanded), width), dtype=torch.long)
    for i, row in enumerate(expanded):
        ids[i, width - len(row):] = torch.tensor(row, dtype=torch.long)
        mask[i, width - len(row):] = 1
    return ids, mask


def attach(model, image_token_id: int, per_image: int) -> None:
    """Give this model instance the original's generate(input_ids, images=..., image_sizes=...)."""
    native = model.generate  # transformers' bound method

    def generate(self, inputs=None, images=None, image_sizes=None, **kwargs):
        if images is None:
            return native(inputs, **kwargs)
        input_ids = kwargs.pop("input_ids", inputs)
        if input_ids is None:
            raise ValueError("generate(images=...) needs the prompt's input_ids (tokenizer_image_token's output)")
        if "pixel_values" in kwargs:
            raise ValueError("give the images once: images= (the original's form) or pixel_values=, not both")
        rows = _rows(input_ids, kwargs.pop("attention_mask", None))
        n_marks = sum(row.count(IMAGE_TOKEN_INDEX) for row in rows)
        pixels = images if isinstance(images, torch.Tensor) else torch.cat([torch.as_tensor(i) for i in images])
        if pixels.dim() == 3:
            pixels = pixels.unsqueeze(0)
        if n_marks != pixels.shape[0]:
            raise ValueError(f"the prompt has {n_marks} image place(s) (IMAGE_TOKEN_INDEX {IMAGE_TOKEN_INDEX}, from "
                             f"tokenizer_image_token) and images= holds {pixels.shape[0]} image(s): give one per place")
        pad = self.generation_config.pad_token_id
        ids, mask = expand(rows, image_token_id, per_image, 0 if pad is None else pad)
        tower = next(p for name, p in self.named_parameters() if "vision_tower" in name)
        device = next(self.get_input_embeddings().parameters()).device
        for crit in kwargs.get("stopping_criteria") or []:
            if hasattr(crit, "start_len") and hasattr(crit, "keywords"):  # llava.mm_utils.KeywordsStoppingCriteria
                crit.start_len = ids.shape[1]
        out = native(input_ids=ids.to(device), attention_mask=mask.to(device),
                     pixel_values=pixels.to(tower.device, tower.dtype), **kwargs)
        sequences = out.sequences if hasattr(out, "sequences") else out
        new = sequences[:, ids.shape[1]:]
        if hasattr(out, "sequences"):
            out.sequences = new
            return out
        return new

    model.generate = types.MethodType(generate, model)
