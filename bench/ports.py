"""Loopback ports for processes a test or benchmark starts and must then bind by number.

A port the kernel hands out for ``bind(0)`` lies in the ephemeral range, so any outgoing connection on the host
(a gRPC channel, a Postgres client) may take it before the child process binds it. Ports here are drawn below
that range, checked free, and never handed out twice in one process.
"""

from __future__ import annotations

import random
import socket
from pathlib import Path

_EPHEMERAL_RANGE = Path("/proc/sys/net/ipv4/ip_local_port_range")
_LOWEST = 10_000
_handed_out: set[int] = set()


def _ephemeral_start() -> int:
    try:
        return int(_EPHEMERAL_RANGE.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32_768


def _bindable(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_port() -> int:
    """A loopback port outside the ephemeral range that is free now and was not returned before."""
    highest = max(_LOWEST + 1_000, _ephemeral_start() - 1)
    rng = random.Random()
    for _ in range(1_000):
        port = rng.randint(_LOWEST, highest)
        if port not in _handed_out and _bindable(port):
            _handed_out.add(port)
            return port
    raise RuntimeError(f"no free loopback port in {_LOWEST}-{highest}")
