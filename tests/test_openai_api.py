"""llava.serve.openai_api as a real server process, driven by the real `openai` client.

Two servers on the tiny model, started once for the module: `main` with an API
key and every opt-in the tests need (two allowlisted loopback hosts, only
127.0.0.1/32 opted in, a local media directory, small caps), and `default` with
the defaults (plus a short request timeout).  Image hosts are real HTTP servers
on 127.0.0.1 and 127.0.0.2 (Linux loopback answers on all of 127/8).
"""

from __future__ import annotations

import base64
import json
import socket
import struct
import time
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import openai
import pytest
from PIL import Image
from skimage import data

from llava.serve.chat import ChatSession
from llava.serve.images import decode_image_bytes

from testkit.api_server import KEY, MODEL, launch, png_bytes, stop, wait_ready
from testkit.image_host import ImageHost, endless, hang, redirect, redirect_loop, serve

ROOT = Path(__file__).resolve().parents[1]
MAX_TOKENS = 8
Q1, Q2 = "What is in the picture?", "And what colour is it?"
CAP_BYTES = 1_000_000
pytestmark = [pytest.mark.timeout(300), pytest.mark.slow]  # a real server process


def png_claiming(width: int, height: int) -> bytes:
    """A small PNG whose header claims width x height pixels: a decompression bomb's shape."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64))
            + chunk(b"IEND", b""))


def data_url(data: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(data).decode()


def image_messages(url: str, question: str = Q1) -> list[dict]:
    return [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": url}},
                                         {"type": "text", "text": question}]}]


def ask(client: openai.OpenAI, messages, **kwargs):
    return client.chat.completions.create(model=MODEL, messages=messages,
                                          **{"temperature": 0, "max_tokens": MAX_TOKENS, **kwargs})


def usage_of(response_usage) -> dict:
    return {k: getattr(response_usage, k) for k in ("prompt_tokens", "completion_tokens", "total_tokens")}


def refusal(client: openai.OpenAI, status: int, messages, **kwargs) -> openai.APIStatusError:
    """The error a request gets; checks its status and OpenAI's error shape."""
    with pytest.raises(openai.APIStatusError) as info:
        ask(client, messages, **kwargs)
    err = info.value
    assert err.status_code == status, (err.status_code, err.body)
    assert set(err.body) == {"message", "type", "param", "code"}, err.body
    return err


# --- fixtures ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def photo_png():
    return png_bytes(Image.fromarray(data.astronaut()[40:300, :, :]))


@pytest.fixture(scope="module")
def media_dir(tmp_path_factory, photo_png):
    """An allowed directory holding the photo, a secret beside it and a symlink pointing out to the secret."""
    root = tmp_path_factory.mktemp("media")
    (root / "allowed").mkdir()
    (root / "allowed" / "photo.png").write_bytes(photo_png)
    (root / "secret.png").write_bytes(photo_png)
    (root / "allowed" / "link.png").symlink_to(root / "secret.png")
    return root / "allowed"


@pytest.fixture(scope="module")
def hosts(photo_png):
    second = ImageHost({"/photo.png": serve(photo_png)}, host="127.0.0.2")
    first = ImageHost({"/photo.png": serve(photo_png), "/to-second": redirect(second.url("/photo.png")),
                       "/to-file": redirect("file:///etc/passwd"), "/loop/": redirect_loop,
                       "/endless": endless, "/hang": hang})
    yield first, second
    first.close()
    second.close()


@pytest.fixture(scope="module")
def servers(tiny_hf, media_dir, tmp_path_factory):
    logs = tmp_path_factory.mktemp("server-logs")
    main = launch(tiny_hf, logs / "main.log", "--api-key", KEY,
                  "--allowed-media-domains", "127.0.0.1", "127.0.0.2", "example.com",
                  "--allowed-media-networks", "127.0.0.1/32", "--allowed-local-media-path", str(media_dir),
                  "--max-request-bytes", str(CAP_BYTES), "--max-image-bytes", str(CAP_BYTES), "--max-tokens", "64",
                  "--media-fetch-timeout", "2", "--max-redirects", "3")
    default = launch(tiny_hf, logs / "default.log", "--request-timeout", "1.5")
    try:
        wait_ready(main)
        wait_ready(default)
        yield main, default
    finally:
        stop(main)
        stop(default)


