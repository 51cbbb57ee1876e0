"""An OpenAI-compatible HTTP API for a LLaVA model, safe by default.

    python -m llava.serve.openai_api --model-path checkpoints/llava-smol-task-merged
    python -m llava.serve.openai_api --model-path liuhaotian/llava-v1.5-7b --load-4bit --api-key "$KEY"

POST /v1/chat/completions (streaming or not), GET /v1/models, GET /health.
docs/serving.md has client examples and every refusal with the flag that relaxes it.

Safe by default because a model server is often put on a network by people who
did not write it: it listens on 127.0.0.1; images come as data: URLs only,
unless the operator allows domains (--allowed-media-domains), private networks
(--allowed-media-networks) or a local directory (--allowed-local-media-path),
see media_fetch.py; bodies, images, pixels, tokens and time are capped; a bad
request gets a 4xx in OpenAI's error shape naming the problem, never a traceback.

Under abuse: connections are capped (--max-connections, uvicorn answers 503
beyond it), so are requests waiting for the model (--max-queued-requests, 429),
the time to send headers (--header-timeout, http_limits.py) and a body
(--body-timeout); a client that hangs up stops its generation, streaming or not;
a text far over the context is refused from its length before it is tokenized
(prompt_bound.py).
"""

# No `from __future__ import annotations` here: FastAPI reads the handlers' annotations (Request) at run time.
import argparse
import asyncio
import hmac
import json
import logging
import os
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from llava.conversation import get_template
from llava.extras import missing_extra
from llava.mm_utils import ImageError
from llava.model.args import add_model_args, check_model_args, default_model_path, load_model_or_exit
from llava.model.inputs import prompt_ids, render_prompt
from llava.serve.generation_queue import GenerationQueue, Job, QueueFull
from llava.serve.http_limits import with_header_timeout
from llava.serve.images import MAX_BYTES, MAX_PIXELS, decode_image_bytes
from llava.serve.media_fetch import MediaError, MediaPolicy, image_bytes
from llava.serve.openai_schema import (
    APIError,
    chunk_object,
    completion_object,
    error_body,
    models_object,
    parse_chat_request,
)
from llava.serve.prompt_bound import TokenBound

try:
    import uvicorn
    from fastapi import Depends, FastAPI, Request
    from fastapi.responses import JSONResponse, StreamingResponse
    from starlette.exceptions import HTTPException
    from starlette.requests import ClientDisconnect
except ImportError as exc:  # the `serve` extra: FastAPI, uvicorn (and httpx, for media_fetch)
    raise missing_extra("serve", exc, "the HTTP API") from exc

