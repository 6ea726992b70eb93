"""Stands for the host's own optimizer plugin (``src/plugins/optimizer/agent.py``): an agent also named ``opt``."""

from __future__ import annotations

from typing import Any

from src.shared.base_agent import BaseAgent


class OptimizerAgent(BaseAgent):
    requests = 0  # how often the host ran this agent

    @property
    def name(self) -> str:
        return "opt"

    async def on_request(self, request: dict[str, Any]) -> dict[str, Any]:
        OptimizerAgent.requests += 1
        return request

    async def on_response(self, request: dict[str, Any], response: dict[str, Any]) -> dict[str, Any]:
        return response
