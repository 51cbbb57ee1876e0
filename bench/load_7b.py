"""Load a LLaVA-1.5-7B-shaped original checkpoint through load_pretrained_model, in bf16 and 4-bit.

Random weights (speed and memory do not depend on them), written as the 7B
release is: fp16, two pytorch_model-*.bin shards with an index,
LlavaLlamaForCausalLM config, a hub id in mm_vision_tower (unreachable
offline) with the tower stored in the checkpoint.  For each mode it prints
load time, peak GPU memory, and greedy generation throughput for a batch of
8 image questions, so the two modes compare within one process.

    python bench/load_7b.py --workdir /tmp/llava7b --tokenizer-model PATH/tokenizer.model [--size 7b|small]

`--size small` runs the same path with a tiny shape (for checking on a CPU).
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # before huggingface_hub reads it: mm_vision_tower's hub id is not fetched

import argparse
import gc
import json
import shutil
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from transformers import CLIPVisionConfig, LlamaConfig

from llava.model.builder import load_pretrained_model
from llava.model.convert import _write_bins
from llava.model.directories import hf_key_to_original
from llava.model.inputs import build_batch, render_prompt
from llava.model.projector import make_config, model_class_for

SIZES = {
    "7b": dict(
        llm=dict(hidden_size=4096, intermediate_size=11008, num_hidden_layers=32, num_attention_heads=32,
                 num_key_value_heads=32, max_position_embeddings=4096, rms_norm_eps=1e-5),
        vision=dict(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16,
                    image_size=336, patch_size=14),
    ),
    "small": dict(
        llm=dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                 num_key_value_heads=4, max_position_embeddings=2048, rms_norm_eps=1e-5),
        vision=dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=1,
                    image_size=56, patch_size=14),
    ),
}


def write_checkpoint(out: Path, size: str, tokenizer_model: Path, device: str) -> None:
    spec = SIZES[size]
    vocab = 32000
    config = make_config(
        vision_config=CLIPVisionConfig(**spec["vision"]).to_dict(),
        text_config=LlamaConfig(vocab_size=vocab, **spec["llm"]).to_dict(),
        image_token_index=vocab,
    )
    with torch.device("meta"):
        model = model_class_for(config)(config)
    gen = torch.Generator(device=device).manual_seed(0)
    state = {}
    for name, t in model.state_dict().items():
        w = torch.randn(t.shape, generator=gen, device=device, dtype=torch.float16) * 0.02
        if name.endswith("norm.weight") or "layer_norm" in name or "layrnorm" in name:
            w = torch.ones(t.shape, dtype=torch.float16)
        state[hf_key_to_original(name)] = w.cpu()
    out.mkdir(parents=True, exist_ok=True)
    _write_bins(state, out, shards=2)
    llm = spec["llm"]
    cfg = dict(
        architectures=["LlavaLlamaForCausalLM"], model_type="llava", vocab_size=vocab, hidden_act="silu",
        bos_token_id=1, eos_token_id=2, pad_token_id=0, torch_dtype="float16", rope_theta=10000.0,
        rope_scaling=None, tie_word_embeddings=False, use_cache=True, initializer_range=0.02,
        mm_vision_tower="openai/clip-vit-large-patch14-336", mm_hidden_size=spec["vision"]["hidden_size"],
        mm_projector_type="mlp2x_gelu", mm_vision_select_layer=-2, mm_vision_select_feature="patch",
        mm_use_im_start_end=False, mm_use_im_patch_token=False, image_aspect_ratio="pad", **llm,
    )
    (out / "config.json").write_text(json.dumps(cfg, indent=2))
    shutil.copy(tokenizer_model, out / "tokenizer.model")
    (out / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "LlamaTokenizer", "add_bos_token": True, "legacy": False, "pad_token": "<unk>",
        "bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>"}))


def measure(path: Path, mode: str, device: str, batch: int, new_tokens: int) -> dict:
    if device.startswith("cuda"):
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    loaded = load_pretrained_model(str(path), device=device, load_4bit=mode == "4bit")  # "full": bf16 on GPU
    load_s = time.perf_counter() - t0
    rng = np.random.RandomState(0)
    images = [Image.fromarray(rng.randint(0, 255, (480, 640, 3)).astype("uint8")) for _ in range(batch)]
    prompts = [render_prompt(loaded, f"Question {i}: what is in this image?", True) for i in range(batch)]
    inputs = build_batch(loaded, prompts, images)
    kwargs = dict(max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False)
    with torch.inference_mode():
        loaded.model.generate(**inputs, max_new_tokens=2, do_sample=False)  # warm-up
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        t1 = time.perf_counter()
        out = loaded.model.generate(**inputs, **kwargs)
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        gen_s = time.perf_counter() - t1
    generated = (out.shape[1] - inputs["input_ids"].shape[1]) * batch
    result = {
        "mode": mode, "load_s": round(load_s, 1), "prompt_tokens": int(inputs["input_ids"].shape[1]),
        "batch": batch, "generated_tokens": generated, "generate_s": round(gen_s, 2),
        "tokens_per_s": round(generated / gen_s, 1),
        "dtype": str(next(loaded.model.model.language_model.parameters()).dtype),
        "attn": loaded.model.config._attn_implementation,
    }
    if device.startswith("cuda"):
        result["peak_gpu_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
    del loaded
    gc.collect()
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--workdir", default="/tmp/llava7b")
    ap.add_argument("--tokenizer-model", required=True)
    ap.add_argument("--size", default="7b", choices=sorted(SIZES))
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--new-tokens", type=int, default=32)
    ap.add_argument("--modes", default="full,4bit", help="full = bf16 on a GPU, fp32 on a CPU")
    ap.add_argument("--json", default=None, help="also write the results here")
    ap.add_argument("--write-only", action="store_true",
                    help="write the checkpoint, print its path and stop (for bench/train_throughput.py and "
                         "bench/inference_throughput.py)")
    args = ap.parse_args()
    ckpt = Path(args.workdir) / f"llava-{args.size}-original"
    if not (ckpt / "config.json").exists():
        t = time.perf_counter()
        write_checkpoint(ckpt, args.size, Path(args.tokenizer_model), args.device)
        print(f"wrote {ckpt} in {time.perf_counter() - t:.0f}s", flush=True)
    if args.write_only:
        print(ckpt)
        return
    results = []
    for mode in args.modes.split(","):
        r = measure(ckpt, mode, args.device, args.batch, args.new_tokens)
        print(json.dumps(r), flush=True)
        results.append(r)
    if len(results) == 2:
        a, b = results
        print(f"{b['mode']} vs {a['mode']}: tokens/s x{b['tokens_per_s'] / a['tokens_per_s']:.2f}"
              + (f", peak memory x{b['peak_gpu_gib'] / a['peak_gpu_gib']:.2f}" if "peak_gpu_gib" in a else ""))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
