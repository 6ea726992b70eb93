"""Bad input against both gRPC APIs: a clear INVALID_ARGUMENT (or a clean answer), no crash, no stored change.

Hypothesis drives blocking stubs from a worker thread while the servers run on the test's event loop;
the database is snapshot (every table's rows) before and after each run.
"""

from __future__ import annotations

import asyncio
import dataclasses
import math
from collections import Counter
from collections.abc import AsyncIterator, Callable

import asyncpg
import grpc
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from matcher_service.main import MatcherServer, start_matcher
from matcher_service.settings import MatcherSettings
from ollama_optimizer.gen.optimizer.v1 import matcher_pb2, matcher_pb2_grpc, tuner_pb2, tuner_pb2_grpc
from tuner_service.main import RunningTuner, start_tuner

from tuner_fixtures import fast_settings, local_server, make_outcome

CAP = 4096  # matcher text cap for this suite: oversize is cheap to generate
MAX_BATCH = 50
EXAMPLES = 120
OK_OR_INVALID = {grpc.StatusCode.OK, grpc.StatusCode.INVALID_ARGUMENT}
OK_INVALID_OR_NOT_FOUND = OK_OR_INVALID | {grpc.StatusCode.NOT_FOUND}  # operator RPCs on names that do not exist
CONFIG = settings(max_examples=EXAMPLES, deadline=None, database=None, suppress_health_check=list(HealthCheck))
tried: Counter[str] = Counter()

