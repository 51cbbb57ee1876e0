"""The causal-LM loss with the LM head applied only where a label is supervised.

The LM head (hidden x vocab) is about a fifth of a small LLM's compute per
token (SmolLM2-135M: 576 x 49152 of ~135M weights), and most positions of a
LLaVA example are system prompt, image or question, whose logits the loss
throws away.  The value is the model's own loss: cross-entropy summed over
supervised tokens, divided by num_items_in_batch (the whole accumulated,
all-rank batch) when given, else by this batch's count.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from llava.constants import IGNORE_INDEX


def answer_positions_loss(model, lm_head, inputs: dict, num_items_in_batch=None) -> torch.Tensor:
    labels = inputs["labels"]
    fwd = {k: v for k, v in inputs.items() if k != "labels"}
    # logits_to_keep=1: the model computes one position's logits, not the whole sequence's.
    out = model(**fwd, output_hidden_states=True, logits_to_keep=1)
    hidden = out.hidden_states[-1][:, :-1]  # the last entry is after the final norm
    target = labels[:, 1:]
    keep = target != IGNORE_INDEX
    logits = lm_head(hidden[keep]).float()
    loss = F.cross_entropy(logits, target[keep], reduction="sum")
    if num_items_in_batch is None:
        return loss / keep.sum().clamp(min=1)
    return loss / num_items_in_batch
