"""The host's generate chain (see chat_agent_chain): model, prompt, stream, plus FORWARDED_FIELDS."""

from typing import Any

FORWARDED_FIELDS: tuple[str, ...] = ()


class GenerateAgentChain:
    def __init__(self, registry: object) -> None:
        self.registry = registry

    def build_ollama_request(self, context: dict[str, Any]) -> dict[str, Any]:
        request = {"model": context["model"], "prompt": context["prompt"], "stream": context.get("stream", False)}
        request.update({k: context[k] for k in FORWARDED_FIELDS if k in context})
        return request
