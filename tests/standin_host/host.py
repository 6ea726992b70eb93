"""A stand-in for ollama-smart-proxy (HEAD a650565) that follows its code paths where our agent depends on them.

- Plugins (``src/shared/plugin_registry.py``): every folder of the plugins directory that holds an
  ``agent.py`` is loaded, in directory order; each of its ``.py`` files is imported as
  ``plugins.<dir>.<stem>`` (an import error skips that file); the ``BaseAgent`` subclass found in the
  agent module is instantiated without arguments and stored under its ``name`` — a later plugin with the
  same name replaces an earlier one, so which one answers a command depends on the order.
- A request (``src/slices/base_chain.py`` and the chat/generate chains): the context keeps only model,
  messages|prompt and stream (default False); leading ``/<name>`` commands of the last user message (or
  prompt) are parsed and stripped; agents' ``on_request`` run in order; the upstream request is rebuilt
  from model, messages|prompt and stream (``build_ollama_request`` of ``src/slices/*/…_agent_chain.py``).
  The upstream answer is read whole (``httpx`` ``client.post``), so a streamed answer reaches the stream
  parser as one chunk; each chunk is parsed as one JSON document, and agents' ``on_response`` run only
  when some chunk parsed, with the aggregate ``{"message": {"content"}, "done": True}`` (or
  ``"response"``) that carries no counts.

``patched=True`` behaves as the host with ``proxy_plugin/ollama-smart-proxy.patch`` applied: request
fields are forwarded, stream chunks are split into NDJSON lines, and the aggregate keeps the final
chunk's fields (the counts). The patch's third change (the host's own ``opt`` agent disabled) is a file
rename the tests perform in the plugins folder.
Run with ``tests/standin_host`` on sys.path so ``src.shared.base_agent`` resolves.
"""

from __future__ import annotations

import importlib.util
import json
import re
import sys
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import aiohttp
from src.shared.base_agent import BaseAgent
from src.slices.chat import chat_agent_chain
from src.slices.generate import generate_agent_chain

_COMMAND = re.compile(r"^\s*/(\w+)\s*")
# What proxy_plugin/ollama-smart-proxy.patch forwards besides model, messages|prompt, stream.
FORWARDED_KEYS = (
    "options",
    "keep_alive",
    "format",
    "tools",
    "think",
    "system",
    "template",
    "raw",
    "images",
    "suffix",
    "context",
    "truncate",
    "shift",
)

Order = Callable[[list[Path]], Iterable[Path]]


def load_agents(plugins_dir: Path, order: Order = lambda entries: entries) -> dict[str, BaseAgent]:
    """``PluginRegistry._load_plugins``; ``order`` stands for the filesystem's directory order."""
    agents: dict[str, BaseAgent] = {}
    for plugin_dir in order(list(plugins_dir.iterdir())):
        if not plugin_dir.is_dir() or not (plugin_dir / "agent.py").exists():
            continue
        for py_file in plugin_dir.glob("*.py"):
            if py_file.name == "__init__.py":
                continue
            spec = importlib.util.spec_from_file_location(f"plugins.{plugin_dir.name}.{py_file.stem}", py_file)
            if spec is None or spec.loader is None:
                continue
            module = importlib.util.module_from_spec(spec)
            sys.modules[spec.name] = module
            try:
                spec.loader.exec_module(module)
            except Exception:  # noqa: BLE001, S112 (the host logs the failed module and goes on)
                continue
        agent_module = sys.modules.get(f"plugins.{plugin_dir.name}.agent")
        if agent_module is None:
            continue
        for attr_name in dir(agent_module):
            attr = getattr(agent_module, attr_name)
            if isinstance(attr, type) and issubclass(attr, BaseAgent) and attr is not BaseAgent:
                try:
                    instance = attr()
                    agents[instance.name] = instance
                except Exception:  # noqa: BLE001, S110 (the host logs it and goes on)
                    pass
                break
    return agents