DEFAULT_MAX_REQUEST_BYTES = 20 * 1024 * 1024
# Below the usual limit of 1024 open files, with room for the model's own.
DEFAULT_MAX_CONNECTIONS = 512
# As deep as the web UI's queue (--queue-size): a person at the back still gets an answer in reasonable time.
DEFAULT_MAX_QUEUED = 64
API_KEY_ENV = "LLAVA_API_KEY"
log = logging.getLogger("llava.serve.openai_api")


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_model_args(ap)
    ap.add_argument("--served-model-name", default=None, help="the model id clients use (default: the directory name)")
    ap.add_argument("--host", default="127.0.0.1", help="default 127.0.0.1: this machine only")
    ap.add_argument("--port", type=int, default=8000)
    ap.add_argument("--api-key", default=os.environ.get(API_KEY_ENV),
                    help=f"require 'Authorization: Bearer KEY' (default: ${API_KEY_ENV}, else no key)")
    media = ap.add_argument_group("image sources (data: URLs are always accepted)")
    media.add_argument("--allowed-media-domains", nargs="*", default=[], metavar="HOST",
                       help="fetch http(s) images from exactly these hosts (none by default)")
    media.add_argument("--allowed-media-networks", nargs="*", default=[], metavar="CIDR",
                       help="also fetch from these private / loopback networks, e.g. 10.0.0.0/8 (none by default)")
    media.add_argument("--allowed-local-media-path", default=None, metavar="DIR",
                       help="read file:// URLs and paths under DIR (no local files by default)")
    caps = ap.add_argument_group("limits")
    caps.add_argument("--max-request-bytes", type=int, default=DEFAULT_MAX_REQUEST_BYTES)
    caps.add_argument("--max-image-bytes", type=int, default=MAX_BYTES)
    caps.add_argument("--max-image-pixels", type=int, default=MAX_PIXELS)
    caps.add_argument("--max-tokens", type=int, default=1024, help="the most max_tokens a request may ask for")
    caps.add_argument("--media-fetch-timeout", type=float, default=10.0, help="seconds for one image fetch")
    caps.add_argument("--max-redirects", type=int, default=3)
    caps.add_argument("--request-timeout", type=float, default=300.0,
                      help="seconds for a whole request: body, image, waiting in the queue, generation")
    caps.add_argument("--max-queued-requests", type=int, default=DEFAULT_MAX_QUEUED,
                      help="requests waiting for the model or being answered; more are refused with 429")
    caps.add_argument("--max-connections", type=int, default=DEFAULT_MAX_CONNECTIONS,
                      help="open connections; a request beyond them gets 503 (uvicorn's limit_concurrency)")
    caps.add_argument("--header-timeout", type=float, default=10.0,
                      help="seconds a client has to send its request line and headers; then it is cut off")
    caps.add_argument("--body-timeout", type=float, default=60.0,
                      help="seconds a client has to send its request body; then it gets 408")
    ap.add_argument("--log-level", default="info")
    args = ap.parse_args(argv)
    check_model_args(ap, args)
    for name in ("max_request_bytes", "max_image_bytes", "max_image_pixels", "max_tokens", "media_fetch_timeout",
                 "request_timeout", "max_queued_requests", "max_connections", "header_timeout", "body_timeout"):
        if getattr(args, name) <= 0:
            ap.error(f"--{name.replace('_', '-')} must be positive")
    try:
        if args.conv_mode:
            get_template(args.conv_mode)
        args.media = MediaPolicy.from_flags(args.allowed_media_domains, args.allowed_media_networks,
                                            args.allowed_local_media_path, max_bytes=args.max_image_bytes,
                                            fetch_timeout=args.media_fetch_timeout, max_redirects=args.max_redirects)
    except ValueError as exc:
        ap.error(str(exc))
    return args


@dataclass
class ServerConfig:
    model_id: str
    media: object  # MediaPolicy
    api_key: str | None = None
    conv_mode: str | None = None
    max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES
    max_image_pixels: int = 40_000_000
    max_tokens: int = 1024
    request_timeout: float = 300.0
    max_queued_requests: int = DEFAULT_MAX_QUEUED
    body_timeout: float = 60.0


