"""Llama-3.2-11B-Vision's shape with random weights in 4-bit, through our loader: generation tokens/s and
peak GPU memory (batch 1, as the tag-rating system reports 40.65 tokens/s and 7.8 GB, and batch 8), and
a QLoRA step's tokens/s and peak memory (LoRA r16 on the language model, the projector frozen: that
system's recipe), all in one process.

    python bench/mllama_11b.py --workdir /tmp/mllama11b                 # on a GPU (writes ~21 GB, then measures)
    python bench/mllama_11b.py --workdir /tmp/mllama-tiny --size tiny   # the same code on a CPU, in seconds

Random weights: speed and memory do not depend on them.  Generation is forced to --new-tokens tokens
(min_new_tokens), so every run generates the same amount.  The QLoRA step is peft's LoRA on the 4-bit
model as loaded by load_pretrained_model, with the training batch made by our collator from LLaVA
records (llava/data/family_examples.py), in the same process: not the DeepSpeed launch (its own
start-up would not fit a short GPU lease), the same model and batch.
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import argparse  # noqa: E402
import gc  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402
from safetensors.torch import save_file  # noqa: E402
from transformers import MllamaConfig, MllamaForConditionalGeneration  # noqa: E402

from llava.data.collate import FamilyCollator  # noqa: E402
from llava.data.family_examples import FamilyExampleBuilder  # noqa: E402
from llava.demo import family_models  # noqa: E402
from llava.model.builder import load_pretrained_model  # noqa: E402
from llava.model.inputs import build_batch, render_prompt  # noqa: E402
from llava.model.lora import language_model_linear_names, llm_target_regex  # noqa: E402

SIZES = {
    # meta-llama/Llama-3.2-11B-Vision-Instruct's config.json
    "11b": dict(
        vision=dict(hidden_size=1280, num_hidden_layers=32, num_global_layers=8, attention_heads=16,
                    intermediate_size=5120, vision_output_dim=7680, image_size=560, patch_size=14, max_num_tiles=4,
                    intermediate_layers_indices=[3, 7, 15, 23, 30]),
        text=dict(vocab_size=128256, hidden_size=4096, num_hidden_layers=40, num_attention_heads=32,
                  num_key_value_heads=8, intermediate_size=14336, max_position_embeddings=131072,
                  cross_attention_layers=[3, 8, 13, 18, 23, 28, 33, 38], rope_theta=500000.0),
        image=560,
    ),
    "tiny": dict(
        vision=dict(hidden_size=32, num_hidden_layers=2, num_global_layers=1, attention_heads=4, intermediate_size=64,
                    vision_output_dim=64, image_size=28, patch_size=14, max_num_tiles=4,
                    intermediate_layers_indices=[0]),
        text=dict(vocab_size=600, hidden_size=32, num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=2,
                  intermediate_size=64, max_position_embeddings=2048, cross_attention_layers=[1]),
        image=28,
    ),
}


def write_checkpoint(out: Path, size: str, device: str) -> None:
    """Random bf16 weights of the shape, in ~4 GB safetensors shards with an index, and a processor."""
    spec = SIZES[size]
    _, processor = family_models.mllama()  # our offline tokenizer and chat template, the 11B's image size
    processor.image_processor.size = {"height": spec["image"], "width": spec["image"]}
    tok = processor.tokenizer
    text = dict(spec["text"])
    text.update(bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    text.setdefault("rope_parameters", {"rope_type": "default", "rope_theta": text.pop("rope_theta", 10000.0)})
    config = MllamaConfig(vision_config=spec["vision"], text_config=text,
                          image_token_index=tok.convert_tokens_to_ids("<|image|>"))
    with torch.device("meta"):
        model = MllamaForConditionalGeneration(config)
    gen = torch.Generator(device=device).manual_seed(0)
    out.mkdir(parents=True, exist_ok=True)
    shard, shards, index, size_now = {}, [], {}, 0

    def flush():
        nonlocal shard, size_now
        if shard:
            name = f"model-{len(shards) + 1:05d}.safetensors"
            save_file(shard, str(out / name), metadata={"format": "pt"})
            shards.append(name)
            index.update({k: name for k in shard})
            shard, size_now = {}, 0

    for name, t in model.state_dict().items():
        if "norm" in name and name.endswith("weight"):
            w = torch.ones(t.shape, dtype=torch.bfloat16)
        else:
            w = (torch.randn(t.shape, generator=gen, device=device, dtype=torch.bfloat16) * 0.02).cpu()
        shard[name] = w.contiguous()
        size_now += w.numel() * 2
        if size_now > 4 * 2**30:
            flush()
    flush()
    total = sum((out / s).stat().st_size for s in shards)
    (out / "model.safetensors.index.json").write_text(json.dumps({"metadata": {"total_size": total},
                                                                   "weight_map": index}))
    config.save_pretrained(out)
    processor.save_pretrained(out)


def _cuda(device: str) -> bool:
    return device.startswith("cuda")


def _reset(device: str) -> None:
    gc.collect()
    if _cuda(device):
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def _peak(device: str) -> float | None:
    return round(torch.cuda.max_memory_allocated() / 2**30, 2) if _cuda(device) else None


def _sync(device: str) -> None:
    if _cuda(device):
        torch.cuda.synchronize()


def images(n: int, size: int) -> list[Image.Image]:
    rng = np.random.RandomState(0)
    return [Image.fromarray(rng.randint(0, 255, (size, size + size // 3, 3)).astype("uint8")) for _ in range(n)]


def generation(loaded, device: str, batch: int, new_tokens: int, image_size: int) -> dict:
    prompts = [render_prompt(loaded, f"Rate how well this image matches the search term 'tag {i}', 0 to 5.", True)
               for i in range(batch)]
    inputs = build_batch(loaded, prompts, images(batch, image_size))
    with torch.inference_mode():
        loaded.model.generate(**inputs, max_new_tokens=2, do_sample=False)  # warm-up
        _reset(device)
        _sync(device)
        t0 = time.perf_counter()
        out = loaded.model.generate(**inputs, max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False)
        _sync(device)
        seconds = time.perf_counter() - t0
    generated = (out.shape[1] - inputs["input_ids"].shape[1]) * batch
    return {"batch": batch, "prompt_tokens": int(inputs["input_ids"].shape[1]), "generated_tokens": generated,
            "seconds": round(seconds, 2), "tokens_per_s": round(generated / seconds, 1),
            "peak_gpu_gib": _peak(device)}


def qlora(loaded, device: str, batch: int, steps: int, image_size: int) -> dict:
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training  # noqa: PLC0415

    family = loaded.family
    model = prepare_model_for_kbit_training(loaded.model, use_gradient_checkpointing=True)
    llm = family.language_model
    model = get_peft_model(model, LoraConfig(r=16, lora_alpha=32, lora_dropout=0.05, task_type="CAUSAL_LM",
                                             target_modules=llm_target_regex(language_model_linear_names(model, llm),
                                                                             llm)))
    builder = FamilyExampleBuilder(family, loaded.processor, loaded.image_token_id)
    answer = "The image matches the search term well: the object it names fills the centre of the picture. 4"
    items = []
    for i, im in enumerate(images(batch, image_size)):
        record = {"id": str(i), "image": "x", "conversations": [
            {"from": "human", "value": f"<image>\nRate how well this image matches the search term 'tag {i}'."},
            {"from": "gpt", "value": answer}]}
        ex = builder(record, str(i))
        items.append({"text": ex.text, "name": str(i), "input_ids": torch.tensor(ex.input_ids),
                      "labels": torch.tensor(ex.labels), "image": im})
    batch_inputs = FamilyCollator(family, loaded.processor, loaded.image_token_id)(items)
    dtype = torch.bfloat16 if _cuda(device) else torch.float32
    batch_inputs = {k: (v.to(device, dtype) if v.is_floating_point() else v.to(device))
                    for k, v in batch_inputs.items()}
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    model.train()
    tokens = int(batch_inputs["attention_mask"].sum())
    times = []
    for step in range(steps + 1):  # the first is a warm-up
        if step == 1:
            _reset(device)
        _sync(device)
        t0 = time.perf_counter()
        with torch.autocast(device.split(":")[0], dtype=dtype, enabled=_cuda(device)):
            loss = model(**batch_inputs).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        _sync(device)
        times.append(time.perf_counter() - t0)
    per_step = sum(times[1:]) / steps
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return {"batch": batch, "tokens_per_step": tokens, "seconds_per_step": round(per_step, 3),
            "tokens_per_s": round(tokens / per_step, 1), "trainable_params": trainable,
            "last_loss": round(float(loss), 3), "peak_gpu_gib": _peak(device)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--workdir", default="/tmp/mllama11b")
    ap.add_argument("--size", default="11b", choices=sorted(SIZES))
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--new-tokens", type=int, default=64)
    ap.add_argument("--train-batch", type=int, default=4)
    ap.add_argument("--train-steps", type=int, default=3)
    ap.add_argument("--json", default=None, help="also write the results here")
    args = ap.parse_args()
    out = Path(args.workdir)
    t0 = time.perf_counter()
    if not (out / "model.safetensors.index.json").exists():
        write_checkpoint(out, args.size, args.device)
    results = {"size": args.size, "device": torch.cuda.get_device_name() if _cuda(args.device) else "cpu",
               "write_s": round(time.perf_counter() - t0, 1)}
    print(json.dumps(results), flush=True)
    _reset(args.device)
    t0 = time.perf_counter()
    loaded = load_pretrained_model(str(out), device=args.device, load_4bit=True)
    results["load_4bit_s"] = round(time.perf_counter() - t0, 1)
    results["load_peak_gpu_gib"] = _peak(args.device)
    image = SIZES[args.size]["image"]
    for batch in (1, 8):
        results[f"generate_batch{batch}"] = generation(loaded, args.device, batch, args.new_tokens, image)
        print(json.dumps(results[f"generate_batch{batch}"]), flush=True)
    results["qlora"] = qlora(loaded, args.device, args.train_batch, args.train_steps, image)
    print(json.dumps(results["qlora"]), flush=True)
    print("\nreference (the tag-rating system, Llama-3.2-11B-Vision 4-bit): 40.65 tokens/s, 7.8 GB at inference")
    print(json.dumps(results, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
