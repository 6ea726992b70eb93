"""Per-source bearer tokens: each client (a gateway, an agent) presents its own token, and the token
names the source.

``OPTIMIZER_SOURCE_TOKENS`` (or a file named by ``OPTIMIZER_SOURCE_TOKENS_FILE``) lists ``name=token``
pairs separated by commas or newlines. The servers accept each listed token as a bearer token (beside
``OPTIMIZER_AUTH_TOKEN``), and the tuner takes a Report's source from the token that authenticated it
(``token:<name>``): a client cannot name itself, nor get a fresh rate-limit bucket by renaming. A name
may have several tokens (rotation: add the new one, move the clients, remove the old one); a token
belongs to one name. Only SHA-256 digests of the tokens are kept and looked up.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

BEARER = "Bearer "
MIN_TOKEN_LEN = 16
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


def bearer(metadata: Iterable[tuple[str, str | bytes]] | None) -> str:
    """The token of an ``authorization: Bearer <token>`` entry ("" when there is none)."""
    for key, value in metadata or ():
        if key == "authorization":
            text = value.decode("utf-8", "replace") if isinstance(value, bytes) else value
            return text[len(BEARER) :] if text.startswith(BEARER) else ""
    return ""


@dataclass(frozen=True)
class SourceTokens:
    """Token digests and the source each names."""

    by_digest: Mapping[bytes, str] = field(default_factory=dict)

    @classmethod
    def parse(cls, raw: str) -> SourceTokens:
        """``name=token`` pairs separated by commas or newlines; ValueError naming the bad entry."""
        by_digest: dict[bytes, str] = {}
        for number, entry in enumerate((e.strip() for e in re.split(r"[,\n]", raw)), 1):
            if not entry:
                continue
            name, sep, token = (part.strip() for part in entry.partition("="))
            if not sep or not _NAME.fullmatch(name):
                raise ValueError(
                    f"OPTIMIZER_SOURCE_TOKENS entry {number}: expected name=token with a name of "
                    "letters, digits, '.', '_' or '-' (at most 64)"
                )
            if len(token) < MIN_TOKEN_LEN or any(c.isspace() for c in token):
                raise ValueError(
                    f"OPTIMIZER_SOURCE_TOKENS entry {number} ({name}): the token must be at least "
                    f"{MIN_TOKEN_LEN} characters without spaces"
                )
            digest = _digest(token)
            if by_digest.get(digest, name) != name:
                raise ValueError(
                    f"OPTIMIZER_SOURCE_TOKENS entry {number} ({name}): this token already names {by_digest[digest]!r}"
                )
            by_digest[digest] = name
        return cls(by_digest)

    def __bool__(self) -> bool:
        return bool(self.by_digest)

    def source(self, token: str) -> str:
        """``token:<name>`` for a listed token, else ""."""
        name = self.by_digest.get(_digest(token)) if token else None
        return f"token:{name}" if name else ""
