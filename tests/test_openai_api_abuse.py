"""llava.serve.openai_api under abuse (issue 18, class 3): the real server process on the tiny model, driven
by real sockets, httpx and the openai client.

One server for the module, with small limits so they can be reached: two requests in the queue, twelve
connections, two seconds for headers and for a body; a local media directory and one allowed domain so
that hostile image URLs get as far as their checks.  Every test leaves the server idle and its log free of
tracebacks (checked after each test).
"""

from __future__ import annotations

import json
import socket
import time
from contextlib import ExitStack

import httpx
import pytest
from PIL import Image
from transformers import AutoTokenizer

from llava.mm_utils import tokenize_prompt
from llava.model.inputs import prompt_ids, render_prompt
from llava.serve.prompt_bound import TokenBound

from testkit.api_server import MODEL, launch, png_bytes, stop, wait_ready

QUEUE, CONNECTIONS, HEADER_S, BODY_S = 2, 12, 2.0, 2.0
LONG = [{"role": "user", "content": "Tell me a very long story."}]
pytestmark = [pytest.mark.timeout(300), pytest.mark.slow]  # a real server process


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    root = tmp_path_factory.mktemp("abuse-media")
    (root / "photo.png").write_bytes(png_bytes(Image.new("RGB", (8, 8), "red")))
    return root


@pytest.fixture(scope="module")
def server(tiny_hf, media, tmp_path_factory):
    log = tmp_path_factory.mktemp("abuse-log") / "server.log"
    srv = launch(tiny_hf, log, "--max-queued-requests", str(QUEUE), "--max-connections", str(CONNECTIONS),
                 "--header-timeout", str(HEADER_S), "--body-timeout", str(BODY_S),
                 "--allowed-local-media-path", str(media), "--allowed-media-domains", "example.com")
    try:
        wait_ready(srv)
        yield srv
    finally:
        stop(srv)


@pytest.fixture(autouse=True)
def idle_and_no_traceback(server):
    """Each test starts with an idle server and must leave no traceback in its log."""
    wait_idle(server)
    yield
    assert "Traceback" not in server.log.read_text(), server.log.read_text()[-4000:]


def health(server) -> dict:
    return httpx.get(f"{server.url}/health", timeout=10).json()["generations"]


def wait_idle(server, timeout: float = 60) -> dict:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        counts = health(server)
        if counts["waiting"] == 0 and counts["running"] == 0:
            return counts
        time.sleep(0.05)
    raise AssertionError(f"the server is still busy after {timeout} s: {counts}")


def wait_for(server, check, timeout: float) -> tuple[dict, float]:
    """The first /health counts for which check(counts) holds, and how long that took."""
    start = time.monotonic()
    while True:
        counts = health(server)
        if check(counts):
            return counts, time.monotonic() - start
        if time.monotonic() - start > timeout:
            raise AssertionError(f"not within {timeout} s: {counts}")
        time.sleep(0.02)


def post(server, body, timeout: float = 60) -> httpx.Response:
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    return httpx.post(f"{server.url}/v1/chat/completions", content=content,
                      headers={"Content-Type": "application/json"}, timeout=timeout)


def chat(**fields) -> dict:
    return {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "temperature": 0, "max_tokens": 2,
            **fields}


def raw_request(body: dict) -> bytes:
    data = json.dumps(body).encode()
    return (b"POST /v1/chat/completions HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n%s" % (len(data), data))


def read_until_closed(sock: socket.socket, timeout: float) -> bytes:
    sock.settimeout(timeout)
    reply = b""
    while data := sock.recv(65536):
        reply += data
    return reply


def assert_openai_error(response: httpx.Response, status: int) -> dict:
    assert response.status_code == status, (response.status_code, response.text[:2000])
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}, error
    return error


