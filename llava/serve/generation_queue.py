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

The queue is bounded (`max_jobs`, waiting and running together): a request
takes a place with `reserve()` before any work is done for it, so when the
queue is full it is refused at once (the API answers 429) instead of waiting
behind an ever longer line.  `counts()` says what the worker did, for /health.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
from collections import Counter
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


class QueueFull(Exception):
    """Every place in the queue is taken."""


class Place:
    """A reserved place in the queue.  `with queue.reserve() as place:` gives it back on leaving the block,
    unless `submit` handed it to the worker, which gives it back when the job is over."""

    def __init__(self, slots: threading.BoundedSemaphore):
        self._slots = slots
        self._with_worker = False

    def __enter__(self) -> Place:
        return self

    def __exit__(self, *exc) -> None:
        if not self._with_worker:
            self._slots.release()


class GenerationQueue:
    def __init__(self, loaded, conv_mode: str | None = None, max_jobs: int = 64):
        self.loaded = loaded
        self.conv_mode = conv_mode
        self.max_jobs = max_jobs
        self._slots = threading.BoundedSemaphore(max_jobs)
        self._jobs: queue.Queue[tuple[Job, Place] | None] = queue.Queue()
        self._counts: Counter = Counter()  # done, stopped, skipped, failed; written by the worker only
        self._running = False
        self._thread = threading.Thread(target=self._work, name="llava-generation", daemon=True)
        self._thread.start()

    def reserve(self) -> Place:
        """A place for one job, or QueueFull at once when `max_jobs` are waiting or running."""
        if not self._slots.acquire(blocking=False):
            raise QueueFull
        return Place(self._slots)

    def submit(self, job: Job, place: Place) -> None:
        """Queue `job`; the worker gives `place` back when the job is over (done, stopped or skipped)."""
        place._with_worker = True
        self._jobs.put((job, place))

    def counts(self) -> dict:
        waiting = self._jobs.qsize()
        return {"waiting": waiting, "running": int(self._running), "limit": self.max_jobs,
                **{k: self._counts[k] for k in ("done", "stopped", "skipped", "failed")}}

    def close(self) -> None:
        self._jobs.put(None)

    def _work(self) -> None:
        while (item := self._jobs.get()) is not None:
            job, _place = item  # its place is given back below, whatever happens
            try:
                if job.cancelled.is_set():
                    self._counts["skipped"] += 1
                    continue
                self._running = True
                self._counts[self._run(job)] += 1
            except Exception as exc:  # reported to the request, which logs it and answers 500
                self._counts["failed"] += 1
                job.emit("error", exc)
            finally:
                self._running = False
                self._slots.release()  # the job's place

    def _run(self, job: Job) -> str:
        if job.seed is not None:
            torch.manual_seed(job.seed)  # global, but only this thread generates
        chat = ChatSession(self.loaded, image=job.image, conv_mode=self.conv_mode, temperature=job.temperature,
                           top_p=job.top_p, max_new_tokens=job.max_tokens, history=list(job.history),
                           system=job.system)
        pieces = chat.ask(job.question)
        sent = 0
        try:
            for piece in pieces:
                if job.cancelled.is_set():
                    # closing `pieces` (finally) stops generate at the next token
                    log.info("generation stopped after %d pieces of text (of at most %d tokens): the request is "
                             "gone (its client hung up or its time ran out)", sent, job.max_tokens)
                    return "stopped"
                job.emit("piece", piece)
                sent += 1
        finally:
            pieces.close()
        job.emit("done", dict(chat.last_usage))
        return "done"
