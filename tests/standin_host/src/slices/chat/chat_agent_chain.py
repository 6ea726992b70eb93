"""The host's chat chain as ollama-smart-proxy shapes it: ``build_ollama_request`` rebuilds the upstream body
from model, messages and stream; ``FORWARDED_FIELDS`` is empty unless the forwarding patch is applied."""

from typing import Any

FORWARDED_FIELDS: tuple[str, ...] = ()


class ChatAgentChain:
    def __init__(self, registry: object) -> None:
        self.registry = registry

    def build_ollama_request(self, context: dict[str, Any]) -> dict[str, Any]:
        request = {"model": context["model"], "messages": context["messages"], "stream": context.get("stream", False)}
        request.update({k: context[k] for k in FORWARDED_FIELDS if k in context})
        return request