# --- a client that hangs up ----------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.bad_input
@pytest.mark.parametrize("stream", [False, True], ids=["non-streaming", "streaming"])
def test_a_client_that_hangs_up_stops_its_generation(server, stream):
    """950 greedy tokens take the tiny model many seconds.  The client leaves once its generation runs; the
    worker must stop it (counted as "stopped", never "done") and answer the next request at once."""
    before = health(server)
    with socket.create_connection(("127.0.0.1", server.port)) as sock:
        sock.sendall(raw_request({"model": MODEL, "messages": LONG, "temperature": 0, "max_tokens": 950,
                                  "stream": stream}))
        wait_for(server, lambda c: c["running"] == 1, timeout=30)
        sock.shutdown(socket.SHUT_RDWR)
    after, took = wait_for(server, lambda c: c["running"] == 0, timeout=10)
    assert after["stopped"] == before["stopped"] + 1 and after["done"] == before["done"], (before, after)
    assert took < 5, f"the worker went on generating for {took:.1f} s after the client left"
    start = time.monotonic()
    answer = post(server, chat(max_tokens=4))
    assert answer.status_code == 200 and answer.json()["choices"][0]["finish_reason"] == "length"
    assert time.monotonic() - start < 5, "the next request waited behind the abandoned generation"
    assert "generation stopped after" in server.log.read_text()


@pytest.mark.bad_input
def test_a_client_that_hangs_up_while_sending_its_body(server):
    """Before, the handler's read failed with ClientDisconnect: a 500 and a traceback in the log."""
    with socket.create_connection(("127.0.0.1", server.port)) as sock:
        sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n"
                     b"Content-Length: 1000\r\n\r\n{\"model\": ")
        time.sleep(0.3)
    time.sleep(0.5)  # let the server notice; the autouse fixture then checks its log for a traceback
    assert post(server, chat()).status_code == 200


# --- valid but hostile JSON: 400 in OpenAI's shape, naming the field --------------------------------------


def with_url(url: str) -> dict:
    return chat(messages=[{"role": "user", "content": [{"type": "image_url", "image_url": {"url": url}},
                                                       {"type": "text", "text": "hi"}]}])


def raw_field(name: str, literal: str) -> bytes:
    """A body whose field `name` is the JSON text `literal`, which json.dumps could not write (NaN, \\ud83d)."""
    return json.dumps(chat(**{name: "@@"})).replace('"@@"', literal).encode()


