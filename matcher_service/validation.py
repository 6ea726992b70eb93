"""Input validation at the gRPC boundary: bad input → InvalidInput (INVALID_ARGUMENT), nothing written."""

from __future__ import annotations

import re

from ollama_optimizer.gen.optimizer.v1 import matcher_pb2
from prompt_fingerprint import windows_for

MODEL_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:/-]{0,199}$")
MAX_TEMPLATE_ID = (1 << 63) - 1
MAX_PAGE = 1000
MAX_OBSERVE_BATCH = 1000
DEFAULT_PAGE = 100


class InvalidInput(ValueError):
    """A request field is out of range; the message says which and why."""


def check_model(model: str) -> None:
    if not MODEL_RE.match(model):
        raise InvalidInput(f"model {model[:80]!r} is not a valid model name (want {MODEL_RE.pattern})")


def check_text(text: str, max_bytes: int) -> None:
    if not text:
        raise InvalidInput("text is empty")
    if len(text) > max_bytes or (4 * len(text) > max_bytes and len(text.encode("utf-8")) > max_bytes):
        raise InvalidInput(f"text is larger than the cap of {max_bytes} bytes (MATCHER_MAX_TEXT_BYTES)")


def check_fingerprints(fps: matcher_pb2.Fingerprints, version: int) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """(windows, fingerprints) of an Observe request, consistent with its unit_count."""
    if fps.algorithm_version != version:
        raise InvalidInput(
            f"fingerprints.algorithm_version {fps.algorithm_version} is not this matcher's version {version}"
        )
    if fps.unit_count < 1:
        raise InvalidInput("fingerprints.unit_count must be at least 1")
    if fps.head_units > fps.unit_count:
        raise InvalidInput(f"fingerprints.head_units {fps.head_units} exceeds unit_count {fps.unit_count}")
    fingerprinted = fps.head_units or fps.unit_count
    windows = tuple(w.window for w in fps.windows)
    expected = tuple(windows_for(fingerprinted))
    if windows != expected:
        raise InvalidInput(
            f"fingerprints.windows {list(windows)[:8]} do not match {fingerprinted} fingerprinted tokens "
            f"(expected {list(expected)}, as Match returns them)"
        )
    return windows, tuple(w.fingerprint for w in fps.windows)


def check_batch(items: int) -> None:
    if not 1 <= items <= MAX_OBSERVE_BATCH:
        raise InvalidInput(f"observations: {items} items, want 1..{MAX_OBSERVE_BATCH}")


def check_template_id(template_id: int, *, allow_zero: bool) -> None:
    low = 0 if allow_zero else 1
    if not low <= template_id <= MAX_TEMPLATE_ID:
        raise InvalidInput(f"template_id {template_id} out of range (>= {low})")


def page_size(limit: int) -> int:
    if limit == 0:
        return DEFAULT_PAGE
    if not 1 <= limit <= MAX_PAGE:
        raise InvalidInput(f"limit {limit} out of range 1..{MAX_PAGE} (0 means {DEFAULT_PAGE})")
    return limit
