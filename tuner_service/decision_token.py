"""Decision ids: named, typed fields signed by the tuner, so an echoed id cannot be forged or misread.

An id reads ``d2.<nonce>.<reason code>.<flags>.<mac>``: the reason code by name (never an index into
a list that a later version may reorder), the flags as letters (``r`` reload caused, ``a`` reload
avoided, ``p`` truncation prevented, ``-`` none), and an HMAC-SHA256 over those fields with the
tuner's key. Only an id whose MAC verifies contributes its fields to a stored outcome; anything
else (forged, altered, from another key, or the unsigned format of earlier versions) counts as no
decision. Tuners that share ``TUNER_DECISION_KEY`` verify each other's ids (failover, restarts);
without it each process draws its own key.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
from dataclasses import dataclass

VERSION = "d2"
MAC_HEX = 24  # 96 bits
FLAGS = (("r", "reload_caused"), ("a", "reload_avoided"), ("p", "truncation_prevented"))
_ID = re.compile(rf"d2\.([0-9a-f]{{1,32}})\.([a-z_]{{1,40}})\.([rap]{{1,3}}|-)\.([0-9a-f]{{{MAC_HEX}}})")


@dataclass(frozen=True)
class DecisionFields:
    """What a verified decision id says; the default is "no (verified) decision"."""

    reason_code: str = ""
    reload_caused: bool = False
    reload_avoided: bool = False
    truncation_prevented: bool = False


NONE = DecisionFields()


def signing_key(configured: str) -> bytes:
    """The configured key (TUNER_DECISION_KEY) when set, else a random key for this process."""
    return configured.encode() if configured else os.urandom(32)


class DecisionSigner:
    """Issues and verifies decision ids under one key."""

    def __init__(self, key: bytes) -> None:
        self._key = key

    def _mac(self, body: str) -> str:
        return hmac.new(self._key, body.encode(), hashlib.sha256).hexdigest()[:MAC_HEX]

    def issue(self, nonce: str, fields: DecisionFields) -> str:
        flags = "".join(letter for letter, name in FLAGS if getattr(fields, name)) or "-"
        body = f"{VERSION}.{nonce}.{fields.reason_code}.{flags}"
        return f"{body}.{self._mac(body)}"

    def verify(self, decision_id: str) -> DecisionFields | None:
        """The fields of an id this key issued; None for anything else (including the empty id)."""
        match = _ID.fullmatch(decision_id)
        if match is None:
            return None
        body, mac = decision_id.rsplit(".", 1)
        if not hmac.compare_digest(mac, self._mac(body)):
            return None
        flags = match.group(3)
        return DecisionFields(match.group(2), *(letter in flags for letter, _ in FLAGS))
