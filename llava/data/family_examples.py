"""Training examples for a model family other than LLaVA-1.5: one LLaVA conversation record ->
(the family's prompt text, the image, token ids and labels before the processor expands the image).

The records are the same LLaVA conversation files every family trains on; what differs is the text
the family's processor renders from them (its chat template, or BLIP-2's "Question: ... Answer:").
The masking rule is the one of llava/data/label_mask.py, with the family's renderer in place of our
templates.  For assistant turn k the supervised characters are [g_k, e_k): g_k is the end of the
generation prompt for the conversation so far (what inference renders, `add_generation_prompt`),
e_k the end of the answer's end-of-turn token (the template's text for turns 0..k, without the
whitespace some templates put after it, such as ChatML's "\\n" after <|im_end|>).  BLIP-2 has no
template: its turn is "Question: q Answer:" then " a" and the tokenizer's end-of-sequence token.

The token ids are the tokenizer's, with each image still one placeholder token; the processor
expands it in the collator (the count depends on the image: LLaVA-NeXT's tiles, Qwen2-VL's grid),
and `align_labels` carries the labels over, the added image tokens unsupervised.  Everything that
does not line up (a template whose prompt is not a prefix of its training text, tokens that do not
match after expansion) is an error naming the record.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from llava.constants import DEFAULT_IMAGE_TOKEN, IGNORE_INDEX
from llava.data.label_mask import (
    ASSISTANT,
    Conversation,
    OverlongError,
    RecordError,
    mask_labels,
    parse_record,
)


class FamilyExample(NamedTuple):
    text: str  # the whole conversation as the family's processor renders it
    input_ids: list[int]  # tokenizer ids, each image one placeholder token
    labels: list[int]


class FamilyExampleBuilder:
    def __init__(self, family, processor, image_token_id: int, max_length: int | None = None):
        self.family, self.processor, self.max_length = family, processor, max_length
        self.tokenizer = processor.tokenizer
        if not self.tokenizer.is_fast:
            raise ValueError(f"{family.title}: training needs a fast tokenizer (character offsets for the labels)")
        self.image_token_id = image_token_id  # the model config's: what the processor expands

    def render(self, conv: Conversation, upto: int, generation_prompt: bool) -> str:
        """The text of conv's turns [0, upto), with the generation prompt for the next answer or not."""
        turns = conv.turns[:upto]
        questions = [(t.replace(DEFAULT_IMAGE_TOKEN, "").strip() if i == 0 else t) for i, (_, t) in enumerate(turns)]
        if self.family.plain_prompt is not None:  # BLIP-2: one question (or none: a caption) and its answer
            q = questions[0]
            prompt = self.family.plain_prompt.format(question=q) if q else ""
            if upto == 1:
                return prompt
            answer = turns[1][1] + self.tokenizer.eos_token
            return f"{prompt} {answer}" if prompt else answer
        messages = [{"role": "system", "content": conv.system}] if conv.system is not None else []
        for i, (role, _) in enumerate(turns):
            if role == ASSISTANT:
                messages.append({"role": "assistant", "content": [{"type": "text", "text": turns[i][1]}]})
            else:
                image = [{"type": "image"}] if conv.has_image and i == 0 else []
                messages.append({"role": "user", "content": image + [{"type": "text", "text": questions[i]}]})
        return self.processor.apply_chat_template(messages, add_generation_prompt=generation_prompt, tokenize=False)

    def __call__(self, record, name: str, conv: Conversation | None = None) -> FamilyExample:
        conv = conv or parse_record(record, name)
        family = self.family
        if family.needs_image and not conv.has_image:
            raise RecordError(f"{name}: {family.title} trains on image records only; this one has no image")
        if family.plain_prompt is not None and (len(conv.turns) != 2 or conv.system is not None):
            raise RecordError(f"{name}: {family.title} has no chat template: it trains on one question (or none, "
                              "for a caption) and one answer per record, with no system turn")
        text = self.render(conv, len(conv.turns), False)
        ranges = []
        for k in range(len(conv.turns) // 2):
            prompt = self.render(conv, 2 * k + 1, True)
            done = self.render(conv, 2 * k + 2, False).rstrip()
            if not (text.startswith(prompt) and text.startswith(done) and len(prompt) < len(done)):
                raise RecordError(f"{name}: the {family.title} chat template does not render answer {k} after its "
                                  "prompt (the prompt is not a prefix of the conversation's text); it cannot be "
                                  "masked")
            ranges.append((len(prompt), len(done)))
        tok = self.tokenizer
        plain_bos = bool(tok.bos_token) and text.startswith(tok.bos_token)
        enc = tok(text, add_special_tokens=not plain_bos, return_offsets_mapping=True)
        ids = np.asarray(enc["input_ids"], dtype=np.int64)
        offsets = np.asarray(enc["offset_mapping"], dtype=np.int64).reshape(-1, 2)
        n_prefix = 0 if plain_bos else len(tok("", add_special_tokens=True).input_ids)
        labels = mask_labels(ids, offsets, ranges, n_prefix, self.image_token_id, name)
        n_images = int((ids == self.image_token_id).sum())
        if family.plain_prompt is None and n_images != int(conv.has_image):
            raise RecordError(f"{name}: {n_images} image placeholders in the rendered text, expected "
                              f"{int(conv.has_image)} (is {DEFAULT_IMAGE_TOKEN} or the family's image token typed "
                              "into the text?)")
        if self.max_length is not None and len(ids) > self.max_length:
            raise OverlongError(f"{name}: {len(ids)} tokens before the image is expanded, more than "
                                f"model_max_length {self.max_length}", len(ids))
        return FamilyExample(text, ids.tolist(), labels.tolist())


def align_labels(expanded: list[int], ids: list[int], labels: list[int], image_id: int, name: str) -> list[int]:
    """Labels for the processor's ids: `ids` with image placeholders expanded (more image tokens, in place
    or in front, as BLIP-2's query tokens); every added image token unsupervised."""
    out, i = [], 0
    for token in expanded:
        if i < len(ids) and token == ids[i]:
            out.append(labels[i])
            i += 1
        elif token == image_id:
            out.append(IGNORE_INDEX)
        else:
            raise RecordError(f"{name}: the processor's tokens do not line up with the tokenizer's at token "
                              f"{len(out)} ({token} where {ids[i] if i < len(ids) else 'the end'} was expected)")
    if i != len(ids):
        raise RecordError(f"{name}: the processor dropped tokens ({len(ids) - i} of the text's are missing)")
    return out
