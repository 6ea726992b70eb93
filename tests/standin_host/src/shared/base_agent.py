"""The host's agent contract, as ollama-smart-proxy defines it (DESIGN §2): an abstract base class."""

from abc import ABC, abstractmethod
from typing import Any


class BaseAgent(ABC):
    @property
    @abstractmethod
    def name(self) -> str:
        """Slash-command name that activates the agent."""

    @abstractmethod
    async def on_request(self, request: dict[str, Any]) -> dict[str, Any]:
        """Modify the request context before it is sent to Ollama."""

    @abstractmethod
    async def on_response(self, request: dict[str, Any], response: dict[str, Any]) -> dict[str, Any]:
        """Process the (aggregated, when streaming) response."""
