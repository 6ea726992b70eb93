"""The ``opt`` agent loaded by a stand-in ollama-smart-proxy host, end to end against the emulator."""

from __future__ import annotations

import itertools
import json
import sys
from pathlib import Path

import pytest

from bench.ollama_sim import EmulatorConfig, start_emulator
from ollama_optimizer.gen.optimizer.v1 import tuner_pb2

from plugin_fixtures import GENEROUS_DEADLINES, RecordingTap, stand_ins

HOST_ROOT = Path(__file__).parent / "standin_host"
AGENT = Path(__file__).resolve().parent.parent / "proxy_plugin" / "agent.py"
PATCH = AGENT.with_name("ollama-smart-proxy.patch")
MODEL = "smollm2:135m"


def _emulator() -> EmulatorConfig:
    """Runners stay loaded: at time_scale 1000 Ollama's 300 s keep-alive is 0.3 s of wall time."""
    return EmulatorConfig(time_scale=1000, keep_alive_s=-1.0)


@pytest.fixture
def standin_host_path():
    sys.path.insert(0, str(HOST_ROOT))
    try:
        from host import StandInHost  # needs the host root on sys.path

        yield StandInHost
    finally:
        sys.path.remove(str(HOST_ROOT))


def _install(tmp_path: Path, matcher: str, tuner: str, **settings: object) -> Path:
    """The documented install: link agent.py into <plugins>/opt/ next to a config.json (with deadlines a loaded
    host cannot run out of: the tests assert what the agent does, not how fast)."""
    plugin_dir = tmp_path / "plugins" / "opt"
    plugin_dir.mkdir(parents=True)
    (plugin_dir / "agent.py").symlink_to(AGENT)
    config = {"matcher_address": matcher, "tuner_address": tuner, "probes": False, **GENEROUS_DEADLINES, **settings}
    (plugin_dir / "config.json").write_text(json.dumps(config))
    return plugin_dir.parent


async def test_standin_host_runs_the_opt_agent(tmp_path: Path, standin_host_path) -> None:
    async with stand_ins() as services, start_emulator(_emulator()) as emu:
        tap = await RecordingTap(emu.url).start()
        host = standin_host_path(_install(tmp_path, services.matcher_address, services.tuner_address), tap.url)
        agent = host.agents["opt"]
        assert type(agent).__mro__[1].__module__ == "src.shared.base_agent"  # the host's own base class
        core = sys.modules["plugins.opt.agent"]._shared_core()

        messages = [{"role": "user", "content": "/opt Summarise the following text: a b c"}]
        reply = await host.handle("chat", {"model": MODEL, "messages": messages})
        sent = json.loads(tap.bodies[-1][1])
        assert sent["messages"][-1]["content"] == "Summarise the following text: a b c"
        assert sent["options"] == {"num_ctx": 8192, "num_batch": 256} and "_opt_decision" not in sent
        assert reply["done"] and reply["message"]["content"]

        chunks = await host.handle("generate", {"model": MODEL, "prompt": "/opt Why?", "stream": True})
        assert chunks[-1]["done"] and json.loads(tap.bodies[-1][1])["options"]["num_ctx"] == 8192

        await host.handle("chat", {"model": MODEL, "messages": [{"role": "user", "content": "no command"}]})
        assert "options" not in json.loads(tap.bodies[-1][1])  # agent not activated

        await core.flush()
        plain, streamed = services.tuner.outcomes
        assert plain.counts_known and plain.eval_count == emu.requests[0].eval_count
        # the patched host hands the agent the final chunk's counts
        assert streamed.counts_known and streamed.eval_count == emu.requests[1].eval_count > 0
        assert streamed.prompt_eval_count == emu.requests[1].prompt_eval_count and streamed.latency_seconds > 0
        await core.close()
        await tap.stop()


async def test_unpatched_host_learn_only_and_services_down(tmp_path: Path, standin_host_path) -> None:
    async with start_emulator(_emulator()) as emu:
        plugins = _install(tmp_path, "127.0.0.1:1", "127.0.0.1:1", apply_options=False)
        host = standin_host_path(plugins, emu.url, patched=False)
        for _ in range(3):
            reply = await host.handle("generate", {"model": MODEL, "prompt": "/opt hello", "options": {"seed": 1}})
            assert reply["done"]
        assert host.sent[-1] == {"model": MODEL, "prompt": "hello", "stream": False}
        await sys.modules["plugins.opt.agent"]._shared_core().close(flush_timeout_s=0.5)


