"""The ``opt`` agent for ollama-smart-proxy (copy or link this file to ``src/plugins/opt/agent.py``).

The host loads this file by path, finds the subclass of its ``BaseAgent`` and instantiates it without
arguments; it runs when the last user message starts with ``/opt``. ``on_request`` asks the optimizer
for ``num_ctx``/``num_batch`` and sets them in ``request["options"]`` (the host forwards them only with
``ollama-smart-proxy.patch`` applied); ``on_response`` queues telemetry. Neither ever raises.
The ``proxy_plugin`` package must be importable in the host's environment (``pip install ollama-optimizer``).
"""

from __future__ import annotations

import asyncio
import logging
import sys
from abc import ABC, abstractmethod
from collections import OrderedDict
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

try:
    from proxy_plugin.core import OptimizerCore
except ImportError:  # linked from a checkout that is not installed: import from next to the real file
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from proxy_plugin.core import OptimizerCore

from proxy_plugin import metrics
from proxy_plugin.config import PluginConfig, load_config
from proxy_plugin.decision import RequestPlan
from proxy_plugin.host_check import host_forwards_options


class _AgentContract(ABC):
    """The host's ``BaseAgent`` contract: what mypy checks against, and the base outside the host."""

    @property
    @abstractmethod
    def name(self) -> str: ...

    @abstractmethod
    async def on_request(self, request: dict[str, Any]) -> dict[str, Any]: ...

    @abstractmethod
    async def on_response(self, request: dict[str, Any], response: dict[str, Any]) -> dict[str, Any]: ...


if TYPE_CHECKING:
    BaseAgent = _AgentContract
else:
    try:
        from src.shared.base_agent import BaseAgent
    except ImportError:  # outside the host (tests, linting): the same contract, locally
        BaseAgent = _AgentContract


log = logging.getLogger(__name__)

DECISION_KEY = "_opt_decision"  # set in the request context; never forwarded by the patched host
_MAX_PENDING = 4096  # decisions waiting for their response; the oldest are forgotten beyond this

_core: OptimizerCore | None = None


def _shared_core() -> OptimizerCore:
    """One core (channels, breaker, telemetry queue) per process, however often the host instantiates us."""
    global _core
    if _core is None:
        local = Path(__file__).with_name("config.json")
        cfg = _learn_only_unless_forwarded(load_config(local if local.exists() else None))
        _core = OptimizerCore(cfg)
        if cfg.metrics_port:
            from prometheus_client import start_http_server

            from proxy_plugin.metrics import REGISTRY

            start_http_server(cfg.metrics_port, registry=REGISTRY)
    return _core


def _learn_only_unless_forwarded(cfg: PluginConfig) -> PluginConfig:
    """A host that drops options would make the tuner believe contexts Ollama never loaded: learn only."""
    forwarded = host_forwards_options()
    metrics.OPTIONS_FORWARDED.set({True: 1, False: 0, None: -1}[forwarded])
    if forwarded is False and cfg.apply_options:
        log.warning(
            "opt: this ollama-smart-proxy drops request options (num_ctx/num_batch never reach Ollama); "
            "running learn-only - apply proxy_plugin/ollama-smart-proxy.patch to optimize"
        )
        return replace(cfg, apply_options=False)
    return cfg


def _builtin_agent() -> Path:
    """The host's own optimizer plugin's agent (``<plugins>/optimizer/agent.py``), next to this plugin folder."""
    return Path(__file__).parent.parent / "optimizer" / "agent.py"


class OptAgent(BaseAgent):
    """``/opt``: learned num_ctx/num_batch for the request's prompt template."""

    def __init__(self) -> None:
        self._pending: OrderedDict[int, RequestPlan] = OrderedDict()
        self._next_id = 0
        if _builtin_agent().exists():
            log.warning(
                "%s also answers /opt; apply proxy_plugin/ollama-smart-proxy.patch to the host so that "
                "/opt always runs ollama-optimizer's agent",
                _builtin_agent(),
            )
        try:
            asyncio.get_running_loop()
        except RuntimeError:  # built outside the host's loop: channels connect on the first request
            return
        _shared_core().connect()

    @property
    def name(self) -> str:
        return "opt"

    async def on_request(self, request: dict[str, Any]) -> dict[str, Any]:
        try:
            new_request, decision = await _shared_core().prepare(request)
            self._next_id += 1
            self._pending[self._next_id] = decision
            while len(self._pending) > _MAX_PENDING:
                self._pending.popitem(last=False)
            if new_request is request:
                new_request = dict(request)
            new_request[DECISION_KEY] = self._next_id
            return new_request
        except Exception:  # never into the host
            log.exception("opt on_request failed; request unchanged")
            return request

    async def on_response(self, request: dict[str, Any], response: dict[str, Any]) -> dict[str, Any]:
        """Queue telemetry; a stream aggregate of an unpatched host carries no counts (counts_known=false)."""
        try:
            key = request.get(DECISION_KEY)
            decision = self._pending.pop(key, None) if isinstance(key, int) else None
            if decision is not None:
                _shared_core().observe(request, response, decision)
        except Exception:
            log.exception("opt on_response failed; telemetry skipped")
        return response
