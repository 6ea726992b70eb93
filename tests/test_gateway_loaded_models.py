"""The gateway tells the tuner what /api/ps shows: the default context (no num_ctx sent), size and VRAM share."""

from __future__ import annotations

import ollama

from ollama_optimizer.gen.optimizer.v1 import tuner_pb2
from proxy_plugin.default_sightings import DefaultSightings
from proxy_plugin.loaded_models import LoadedModel, parse_ps

from plugin_fixtures import StandInTuner, gateway_chain, sample, stand_ins, wait_until

MODEL = "llama3.1:8b"
MESSAGES = [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "Name a colour."}]


class PassthroughTuner(StandInTuner):
    async def Recommend(self, request, context):
        return tuner_pb2.RecommendResponse(action=tuner_pb2.PASSTHROUGH, decision_id="p", reason_code="no_data")


def test_parse_ps_skips_malformed_entries() -> None:
    body = {
        "models": [
            {"name": "a:1", "model": "a:1", "context_length": 32768, "size": 9000, "size_vram": 7000},
            {"name": "b:1", "context_length": "4096"},
            {"name": "c:1", "context_length": True},
            "junk",
            {"model": "d:1", "context_length": 8192, "size": -5},
        ]
    }
    assert parse_ps(body) == {"a:1": LoadedModel(32768, 9000, 7000), "d:1": LoadedModel(8192, 0, 0)}
    assert parse_ps({"models": "x"}) == {} and parse_ps([]) == {}


async def test_passthrough_outcomes_carry_the_default_context_from_api_ps() -> None:
    async with stand_ins(tuner=PassthroughTuner()) as services:
        async with gateway_chain(services.config(), hardware="gpu-24gb") as (gw, _tap, emu):
            client = ollama.AsyncClient(host=gw.url)
            await client.chat(model=MODEL, messages=MESSAGES)
            await client.chat(model=MODEL, messages=MESSAGES)
            await gw.gateway.flush()
            default_ctx = emu.runner_options(MODEL)["num_ctx"]
            assert default_ctx == 32768  # the VRAM-tier default on a 24 GB GPU
            # The first answer's load is read from /api/ps before its outcome is reported: the default is
            # known from the first passthrough on.
            assert [o.loaded_context_length for o in services.tuner.outcomes] == [default_ctx, default_ctx]
            assert [o.runner_load for o in services.tuner.outcomes] == [tuner_pb2.RUNNER_LOADED, tuner_pb2.RUNNER_KEPT]
            second = services.tuner.outcomes[1]
            assert 0 < second.model_vram_bytes <= second.model_size_bytes


async def test_loaded_models_and_the_version_are_exported() -> None:
    """/metrics shows, per model, what /api/ps shows: num_ctx, size and VRAM share; and build_info."""
    import aiohttp

    from ollama_optimizer.version import package_version

    async with stand_ins(tuner=PassthroughTuner()) as services:
        async with gateway_chain(services.config(), hardware="gpu-24gb") as (gw, _tap, emu):
            await ollama.AsyncClient(host=gw.url).chat(model=MODEL, messages=MESSAGES)
            await wait_until(lambda: gw.gateway.loaded_models.get(MODEL).context_length > 0)
            assert sample("optimizer_gateway_loaded_num_ctx", model=MODEL) == emu.runner_options(MODEL)["num_ctx"]
            size = sample("optimizer_gateway_loaded_size_bytes", model=MODEL)
            assert size == gw.gateway.loaded_models.get(MODEL).size > 0
            assert 0 < sample("optimizer_gateway_loaded_vram_share", model=MODEL) <= 1
            async with aiohttp.ClientSession() as http:
                async with http.get(f"http://127.0.0.1:{gw.metrics_port}/metrics") as response:
                    text = await response.text()
    assert f'optimizer_build_info{{version="{package_version()}"}} 1.0' in text


