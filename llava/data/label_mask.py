"""One training record -> (input_ids, labels), with the label mask taken from explicit spans.

The original LLaVA masked labels by re-tokenising each round on its own and
counting tokens; when the counts disagreed (another tokenizer, a template
change) it printed "tokenization mismatch" and masked the whole record, a
known cause of a loss stuck at 0.  Here the template reports where each
assistant answer sits in the prompt (`Template.render`), the tokenizer reports
where each token sits (`tokenize_prompt`), and a token is supervised when the
two overlap.  Anything that does not line up is an error naming the record.

The masking rule.  For assistant turn k the supervised characters are
[g_k, e_k): g_k is the end of the generation prompt for that turn (what
`render(..., add_generation_prompt=True)` gives for the conversation so far)
and e_k the end of the answer's end-of-turn marker.  So the model learns
exactly what it has to produce at inference, after the prompt it will be
given:
  * vicuna_v1: the prompt ends "ASSISTANT:", the training text has
    "ASSISTANT: Red</s>", so the space is the model's to generate.  With a
    Llama tokenizer it merges into "▁Red"; before an answer such as "3" it
    is a token of its own ("▁", "3"), supervised too.  Both match the original.
  * llava_llama_3: the prompt already ends with the header and "\\n\\n", so
    only the answer and <|eot_id|> are supervised.
  * plain: the prompt is the image; the caption and its "\\n" are supervised.
A token [s, e) is supervised when s < e_k and e > g_k; a zero-width token
(the lone "▁" SentencePiece puts after an image) counts as the character at s.
Image tokens and the tokenizer's leading special tokens (BOS) are never
supervised, whatever their offsets say.
"""

from __future__ import annotations

from typing import Any, NamedTuple, Sequence

import numpy as np

from llava.constants import DEFAULT_IMAGE_TOKEN, IGNORE_INDEX
from llava.conversation import ASSISTANT, USER, Template, first_turn_with_image
from llava.mm_utils import special_affixes, tokenize_prompt

# The roles of LLaVA records ("human"/"gpt") and of chat-style records ("user"/"assistant").
ROLES = {"human": USER, "user": USER, "gpt": ASSISTANT, "assistant": ASSISTANT}


class RecordError(ValueError):
    """A training record that cannot become a supervised example; the message names it."""


class OverlongError(RecordError):
    """The record does not fit model_max_length without cutting the image or every answer."""

    def __init__(self, message: str, length: int):
        super().__init__(message)
        self.length = length


class Example(NamedTuple):
    input_ids: list[int]
    labels: list[int]


class Conversation(NamedTuple):
    """A record checked and normalised: the image placeholder is where the original puts it."""

    system: str | None  # a leading "system" turn overrides the template's system prompt
    turns: list[tuple[str, str]]  # (USER | ASSISTANT, text), alternating, user first, assistant last
    has_image: bool


def describe(record: Any, index: int | None = None, source: str | None = None) -> str:
    """'train.json record 17 (id "q17")': how every error names a record."""
    where = f"{source} " if source else ""
    where += f"record {index}" if index is not None else "record"
    rid = record.get("id") if isinstance(record, dict) else None
    return where + (f" (id {rid!r})" if rid is not None else "")


def image_of(record: dict, name: str) -> str | None:
    """The record's image path; None for a text-only record."""
    image = record.get("image")
    if image is None:
        return None
    if isinstance(image, list):  # LLaVA-OneVision style; LLaVA-1.5 has one image per record
        if len(image) != 1:
            raise RecordError(f"{name}: {len(image)} images; LLaVA-1.5 training takes at most one per record")
        image = image[0]
    if not isinstance(image, str) or not image.strip():
        raise RecordError(f"{name}: 'image' must be a non-empty path, got {image!r}")
    return image


