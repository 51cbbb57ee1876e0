"""Helpers shared by several test modules (fixtures live in conftest.py): real servers, launchers and ports.
No test module imports another test module; what two of them need lives here."""

from __future__ import annotations

import socket
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now (a server started right after takes it)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