def build_app(loaded, cfg: ServerConfig):
    """The FastAPI app around a loaded model (llava.model.builder.LoadedModel)."""
    app = FastAPI(title="llava OpenAI-compatible API", docs_url=None, redoc_url=None, openapi_url=None)
    generations = GenerationQueue(loaded, cfg.conv_mode, cfg.max_queued_requests)
    bound = TokenBound.of(loaded.tokenizer)  # None: prompts are only ever measured by tokenizing them
    started = int(time.time())

    def check_key(request: Request) -> None:
        if cfg.api_key is None:
            return
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), cfg.api_key.encode()):
            raise APIError(401, "missing or wrong API key: send the header 'Authorization: Bearer KEY' with the "
                                "server's --api-key", code="invalid_api_key")

    @app.exception_handler(APIError)
    async def api_error(request, exc: APIError):
        return JSONResponse(exc.body(), status_code=exc.status)

    @app.exception_handler(HTTPException)
    async def http_error(request, exc: HTTPException):  # unknown route, wrong method
        return JSONResponse(error_body(f"{request.method} {request.url.path}: {exc.detail}",
                                       code=str(exc.status_code)), status_code=exc.status_code)

    @app.exception_handler(Exception)
    async def unexpected(request, exc: Exception):
        log.error("unexpected error answering %s %s", request.method, request.url.path, exc_info=exc)
        return JSONResponse(error_body(f"internal server error ({type(exc).__name__}); the server log has the "
                                       "details", "server_error", code="internal_error"), status_code=500)

    @app.get("/health")
    async def health():
        return {"status": "ok", "model": cfg.model_id, "generations": generations.counts()}

    @app.get("/v1/models", dependencies=[Depends(check_key)])
    async def models():
        return models_object(cfg.model_id, started)

    @app.post("/v1/chat/completions", dependencies=[Depends(check_key)])
    async def chat_completions(request: Request):
        deadline = asyncio.get_running_loop().time() + cfg.request_timeout
        try:
            async with asyncio.timeout_at(deadline):
                body = await read_body(request, cfg.max_request_bytes, cfg.body_timeout)
                req = await asyncio.to_thread(parse_chat_request, body, cfg.max_tokens)
                del body
                if req.model != cfg.model_id:
                    raise APIError(404, f"model {req.model!r} is not served here; this server serves "
                                        f"{cfg.model_id!r} (GET /v1/models)", param="model", code="model_not_found")
                await refuse_beyond_context(loaded, cfg, bound, req)
                try:
                    place = generations.reserve()
                except QueueFull:
                    raise APIError(429, f"{cfg.max_queued_requests} requests are already waiting for the model or "
                                        "being answered, this server's limit (--max-queued-requests); try again "
                                        "shortly", code="queue_full", type="rate_limit_error") from None
                with place:
                    job = await make_job(loaded, cfg, req)
                    generations.submit(job, place)
                if not req.stream:
                    text, usage = await collect_while_connected(request, job)
                    return completion_response(cfg, job, text, usage)
        except TimeoutError:
            raise timeout_error(cfg) from None
        return StreamingResponse(stream_events(cfg, req, job, deadline), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    app.state.generations = generations
    return app


async def read_body(request, limit: int, timeout: float) -> bytes:
    """The body, refused as soon as it is known to pass `limit` (from Content-Length, or while reading), or
    when it has not all arrived within `timeout` seconds (a client dripping it would hold its connection)."""
    too_big = APIError(413, f"the request body is larger than this server's limit of {limit:,} bytes "
                            "(--max-request-bytes); send a smaller image", code="request_too_large")
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise too_big
    body = bytearray()
    try:
        async with asyncio.timeout(timeout):
            async for chunk in request.stream():
                body += chunk
                if len(body) > limit:
                    raise too_big
    except TimeoutError:
        raise APIError(408, f"the request body did not arrive within {timeout:g} s (--body-timeout); "
                            f"{len(body):,} bytes came", code="body_timeout", type="timeout_error") from None
    except ClientDisconnect:
        raise client_gone() from None
    return bytes(body)


def client_gone():
    """For a request whose client hung up: nobody reads the answer, but the handler must end somehow."""
    # 499 is nginx's "client closed request": it only reaches the access log.
    return APIError(499, "the client closed the connection before the answer", code="client_closed_request")


async def refuse_beyond_context(loaded, cfg: ServerConfig, bound, req) -> None:
    """Refuse a conversation that the template cannot render, or that cannot fit in the context from its length
    in characters alone, before its image is fetched or its text tokenized (the tokenizer takes far longer over
    megabytes of text than the parser or this bound)."""
    family = loaded.family
    if req.system is not None and (not family.system_prompt if not family.native
                                   else get_template(cfg.conv_mode or loaded.conv_mode).style == "plain"):
        what = "template (plain)" if family.native else f"family ({family.title})"
        raise APIError(400, f"messages[0].role: this model's {what} has no system prompt to replace",
                       param="messages[0].role", code="unsupported_role")
    if family.needs_image and req.image_url is None:
        raise APIError(400, f"messages: this model ({family.title}) answers about an image; send one",
                       param="messages", code="image_required")
    if bound is None:
        return

    def at_least() -> tuple[int, int]:
        prompt = render_prompt(loaded, req.question, req.image_url is not None, cfg.conv_mode, req.history,
                               req.system)
        return bound.prompt_at_least(prompt), len(prompt)

    tokens, chars = await asyncio.to_thread(at_least)
    if tokens + (req.max_tokens or 1) > loaded.context_len:
        raise APIError(400, f"the messages are at least {tokens:,} tokens ({chars:,} characters, and no token of "
                            f"this model stands for more than {bound.longest}) and {_answer_room(req)}, more than "
                            f"the model's context of {loaded.context_len} tokens; shorten the conversation or lower "
                            "max_tokens", param="messages", code="context_length_exceeded")


def _answer_room(req) -> str:
    return f"max_tokens is {req.max_tokens}" if req.max_tokens else "the answer needs at least one token"


async def make_job(loaded, cfg: ServerConfig, req):
    """The generation job for a checked request: image fetched and decoded, token budget checked."""
    image = None
    if req.image_url is not None:
        try:
            data, name = await image_bytes(req.image_url, cfg.media)
            image = await asyncio.to_thread(decode_image_bytes, data, name, cfg.max_image_pixels)
        except MediaError as exc:
            raise APIError(400, f"{req.image_param}: {exc}", param=req.image_param, code=exc.code) from exc
        except ImageError as exc:
            raise APIError(400, f"{req.image_param}: {exc}", param=req.image_param, code="invalid_image") from exc
    prompt_tokens = await asyncio.to_thread(count_prompt_tokens, loaded, cfg.conv_mode, req, image is not None)
    room = loaded.context_len - prompt_tokens
    if room < 1 or (req.max_tokens or 0) > room:
        raise APIError(400, f"the messages are {prompt_tokens} tokens and {_answer_room(req)}, more than the "
                            f"model's context of {loaded.context_len} tokens; shorten the conversation or lower "
                            "max_tokens", param="messages", code="context_length_exceeded")
    return Job(req.question, req.history, image, req.temperature, req.top_p,
               max_tokens=req.max_tokens or min(cfg.max_tokens, room), seed=req.seed, system=req.system)


def count_prompt_tokens(loaded, conv_mode, req, has_image: bool) -> int:
    """The prompt's length in tokens, rendered exactly as ChatSession will render it."""
    return len(prompt_ids(loaded, render_prompt(loaded, req.question, has_image, conv_mode, req.history,
                                                  req.system)))


async def collect(job) -> tuple[str, dict]:
    """The whole answer of a job (non-streaming)."""
    pieces = []
    try:
        while True:
            kind, value = await job.events.get()
            if kind == "piece":
                pieces.append(value)
            elif kind == "done":
                return "".join(pieces).strip(), value
            else:
                raise value
    finally:
        job.cancelled.set()  # no-op when done; stops the generation when the request timed out


async def collect_while_connected(request, job) -> tuple[str, dict]:
    """The whole answer, unless the client hangs up first: then its generation is stopped at once rather than
    run to the end for nobody while other requests wait behind it (streaming notices by failing to send)."""
    answer = asyncio.ensure_future(collect(job))
    gone = asyncio.ensure_future(until_disconnected(request))
    try:
        await asyncio.wait({answer, gone}, return_when=asyncio.FIRST_COMPLETED)
    finally:  # also when the request's time ran out
        gone.cancel()
        if not answer.done():
            job.cancelled.set()
            answer.cancel()
    if not answer.done():
        log.info("the client of a non-streaming request hung up; its generation is stopped")
        raise client_gone()
    return answer.result()


async def until_disconnected(request) -> None:
    """Returns when the client has closed the connection.  The body has been read, so the server's next message
    on this request is the disconnect (uvicorn sends it when the connection is lost)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


def finish_reason(job, usage: dict) -> str:
    # ChatSession counts the end-of-sequence token: an answer that stopped by itself has fewer tokens than
    # max_tokens, except one whose end token was exactly the last allowed (reported as "length").
    return "length" if usage.get("completion_tokens", 0) >= job.max_tokens else "stop"


def completion_response(cfg, job, text: str, usage: dict) -> dict:
    return completion_object(new_id(), int(time.time()), cfg.model_id, text, finish_reason(job, usage), usage)


async def stream_events(cfg, req, job, deadline: float):
    """Server-sent events as OpenAI sends them: a role chunk, content chunks, a finish chunk, an optional
    usage chunk, then [DONE].  An error after the headers went out is an {"error": ...} event."""
    request_id, created = new_id(), int(time.time())

    def event(obj) -> str:
        return f"data: {json.dumps(obj, ensure_ascii=False)}\n\n"

    trim = _Trim()
    try:
        yield event(chunk_object(request_id, created, cfg.model_id, {"role": "assistant", "content": ""}))
        while True:
            try:
                async with asyncio.timeout_at(deadline):
                    kind, value = await job.events.get()
            except TimeoutError:
                yield event(timeout_error(cfg).body())
                return
            if kind == "piece":
                text = trim.feed(value)
                if text:
                    yield event(chunk_object(request_id, created, cfg.model_id, {"content": text}))
            elif kind == "done":
                yield event(chunk_object(request_id, created, cfg.model_id, {}, finish_reason(job, value)))
                if req.include_usage:
                    yield event(chunk_object(request_id, created, cfg.model_id, None, usage=value))
                yield "data: [DONE]\n\n"
                return
            else:
                log.error("generation failed while streaming", exc_info=value)
                yield event(error_body(f"internal server error ({type(value).__name__}); the server log has the "
                                       "details", "server_error", code="internal_error"))
                return
    finally:
        job.cancelled.set()  # the client went away, or we are done: stop generating


class _Trim:
    """Streams text so that the pieces join to exactly the non-streaming answer (which is stripped):
    leading whitespace is dropped, and trailing whitespace is held back until more text follows it."""

    def __init__(self):
        self.started = False
        self.held = ""

    def feed(self, piece: str) -> str:
        if not self.started:
            piece = piece.lstrip()
            if not piece:
                return ""
            self.started = True
        core = piece.rstrip()
        if not core:
            self.held += piece
            return ""
        out, self.held = self.held + core, piece[len(core):]
        return out


def timeout_error(cfg):
    return APIError(408, f"the request took longer than this server's limit of {cfg.request_timeout:g} s "
                         "(--request-timeout)", code="request_timeout", type="timeout_error")


def new_id() -> str:
    return f"chatcmpl-{uuid.uuid4().hex}"


def served_model_name(args) -> str:
    return args.served_model_name or Path(args.model_path.rstrip("/")).name or args.model_path


def main(argv=None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(levelname)s %(name)s: %(message)s")
    args.model_path = args.model_path or default_model_path()
    if args.host not in ("127.0.0.1", "localhost", "::1") and not args.api_key:
        log.warning("listening on %s without --api-key: anyone who can reach this port can use the model",
                    args.host)
    log.info("loading %s ...", args.model_path)
    loaded = load_model_or_exit(args)
    cfg = ServerConfig(served_model_name(args), args.media, args.api_key, args.conv_mode, args.max_request_bytes,
                       args.max_image_pixels, args.max_tokens, args.request_timeout, args.max_queued_requests,
                       args.body_timeout)
    app = build_app(loaded, cfg)
    log.info("serving %s as %r", args.model_path, cfg.model_id)
    uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level.lower(),
                http=with_header_timeout(args.header_timeout), limit_concurrency=args.max_connections,
                timeout_keep_alive=5)
    return 0


if __name__ == "__main__":
    sys.exit(main())
