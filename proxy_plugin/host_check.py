"""Does the host (ollama-smart-proxy) forward the ``options`` an agent sets? Checked once, at start.

The host's chains rebuild the upstream request in ``build_ollama_request(context)``; unpatched, they keep
only model, messages|prompt and stream, so num_ctx/num_batch never reach Ollama. The check calls each
chain's ``build_ollama_request`` on a probe context (no I/O) and looks for ``options`` in the result.
"""

from __future__ import annotations

import importlib
import logging
from types import ModuleType
from typing import Any

log = logging.getLogger(__name__)

# (module names to try, chain class, body key) per endpoint; the host imports its slices both ways.
CHAINS = (
    (("src.slices.chat.chat_agent_chain", "slices.chat.chat_agent_chain"), "ChatAgentChain", "messages"),
    (
        ("src.slices.generate.generate_agent_chain", "slices.generate.generate_agent_chain"),
        "GenerateAgentChain",
        "prompt",
    ),
)
PROBE_OPTIONS = {"num_ctx": 2048}


def _module(names: tuple[str, ...]) -> ModuleType | None:
    for name in names:
        try:
            return importlib.import_module(name)
        except Exception:  # noqa: BLE001, S112 - not in a host, or a host that cannot import it here: unknown
            continue
    return None


def _forwards(chain: type, key: str) -> bool | None:
    probe: dict[str, Any] = {
        "model": "probe",
        key: [] if key == "messages" else "",
        "stream": False,
        "options": dict(PROBE_OPTIONS),
    }
    try:
        build = getattr(chain, "build_ollama_request", None)  # the host's class: untyped, maybe absent
        built = build(object.__new__(chain), probe) if callable(build) else None
    except Exception:  # noqa: BLE001 - whatever the host's chain raises: unknown
        return None
    return isinstance(built, dict) and built.get("options") == PROBE_OPTIONS


def host_forwards_options() -> bool | None:
    """True when every chain forwards options, False when one drops them, None when the host is unknown."""
    verdicts = []
    for names, class_name, key in CHAINS:
        module = _module(names)
        chain = getattr(module, class_name, None) if module is not None else None
        verdicts.append(_forwards(chain, key) if isinstance(chain, type) else None)
    if False in verdicts:
        return False
    return True if verdicts and all(verdicts) else None