IMAGE = "messages[0].content[0].image_url.url"
HOSTILE = {
    # parser limits
    "nested-100k-lists": (b'{"model": "tiny-llava", "messages": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
                          None, "nests arrays or objects deeper"),
    "nested-50k-objects-in-ignored-field": (raw_field("metadata", '{"a": ' * 50_000 + "1" + "}" * 50_000),
                                            None, "nests arrays or objects deeper"),
    "5000-digit-integer": (raw_field("seed", "9" * 5000), None, "field 'seed'"),
    "not-utf8": (b'{"model": "tiny-llava\xff\xfe"}', None, "not valid JSON"),
    "body-an-array": (b"[]", None, "must be a JSON object"),
    "body-null": (b"null", None, "must be a JSON object"),
    # huge integers
    "seed-2**70": (chat(seed=2**70), "seed", "from -2**63 to 2**64-1"),
    "seed-minus-2**70": (chat(seed=-2**70), "seed", "from -2**63 to 2**64-1"),
    "max_tokens-10**30": (chat(max_tokens=10**30), "max_tokens", "more than this server's limit"),
    "max_completion_tokens-10**30": (chat(max_tokens=None, max_completion_tokens=10**30), "max_completion_tokens",
                                     "more than this server's limit"),
    # degenerate floats
    "temperature-1e-300": (chat(temperature=1e-300), "temperature", "too small to sample with"),
    "temperature-NaN": (raw_field("temperature", "NaN"), "temperature", "must be a number from 0 to 2"),
    "temperature-Infinity": (raw_field("temperature", "Infinity"), "temperature", "must be a number from 0 to 2"),
    "temperature-1e999": (raw_field("temperature", "1e999"), "temperature", "must be a number from 0 to 2"),
    "top_p-NaN": (raw_field("top_p", "NaN"), "top_p", "must be a number from 0 to 1"),
    "top_p-negative-zero": (raw_field("top_p", "-0.0"), "top_p", "more than 0"),
    "seed-NaN": (raw_field("seed", "NaN"), "seed", "must be an integer"),
    # lone surrogates
    "surrogate-in-content": (raw_field("messages", '[{"role": "user", "content": "hi \\ud83d"}]'),
                             "messages[0].content", "unpaired surrogate (\\ud83d) at character 3"),
    "surrogate-in-text-part": (raw_field("messages", '[{"role": "user", "content": [{"type": "text", '
                                                     '"text": "\\udc00"}]}]'),
                               "messages[0].content[0].text", "unpaired surrogate"),
    "surrogate-in-model": (json.dumps(chat(model="@@")).replace('"@@"', '"tiny\\ud83d"').encode(), "model",
                           "unpaired surrogate"),
    "surrogate-in-a-key": (raw_field("metadata", '{"\\udfff": 1}'), "metadata", "unpaired surrogate"),
    # control characters in image sources
    "nul-in-file-url": (with_url("file://{media}/photo.png\u0000.txt"), IMAGE, "control character ('\\x00')"),
    "percent-nul-in-file-url": (with_url("file://{media}/photo.png%00.txt"), IMAGE, "control character"),
    "nul-in-path": (with_url("{media}/photo\u0000.png"), IMAGE, "control character"),
    "nul-in-http-url": (with_url("http://example.com/a\u0000.png"), IMAGE, "control character"),
    "crlf-in-http-url": (with_url("http://example.com/a.png\r\nX-Injected: 1"), IMAGE, "control character"),
    "file-name-too-long": (with_url("file://{media}/" + "a" * 5000 + ".png"), IMAGE, "not a readable path"),
    # wrong types
    "max_tokens-a-list": (chat(max_tokens=[5]), "max_tokens", "must be a positive integer"),
    "max_tokens-an-object": (chat(max_tokens={}, max_completion_tokens=3), "max_tokens",
                             "must be a positive integer"),
    "stream_options-a-list": (chat(stream_options=[]), "stream_options", "must be an object"),
    "stream-a-string": (chat(stream="true"), "stream", "must be a boolean"),
    "n-a-string": (chat(n="2"), "n", "only n=1"),
    "model-a-number": (chat(model=5), "model", "required"),
    "role-a-list": (chat(messages=[{"role": ["user"], "content": "hi"}]), "messages[0].role", "not supported"),
    "content-a-number": (chat(messages=[{"role": "user", "content": 5}]), "messages[0].content",
                         "a string or a list"),
    "content-part-a-string": (chat(messages=[{"role": "user", "content": ["hi"]}]), "messages[0].content[0].type",
                              "not supported"),
    "image_url-a-string": (chat(messages=[{"role": "user", "content": [{"type": "image_url", "image_url": "x"}]}]),
                           IMAGE, "required"),
}


@pytest.mark.bad_input
@pytest.mark.parametrize("case", list(HOSTILE))
def test_hostile_json_is_a_400_naming_the_field(server, media, case):
    body, param, match = HOSTILE[case]
    if isinstance(body, dict):
        body = json.dumps(body).replace("{media}", str(media)).encode()
    error = assert_openai_error(post(server, body), 400)
    assert match in error["message"], error
    if param is None:
        assert "request body" in error["message"], error
    else:
        assert error["param"] == param and error["message"].startswith(f"{param}:"), error


@pytest.mark.bad_input
def test_an_image_placeholder_in_a_system_message_is_only_text(server):
    """"<image>" is removed from system messages as from the others; before, it made an image slot with no
    image and the generation failed (500)."""
    messages = [{"role": "system", "content": "Look at <image> please."}, {"role": "user", "content": "hi"}]
    assert post(server, chat(messages=messages)).status_code == 200


# --- text far over the context: refused from its length, before tokenizing -----------------------------


@pytest.mark.bad_input
@pytest.mark.parametrize("shape", ["one-15-MB-message", "500k-short-messages"])
def test_a_text_far_over_the_context_is_refused_before_tokenizing(server, shape):
    """Tokenizing 15 MB kept the slow tokenizer busy for a long time; joining 500k same-role messages one by one
    copied the growing text each time.  The bound's message ("at least N tokens", from the length and the
    longest vocabulary entry) shows the text was never tokenized."""
    if shape == "one-15-MB-message":
        body = chat(messages=[{"role": "user", "content": "hello world " * 1_300_000}])
    else:
        body = chat(messages=[{"role": "user", "content": "hi"}] * 500_000)
    start = time.monotonic()
    error = assert_openai_error(post(server, body), 400)
    took = time.monotonic() - start
    assert error["code"] == "context_length_exceeded" and error["param"] == "messages", error
    assert "the messages are at least" in error["message"] and "no token of this model stands for more than 16" \
        in error["message"], error
    assert took < 20, f"{took:.1f} s"