@pytest.mark.parametrize("patched", [True, False])
async def test_agent_detects_whether_the_host_forwards_options(
    tmp_path: Path, standin_host_path, patched: bool, caplog
) -> None:
    """Unpatched, the host's chains drop options: the agent says so once and learns only (Ollama keeps its own
    context, and the outcomes say so); patched, it applies."""
    from proxy_plugin.metrics import REGISTRY

    async with stand_ins() as services, start_emulator(_emulator()) as emu:
        host = standin_host_path(
            _install(tmp_path, services.matcher_address, services.tuner_address), emu.url, patched=patched
        )
        for _ in range(2):
            await host.handle("chat", {"model": MODEL, "messages": [{"role": "user", "content": "/opt Hi there"}]})
        gauge = REGISTRY.get_sample_value("optimizer_plugin_host_forwards_options")
        core = sys.modules["plugins.opt.agent"]._shared_core()
        await core.flush()
        warnings = [r for r in caplog.records if "drops request options" in r.getMessage()]
        if patched:
            assert gauge == 1 and not warnings and core.config.apply_options
            assert host.sent[-1]["options"] == {"num_ctx": 8192, "num_batch": 256}
        else:
            assert gauge == 0 and len(warnings) == 1 and not core.config.apply_options
            assert "options" not in host.sent[-1]
            assert all(o.action == tuner_pb2.PASSTHROUGH and o.num_ctx == 0 for o in services.tuner.outcomes)


def _builtin_optimizer(plugins: Path) -> None:
    """The host's own optimizer plugin, whose agent is also named ``opt``."""
    (plugins / "optimizer").mkdir()
    (plugins / "optimizer" / "agent.py").write_text((HOST_ROOT / "builtin_optimizer_agent.py").read_text())


def _apply_patch_renames(host_src: Path) -> None:
    """The file renames of the host patch, done as ``git apply`` does them (paths under ``src/``)."""
    lines = PATCH.read_text().splitlines()
    for old, new in itertools.pairwise(lines):
        if old.startswith("rename from src/") and new.startswith("rename to src/"):
            source = host_src / old.removeprefix("rename from src/")
            source.rename(host_src / new.removeprefix("rename to src/"))


ORDERS = {"ours first": sorted, "theirs first": lambda entries: sorted(entries, reverse=True)}


async def test_opt_runs_our_agent_in_every_plugin_order_only_with_the_patch(
    tmp_path: Path, standin_host_path, caplog: pytest.LogCaptureFixture
) -> None:
    async with stand_ins() as services, start_emulator(_emulator()) as emu:
        tap = await RecordingTap(emu.url).start()
        plugins = _install(tmp_path, services.matcher_address, services.tuner_address)
        _builtin_optimizer(plugins)
        opt = {"model": MODEL, "messages": [{"role": "user", "content": "/opt Hi there"}]}

        async def run(order) -> tuple[str, dict]:
            host = standin_host_path(plugins, tap.url, order=order)
            await host.handle("chat", json.loads(json.dumps(opt)))
            await sys.modules["plugins.opt.agent"]._shared_core().close(flush_timeout_s=0.5)
            return type(host.agents["opt"]).__name__, json.loads(tap.bodies[-1][1]).get("options")

        tuned = {"num_ctx": 8192, "num_batch": 256}
        before = {name: await run(order) for name, order in ORDERS.items()}
        assert "also answers /opt" in caplog.text  # our agent says so in the host's log
        caplog.clear()
        # the collision: the agent loaded last answers /opt, so the host's own one wins in one of the orders
        assert before == {"ours first": ("OptimizerAgent", None), "theirs first": ("OptAgent", tuned)}

        _apply_patch_renames(tmp_path)
        assert not (plugins / "optimizer" / "agent.py").exists()
        for order in ORDERS.values():
            assert await run(order) == ("OptAgent", tuned)
        assert "also answers /opt" not in caplog.text
        await tap.stop()


@pytest.mark.parametrize("patched", [False, True])
async def test_streamed_answers_teach_only_through_the_patched_host(
    tmp_path: Path, standin_host_path, patched: bool
) -> None:
    async with stand_ins() as services, start_emulator(_emulator()) as emu:
        plugins = _install(tmp_path, services.matcher_address, services.tuner_address, apply_options=patched)
        host = standin_host_path(plugins, emu.url, patched=patched)
        chunks = await host.handle(
            "chat", {"model": MODEL, "stream": True, "messages": [{"role": "user", "content": "/opt Tell me a story"}]}
        )
        assert len(chunks) > 2 and chunks[-1]["done"]  # the client got the whole stream either way
        core = sys.modules["plugins.opt.agent"]._shared_core()
        await core.flush()
        if patched:
            (outcome,) = services.tuner.outcomes
            assert outcome.counts_known and outcome.eval_count == chunks[-1]["eval_count"] == emu.requests[0].eval_count
        else:  # the host never parses the NDJSON body, so the agent never hears of the answer
            assert services.tuner.outcomes == [] and services.matcher.observed == []
        await core.close()
