"""Which headers a proxy passes on: all but the hop-by-hop ones (RFC 9110 section 7.6.1) and those it sets."""

from __future__ import annotations

from typing import Any

HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "trailers",
        "transfer-encoding",
        "upgrade",
        "content-length",
        "host",
    }
)


def forward_headers(headers: Any, *, drop: frozenset[str] = frozenset()) -> dict[str, str]:
    """``headers`` without the hop-by-hop ones and ``drop`` (lower-case names)."""
    return {k: v for k, v in headers.items() if k.lower() not in HOP_BY_HOP and k.lower() not in drop}
