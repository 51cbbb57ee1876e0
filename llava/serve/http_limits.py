"""uvicorn's HTTP/1.1 protocol (h11) with a time limit on a request's line and headers.

uvicorn limits what it can: idle kept-alive connections (timeout_keep_alive), the
number of connections and requests at once (limit_concurrency, answered with 503),
and the size of the request line and headers (h11's max_incomplete_event_size:
a 400).  It has no limit on the time a client takes to send its headers: a client
that sends them a byte every few seconds ("slowloris") holds its connection, and
its place under limit_concurrency, for ever, and a few hundred of them fill the
server's connection table.  This subclass closes a connection whose request
headers are not complete `header_timeout` seconds after it opened, or after the
previous response on it; once the headers are in, the app's own limits (the
body's time, --request-timeout) take over.
"""

from __future__ import annotations

import asyncio
import json
import logging

from llava.extras import missing_extra

try:
    from uvicorn.protocols.http.h11_impl import H11Protocol
except ImportError as exc:  # the `serve` extra
    raise missing_extra("serve", exc, "the HTTP API") from exc

log = logging.getLogger("llava.serve.openai_api")


def with_header_timeout(seconds: float) -> type[H11Protocol]:
    """The protocol class to give uvicorn (`http=`), closing connections slower than `seconds` to send headers."""
    return type("HeaderTimeoutH11Protocol", (HeaderTimeoutH11Protocol,), {"header_timeout": seconds})


class HeaderTimeoutH11Protocol(H11Protocol):
    header_timeout: float = 10.0
    _header_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport) -> None:
        super().connection_made(transport)
        self._arm()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if not self._waiting_for_request():
            self._disarm()  # the headers are in: a request is being answered

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing():
            self._arm()  # the next request on this kept-alive connection gets the same time

    def connection_lost(self, exc) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _waiting_for_request(self) -> bool:
        return self.cycle is None or self.cycle.response_complete

    def _arm(self) -> None:
        self._disarm()
        self._header_timer = self.loop.call_later(self.header_timeout, self._headers_too_slow)

    def _disarm(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _headers_too_slow(self) -> None:
        self._header_timer = None
        if self.transport.is_closing() or not self._waiting_for_request():
            return
        partial, _ = self.conn.trailing_data  # what h11 holds of an unfinished request
        if partial:
            # h11 cannot answer a request it has not parsed, so the 408 is written as it is: nothing else is
            # sent on this connection, which closes now.
            body = json.dumps({"error": {"message": f"the request line and headers did not arrive within "
                                                    f"{self.header_timeout:g} s (--header-timeout)",
                                         "type": "timeout_error", "param": None, "code": "header_timeout"}})
            self.transport.write(b"HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\n"
                                 b"connection: close\r\ncontent-length: %d\r\n\r\n%s" % (len(body), body.encode()))
            log.info("closed a connection from %s: its request headers took longer than %g s (--header-timeout)",
                     self.client[0] if self.client else "?", self.header_timeout)
        self.transport.close()