@pytest.fixture(autouse=True)
def no_traceback_in_server_logs(request):
    """A bad input must get a message, never a traceback, in the answer or in the server's log."""
    servers = request.getfixturevalue("servers") if request.node.get_closest_marker("bad_input") else ()
    yield
    for server in servers:
        assert "Traceback" not in server.log.read_text(), server.log.read_text()[-4000:]


@pytest.fixture(scope="module")
def main_server(servers):
    return servers[0]


@pytest.fixture(scope="module")
def default_server(servers):
    return servers[1]


@pytest.fixture(scope="module")
def reference(tiny_loaded, photo_png):
    """Greedy answers (and usage) of ChatSession in this process: Q1 about the photo, then Q2 after it."""
    chat = ChatSession(tiny_loaded, image=decode_image_bytes(photo_png, "photo"), temperature=0,
                       max_new_tokens=MAX_TOKENS)
    answers, usages = [], []
    for question in (Q1, Q2):
        answers.append("".join(chat.ask(question)).strip())
        usages.append(dict(chat.last_usage))
    assert all(answers), answers  # the comparisons below would prove little against empty answers
    return answers, usages


# --- answers -----------------------------------------------------------------------------------------


@pytest.mark.slow
def test_answer_and_usage_equal_chat_session(main_server, reference, photo_png):
    answers, usages = reference
    client = main_server.client()
    first = ask(client, image_messages(data_url(photo_png)))
    assert first.object == "chat.completion" and first.model == MODEL
    assert first.choices[0].message.content == answers[0]
    assert usage_of(first.usage) == usages[0]
    assert first.choices[0].finish_reason == ("length" if usages[0]["completion_tokens"] == MAX_TOKENS else "stop")
    # The history comes from the messages; the image goes with the first user turn.
    history = image_messages(data_url(photo_png)) + [{"role": "assistant", "content": answers[0]},
                                                     {"role": "user", "content": Q2}]
    second = client.chat.completions.create(model=MODEL, messages=history, temperature=0,
                                            max_completion_tokens=MAX_TOKENS)
    assert second.choices[0].message.content == answers[1]
    assert usage_of(second.usage) == usages[1]


def test_streaming_joins_to_the_same_answer(main_server, reference, photo_png):
    answers, usages = reference
    chunks = list(ask(main_server.client(), image_messages(data_url(photo_png)), stream=True,
                      stream_options={"include_usage": True}))
    assert all(c.object == "chat.completion.chunk" and c.id == chunks[0].id for c in chunks)
    assert chunks[0].choices[0].delta.role == "assistant"
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == answers[0]
    *content, finish, usage = chunks
    assert [c.choices[0].finish_reason for c in content] == [None] * len(content)
    assert finish.choices[0].finish_reason in ("stop", "length") and not finish.choices[0].delta.content
    assert usage.choices == [] and usage_of(usage.usage) == usages[0]
    assert all(c.usage is None for c in chunks[:-1])
    # On the wire: server-sent events ending with [DONE]; no usage chunk unless asked for.
    body = {"model": MODEL, "messages": [{"role": "user", "content": Q1}], "max_tokens": 4, "stream": True}
    with httpx.stream("POST", f"{main_server.url}/v1/chat/completions", json=body,
                      headers={"Authorization": f"Bearer {KEY}"}, timeout=60) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        events = [line for line in response.iter_lines() if line]
    assert events[-1] == "data: [DONE]"
    last = json.loads(events[-2].removeprefix("data: "))
    assert last["choices"][0]["finish_reason"] in ("stop", "length") and last["usage"] is None


def test_seed_makes_sampling_reproducible(main_server, photo_png):
    client = main_server.client()
    runs = [ask(client, image_messages(data_url(photo_png)), temperature=1.0, seed=7).choices[0].message.content
            for _ in range(2)]
    assert runs[0] == runs[1]