def parse_record(record: Any, name: str) -> Conversation:
    """Check a LLaVA conversation record and turn it into template turns.

    Cheap (no tokenizer): the dataset runs it on every record when it loads
    the file, so bad records stop the run before it starts, all listed.
    """
    if not isinstance(record, dict):
        raise RecordError(f"{name}: expected a JSON object, got {type(record).__name__}")
    has_image = image_of(record, name) is not None
    convs = record.get("conversations")
    if not isinstance(convs, list) or not convs:
        raise RecordError(f"{name}: 'conversations' must be a non-empty list")
    system = None
    turns: list[tuple[str, str]] = []
    for i, turn in enumerate(convs):
        if not isinstance(turn, dict) or not isinstance(turn.get("value"), str):
            raise RecordError(f"{name}: turn {i} must be an object with a string 'value'")
        role = turn.get("from", turn.get("role"))
        if role == "system" and i == 0:
            system = turn["value"]
            continue
        if role not in ROLES:
            raise RecordError(f"{name}: turn {i} has role {role!r}; expected human/gpt (or user/assistant), "
                              "and 'system' only as the first turn")
        expected = USER if len(turns) % 2 == 0 else ASSISTANT
        if ROLES[role] != expected:
            raise RecordError(f"{name}: turn {i} is {role!r} where a {'human' if expected == USER else 'gpt'} "
                              "turn is due; turns must alternate human, gpt, ... starting with human")
        text = turn["value"]
        if expected == ASSISTANT and not text.strip():
            raise RecordError(f"{name}: turn {i} is an empty answer")
        turns.append((expected, text))
    if not turns:
        raise RecordError(f"{name}: no human/gpt turns")
    if len(turns) % 2:
        raise RecordError(f"{name}: the last turn is a human turn with no answer")
    _place_image(turns, has_image, name)
    return Conversation(system, turns, has_image)


def _place_image(turns: list[tuple[str, str]], has_image: bool, name: str) -> None:
    counts = [text.count(DEFAULT_IMAGE_TOKEN) for _, text in turns]
    if not has_image:
        if any(counts):
            raise RecordError(f"{name}: has no 'image' but turn {_first(counts)} contains {DEFAULT_IMAGE_TOKEN}")
        return
    if sum(counts) > 1:
        raise RecordError(f"{name}: {sum(counts)} {DEFAULT_IMAGE_TOKEN} placeholders; one image per record")
    if sum(counts) == 1 and counts[0] == 0:
        raise RecordError(f"{name}: {DEFAULT_IMAGE_TOKEN} is in turn {_first(counts)}; it belongs in the first "
                          "human turn")
    # Missing placeholder: added.  Present: moved to the front, as the original's preprocess_multimodal.
    turns[0] = (USER, first_turn_with_image(turns[0][1]))


def _first(counts: list[int]) -> int:
    return next(i for i, c in enumerate(counts) if c)


def supervised_ranges(template: Template, conv: Conversation, eos_token: str, text: str,
                      spans: Sequence[tuple[int, int]], name: str) -> list[tuple[int, int]]:
    """[g_k, e_k) per assistant turn: from the end of its generation prompt to the end of its answer."""
    if len(spans) != len(conv.turns) // 2:
        raise RecordError(f"{name}: the {template.name} template gave {len(spans)} answer spans "
                          f"for {len(conv.turns) // 2} answers")
    out = []
    for k, (start, end) in enumerate(spans):
        prompt, _ = template.render(conv.turns[: 2 * k + 1], eos_token, add_generation_prompt=True,
                                    system=conv.system)
        # A template whose generation prompt is not a prefix of its training text would make
        # "what the model generates" ill-defined; fall back to the answer span itself.
        g = len(prompt) if text.startswith(prompt) and len(prompt) <= start else start
        out.append((g, end))
    return out