async def test_the_loaded_num_batch_is_what_the_gateway_sent() -> None:
    """/api/ps does not show num_batch: the gauge shows what this gateway last sent for a loaded model, 0 for
    Ollama's own value; a model Ollama unloaded loses it with the other gauges."""
    async with stand_ins(tuner=StandInTuner(num_ctx=8192, num_batch=1024)) as services:
        async with gateway_chain(services.config(), hardware="gpu-24gb") as (gw, _tap, emu):
            await ollama.AsyncClient(host=gw.url).chat(model=MODEL, messages=MESSAGES)
            # Read /api/ps now rather than waiting for the gateway's rate-limited refresh.
            await gw.gateway.loaded_models.refresh(gw.gateway.facts.session)
            assert sample("optimizer_gateway_loaded_num_batch", model=MODEL) == 1024
            assert emu.runner_options(MODEL)["num_batch"] == 1024
            assert sample("optimizer_gateway_loaded_num_ctx", model=MODEL) == 8192
    async with stand_ins(tuner=PassthroughTuner()) as services:
        async with gateway_chain(services.config(), hardware="gpu-24gb") as (gw, _tap, emu):
            await ollama.AsyncClient(host=gw.url).chat(model=MODEL, messages=MESSAGES)
            await wait_until(lambda: gw.gateway.loaded_models.get(MODEL).context_length == 32768)
            await wait_until(lambda: sample("optimizer_gateway_loaded_num_ctx", model=MODEL) == 32768)
            assert sample("optimizer_gateway_loaded_num_batch", model=MODEL) == 0


async def test_a_runner_another_client_reloaded_is_read_again_before_it_is_called_the_default() -> None:
    """The gateway's last /api/ps reading shows the 8192 a client's own num_ctx loaded; another client of the
    same Ollama then sends a bare request (Ollama reloads at its default, 32768); a bare request through the
    gateway keeps that runner. The gateway used to report the stale 8192 as Ollama's default: it reads /api/ps
    again before calling anything the default."""
    async with stand_ins(tuner=PassthroughTuner()) as services:
        async with gateway_chain(services.config(), hardware="gpu-24gb") as (gw, _tap, emu):
            client = ollama.AsyncClient(host=gw.url)
            await client.chat(model=MODEL, messages=MESSAGES, options={"num_ctx": 8192, "num_batch": 512})
            await gw.gateway.flush()
            assert gw.gateway.loaded_models.get(MODEL).context_length == 8192
            await ollama.AsyncClient(host=emu.url).chat(model=MODEL, messages=MESSAGES)  # not through the gateway
            await client.chat(model=MODEL, messages=MESSAGES)
            await gw.gateway.flush()
            explicit, bare = services.tuner.outcomes
            assert (explicit.num_ctx, explicit.loaded_context_length) == (8192, 0)
            assert bare.runner_load == tuner_pb2.RUNNER_KEPT
            assert bare.loaded_context_length == emu.runner_options(MODEL)["num_ctx"] == 32768


def test_a_reading_is_the_default_only_when_no_num_ctx_went_out_since_the_request() -> None:
    sightings = DefaultSightings()
    bare = sightings.sent(MODEL, 0)
    sized = sightings.sent(MODEL, 7168)  # sent while the bare one ran: it may have reloaded the runner
    assert sightings.wants_reading(MODEL, 0) and not sightings.wants_reading(MODEL, 7168)
    assert sightings.attribute(MODEL, 0, bare, 7168, fresh=True) == 0
    assert sightings.attribute(MODEL, 7168, sized, 7168, fresh=True) == 0  # a num_ctx sent: not the default
    later = sightings.sent(MODEL, 0)
    assert sightings.attribute(MODEL, 0, later, 32768, fresh=False) == 0  # read before it ended: may be older
    assert sightings.attribute(MODEL, 0, later, 32768, fresh=True) == 32768
    assert not sightings.wants_reading(MODEL, 0)
    # Once seen, a reading taken at any time that shows the same context is the default again; another is not.
    again = sightings.sent(MODEL, 0)
    assert sightings.attribute(MODEL, 0, again, 32768, fresh=False) == 32768
    assert sightings.attribute(MODEL, 0, again, 7168, fresh=False) == 0


class RecordingTuner(PassthroughTuner):
    def __init__(self) -> None:
        super().__init__()
        self.recommended: list[tuner_pb2.RecommendRequest] = []

    async def Recommend(self, request, context):
        self.recommended.append(request)
        return await super().Recommend(request, context)


async def test_the_gateway_tells_the_tuner_the_default_it_saw_before_any_outcome_arrives() -> None:
    """The tuner may decide a request before the outcome that showed the default reaches it: the gateway's
    Recommend carries the default it has seen (0 before)."""
    tuner = RecordingTuner()
    async with stand_ins(tuner=tuner) as services:
        async with gateway_chain(services.config(), hardware="gpu-24gb") as (gw, _tap, _emu):
            client = ollama.AsyncClient(host=gw.url)
            await client.chat(model=MODEL, messages=MESSAGES)
            await gw.gateway.flush()
            await client.chat(model=MODEL, messages=MESSAGES)
    assert [r.default_num_ctx for r in tuner.recommended] == [0, 32768]