@pytest.mark.bad_input
def test_models_health_and_api_key(main_server):
    health = httpx.get(f"{main_server.url}/health").json()
    assert {k: health[k] for k in ("status", "model")} == {"status": "ok", "model": MODEL}
    assert set(health["generations"]) == {"waiting", "running", "limit", "done", "stopped", "skipped", "failed"}
    assert [m.id for m in main_server.client().models.list()] == [MODEL]
    with pytest.raises(openai.AuthenticationError) as info:
        main_server.client(key="wrong").models.list()
    assert info.value.status_code == 401 and "API key" in info.value.body["message"]
    response = httpx.post(f"{main_server.url}/v1/chat/completions", json={"model": MODEL, "messages": []})
    assert response.status_code == 401 and response.json()["error"]["code"] == "invalid_api_key"


def test_image_from_an_allowlisted_server_gives_the_data_url_answer(main_server, hosts, reference):
    first, _ = hosts
    response = ask(main_server.client(), image_messages(first.url("/photo.png")))
    assert response.choices[0].message.content == reference[0][0]
    assert "/photo.png" in first.paths()


@pytest.mark.parametrize("source", ["file://{dir}/photo.png", "{dir}/photo.png", "photo.png"])
def test_image_from_the_allowed_directory(main_server, media_dir, reference, source):
    response = ask(main_server.client(), image_messages(source.format(dir=media_dir)))
    assert response.choices[0].message.content == reference[0][0]


def test_concurrent_requests_are_queued_and_all_answered(main_server, photo_png):
    client = main_server.client()
    requests = [image_messages(data_url(photo_png), q) for q in (Q1, Q2)] + [
        [{"role": "user", "content": q}] for q in ("Tell me a story.", "Name a colour.")]
    sequential = [ask(client, m).choices[0].message.content for m in requests]
    with ThreadPoolExecutor(len(requests)) as pool:
        concurrent = list(pool.map(lambda m: ask(client, m).choices[0].message.content, requests))
    assert concurrent == sequential


# --- refusals: each a 4xx in OpenAI's shape whose message names the problem ----------------------------


IMAGE_PARAM = "messages[0].content[0].image_url.url"


@pytest.mark.bad_input
@pytest.mark.parametrize("source, match", [
    ("file://{dir}/../secret.png", "outside the allowed directory"),
    ("{dir}/../secret.png", "outside the allowed directory"),
    ("{dir}/link.png", "outside the allowed directory"),  # a symlink inside pointing out
    ("http://example.org/cat.png", "example.org is not in --allowed-media-domains"),
    ("{second}/photo.png", "127.0.0.2 resolves to 127.0.0.2, a loopback address"),
    ("{first}/to-file", "redirect 1 to file:///etc/passwd: the file scheme is not allowed"),
    ("{first}/loop/0", "more than 3 redirects (--max-redirects)"),
    ("{first}/missing.png", "the server answered HTTP 404"),
    ("ftp://127.0.0.1/photo.png", "ftp: URLs are not supported"),
    (data_url(png_claiming(10_000, 10_000)), "10000x10000 pixels, more than the 40,000,000 allowed"),
    (data_url(png_claiming(100_000, 100_000)), "more pixels than the 40,000,000 allowed"),
    (data_url(b"\x89PNG\r\n\x1a\n garbage"), "cannot read image"),
    ("data:text/plain;base64,aGVsbG8=", "only base64 image data URLs"),
], ids=["file-url-dotdot", "path-dotdot", "symlink-out", "domain-not-allowed", "loopback-not-opted-in",
        "redirect-to-file-scheme", "too-many-redirects", "upstream-404", "ftp-scheme", "bomb-over-our-cap",
        "bomb-over-pil-limit", "not-an-image", "non-image-data-url"])
def test_image_refusals(main_server, hosts, media_dir, source, match):
    first, second = hosts
    url = source.format(dir=media_dir, first=f"http://127.0.0.1:{first.port}",
                        second=f"http://127.0.0.2:{second.port}")
    err = refusal(main_server.client(), 400, image_messages(url))
    assert match in err.body["message"] and err.body["param"] == IMAGE_PARAM, err.body
    assert second.hits == []  # 127.0.0.2 is never contacted: its address is refused before connecting