def mask_labels(ids: np.ndarray, offsets: np.ndarray, ranges: Sequence[tuple[int, int]], n_prefix: int,
                image_token_id: int, name: str) -> np.ndarray:
    """labels: ids where a token overlaps a supervised range, IGNORE_INDEX elsewhere."""
    starts = offsets[:, 0]
    ends = np.maximum(offsets[:, 1], starts + 1)  # zero-width tokens: the character at their start
    labels = np.full_like(ids, IGNORE_INDEX)
    for k, (g, e) in enumerate(ranges):
        hit = (starts < e) & (ends > g)
        hit[:n_prefix] = False
        hit &= ids != image_token_id
        if not hit.any():
            raise RecordError(f"{name}: answer {k} (characters {g}-{e}) got no tokens")
        labels[hit] = ids[hit]
    return labels


class ExampleBuilder:
    """Turns records into Examples for one template and tokenizer.

    A class so that what depends only on the tokenizer (its leading special
    tokens, eos) is worked out once, not per record.
    """

    def __init__(self, template: Template, tokenizer, image_token_id: int, num_image_tokens: int,
                 max_length: int | None = None):
        self.template = template
        self.tokenizer = tokenizer
        self.image_token_id = image_token_id
        self.num_image_tokens = num_image_tokens
        self.max_length = max_length
        self.eos = tokenizer.eos_token
        self.n_prefix = len(special_affixes(tokenizer)[0])

    def __call__(self, record: Any, name: str | None = None, conv: Conversation | None = None) -> Example:
        """(input_ids, labels), truncated to max_length.

        Raises RecordError naming the record when it cannot be masked, and
        OverlongError (a RecordError) when truncation would cut into the image
        or leave no supervised token.
        """
        name = name or describe(record)
        conv = conv or parse_record(record, name)
        template = self.template
        if template.style == "plain" and len(conv.turns) != 2:
            raise RecordError(f"{name}: the plain template (stage-1 pretraining) takes one caption per record, "
                              f"got {len(conv.turns) // 2} answers")
        text, spans = template.render(conv.turns, self.eos, system=conv.system)
        tp = tokenize_prompt(text, self.tokenizer, self.image_token_id, self.num_image_tokens)
        ids = np.asarray(tp.input_ids, dtype=np.int64)
        offsets = np.asarray(tp.offsets, dtype=np.int64).reshape(-1, 2)
        image_pos = np.flatnonzero(ids == self.image_token_id)
        want = self.num_image_tokens if conv.has_image else 0
        if len(image_pos) != want or (want and image_pos[-1] - image_pos[0] != want - 1):
            raise RecordError(f"{name}: {len(image_pos)} image tokens in the prompt, expected {want} "
                              f"({int(conv.has_image)} image x {self.num_image_tokens} tokens in one run)")
        ranges = supervised_ranges(template, conv, self.eos, text, spans, name)
        labels = mask_labels(ids, offsets, ranges, self.n_prefix, self.image_token_id, name)
        if self.max_length is not None and len(ids) > self.max_length:
            ids, labels = truncate(ids, labels, image_pos, self.max_length, name)
        return Example(ids.tolist(), labels.tolist())


def build_example(record: Any, template: Template, tokenizer, image_token_id: int, num_image_tokens: int,
                  max_length: int | None = None, name: str | None = None) -> Example:
    """One record's (input_ids, labels); see ExampleBuilder."""
    return ExampleBuilder(template, tokenizer, image_token_id, num_image_tokens, max_length)(record, name)


def truncate(ids: np.ndarray, labels: np.ndarray, image_pos: np.ndarray, max_length: int, name: str):
    """Cut at the end, as the original; never inside the image, never down to no answer."""
    n = len(ids)
    if len(image_pos) and max_length <= image_pos[-1]:
        raise OverlongError(f"{name}: {n} tokens; model_max_length {max_length} would cut the image "
                            f"(its tokens end at {image_pos[-1] + 1})", n)
    if (labels[:max_length] == IGNORE_INDEX).all():
        raise OverlongError(f"{name}: {n} tokens; model_max_length {max_length} leaves no answer token", n)
    return ids[:max_length], labels[:max_length]
