"""A multi-turn chat with one image, streaming its answers: what the CLI, the HTTP API and the web UI
share, so each of them is only input and output around it.

    chat = ChatSession(loaded, image=Image.open("cat.jpg"))
    for piece in chat.ask("What is in the picture?"):
        print(piece, end="", flush=True)

Each turn renders the whole conversation with the model's template (the image
placeholder in the first user turn, as in the original) and generates with
transformers' TextIteratorStreamer in a background thread, so text arrives as
it is decoded.  `stop()`, or leaving the loop early (Ctrl-C in the CLI, a client that hangs
up), ends generation at the next token; a turn cut short is not kept in the
history.
"""

from __future__ import annotations

import functools
import threading
from dataclasses import dataclass, field
from typing import Iterator

import torch
from PIL import Image
from transformers import StoppingCriteria, StoppingCriteriaList, TextIteratorStreamer

from llava.model.inputs import build_batch, render_prompt


class PromptTooLong(ValueError):
    """The conversation with the new question does not fit the model's context; nothing was generated."""


@functools.lru_cache(maxsize=8)
def longest_token_chars(tokenizer) -> int:
    """The most characters one token stands for: a text of n characters has at least n / this many tokens."""
    return max((len(t) for t in tokenizer.get_vocab()), default=1) or 1


class _StopFlag(StoppingCriteria):
    def __init__(self, event: threading.Event):
        self.event = event

    def __call__(self, input_ids, scores, **kwargs):
        return torch.full((input_ids.shape[0],), self.event.is_set(), dtype=torch.bool, device=input_ids.device)


@dataclass
class ChatSession:
    loaded: object  # llava.model.builder.LoadedModel
    image: Image.Image | None = None
    conv_mode: str | None = None
    temperature: float = 0.2
    top_p: float | None = None
    max_new_tokens: int = 512
    min_new_tokens: int = 0  # no end of answer before this many tokens
    history: list[tuple[str, str]] = field(default_factory=list)
    system: str | None = None  # replaces the template's system prompt; None keeps the one it was trained with
    last_usage: dict = field(default_factory=dict)

    def __post_init__(self):
        self._stop = threading.Event()
        self.stopped = False  # set by stop(); the turn it ends is not kept, and the flag clears

    def reset(self, image: Image.Image | None = None, keep_image: bool = True) -> None:
        """Clear the history; a new image (or none, with keep_image=False) starts a new conversation."""
        self.history = []
        if image is not None or not keep_image:
            self.image = image

    def stop(self) -> None:
        """End the answer being generated (from another thread); it is not kept in the history."""
        self.stopped = True
        self._stop.set()

    def ask(self, question: str) -> Iterator[str]:
        """Stream the answer to `question`; when it ends, the turn is in the history.

        PromptTooLong (before anything is generated, the history untouched) when the conversation does
        not fit the model's context."""
        loaded = self.loaded
        # A pasted megabyte takes seconds to tokenize: a question longer than the context's worth of the
        # longest tokens cannot fit, whatever its tokens, and is refused from its length alone.
        bound = loaded.context_len * longest_token_chars(loaded.tokenizer)
        if len(question) > bound:
            raise PromptTooLong(f"the question is {len(question):,} characters, more than the model's context of "
                                f"{loaded.context_len:,} tokens can hold; ask something shorter")
        prompt = render_prompt(loaded, question, self.image is not None, self.conv_mode, self.history,
                               self.system)
        batch = build_batch(loaded, [prompt], [self.image])
        prompt_tokens = batch["input_ids"].shape[1]
        room = loaded.context_len - prompt_tokens
        if room < 1:  # refused before generating, so the history stays as it was
            raise PromptTooLong(f"the conversation with this question is {prompt_tokens:,} tokens, more than the "
                                f"model's context of {loaded.context_len:,}; ask something shorter, or clear the "
                                "history")
        streamer = TextIteratorStreamer(loaded.tokenizer, skip_prompt=True, skip_special_tokens=True, timeout=600)
        sample = self.temperature > 0
        if not self.stopped:  # a stop() that came before this turn began still counts
            self._stop.clear()
        kwargs = dict(**batch, streamer=streamer, max_new_tokens=min(self.max_new_tokens, room),
                      min_new_tokens=self.min_new_tokens or None, do_sample=sample,
                      temperature=self.temperature if sample else None, top_p=self.top_p if sample else None,
                      pad_token_id=loaded.tokenizer.pad_token_id,
                      stopping_criteria=StoppingCriteriaList([_StopFlag(self._stop)]))
        result: dict = {}

        def run():
            try:
                with torch.inference_mode():
                    result["out"] = loaded.model.generate(**kwargs)
            except BaseException as exc:  # surfaced in the caller's thread below
                result["error"] = exc
                streamer.end()

        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        pieces = []
        try:
            for piece in streamer:
                pieces.append(piece)
                yield piece
        finally:
            self._stop.set()  # the consumer went away (or Ctrl-C): let generation end
            thread.join()
        if "error" in result:
            raise result["error"]
        answer = "".join(pieces).strip()
        out = result.get("out")
        completion = int(out.shape[1] - prompt_tokens) if out is not None else len(pieces)
        self.last_usage = {"prompt_tokens": prompt_tokens, "completion_tokens": completion,
                           "total_tokens": prompt_tokens + completion}
        if self.stopped:
            self.stopped = False  # the next turn starts afresh
        else:
            self.history.append((question, answer))
