"""Batches for generation: prompts rendered by the model's template, tokenized as the
original LLaVA does, left-padded, with preprocessed images in the tower's dtype.

A model of another family (llava/model/families) renders its prompt with its processor's chat
template (or its plain format) and its processor makes the whole batch; every function here takes
either, so the commands above call them without asking which family they hold."""

from __future__ import annotations

from typing import Sequence

import torch
from PIL import Image

from llava.conversation import USER, first_turn_with_image, get_template
from llava.mm_utils import tokenize_prompt
from llava.model.families import FamilyError


def render_prompt(loaded, question: str, has_image: bool, conv_mode: str | None = None, history=(),
                  system: str | None = None) -> str:
    """The generation prompt for `question` after `history` [(user, assistant), ...].

    The image placeholder goes in the first user turn, as in the original.  `system` replaces the
    template's own system prompt (None keeps it).
    """
    family = loaded.family
    if not family.native:
        if conv_mode:
            raise FamilyError(f"--conv-mode {conv_mode}: {family.title} models use their own chat template; "
                              "leave --conv-mode out")
        return family.render(loaded.processor, question, has_image, history, system)
    template = get_template(conv_mode or loaded.conv_mode)
    turns = []
    for i, (q, a) in enumerate(history):
        turns += [(USER, first_turn_with_image(q) if has_image and i == 0 else q), ("assistant", a)]
    turns.append((USER, first_turn_with_image(question) if has_image and not history else question))
    text, _ = template.render(turns, eos_token=loaded.tokenizer.eos_token, add_generation_prompt=True,
                              system=system)
    return text


def prompt_ids(loaded, prompt: str) -> list[int]:
    """Token ids of a rendered prompt, the image placeholder expanded to the model's image tokens
    (for another family: before its processor expands them, which depends on the image)."""
    if not loaded.family.native:
        return loaded.family.text_ids(loaded.processor, prompt)
    return tokenize_prompt(prompt, loaded.tokenizer, loaded.image_token_id, loaded.num_image_tokens).input_ids