def spaces_prompt(tiny_loaded, spaces: int) -> tuple[str, int]:
    """A question of `spaces` spaces between two letters (each 16 spaces one vocabulary entry, the longest, so
    the length bound is at its tightest), and its prompt's length in tokens as the server counts it."""
    question = "a" + " " * spaces + "b"
    return question, len(prompt_ids(tiny_loaded, render_prompt(tiny_loaded, question, False)))


def test_a_prompt_just_under_the_context_is_answered(server, tiny_loaded):
    """The bound never refuses what fits: the longest question that fits (found by tokenizing here) is
    answered, and one token more is refused by the exact count, not by the bound."""
    context = tiny_loaded.context_len
    low, high = 0, 16 * context
    while low < high:  # the most spaces whose prompt leaves room for one new token
        mid = (low + high + 1) // 2
        if spaces_prompt(tiny_loaded, mid)[1] <= context - 1:
            low = mid
        else:
            high = mid - 1
    fits, tokens = spaces_prompt(tiny_loaded, low)
    assert tokens == context - 1 and len(fits) > 15 * context  # close to the bound's limit in characters
    answer = post(server, chat(messages=[{"role": "user", "content": fits}], max_tokens=1))
    assert answer.status_code == 200 and answer.json()["usage"]["prompt_tokens"] == context - 1, answer.text
    over = post(server, chat(messages=[{"role": "user", "content": fits}], max_tokens=2))
    error = assert_openai_error(over, 400)
    assert f"the messages are {context - 1} tokens and max_tokens is 2" in error["message"], error


# --- slow clients, full tables -----------------------------------------------------------------------


@pytest.mark.bad_input
@pytest.mark.parametrize("drip", [b"", b"POST /v1/chat/completions HTTP/1.1\r\nHost: test\r\n"],
                         ids=["silent-connection", "headers-a-byte-at-a-time"])
def test_slow_headers_are_cut_off(server, drip):
    start = time.monotonic()
    with socket.create_connection(("127.0.0.1", server.port)) as sock:
        reply, closed = b"", False
        for i in range(200):  # 20 s of dripping, far past the 2 s allowed
            try:
                if drip:
                    sock.sendall(b"X-Slow-%d: %d\r\n" % (i, i) if i >= len(drip) else drip[i:i + 1])
                sock.settimeout(0.1)
                data = sock.recv(65536)
            except TimeoutError:
                continue
            except (BrokenPipeError, ConnectionResetError):
                closed = True
                break
            reply += data
            if not data:
                closed = True
                break
    took = time.monotonic() - start
    assert closed and HEADER_S - 0.2 <= took < HEADER_S + 3, (closed, took, reply)
    if drip:
        assert reply.startswith(b"HTTP/1.1 408") and b"(--header-timeout)" in reply, reply
    assert "request headers took longer than 2 s" in server.log.read_text() or not drip


@pytest.mark.bad_input
def test_a_body_sent_slowly_gets_408_at_the_body_timeout(server):
    start = time.monotonic()
    with socket.create_connection(("127.0.0.1", server.port)) as sock:
        sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n"
                     b"Content-Length: 1000\r\n\r\n")
        sock.settimeout(0.2)
        reply = b""
        for _ in range(100):
            try:
                sock.sendall(b" ")
                reply += sock.recv(65536)
            except TimeoutError:
                continue
            except (BrokenPipeError, ConnectionResetError):
                break
            if b"}" in reply:
                break
    assert reply.startswith(b"HTTP/1.1 408"), reply
    message = json.loads(reply.partition(b"\r\n\r\n")[2])["error"]["message"]
    assert "did not arrive within 2 s (--body-timeout)" in message
    assert time.monotonic() - start < BODY_S + 3