@pytest.mark.bad_input
def test_a_redirect_to_a_refused_address_is_caught_at_the_hop(main_server, hosts):
    """127.0.0.1 is opted in and both IP literals are allowlisted: only the per-hop address check
    can refuse the redirect to 127.0.0.2 (vLLM's GHSA-3f6c-7fw2-ppm4)."""
    first, second = hosts
    err = refusal(main_server.client(), 400, image_messages(first.url("/to-second")))
    assert (f"redirect 1 to http://127.0.0.2:{second.port}/photo.png: 127.0.0.2 resolves to 127.0.0.2, "
            "a loopback address") in err.body["message"]
    assert "/to-second" in first.paths() and second.hits == []


@pytest.mark.bad_input
def test_an_endless_image_is_cut_off_at_the_byte_cap(main_server, hosts):
    first, _ = hosts
    start = time.monotonic()
    err = refusal(main_server.client(), 400, image_messages(first.url("/endless")))
    assert f"more than the {CAP_BYTES:,} bytes allowed (--max-image-bytes)" in err.body["message"]
    assert time.monotonic() - start < 10
    assert first.ended["/endless"].wait(10)  # the server hung up on it: the sender's write failed
    assert first.sent["/endless"] < 64 * 1024 * 1024


@pytest.mark.bad_input
def test_a_fetch_that_hangs_times_out(main_server, hosts):
    first, _ = hosts
    start = time.monotonic()
    err = refusal(main_server.client(), 400, image_messages(first.url("/hang")))
    assert "no complete answer within 2 s (--media-fetch-timeout)" in err.body["message"]
    assert time.monotonic() - start < 10


@pytest.mark.bad_input
def test_two_images_are_refused(main_server, photo_png):
    url = data_url(photo_png)
    one_message = [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": url}},
                                                {"type": "image_url", "image_url": {"url": url}}]}]
    err = refusal(main_server.client(), 400, one_message)
    assert "2 images in the conversation" in err.body["message"] and "at most one image" in err.body["message"]
    across = image_messages(url) + [{"role": "assistant", "content": "ok"}] + image_messages(url, Q2)
    err = refusal(main_server.client(), 400, across)
    assert "messages[0].content[0]" in err.body["message"] and "messages[2].content[0]" in err.body["message"]


@pytest.mark.bad_input
def test_max_tokens_over_the_cap(main_server):
    err = refusal(main_server.client(), 400, [{"role": "user", "content": Q1}], max_tokens=65)
    assert "65 is more than this server's limit of 64 tokens" in err.body["message"]
    assert err.body["param"] == "max_tokens"


def test_a_leading_system_message_replaces_the_template_system_prompt(main_server, tiny_loaded, photo_png):
    system = "You are a terse assistant.\nAnswer in one word."
    chat = ChatSession(tiny_loaded, image=decode_image_bytes(photo_png, "photo"), temperature=0,
                       max_new_tokens=MAX_TOKENS, system=system)
    expected = "".join(chat.ask(Q1)).strip()
    default = ChatSession(tiny_loaded, image=decode_image_bytes(photo_png, "photo"), temperature=0,
                          max_new_tokens=MAX_TOKENS)
    "".join(default.ask(Q1))
    # Two system messages are joined with a newline; the prompt really is the one with that system text.
    messages = [{"role": "system", "content": "You are a terse assistant."},
                {"role": "developer", "content": [{"type": "text", "text": "Answer in one word."}]},
                *image_messages(data_url(photo_png))]
    answer = ask(main_server.client(), messages)
    assert answer.choices[0].message.content == expected
    assert answer.usage.prompt_tokens == chat.last_usage["prompt_tokens"] != default.last_usage["prompt_tokens"]


@pytest.mark.bad_input
def test_late_system_messages_and_unknown_models_are_refused(main_server):
    err = refusal(main_server.client(), 400, [{"role": "user", "content": Q1},
                                              {"role": "assistant", "content": "ok"},
                                              {"role": "system", "content": "Be brief."},
                                              {"role": "user", "content": Q2}])
    assert "system message after the conversation has begun" in err.body["message"]
    assert err.body["param"] == "messages[2].role"
    err = refusal(main_server.client(), 400, [{"role": "system", "content": "Be brief."}])
    assert "a user message must follow the system message" in err.body["message"]
    with pytest.raises(openai.NotFoundError) as info:
        main_server.client().chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": Q1}])
    assert "'gpt-4o' is not served here" in info.value.body["message"]


