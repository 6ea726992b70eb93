"""/api/embed as Ollama's EmbedHandler answers it: inputs validated, the runner scheduled (any model can
embed), each input cut to the runner's context unless ``truncate`` is false (then HTTP 400), unit vectors
of the model's embedding width (``dimensions`` keeps a prefix, renormalised)."""

from __future__ import annotations

import math
import random
from typing import Any

from .profiles import ModelProfile
from .tokens import stable_hash, token_count

INVALID_INPUT = "invalid input type"


def embed_inputs(value: Any) -> list[str] | None:
    """The inputs of an EmbedRequest, or None when Ollama refuses their type."""
    if value is None:
        return []
    if isinstance(value, str):
        return [value] if value else []
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return list(value)
    return None


def input_tokens(model: ModelProfile, text: str) -> int:
    """Tokens of one input as the runner receives it (BOS included)."""
    return model.bos_tokens + token_count(text, model)


def embedding(model: ModelProfile, text: str, kept_tokens: int, dimensions: int) -> list[float]:
    """A deterministic unit vector for the first ``kept_tokens`` of ``text`` (a cut input embeds differently;
    what the model computes is not emulated)."""
    rng = random.Random(stable_hash("embed", model.name, text, str(kept_tokens)))
    vector = [rng.gauss(0.0, 1.0) for _ in range(model.hidden)]
    if 0 < dimensions < len(vector):
        vector = vector[:dimensions]
    norm = math.sqrt(sum(v * v for v in vector)) or 1.0
    return [v / norm for v in vector]
