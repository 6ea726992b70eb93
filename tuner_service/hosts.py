"""Learned state is kept per (Ollama host or hardware class, model): one key string for both.

The empty host is the default (a single Ollama behind every gateway): its key is the model name alone.
Model names and host labels hold no white space, so ``"<model> @<host>"`` cannot collide with a name.
"""

from __future__ import annotations

import re

MAX_HOST_LEN = 128
HOST_RE = re.compile(rf"[^\x00-\x20\x7f]{{0,{MAX_HOST_LEN}}}")
SEPARATOR = " @"


def valid_host(host: str) -> bool:
    """0..MAX_HOST_LEN characters, none of them control characters or white space."""
    return HOST_RE.fullmatch(host) is not None


def state_key(model: str, host: str) -> str:
    return f"{model}{SEPARATOR}{host}" if host else model


def split_key(key: str) -> tuple[str, str]:
    """(model, host) of a state key."""
    model, _sep, host = key.partition(SEPARATOR)
    return model, host