_int64 = st.one_of(st.integers(-(2**63), 2**63 - 1), st.sampled_from([0, -1, 2**63 - 1, -(2**63), 10**12]))
_uint32 = st.integers(0, 2**32 - 1)
_model = st.one_of(
    st.text(max_size=300),
    st.sampled_from(
        ["", " ", "llama3.1:8b", "no-such-model:1b", "a" * 5000, "../../etc/passwd", "m\x00odel", "ünïcode"]
    ),
)
_text = st.one_of(
    st.text(max_size=200),
    st.just(""),
    st.just("x" * (CAP + 1)),
    st.just("日" * (CAP // 3 + 1)),
    st.text(alphabet=" \n\t", max_size=50),
    st.just("hello " * 10_000),
)


async def snapshot(pool: asyncpg.Pool) -> dict[str, tuple[int, str]]:
    """Row count and a digest of every row of every table."""
    tables = await pool.fetch("SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY 1")
    state = {}
    for (name,) in tables:
        row = await pool.fetchrow(
            f"SELECT count(*), md5(coalesce(string_agg(t::text, '|' ORDER BY t::text), '')) FROM {name} t"
        )
        state[name] = (row[0], row[1])
    return state


def code_of(call: Callable[[], object]) -> tuple[grpc.StatusCode, str]:
    try:
        call()
    except grpc.RpcError as exc:
        return exc.code(), exc.details() or ""
    return grpc.StatusCode.OK, ""


def expect_clear(code: grpc.StatusCode, details: str, allowed: set[grpc.StatusCode] = OK_OR_INVALID) -> None:
    assert code in allowed, (code, details)
    if code == grpc.StatusCode.INVALID_ARGUMENT:
        assert len(details) > 5  # says what is wrong


@pytest.fixture
async def services(pool: asyncpg.Pool) -> AsyncIterator[tuple[MatcherServer, RunningTuner]]:
    matcher = await start_matcher(pool, local_server(), dataclasses.replace(MatcherSettings(), max_text_bytes=CAP))
    tuner = await start_tuner(pool, local_server(), dataclasses.replace(fast_settings(), max_report_batch=MAX_BATCH))
    yield matcher, tuner
    await tuner.stop(0)
    await matcher.stop(0)


async def _seed(matcher: MatcherServer, tuner: RunningTuner) -> None:
    """Some learned state, so that 'unchanged' means something."""
    async with grpc.aio.insecure_channel(matcher.address) as ch:
        stub = matcher_pb2_grpc.MatcherStub(ch)
        for i in range(3):
            match = await stub.Match(matcher_pb2.MatchRequest(model="llama3.1:8b", text=f"seed prompt {i} " * 80))
            await stub.Observe(matcher_pb2.ObserveRequest(model="llama3.1:8b", fingerprints=match.fingerprints))
    tuner.core.report([make_outcome(template_id=1) for _ in range(4)])
    await tuner.core.writer.flush()


async def _run_unchanged(pool: asyncpg.Pool, tuner: RunningTuner, prop: Callable[[], None]) -> None:
    before = await snapshot(pool)
    await asyncio.to_thread(prop)
    await tuner.core.writer.flush()
    assert await snapshot(pool) == before


async def test_matcher_bad_input(services, pool) -> None:
    matcher, tuner = services
    await _seed(matcher, tuner)
    channel = grpc.insecure_channel(matcher.address)
    stub = matcher_pb2_grpc.MatcherStub(channel)
    version = (
        await asyncio.to_thread(stub.Match, matcher_pb2.MatchRequest(model="m", text="a b c"))
    ).fingerprints.algorithm_version
    windows = st.lists(
        st.builds(matcher_pb2.WindowFingerprint, window=_uint32, fingerprint=st.integers(0, 2**64 - 1)), max_size=8
    )
    bad_fingerprints = st.one_of(
        st.builds(
            matcher_pb2.Fingerprints,
            algorithm_version=_uint32.filter(lambda v: v != version),
            windows=windows,
            unit_count=_uint32,
        ),
        st.builds(matcher_pb2.Fingerprints, algorithm_version=st.just(version), windows=windows, unit_count=st.just(0)),
        st.builds(
            matcher_pb2.Fingerprints,
            algorithm_version=st.just(version),
            windows=windows.filter(lambda w: [x.window for x in w] != [64, 128]),
            unit_count=st.just(200),
        ),
    )

    @CONFIG
    @given(_model, _text)
    def match(model: str, text: str) -> None:
        tried["matcher.Match"] += 1
        expect_clear(*code_of(lambda: stub.Match(matcher_pb2.MatchRequest(model=model, text=text), timeout=10)))

    @CONFIG
    @given(_model, bad_fingerprints, _int64)
    def observe(model: str, fps: matcher_pb2.Fingerprints, template_id: int) -> None:
        tried["matcher.Observe"] += 1
        code, details = code_of(
            lambda: stub.Observe(
                matcher_pb2.ObserveRequest(model=model, fingerprints=fps, template_id=template_id), timeout=10
            )
        )
        expect_clear(code, details, {grpc.StatusCode.INVALID_ARGUMENT})

    @CONFIG
    @given(_int64, _int64, _uint32)
    def admin(template_id: int, after: int, limit: int) -> None:
        tried["matcher.admin"] += 1
        code, details = code_of(
            lambda: stub.GetTemplate(
                matcher_pb2.GetTemplateRequest(template_id=template_id if template_id > 3 or template_id < 1 else 99),
                timeout=10,
            )
        )
        expect_clear(code, details, {grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND})
        expect_clear(
            *code_of(
                lambda: stub.ListTemplates(matcher_pb2.ListTemplatesRequest(after_id=after, limit=limit), timeout=10)
            )
        )

    try:
        for prop in (match, observe, admin):
            await _run_unchanged(pool, tuner, prop)
        assert (await asyncio.to_thread(stub.Match, matcher_pb2.MatchRequest(model="m", text="still up"))).prompt_units
    finally:
        channel.close()
    print(f"\nbad-input (matcher) inputs tried: {dict(tried)}")


def _corrupt(draw: st.DrawFn) -> tuner_pb2.Outcome:
    """A plausible outcome with at least one invalid field."""
    outcome = make_outcome()
    field, bad = draw(
        st.sampled_from(
            [
                ("latency_seconds", math.nan),
                ("latency_seconds", math.inf),
                ("ttft_seconds", -1.0),
                ("finished_at", math.nan),
                ("prompt_eval_count", -5),
                ("eval_count", 10**15),
                ("total_duration_ns", -1),
                ("load_duration_ns", 10**18),
                ("num_ctx", -4096),
                ("num_ctx", 2**40),
                ("num_batch", -1),
                ("outcome_id", ""),
                ("outcome_id", "x" * 500),
                ("model", ""),
                ("model", "m" * 1000),
                ("action", 7),
                ("done_reason", "exploded"),
                ("template_id", -3),
                ("model", "bad\x00model"),
                ("model", "two words"),
                ("gpu_memory_used_bytes", -1),
                ("finished_at", 1e300),
                ("host_rss_bytes", -(2**63)),
            ]
        )
    )
    setattr(outcome, field, bad)
    if draw(st.booleans()):  # sometimes a second, random field goes absurd too
        setattr(
            outcome,
            draw(st.sampled_from(["prompt_eval_count", "eval_count", "num_predict"])),
            draw(st.integers(-(2**63), -1)),
        )
    return outcome


async def test_tuner_bad_input(services, pool) -> None:
    matcher, tuner = services
    await _seed(matcher, tuner)
    channel = grpc.insecure_channel(tuner.address)
    stub = tuner_pb2_grpc.TunerStub(channel)
    memory_before = {name: dict(m.templates) for name, m in tuner.core.policy.models.items()}

    @CONFIG
    @given(st.lists(st.composite(_corrupt)(), min_size=1, max_size=20))
    def report(outcomes: list[tuner_pb2.Outcome]) -> None:
        tried["tuner.Report"] += len(outcomes)
        reply = stub.Report(tuner_pb2.ReportRequest(outcomes=outcomes), timeout=10)
        assert reply.accepted == 0 and len(reply.rejected) == len(outcomes)
        assert sorted(r.index for r in reply.rejected) == list(range(len(outcomes)))
        assert all(r.reason for r in reply.rejected)

    @CONFIG
    @given(st.integers(MAX_BATCH + 1, MAX_BATCH + 50))
    def oversize_batch(n: int) -> None:
        tried["tuner.Report(oversize)"] += 1
        code, details = code_of(lambda: stub.Report(tuner_pb2.ReportRequest(outcomes=[make_outcome()] * n), timeout=10))
        expect_clear(code, details, {grpc.StatusCode.INVALID_ARGUMENT})

    @CONFIG  # prompts the default context covers: an unknown model is a clean passthrough, nothing stored
    @given(
        _model,
        _int64,
        st.integers(0, 1000),
        st.lists(st.text(max_size=20), max_size=5),
        st.integers(0, 512),
        st.integers(0, 20),
    )
    def recommend(model: str, template_id: int, units: int, options: list[str], predict: int, messages: int) -> None:
        tried["tuner.Recommend"] += 1
        expect_clear(
            *code_of(
                lambda: stub.Recommend(
                    tuner_pb2.RecommendRequest(
                        model=model,
                        template_id=template_id,
                        prompt_units=units,
                        client_options=options,
                        num_predict=predict,
                        message_count=messages,
                    ),
                    timeout=10,
                )
            )
        )

    @CONFIG
    @given(_model, _int64.filter(lambda t: t != 1), _uint32, _model)
    def admin(model: str, template_id: int, period: int, summary_model: str) -> None:
        tried["tuner.admin"] += 1
        code, details = code_of(
            lambda: stub.Explain(tuner_pb2.ExplainRequest(model=model, template_id=template_id), timeout=10)
        )
        expect_clear(code, details, OK_INVALID_OR_NOT_FOUND)
        code, details = code_of(
            lambda: stub.Reset(tuner_pb2.ResetRequest(model=model, template_id=template_id), timeout=10)
        )
        expect_clear(code, details, OK_INVALID_OR_NOT_FOUND)
        expect_clear(
            *code_of(
                lambda: stub.Summary(tuner_pb2.SummaryRequest(period_seconds=period, model=summary_model), timeout=10)
            ),
            OK_INVALID_OR_NOT_FOUND,
        )

    @CONFIG
    @given(_model, _model)
    def lease(model: str, host: str) -> None:
        tried["tuner.Lease"] += 1
        expect_clear(*code_of(lambda: stub.Lease(tuner_pb2.LeaseRequest(model=model, ollama_host=host), timeout=10)))

    try:
        for prop in (report, oversize_batch, recommend, admin, lease):
            await _run_unchanged(pool, tuner, prop)
        assert {
            n: dict(m.templates) for n, m in tuner.core.policy.models.items() if m.templates or n in memory_before
        } == memory_before
        reply = await asyncio.to_thread(stub.Report, tuner_pb2.ReportRequest(outcomes=[make_outcome()]))
        assert reply.accepted == 1  # still serving
    finally:
        channel.close()
    print(f"\nbad-input (tuner) inputs tried: {dict(tried)}")
