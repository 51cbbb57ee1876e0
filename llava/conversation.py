"""Conversation templates, rendered exactly as the original LLaVA renders them.

A template turns a list of (role, text) turns into the prompt string the model
sees.  `render` also returns the character spans of what the assistant says
(its answer plus its end-of-turn marker): training supervises exactly those
spans, so label masks come from explicit positions instead of the original's
re-tokenise-and-hope approach.

Each template also has a Jinja twin (`chat_template`) stored with the
processor, so plain `transformers` users get the same prompt through
`processor.apply_chat_template`.  A test keeps the two byte-for-byte equal.
"""

from __future__ import annotations

import dataclasses
import enum
from typing import Sequence

from llava.constants import DEFAULT_IMAGE_TOKEN

USER, ASSISTANT = "user", "assistant"

VICUNA_SYSTEM = (
    "A chat between a curious user and an artificial intelligence assistant. "
    "The assistant gives helpful, detailed, and polite answers to the user's questions."
)
LLAVA_V1_SYSTEM = (
    "A chat between a curious human and an artificial intelligence assistant. "
    "The assistant gives helpful, detailed, and polite answers to the human's questions."
)


@dataclasses.dataclass(frozen=True)
class Template:
    """One prompt format.

    style "two" is LLaVA's SeparatorStyle.TWO (vicuna_v1):
        system + sep + "USER: q" + sep + "ASSISTANT: a" + eos + "USER: ..." + ... + "ASSISTANT:"
    style "plain" is LLaVA's pretraining format: the user turn (the image) then
        the caption and a newline, no roles and no system prompt.
    style "llama3" is LLaVA-NeXT's Llama-3 format with header tokens.
    """

    name: str
    style: str
    system: str = ""
    roles: tuple[str, str] = ("USER", "ASSISTANT")
    sep: str = " "
    # End of the assistant's turn.  None means "the tokenizer's eos token":
    # vicuna_v1 writes "</s>", which is the eos of Llama tokenizers; with any
    # other tokenizer the literal "</s>" would be several ordinary tokens.
    eos: str | None = None

    def render(
        self,
        turns: Sequence[tuple[str, str]],
        eos_token: str = "</s>",
        add_generation_prompt: bool = False,
        system: str | None = None,
    ) -> tuple[str, list[tuple[int, int]]]:
        """Render `turns` ((role, text), role "user" / "assistant", alternating,
        user first) to (prompt, assistant_spans).

        assistant_spans are [start, end) character ranges of each assistant
        answer including its end-of-turn marker.
        """
        _check_turns(turns)
        eos = self.eos if self.eos is not None else eos_token
        system = self.system if system is None else system
        parts: list[str] = []
        spans: list[tuple[int, int]] = []
        pos = 0

        def emit(text: str, supervised: bool = False) -> None:
            nonlocal pos
            if supervised and text:
                spans.append((pos, pos + len(text)))
            parts.append(text)
            pos += len(text)

        if self.style == "two":
            emit(system + self.sep)
            for role, text in turns:
                if role == USER:
                    emit(f"{self.roles[0]}: {text}{self.sep}")
                else:
                    emit(f"{self.roles[1]}: ")
                    emit(text + eos, supervised=True)
            if add_generation_prompt:
                emit(f"{self.roles[1]}:")
        elif self.style == "plain":
            # LLaVA's preprocess_plain: the image placeholder alone, then the
            # caption and sep.  Any user text beyond the placeholder is dropped,
            # exactly as the original does.
            for role, text in turns:
                if role == USER:
                    emit(DEFAULT_IMAGE_TOKEN if DEFAULT_IMAGE_TOKEN in text else text)
                else:
                    emit(text + self.sep, supervised=True)
        elif self.style == "llama3":
            emit("<|begin_of_text|>")
            if system:
                emit(f"<|start_header_id|>system<|end_header_id|>\n\n{system}<|eot_id|>")
            for role, text in turns:
                name = "user" if role == USER else "assistant"
                emit(f"<|start_header_id|>{name}<|end_header_id|>\n\n")
                if role == USER:
                    emit(text + "<|eot_id|>")
                else:
                    emit(text + "<|eot_id|>", supervised=True)
            if add_generation_prompt:
                emit("<|start_header_id|>assistant<|end_header_id|>\n\n")
        else:  # pragma: no cover - guarded by the registry below
            raise ValueError(f"unknown template style {self.style!r}")
        return "".join(parts), spans

    def prompt(self, question: str, eos_token: str = "</s>", system: str | None = None) -> str:
        """The generation prompt for a single user turn."""
        text, _ = self.render([(USER, question)], eos_token, add_generation_prompt=True, system=system)
        return text

    @property
    def chat_template(self) -> str:
        return CHAT_TEMPLATES[self.style].replace("@@SYSTEM@@", _jinja_str(self.system))


def _check_turns(turns: Sequence[tuple[str, str]]) -> None:
    for i, (role, _) in enumerate(turns):
        expected = USER if i % 2 == 0 else ASSISTANT
        if role != expected:
            raise ValueError(
                f"turn {i} has role {role!r}; turns must alternate user, assistant, user, ... starting with user"
            )