@pytest.mark.bad_input
def test_malformed_json_oversized_bodies_and_unknown_routes(main_server):
    headers = {"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"}
    url = f"{main_server.url}/v1/chat/completions"
    bad = httpx.post(url, content=b'{"model": "tiny-llava", "messages": [', headers=headers)
    assert bad.status_code == 400 and "not valid JSON" in bad.json()["error"]["message"]
    big = json.dumps({"model": MODEL, "messages": [{"role": "user", "content": "x" * (CAP_BYTES + 1000)}]})
    too_big = httpx.post(url, content=big.encode(), headers=headers)
    assert too_big.status_code == 413
    assert f"larger than this server's limit of {CAP_BYTES:,} bytes" in too_big.json()["error"]["message"]
    # Without Content-Length (chunked), the body is counted while it arrives.
    chunked = httpx.post(url, content=iter([big[i:i + 65536].encode() for i in range(0, len(big), 65536)]),
                         headers=headers)
    assert chunked.status_code == 413 and "--max-request-bytes" in chunked.json()["error"]["message"]
    missing = httpx.get(f"{main_server.url}/v1/nothing-here", headers=headers)
    assert missing.status_code == 404 and set(missing.json()["error"]) == {"message", "type", "param", "code"}


# --- the defaults --------------------------------------------------------------------------------------


def test_defaults_bind_loopback_and_need_no_key(default_server):
    assert f"Uvicorn running on http://127.0.0.1:{default_server.port}" in default_server.log.read_text()
    assert [m.id for m in default_server.client(key=None).models.list()] == [MODEL]


@pytest.mark.bad_input
@pytest.mark.parametrize("source, match", [
    ("file:///etc/hostname", "local files are not allowed on this server"),
    ("/etc/hostname", "local files are not allowed on this server"),
    ("http://127.0.0.1:9/photo.png", "image URLs are disabled on this server"),
], ids=["file-url", "plain-path", "http-without-allowlist"])
def test_defaults_refuse_local_files_and_remote_urls(default_server, source, match):
    err = refusal(default_server.client(key=None), 400, image_messages(source))
    assert match in err.body["message"] and err.body["param"] == IMAGE_PARAM, err.body


@pytest.mark.bad_input
def test_a_request_past_the_time_limit_gets_408(default_server):
    """A client that sends its body slowly is cut off at --request-timeout (1.5 s here)."""
    start = time.monotonic()
    with socket.create_connection(("127.0.0.1", default_server.port), timeout=10) as sock:
        sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n"
                     b"Content-Length: 1000\r\n\r\n{\"model\": ")
        reply = b""
        while b"\r\n\r\n" not in reply or not reply.rstrip().endswith(b"}"):
            data = sock.recv(65536)
            if not data:
                break
            reply += data
    head, _, body = reply.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 408"), reply
    assert "took longer than this server's limit of 1.5 s (--request-timeout)" in json.loads(body)["error"]["message"]
    assert time.monotonic() - start < 6


@pytest.mark.slow
@pytest.mark.bad_input
def test_a_generation_past_the_time_limit_is_stopped(default_server):
    """950 greedy tokens take the tiny model several seconds; the 1.5 s limit ends the request, streaming
    or not, and stops the generation: the next short request is answered within the limit."""
    client = default_server.client(key=None)
    long = [{"role": "user", "content": "Tell me a very long story."}]
    start = time.monotonic()
    err = refusal(client, 408, long, max_tokens=950)
    assert "took longer than this server's limit of 1.5 s" in err.body["message"]
    assert time.monotonic() - start < 5
    pieces = []
    with pytest.raises(openai.APIError, match=r"took longer than this server's limit of 1\.5 s"):
        for chunk in ask(client, long, max_tokens=950, stream=True):
            pieces.append(chunk)
    assert len(pieces) > 1  # it was streaming when the limit struck
    assert ask(client, long, max_tokens=4).choices[0].finish_reason == "length"
