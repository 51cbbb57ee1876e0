"""SDPA computed in fp32 on CPUs, for bf16 training there.

PyTorch's CPU flash-attention kernel runs its forward and backward slower in
bf16 than in fp32 at the embedded default's shapes, even counting the casts
(bench/cpu_attention.py; the figures are in docs/training.md, "Measurements"),
so a bf16 step on a CPU spends less time in attention when query, key and
value are cast up for the call and the output cast back down.  The linear layers stay in bf16.  Registered with
transformers' AttentionInterface (and its mask interface, as SDPA's) under
CPU_SDPA_FP32; anything not on a CPU, or already fp32 outside autocast, goes
to transformers' own SDPA unchanged.  The name is not saved with a model:
transformers leaves `_attn_implementation` out of config.json.
"""

from __future__ import annotations

import torch
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, sdpa_mask

CPU_SDPA_FP32 = "sdpa_cpu_fp32"


def sdpa_cpu_fp32_forward(module, query, key, value, attention_mask, **kwargs):
    low = query.dtype in (torch.bfloat16, torch.float16) or torch.is_autocast_enabled("cpu")
    if query.device.type != "cpu" or not low:
        return sdpa_attention_forward(module, query, key, value, attention_mask, **kwargs)
    if attention_mask is not None and attention_mask.is_floating_point():
        attention_mask = attention_mask.float()
    with torch.autocast("cpu", enabled=False):
        out, weights = sdpa_attention_forward(module, query.float(), key.float(), value.float(), attention_mask,
                                              **kwargs)
    return out.to(query.dtype), weights


def register_cpu_sdpa_fp32() -> str:
    """Make CPU_SDPA_FP32 an attention implementation transformers models accept; returns the name."""
    AttentionInterface.register(CPU_SDPA_FP32, sdpa_cpu_fp32_forward)
    ALL_MASK_ATTENTION_FUNCTIONS.register(CPU_SDPA_FP32, sdpa_mask)
    return CPU_SDPA_FP32