def _jinja_str(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


# Jinja twins of Template.render, in the message format of transformers'
# apply_chat_template: content is a string or a list of {"type": "image"} /
# {"type": "text", "text": ...} parts; an image part renders as "<image>\n".
_CONTENT = (
    "{%- macro content(m) -%}"
    "{%- if m['content'] is string -%}{{- m['content'] -}}"
    "{%- else -%}{%- for part in m['content'] -%}"
    "{%- if part['type'] == 'image' -%}{{- '<image>\\n' -}}"
    "{%- elif part['type'] == 'text' -%}{{- part['text'] -}}{%- endif -%}"
    "{%- endfor -%}{%- endif -%}"
    "{%- endmacro -%}"
    "{%- set system = @@SYSTEM@@ -%}"
    "{%- if messages and messages[0]['role'] == 'system' -%}"
    "{%- set system = content(messages[0]) -%}{%- set messages = messages[1:] -%}"
    "{%- endif -%}"
)
CHAT_TEMPLATES = {
    "two": _CONTENT
    + "{{- system + ' ' -}}"
    "{%- for m in messages -%}"
    "{%- if m['role'] == 'user' -%}{{- 'USER: ' + content(m) + ' ' -}}"
    "{%- else -%}{{- 'ASSISTANT: ' + content(m) + eos_token -}}{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- 'ASSISTANT:' -}}{%- endif -%}",
    "plain": _CONTENT
    + "{%- for m in messages -%}"
    "{%- if m['role'] == 'user' -%}{{- '<image>' if '<image>' in content(m) else content(m) -}}"
    "{%- else -%}{{- content(m) + '\\n' -}}{%- endif -%}"
    "{%- endfor -%}",
    "llama3": _CONTENT
    + "{{- '<|begin_of_text|>' -}}"
    "{%- if system -%}{{- '<|start_header_id|>system<|end_header_id|>\\n\\n' + system + '<|eot_id|>' -}}{%- endif -%}"
    "{%- for m in messages -%}"
    "{{- '<|start_header_id|>' + m['role'] + '<|end_header_id|>\\n\\n' + content(m) + '<|eot_id|>' -}}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' -}}{%- endif -%}",
}


TEMPLATES: dict[str, Template] = {
    "vicuna_v1": Template("vicuna_v1", "two", VICUNA_SYSTEM),
    "llava_v1": Template("llava_v1", "two", LLAVA_V1_SYSTEM),
    "plain": Template("plain", "plain", "", ("", ""), sep="\n"),
    "llava_llama_3": Template(
        "llava_llama_3",
        "llama3",
        "You are a helpful language and vision assistant. You are able to understand the visual content "
        "that the user provides, and assist the user with a variety of tasks using natural language.",
    ),
}
# Names the original LLaVA accepts for the same templates (its --version / --conv-mode).
ALIASES = {"v1": "vicuna_v1", "llava_llama3": "llava_llama_3", "llama3": "llava_llama_3"}


def get_template(name: str) -> Template:
    key = ALIASES.get(name, name)
    if key not in TEMPLATES:
        known = sorted(set(TEMPLATES) | set(ALIASES))
        raise ValueError(f"unknown conversation template {name!r}; known: {', '.join(known)}")
    return TEMPLATES[key]


def first_turn_with_image(question: str) -> str:
    """LLaVA puts the image first: '<image>\\n' + question, wherever the user wrote it."""
    question = question.replace(DEFAULT_IMAGE_TOKEN, "").strip()
    return f"{DEFAULT_IMAGE_TOKEN}\n{question}"


# --- The original's conversation objects ----------------------------------------------------------
# Code written for the original LLaVA builds prompts with `conv_templates[name].copy()`,
# `append_message` and `get_prompt`, and picks its stop string from `sep_style`, `sep` and `sep2`.
# These objects keep those call sites working and render through the templates above, so the prompt
# is the one training used.


class SeparatorStyle(enum.Enum):
    TWO = "two"
    PLAIN = "plain"
    LLAMA_3 = "llama3"


class Conversation:
    """The original's `Conversation`: system, roles, messages ([role, text] pairs, the last text None
    for "the assistant answers next"), sep, sep2, sep_style; copy(), append_message(), get_prompt()."""

    def __init__(self, template: Template, messages: Sequence[Sequence] = (), system: str | None = None):
        self.template = template
        self.version = template.name
        self.system = template.system if system is None else system
        self.roles = template.roles
        self.sep_style = SeparatorStyle(template.style)
        self.sep = template.sep
        self.sep2 = {"two": template.eos or "</s>", "plain": template.sep, "llama3": "<|eot_id|>"}[template.style]
        self.messages = [list(m) for m in messages]

    def append_message(self, role: str, message) -> None:
        self.messages.append([role, message])

    def copy(self) -> Conversation:
        return Conversation(self.template, self.messages, self.system)

    def get_prompt(self) -> str:
        turns, answer_next = [], False
        for i, (role, message) in enumerate(self.messages):
            if message is None:
                if i != len(self.messages) - 1:
                    raise ValueError(f"message {i} is None: only the last message may be (the answer to come)")
                answer_next = True
                continue
            if isinstance(message, tuple):  # the original's (text, image, image_process_mode)
                message = message[0]
            turns.append((USER if role == self.roles[0] else ASSISTANT, message))
        text, _ = self.template.render(turns, eos_token=self.sep2, add_generation_prompt=answer_next,
                                       system=self.system)
        return text

    def __repr__(self) -> str:
        return f"Conversation({self.version!r}, {len(self.messages)} messages)"


conv_vicuna_v1 = Conversation(TEMPLATES["vicuna_v1"])
conv_llava_v1 = Conversation(TEMPLATES["llava_v1"])
conv_llava_plain = Conversation(TEMPLATES["plain"])
conv_llava_llama_3 = Conversation(TEMPLATES["llava_llama_3"])
default_conversation = conv_vicuna_v1
conv_templates: dict[str, Conversation] = {
    **{name: Conversation(template) for name, template in TEMPLATES.items()},
    **{alias: Conversation(TEMPLATES[name]) for alias, name in ALIASES.items()},
    "default": conv_vicuna_v1,
}