@pytest.mark.bad_input
def test_a_full_connection_table_answers_503_at_once(server):
    """Slow clients hold all but one place under --max-connections: a new request is refused at once (uvicorn's
    503) rather than waiting; once the header timeout has cut them off, requests are answered again."""
    with ExitStack() as stack:
        for _ in range(CONNECTIONS - 1):
            sock = stack.enter_context(socket.create_connection(("127.0.0.1", server.port)))
            sock.sendall(b"GET /health HTTP/1.1\r\n")
        time.sleep(0.2)
        start = time.monotonic()
        refused = httpx.get(f"{server.url}/health", timeout=10)
        assert refused.status_code == 503 and time.monotonic() - start < 1.5, refused
        time.sleep(HEADER_S + 0.5)
        assert httpx.get(f"{server.url}/health", timeout=10).status_code == 200


@pytest.mark.bad_input
def test_a_full_queue_answers_429_at_once(server):
    """--max-queued-requests 2: one generation running and one waiting fill the queue; a third request gets
    429 at once; when they are gone, requests are answered again."""
    body = {"model": MODEL, "messages": LONG, "temperature": 0, "max_tokens": 950, "stream": True}
    with ExitStack() as stack:
        for _ in range(QUEUE):
            response = stack.enter_context(httpx.stream("POST", f"{server.url}/v1/chat/completions", json=body,
                                                        timeout=60))
            assert response.status_code == 200
        wait_for(server, lambda c: c["running"] == 1 and c["waiting"] == 1, timeout=30)
        start = time.monotonic()
        error = assert_openai_error(post(server, chat()), 429)
        assert time.monotonic() - start < 2
        assert error["code"] == "queue_full" and "(--max-queued-requests)" in error["message"], error
    wait_idle(server, timeout=15)
    assert post(server, chat()).status_code == 200


@pytest.mark.bad_input
@pytest.mark.parametrize("head", [
    b"GET /health HTTP/1.1\r\nHost: test\r\nX-Big: " + b"a" * 20_000,  # and no end of the headers yet
    b"POST /v1/chat/completions HTTP/1.1\r\nHost: test\r\nContent-Length: -5\r\n\r\n",
    b"POST /v1/chat/completions HTTP/1.1\r\nHost: test\r\nContent-Length: 1e3\r\n\r\n",
    b"NOT HTTP AT ALL\r\n\r\n",
], ids=["20-kB-header", "negative-content-length", "non-integer-content-length", "garbage-request-line"])
def test_malformed_http_is_a_400_and_a_closed_connection(server, head):
    """uvicorn's own (h11's) checks, kept: unfinished headers over 16 kB, bad framing, a request line that is
    not HTTP."""
    with socket.create_connection(("127.0.0.1", server.port)) as sock:
        sock.sendall(head)
        reply = read_until_closed(sock, timeout=10)
    assert reply.startswith(b"HTTP/1.1 400"), reply[:200]


# --- the bound itself, on the real tokenizers ----------------------------------------------------------


TRICKY = ["a" + " " * 3000 + "b", "x" * 3000, "\u00e9" * 500, "\uff76\uff9e" * 300, "</s>" * 200, "<s><unk>" * 100,
          "\U0001F600" * 300, "\u2581" * 1000, "\n" * 800, "\x00\x01" * 400, "straightforward " * 200,
          "e\u0301" * 400, "\t \t" * 500, "-" * 3000]


@pytest.mark.parametrize("kind", ["sentencepiece", "fast"])
def test_the_length_bound_never_exceeds_the_real_count(tiny_loaded, tiny_hf, kind):
    """For the model's SentencePiece tokenizer and transformers' own fast one, on texts chosen to be few tokens
    for their length (long vocabulary entries, runs of spaces, special tokens) or many (bytes, emoji)."""
    tokenizer = tiny_loaded.tokenizer if kind == "sentencepiece" else AutoTokenizer.from_pretrained(tiny_hf)
    bound = TokenBound.of(tokenizer)
    assert bound is not None and bound.longest == 16
    for text in TRICKY:
        real = len(tokenize_prompt(text, tokenizer, add_bos=False).input_ids)
        assert bound.at_least(text) <= real, (text[:20], bound.at_least(text), real)
    tight = "a" + " " * 3000 + "b"
    assert bound.at_least(tight) >= len(tokenize_prompt(tight, tokenizer, add_bos=False).input_ids) - 3