def parse_commands(content: str) -> tuple[str, list[str]]:
    names: list[str] = []
    pos = 0
    while match := _COMMAND.match(content[pos:]):
        names.append(match.group(1))
        pos += match.end()
    return content[pos:].strip(), names


class StandInHost:
    def __init__(self, plugins_dir: Path, upstream: str, patched: bool = True, order: Order | None = None) -> None:
        forwarded = FORWARDED_KEYS if patched else ()
        chat_agent_chain.FORWARDED_FIELDS = generate_agent_chain.FORWARDED_FIELDS = forwarded  # the patch, or not
        self.chains = {
            "chat": chat_agent_chain.ChatAgentChain(None),
            "generate": generate_agent_chain.GenerateAgentChain(None),
        }
        self.agents = load_agents(plugins_dir, order) if order else load_agents(plugins_dir)
        self.upstream = upstream
        self.patched = patched
        self.sent: list[dict[str, Any]] = []  # upstream request bodies, for assertions

    async def handle(self, endpoint: str, request: dict[str, Any]) -> Any:
        """``endpoint`` is "chat" or "generate"; returns the final JSON, or the list of stream chunks."""
        key = "messages" if endpoint == "chat" else "prompt"
        context: dict[str, Any] = {"model": request["model"], key: request[key], "stream": request.get("stream", False)}
        if self.patched:
            context.update({k: request[k] for k in FORWARDED_KEYS if k in request})
        names = self._strip_commands(context, key)
        for name in names:
            if name in self.agents:
                context = await self.agents[name].on_request(context)
        body = self.chains[endpoint].build_ollama_request(context)
        self.sent.append(body)
        async with (
            aiohttp.ClientSession() as session,
            session.post(f"{self.upstream}/api/{endpoint}", json=body) as response,
        ):
            raw = await response.read()  # httpx client.post: the whole body before anything else
        if not body["stream"]:
            return await self._on_response(names, context, json.loads(raw))
        collected = self._collect([raw])  # aiter_bytes() of a response already read: one chunk
        if collected:
            await self._on_response(names, context, self._aggregate(collected))
        return [json.loads(line) for line in raw.splitlines() if line.strip()]  # the bytes the client got

    async def _on_response(self, names: list[str], context: dict[str, Any], final: dict[str, Any]) -> dict[str, Any]:
        for name in names:
            if name in self.agents:
                final = await self.agents[name].on_response(context, final)
        return final

    def _collect(self, chunks: list[bytes]) -> list[dict[str, Any]]:
        """``_create_streaming_generator``: one JSON document per chunk; patched, one per NDJSON line."""
        pieces = [line for chunk in chunks for line in chunk.split(b"\n")] if self.patched else chunks
        collected = []
        for piece in pieces:
            try:
                collected.append(json.loads(piece))
            except (json.JSONDecodeError, UnicodeDecodeError):
                pass  # the host skips what does not parse
        return collected

    def _aggregate(self, chunks: list[dict[str, Any]]) -> dict[str, Any]:
        """``_aggregate_stream_chunks``: the joined text; patched, on top of the final chunk's fields."""
        final = chunks[-1] if self.patched and chunks[-1].get("done") is True else {}
        if "response" in chunks[0]:
            return {**final, "response": "".join(c.get("response", "") for c in chunks), "done": True}
        if "message" in chunks[0]:
            content = "".join(c.get("message", {}).get("content", "") for c in chunks)
            return {**final, "message": {"content": content}, "done": True}
        return chunks[-1]

    @staticmethod
    def _strip_commands(context: dict[str, Any], key: str) -> list[str]:
        if key == "messages":
            messages = context["messages"]
            if not messages or messages[-1].get("role") != "user":
                return []
            cleaned, names = parse_commands(messages[-1].get("content", ""))
            messages[-1]["content"] = cleaned
            return names
        cleaned, names = parse_commands(context["prompt"])
        context["prompt"] = cleaned
        return names
