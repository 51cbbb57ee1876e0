"""The HTTP API under abuse: a burst of concurrent chat requests, and slow clients holding connections.

    .venv/bin/python bench/api_abuse.py                          # the tiny model, built into a temp dir
    .venv/bin/python bench/api_abuse.py --model-path checkpoints/llava-smol-task-merged

Starts the real server (`python -m llava.serve.openai_api`, its default limits unless
flags are passed after `--`), then measures:

(a) a burst: N chat requests sent at once (default 100).  How many are answered,
    refused with 429 (--max-queued-requests) or 503 (--max-connections), their
    latencies and the time until the last answer.
(b) slow clients: M connections (default 200) that drip their request a byte a
    second, half of them in the headers, half in the body, held open while a
    normal client asks a question every half second.  Whether the normal client
    is served and how fast, and when and how the server cut each slow connection.

Prints a small table for each.  docs/serving.md ("Measurements") has the numbers.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import httpx

from llava.demo.models import build

ROOT = Path(__file__).resolve().parents[1]
QUESTION = [{"role": "user", "content": "What is in the picture? Answer in a few words."}]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(model: Path, port: int, log: Path, extra: list[str]) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "llava.serve.openai_api", "--model-path", str(model),
                                 "--port", str(port), "--log-level", "warning", *extra],
                                cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
    end = time.monotonic() + 300
    while time.monotonic() < end:
        if proc.poll() is not None:
            sys.exit(f"the server exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    proc.kill()
    sys.exit(f"the server did not start within 300 s:\n{log.read_text()[-3000:]}")


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, round(q * (len(values) - 1)))]


def table(rows: list[tuple], header: tuple) -> str:
    cells = [tuple(str(c) for c in header)] + [tuple(str(c) for c in row) for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    lines = [" | ".join(c.ljust(w) for c, w in zip(row, widths)) for row in cells]
    lines.insert(1, "-+-".join("-" * w for w in widths))
    return "\n".join(lines)


# --- (a) a burst of requests ----------------------------------------------------------------------------


async def burst(url: str, model: str, n: int, max_tokens: int) -> None:
    body = {"model": model, "messages": QUESTION, "temperature": 0, "max_tokens": max_tokens}
    limits = httpx.Limits(max_connections=n + 10, max_keepalive_connections=0)
    async with httpx.AsyncClient(base_url=url, timeout=600, limits=limits) as client:
        async def one() -> tuple[str, float]:
            start = time.perf_counter()
            try:
                status = str((await client.post("/v1/chat/completions", json=body)).status_code)
            except httpx.HTTPError as exc:
                status = type(exc).__name__
            return status, time.perf_counter() - start

        start = time.perf_counter()
        results = await asyncio.gather(*(one() for _ in range(n)))
        total = time.perf_counter() - start
    by_status: dict[str, list[float]] = {}
    for status, seconds in results:
        by_status.setdefault(status, []).append(seconds)
    meaning = {"200": "answered", "429": "queue full (--max-queued-requests)",
               "503": "connections full (--max-connections)"}
    rows = [(status, meaning.get(status, "other"), len(times), f"{pct(times, 0.5):.2f}", f"{pct(times, 0.95):.2f}",
             f"{max(times):.2f}") for status, times in sorted(by_status.items())]
    print(f"\n(a) {n} chat requests at once (max_tokens {max_tokens}); all done in {total:.1f} s")
    print(table(rows, ("status", "meaning", "requests", "p50 s", "p95 s", "max s")))


# --- (b) slow clients --------------------------------------------------------------------------------


async def slow_client(port: int, in_body: bool, started: float, limit: float) -> tuple[str, float, str]:
    """Drip a request a byte a second; (kind, seconds until the server closed it, its status line or '')."""
    kind = "body" if in_body else "headers"
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    head = b"POST /v1/chat/completions HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\n"
    drip = (b"{\"model\": " + b" " * 10_000) if in_body else b"X-Slow: " + b"a" * 10_000
    if in_body:
        writer.write(head + b"Content-Length: 20000\r\n\r\n")
    else:
        writer.write(head)
    status = ""
    try:
        for i in range(len(drip)):
            if time.perf_counter() - started > limit:
                return kind, float("inf"), "still open"
            writer.write(drip[i:i + 1])
            await writer.drain()
            try:
                data = await asyncio.wait_for(reader.read(65536), timeout=1.0)
            except TimeoutError:
                continue
            cut = time.perf_counter() - started  # the server answered (a 408) or closed the connection
            if data:
                status = data.split(b"\r\n", 1)[0].decode(errors="replace")
            return kind, cut, status
        return kind, float("inf"), "still open"
    except (ConnectionError, OSError):
        return kind, time.perf_counter() - started, status or "reset"
    finally:
        writer.close()


async def normal_client(url: str, model: str, max_tokens: int, stop: asyncio.Event) -> list[tuple[str, float]]:
    body = {"model": model, "messages": QUESTION, "temperature": 0, "max_tokens": max_tokens}
    results = []
    async with httpx.AsyncClient(base_url=url, timeout=120) as client:
        while not stop.is_set():
            start = time.perf_counter()
            try:
                status = str((await client.post("/v1/chat/completions", json=body)).status_code)
            except httpx.HTTPError as exc:
                status = type(exc).__name__
            results.append((status, time.perf_counter() - start))
            await asyncio.sleep(0.5)
    return results


async def slow_clients(url: str, port: int, model: str, n: int, max_tokens: int, limit: float) -> None:
    started = time.perf_counter()
    stop = asyncio.Event()
    normal = asyncio.create_task(normal_client(url, model, max_tokens, stop))
    slow = await asyncio.gather(*(slow_client(port, i % 2 == 1, started, limit) for i in range(n)))
    stop.set()
    asked = await normal
    print(f"\n(b) {n} slow connections (a byte a second), half in the headers, half in the body, and a normal "
          f"client asking every 0.5 s; {time.perf_counter() - started:.0f} s in all")
    rows = []
    for kind in ("headers", "body"):
        mine = [(s, st) for k, s, st in slow if k == kind]
        cut = [s for s, _ in mine if s != float("inf")]
        replies = Counter(st.split(" ", 2)[1] if st.startswith("HTTP/") else st or "closed" for _, st in mine)
        rows.append((f"slow, in the {kind}", len(mine), len(cut), f"{pct(cut, 0.5):.1f}", f"{max(cut, default=0):.1f}",
                     ", ".join(f"{k}: {v}" for k, v in sorted(replies.items()))))
    print(table(rows, ("connections", "count", "cut", "cut after p50 s", "max s", "server's answer")))
    statuses = Counter(s for s, _ in asked)
    ok = [t for s, t in asked if s == "200"]
    print(table([("normal client", len(asked), ", ".join(f"{k}: {v}" for k, v in sorted(statuses.items())),
                  f"{pct(ok, 0.5):.2f}", f"{pct(ok, 0.95):.2f}", f"{max(ok, default=0):.2f}")],
                ("client", "requests", "statuses", "p50 s", "p95 s", "max s")))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 epilog="flags after -- go to the server, e.g. -- --max-queued-requests 32")
    ap.add_argument("--model-path", default=None, help="default: the tiny model, built into a temp dir")
    ap.add_argument("--concurrent", type=int, default=100)
    ap.add_argument("--slow", type=int, default=200)
    ap.add_argument("--max-tokens", type=int, default=16, help="per request of the burst and the normal client")
    ap.add_argument("--slow-limit", type=float, default=120.0, help="stop the slow clients after this many seconds")
    args, server_flags = ap.parse_known_args()
    server_flags = [f for f in server_flags if f != "--"]

    with tempfile.TemporaryDirectory() as tmp:
        model = Path(args.model_path) if args.model_path else None
        if model is None:
            t0 = time.perf_counter()
            model = build(Path(tmp) / "tiny-llava", parts_dir=Path(tmp) / "parts")
            print(f"built the tiny model in {time.perf_counter() - t0:.0f} s")
        port = free_port()
        log = Path(tmp) / "server.log"
        proc = start_server(model, port, log, server_flags)
        url = f"http://127.0.0.1:{port}"
        served = httpx.get(f"{url}/v1/models").json()["data"][0]["id"]
        print(f"server: {model} as {served!r}, flags: {' '.join(server_flags) or '(defaults)'}; "
              f"cpu cores: {os.cpu_count()}, load average: {os.getloadavg()[0]:.1f}")
        try:
            asyncio.run(burst(url, served, args.concurrent, args.max_tokens))
            asyncio.run(slow_clients(url, port, served, args.slow, args.max_tokens, args.slow_limit))
            print(f"\nafter: {httpx.get(f'{url}/health').json().get('generations')}; "
                  f"tracebacks in the server log: {log.read_text().count('Traceback')}")
        finally:
            proc.terminate()
            proc.wait(30)


if __name__ == "__main__":
    main()
