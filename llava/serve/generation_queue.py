"""One generation at a time, in arrival order, for an asyncio server.

The model is one set of weights on one device: two `generate` calls at once
would only share the same cores (or race on a GPU's memory), and a
transformers model is not meant to be driven from two threads.  So requests
wait in a FIFO queue and a single worker thread runs them through ChatSession,
one after another; none is dropped.  (Batching several requests into one
`generate` would be faster on a GPU; ChatSession streams one conversation, so
that is left for later.)

The worker hands each piece of text to the request's asyncio queue as it is
decoded.  A request whose client went away, or whose time ran out, sets
`cancelled`: a job still waiting is skipped, a running one stops at the next token.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
from dataclasses import dataclass, field

import torch
from PIL import Image

from llava.serve.chat import ChatSession

log = logging.getLogger(__name__)


@dataclass
class Job:
    question: str
    history: list[tuple[str, str]]
    image: Image.Image | None
    temperature: float
    top_p: float | None
    max_tokens: int
    seed: int | None = None
    system: str | None = None
    # Events for the request: ("piece", text), ("done", usage dict) or ("error", exception).
    events: asyncio.Queue = field(default_factory=asyncio.Queue)
    cancelled: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self):
        self._loop = asyncio.get_running_loop()  # a Job is made by a request handler, on the server's loop

    def emit(self, kind: str, value) -> None:
        """Called from the worker thread."""
        try:
            self._loop.call_soon_threadsafe(self.events.put_nowait, (kind, value))
        except RuntimeError:  # the loop is closed: the server is shutting down
            self.cancelled.set()


class GenerationQueue:
    def __init__(self, loaded, conv_mode: str | None = None):
        self.loaded = loaded
        self.conv_mode = conv_mode
        self._jobs: queue.Queue[Job | None] = queue.Queue()
        self._thread = threading.Thread(target=self._work, name="llava-generation", daemon=True)
        self._thread.start()

    def submit(self, job: Job) -> None:
        self._jobs.put(job)

    def close(self) -> None:
        self._jobs.put(None)

    def _work(self) -> None:
        while (job := self._jobs.get()) is not None:
            if job.cancelled.is_set():
                continue
            try:
                self._run(job)
            except Exception as exc:  # reported to the request, which logs it and answers 500
                job.emit("error", exc)

    def _run(self, job: Job) -> None:
        if job.seed is not None:
            torch.manual_seed(job.seed)  # global, but only this thread generates
        chat = ChatSession(self.loaded, image=job.image, conv_mode=self.conv_mode, temperature=job.temperature,
                           top_p=job.top_p, max_new_tokens=job.max_tokens, history=list(job.history),
                           system=job.system)
        pieces = chat.ask(job.question)
        try:
            for piece in pieces:
                if job.cancelled.is_set():
                    return  # closing `pieces` (finally) stops generate at the next token
                job.emit("piece", piece)
        finally:
            pieces.close()
        job.emit("done", dict(chat.last_usage))
