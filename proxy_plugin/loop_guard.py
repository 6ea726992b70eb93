"""The gateway never proxies to itself: refused at start, and a loop detected per request.

At start, an upstream that is the gateway's own listen address (OLLAMA_HOST exported to the gateway's
address in the shell that starts it) is refused with a message. At run time every request the gateway
sends upstream carries ``X-Ollama-Optimizer-Hop`` with the ids of the gateways it passed through; a
gateway that finds its own id there (a loop through other proxies or gateways) answers 508 Loop
Detected, as does any request that went through more than ``MAX_HOPS`` gateways. Gateways chained on
purpose (A -> B -> Ollama) see distinct ids and work.
"""

from __future__ import annotations

import ipaddress
import socket
import uuid
from urllib.parse import urlsplit

HOP_HEADER = "X-Ollama-Optimizer-Hop"
MAX_HOPS = 8


class SelfUpstream(ValueError):
    """The upstream is the gateway's own address."""


def _local_addresses() -> set[str]:
    found = {"127.0.0.1", "::1", "0.0.0.0", "::"}
    try:
        found.update(str(info[4][0]) for info in socket.getaddrinfo(socket.gethostname(), None))
    except OSError:
        pass
    return found


def _resolve(host: str) -> set[str]:
    try:
        return {str(info[4][0]) for info in socket.getaddrinfo(host, None)}
    except OSError:
        return set()


def _is_local(address: str) -> bool:
    try:
        return ipaddress.ip_address(address).is_loopback or address in _local_addresses()
    except ValueError:
        return False


def check_upstream(listen_host: str, listen_port: int, upstream_url: str) -> None:
    """Raise ``SelfUpstream`` when ``upstream_url`` reaches this gateway's own listen address."""
    parts = urlsplit(upstream_url)
    if parts.port != listen_port or parts.hostname is None:
        return
    upstream_addresses = _resolve(parts.hostname)
    wildcard = listen_host in ("", "0.0.0.0", "::")
    listen_addresses = _resolve(listen_host) if not wildcard else set()
    if any((wildcard and _is_local(a)) or a in listen_addresses for a in upstream_addresses):
        raise SelfUpstream(
            f"upstream {upstream_url} is this gateway's own address ({listen_host}:{listen_port}): it would proxy "
            "to itself. Point OLLAMA_HOST (or --upstream) at Ollama, e.g. 127.0.0.1:11434; clients use the "
            "gateway's address, the gateway does not"
        )


class HopGuard:
    """This gateway's id, the header to send upstream, and the loop test for an incoming request."""

    def __init__(self) -> None:
        self.gateway_id = uuid.uuid4().hex[:12]

    def is_loop(self, incoming: str | None) -> bool:
        hops = [h.strip() for h in (incoming or "").split(",") if h.strip()]
        return self.gateway_id in hops or len(hops) >= MAX_HOPS

    def outgoing(self, incoming: str | None) -> str:
        return f"{incoming}, {self.gateway_id}" if incoming else self.gateway_id
