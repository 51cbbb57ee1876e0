"""ImageHost: a real HTTP server on a loopback address (any of 127/8 on Linux) with scripted routes,
and the routes the media-fetch and API tests script (an image, a redirect, a loop, an endless body, a hang)."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class ImageHost:
    """An HTTP server on `host` (any of 127/8 works on Linux) answering scripted routes.

    routes: path -> fn(handler, host); a key ending in "/" matches every path under it.
    Records every request as (path, Host header) in `hits`; `ended` is set per path
    when its handler returns (for an endless body: when the client hung up).
    """

    def __init__(self, routes: dict, host: str = "127.0.0.1"):
        self.routes, self.host = routes, host
        self.hits: list[tuple[str, str]] = []
        self.sent: dict[str, int] = {}
        self.ended: dict[str, threading.Event] = {}
        self.stop = threading.Event()
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 - http.server's naming
                owner.hits.append((self.path, self.headers.get("Host", "")))
                ended = owner.ended.setdefault(self.path, threading.Event())
                try:
                    owner.route(self.path)(self, owner)
                except (BrokenPipeError, ConnectionResetError):
                    pass
                finally:
                    ended.set()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer((host, 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def route(self, path: str):
        if path in self.routes:
            return self.routes[path]
        prefixes = [k for k in self.routes if k.endswith("/") and path.startswith(k)]
        return self.routes[max(prefixes, key=len)] if prefixes else not_found

    def url(self, path: str) -> str:
        return f"http://{self.host}:{self.port}{path}"

    def paths(self) -> list[str]:
        return [p for p, _ in self.hits]

    def close(self) -> None:
        self.stop.set()
        self.server.shutdown()
        self.server.server_close()


def not_found(h, host):
    h.send_error(404)


def serve(data: bytes, content_type: str = "image/png"):
    def route(h, host):
        h.send_response(200)
        h.send_header("Content-Type", content_type)
        h.send_header("Content-Length", str(len(data)))
        h.end_headers()
        h.wfile.write(data)
    return route


def redirect(location: str):
    def route(h, host):
        h.send_response(302)
        h.send_header("Location", location)
        h.send_header("Content-Length", "0")
        h.end_headers()
    return route


def redirect_loop(h, host):
    """/loop/N -> /loop/N+1, forever."""
    n = int(h.path.rsplit("/", 1)[1] or 0)
    redirect(f"/loop/{n + 1}")(h, host)


def endless(h, host):
    """A 200 whose body never ends (no Content-Length, HTTP/1.0: the body lasts until the connection closes)."""
    h.send_response(200)
    h.send_header("Content-Type", "image/png")
    h.end_headers()
    chunk = b"\0" * 65536
    host.sent[h.path] = 0
    while not host.stop.is_set():
        h.wfile.write(chunk)
        host.sent[h.path] += len(chunk)


def hang(h, host):
    """Accept the request and never answer."""
    host.stop.wait(120)
