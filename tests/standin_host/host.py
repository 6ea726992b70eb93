"""A minimal stand-in for ollama-smart-proxy that follows its plugin contract faithfully.

- Plugins: every ``<plugins>/<dir>/agent.py`` is loaded by file path as ``plugins.<dir>.agent``; the
  agent class is the attribute that subclasses ``src.shared.base_agent.BaseAgent`` (not the base itself),
  instantiated without arguments and registered under its ``name``.
- A request: the context keeps only model, messages|prompt and stream (default False); leading
  ``/<name>`` commands of the last user message (or prompt) are parsed and stripped; agents'
  ``on_request`` run in order; the upstream request is rebuilt from model, messages|prompt, stream
  (plus, with ``forward_options``, the keys the shipped patch forwards); ``on_response`` gets the JSON
  answer, or for streams the aggregate ``{"message": {"content"}, "done": True}`` without counts.
Run with ``tests/standin_host`` on sys.path so ``src.shared.base_agent`` resolves.
"""
from __future__ import annotations

import importlib.util
import json
import re
import sys
from pathlib import Path
from typing import Any

import aiohttp

from src.shared.base_agent import BaseAgent
from src.slices.chat import chat_agent_chain
from src.slices.generate import generate_agent_chain

_COMMAND = re.compile(r"^\s*/(\w+)\s*")
# What proxy_plugin/host-forward-options.patch forwards besides model, messages|prompt, stream.
FORWARDED_KEYS = ("options", "keep_alive", "format", "tools", "think", "system", "template", "raw",
                  "images", "suffix", "context", "truncate", "shift")


def load_agents(plugins_dir: Path) -> dict[str, BaseAgent]:
    agents: dict[str, BaseAgent] = {}
    for plugin_dir in sorted(p for p in plugins_dir.iterdir() if p.is_dir()):
        agent_file = plugin_dir / "agent.py"
        if not agent_file.exists():
            continue
        spec = importlib.util.spec_from_file_location(f"plugins.{plugin_dir.name}.agent", agent_file)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module
        spec.loader.exec_module(module)
        for attr_name in dir(module):
            attr = getattr(module, attr_name)
            if isinstance(attr, type) and issubclass(attr, BaseAgent) and attr is not BaseAgent:
                instance = attr()
                agents[instance.name] = instance
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
    def __init__(self, plugins_dir: Path, upstream: str, forward_options: bool = True) -> None:
        forwarded = FORWARDED_KEYS if forward_options else ()
        chat_agent_chain.FORWARDED_FIELDS = generate_agent_chain.FORWARDED_FIELDS = forwarded  # the patch, or not
        self.chains = {"chat": chat_agent_chain.ChatAgentChain(None),
                       "generate": generate_agent_chain.GenerateAgentChain(None)}
        self.agents = load_agents(plugins_dir)
        self.upstream = upstream
        self.forward_options = forward_options
        self.sent: list[dict[str, Any]] = []  # upstream request bodies, for assertions

    async def handle(self, endpoint: str, request: dict[str, Any]) -> Any:
        """``endpoint`` is "chat" or "generate"; returns the final JSON, or the list of stream chunks."""
        key = "messages" if endpoint == "chat" else "prompt"
        context: dict[str, Any] = {"model": request["model"], key: request[key], "stream": request.get("stream", False)}
        if self.forward_options:
            context.update({k: request[k] for k in FORWARDED_KEYS if k in request})
        names = self._strip_commands(context, key)
        for name in names:
            if name in self.agents:
                context = await self.agents[name].on_request(context)
        body = self.chains[endpoint].build_ollama_request(context)
        self.sent.append(body)
        async with aiohttp.ClientSession() as session:
            async with session.post(f"{self.upstream}/api/{endpoint}", json=body) as response:
                if body["stream"]:
                    chunks = [json.loads(line) async for line in response.content if line.strip()]
                    result: Any = chunks
                    final = _aggregate(chunks)
                else:
                    result = final = await response.json()
        for name in names:
            if name in self.agents:
                final = await self.agents[name].on_response(context, final)
        return result if body["stream"] else final

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


def _aggregate(chunks: list[dict[str, Any]]) -> dict[str, Any]:
    if chunks and "response" in chunks[0]:
        return {"response": "".join(c.get("response", "") for c in chunks), "done": True}
    if chunks and "message" in chunks[0]:
        return {"message": {"content": "".join(c.get("message", {}).get("content", "") for c in chunks)}, "done": True}
    return chunks[-1] if chunks else {}