def pad_left(rows: Sequence[Sequence[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(input_ids, attention_mask), left-padded: generation appends on the right."""
    width = max(len(r) for r in rows)
    input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    attention = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        input_ids[i, width - len(r):] = torch.tensor(r, dtype=torch.long)
        attention[i, width - len(r):] = 1
    return input_ids, attention


def check_image_count(loaded, ids: Sequence[int], has_image: bool) -> None:
    if not loaded.family.native:
        n_img = list(ids).count(loaded.image_token_id)
        # a template puts the placeholder in for the image; BLIP-2's processor adds its query tokens itself
        expected = int(has_image) if loaded.family.plain_prompt is None else 0
        if n_img != expected:
            raise ValueError(f"prompt has {n_img} image placeholders where {expected} belong "
                             f"({int(has_image)} image given): is the image token typed into the text?")
        return
    n_img = list(ids).count(loaded.image_token_id) // loaded.num_image_tokens
    if n_img != int(has_image):
        raise ValueError(f"prompt has {n_img} <image> placeholders but {int(has_image)} image given")


def to_model(loaded, input_ids: torch.Tensor, attention: torch.Tensor, pixels: torch.Tensor | None,
             prefix=None, image_part=None, image_rows=None) -> dict:
    """The batch on the model's device; with a PrefixCache, the shared prefix put in front from its cache.

    With image_part, input_ids are what follows it, pixels are the batch's distinct images and
    image_rows[i] is row i's image: the prefix, the part and its image run once per image.
    """
    model = loaded.model
    batch = {}
    if prefix is not None and image_part is not None:
        batch = prefix.image_batch(model, image_part, pixels.to(model.device, tower_dtype(model)), image_rows,
                                   input_ids, attention)
        return {k: v.to(model.device) if k != "cache" else v for k, v in batch.items()}
    if prefix is not None:
        batch = prefix.batch(input_ids, attention)
        input_ids, attention = batch.pop("input_ids"), batch.pop("attention_mask")
    batch.update(input_ids=input_ids.to(model.device), attention_mask=attention.to(model.device))
    if pixels is not None:
        batch["pixel_values"] = pixels.to(model.device, tower_dtype(model))
    return batch


def build_batch(loaded, prompts: Sequence[str], images: Sequence[Image.Image | None]) -> dict:
    """input_ids / attention_mask (left-padded) and pixel_values for model.generate."""
    if len(prompts) != len(images):
        raise ValueError(f"{len(prompts)} prompts but {len(images)} images")
    if not loaded.family.native:
        return family_to_model(loaded, loaded.family.inputs(loaded.processor, prompts, images))
    rows = [prompt_ids(loaded, p) for p in prompts]
    for ids, image in zip(rows, images):
        check_image_count(loaded, ids, image is not None)
    input_ids, attention = pad_left(rows, loaded.tokenizer.pad_token_id)
    present = [im for im in images if im is not None]
    pixels = loaded.image_processor(present, return_tensors="pt")["pixel_values"] if present else None
    return to_model(loaded, input_ids, attention, pixels)


def family_to_model(loaded, batch: dict) -> dict:
    """A family processor's batch on the model's device, its floating-point image tensors in the vision
    encoder's dtype."""
    model = loaded.model
    dtype = loaded.family.vision_dtype(model)
    return {k: v.to(model.device, dtype) if v.is_floating_point() else v.to(model.device) for k, v in batch.items()}


def tower_dtype(model) -> torch.dtype:
    """The vision tower's dtype (it stays unquantized; a PeftModel wraps it deeper)."""
    for name, module in model.named_modules():
        if name.endswith("vision_tower"):
            return next(module.parameters()).dtype
    raise ValueError("model has no vision_tower")


@torch.inference_mode()
def generate(loaded, questions: Sequence[str], images: Sequence[Image.Image | None], max_new_tokens=64,
             temperature=0.0, top_p=None, num_beams=1, conv_mode=None) -> list[str]:
    """Answers to a batch of single-turn questions."""
    prompts = [render_prompt(loaded, q, im is not None, conv_mode) for q, im in zip(questions, images)]
    batch = build_batch(loaded, prompts, images)
    texts, _ = generate_batch(loaded, batch, max_new_tokens=max_new_tokens, temperature=temperature,
                              top_p=top_p, num_beams=num_beams)
    return texts


@torch.inference_mode()
def generate_batch(loaded, batch: dict, max_new_tokens=64, temperature=0.0, top_p=None,
                   num_beams=1, min_new_tokens=0, length_penalty=1.0) -> tuple[list[str], list[int]]:
    """(answers, generated token counts) for a batch from build_batch / to_model.

    Greedy unless temperature > 0.  A count includes the end-of-sequence token,
    not the padding that finished rows get while others go on.
    """
    sample = temperature > 0
    out = loaded.model.generate(
        **batch,
        max_new_tokens=max_new_tokens,
        do_sample=sample,
        temperature=temperature if sample else None,
        top_p=top_p if sample else None,
        num_beams=num_beams,
        min_new_tokens=min_new_tokens or None,
        length_penalty=length_penalty if num_beams > 1 else None,
        pad_token_id=loaded.tokenizer.pad_token_id,
    )
    new = out[:, batch["input_ids"].shape[1]:]
    texts = [t.strip() for t in loaded.tokenizer.batch_decode(new, skip_special_tokens=True)]
    return texts, generated_lengths(new, loaded.model.generation_config.eos_token_id)


def generated_lengths(new: torch.Tensor, eos) -> list[int]:
    """Tokens up to and including the first end-of-sequence token of each row."""
    if eos is None:
        return [new.shape[1]] * len(new)
    is_eos = torch.isin(new, torch.tensor(eos if isinstance(eos, (list, tuple)) else [eos], device=new.device))
    first = is_eos.int().argmax(1) + 1
    return torch.where(is_eos.any(1), first, new.shape[1]).tolist()
