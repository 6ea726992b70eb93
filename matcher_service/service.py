"""The Matcher gRPC servicer: validation, fingerprints, cache, lookup, Observe and admin reads."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable
from typing import TypeVar

import asyncpg
import grpc

from ollama_optimizer.db import DB_UNAVAILABLE_ERRORS
from ollama_optimizer.gen.optimizer.v1 import matcher_pb2, matcher_pb2_grpc
from ollama_optimizer.server import Context
from ollama_optimizer.soft_cache import SoftCache
from prompt_fingerprint import algorithm_version, fingerprint_off_loop

from . import store
from .blocks import build_probes
from .learning import Candidate
from .metrics import (
    CACHE_REQUESTS,
    DB_ERRORS,
    FINGERPRINT_SECONDS,
    LOOKUP_SECONDS,
    OBSERVES,
    WINDOW_CHANGES,
    match_result,
)
from .observe import observe_batch
from .settings import MatcherSettings
from .validation import (
    InvalidInput,
    check_batch,
    check_fingerprints,
    check_model,
    check_template_id,
    check_text,
    page_size,
)

log = logging.getLogger(__name__)

T = TypeVar("T")

SERVICE_NAME = matcher_pb2.DESCRIPTOR.services_by_name["Matcher"].full_name

CacheKey = tuple[int, tuple[int, ...], tuple[int, ...]]
# Largest unit count answered (uint32 fields).
MAX_UNITS = (1 << 32) - 1
# Share of the caller's remaining time Match keeps for answering after its database lookup.
ANSWER_SHARE = 0.2


class MatcherService(matcher_pb2_grpc.MatcherServicer):
    def __init__(self, pool: asyncpg.Pool, settings: MatcherSettings) -> None:
        self._pool = pool
        self._settings = settings
        self._version = algorithm_version(settings.shingle_size, settings.normalize)
        self._cache: SoftCache[Candidate | None] = SoftCache(
            settings.cache_size,
            settings.cache_ttl,
            hits=CACHE_REQUESTS.labels("hit"),
            misses=CACHE_REQUESTS.labels("miss"),
        )
        # Observe holds at most half the pool (waiting on row locks, say): Match always finds a connection.
        self._observe_connections = asyncio.Semaphore(max(1, pool.get_max_size() // 2))

    def _query(self, windows: tuple[int, ...], fps: tuple[int, ...]) -> store.Query:
        thresholds = tuple(self._settings.threshold(w) for w in windows)
        return store.Query(self._version, windows, fps, thresholds, build_probes(windows, fps, list(thresholds)))

    async def Match(self, request: matcher_pb2.MatchRequest, context: Context) -> matcher_pb2.MatchResponse:
        try:
            check_model(request.model)
            check_text(request.text, self._settings.max_text_bytes)
            started = time.perf_counter()
            fps = await fingerprint_off_loop(request.text, self._settings.shingle_size, self._settings.normalize)
            FINGERPRINT_SECONDS.observe(time.perf_counter() - started)
        except ValueError as exc:  # InvalidInput, or a text without tokens
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        unit_count = min(fps.unit_count + request.units_after_text, MAX_UNITS)
        response = matcher_pb2.MatchResponse(
            prompt_units=unit_count,
            fingerprints=matcher_pb2.Fingerprints(
                algorithm_version=fps.version,
                unit_count=unit_count,
                head_units=fps.head_units,
                windows=[
                    matcher_pb2.WindowFingerprint(window=w, fingerprint=f)
                    for w, f in zip(fps.windows, fps.fingerprints)
                ],
            ),
        )
        key: CacheKey = (fps.version, fps.windows, fps.fingerprints)
        hit, best = self._cache.get(key) if self._cache.enabled else (False, None)
        if not hit:
            try:
                best = await self._lookup(self._query(fps.windows, fps.fingerprints), self._db_budget(context))
            except DB_UNAVAILABLE_ERRORS as exc:
                DB_ERRORS.labels("match").inc()
                match_result("error").inc()
                log.warning("Match without database (answering not matched): %r", exc)
                return response
            if self._cache.enabled:
                self._cache.put(key, best)
        response.cache_hit = hit
        if best is None:
            match_result("miss").inc()
        elif not best.covers(fps.largest_window):
            match_result("partial", best.window).inc()
        else:
            match_result("matched", best.window).inc()
            response.matched = True
            response.template_id = best.template_id
            response.window = best.window
            response.distance = best.distance
            response.similarity = 1.0 - best.distance / 64.0
            response.observations = best.observations
        return response

    def _db_budget(self, context: Context) -> float:
        """The Match database budget, shortened to fit the caller's deadline with time left to answer."""
        remaining = context.time_remaining()
        if remaining is None:
            return self._settings.match_db_timeout
        return min(self._settings.match_db_timeout, remaining * (1.0 - ANSWER_SHARE))

    async def _lookup(self, query: store.Query, budget_s: float) -> Candidate | None:
        """One SQL round trip within ``budget_s`` (connect included)."""
        started = time.perf_counter()
        async with asyncio.timeout(budget_s):
            best = await store.lookup(self._pool, query)
        LOOKUP_SECONDS.observe(time.perf_counter() - started)
        return best

    async def Observe(self, request: matcher_pb2.ObserveRequest, context: Context) -> matcher_pb2.ObserveResponse:
        try:
            query = self._observed(request)
        except InvalidInput as exc:
            OBSERVES.labels("invalid").inc()
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        return (await self._observe(context, [query]))[0]

    async def ObserveBatch(
        self, request: matcher_pb2.ObserveBatchRequest, context: Context
    ) -> matcher_pb2.ObserveBatchResponse:
        try:
            check_batch(len(request.observations))
        except InvalidInput as exc:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        valid: list[int] = []
        queries: list[store.Query] = []
        rejected: list[matcher_pb2.ObserveRejection] = []
        for index, item in enumerate(request.observations):
            try:
                queries.append(self._observed(item))
                valid.append(index)
            except InvalidInput as exc:
                OBSERVES.labels("invalid").inc()
                rejected.append(matcher_pb2.ObserveRejection(index=index, reason=str(exc)))
        results = [matcher_pb2.ObserveResponse() for _ in request.observations]
        if queries:
            answers = await self._observe(context, queries)
            for index, answer in zip(valid, answers):
                results[index] = answer
        return matcher_pb2.ObserveBatchResponse(results=results, rejected=rejected)

    def _observed(self, request: matcher_pb2.ObserveRequest) -> store.Query:
        """The query of one observation (InvalidInput when a field is out of range)."""
        check_model(request.model)
        check_template_id(request.template_id, allow_zero=True)  # advisory: the matcher re-checks
        windows, fps = check_fingerprints(request.fingerprints, self._version)
        return self._query(windows, fps)

    async def _observe(self, context: Context, queries: list[store.Query]) -> list[matcher_pb2.ObserveResponse]:
        """Observe ``queries`` on one connection; UNAVAILABLE without the database."""
        try:
            async with self._observe_connections:
                outcomes = await observe_batch(self._pool, queries, self._settings)
        except DB_UNAVAILABLE_ERRORS as exc:
            DB_ERRORS.labels("observe").inc()
            OBSERVES.labels("error").inc(len(queries))
            log.warning("Observe failed: %r", exc)
            await context.abort(grpc.StatusCode.UNAVAILABLE, "database unavailable")
        answers = []
        for query, outcome in zip(queries, outcomes):
            self._cache.discard((self._version, query.windows, query.fingerprints))
            OBSERVES.labels("created" if outcome.created else "folded").inc()
            if outcome.window_change:
                WINDOW_CHANGES.labels(outcome.window_change).inc()
            answers.append(
                matcher_pb2.ObserveResponse(
                    template_id=outcome.template_id,
                    created=outcome.created,
                    stable_window=outcome.stable_window,
                    observations=outcome.observations,
                )
            )
        return answers

    async def GetTemplate(self, request: matcher_pb2.GetTemplateRequest, context: Context) -> matcher_pb2.Template:
        try:
            check_template_id(request.template_id, allow_zero=False)
        except InvalidInput as exc:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        found = await self._admin(context, store.get_template(self._pool, request.template_id))
        if found is None:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"template {request.template_id} not found")
        return _template_message(found)

    async def ListTemplates(
        self, request: matcher_pb2.ListTemplatesRequest, context: Context
    ) -> matcher_pb2.ListTemplatesResponse:
        try:
            limit = page_size(request.limit)
            check_template_id(request.after_id, allow_zero=True)
        except InvalidInput as exc:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc).replace("template_id", "after_id"))
        templates = await self._admin(context, store.list_templates(self._pool, request.after_id, limit))
        next_after = templates[-1].template_id if len(templates) == limit else 0
        return matcher_pb2.ListTemplatesResponse(
            templates=[_template_message(t) for t in templates], next_after_id=next_after
        )

    async def _admin(self, context: Context, call: Awaitable[T]) -> T:
        try:
            return await call
        except DB_UNAVAILABLE_ERRORS as exc:
            DB_ERRORS.labels("admin").inc()
            log.warning("admin read failed: %r", exc)
            await context.abort(grpc.StatusCode.UNAVAILABLE, "database unavailable")


def _template_message(t: store.StoredTemplate) -> matcher_pb2.Template:
    return matcher_pb2.Template(
        template_id=t.template_id,
        created_at=t.created_at.timestamp(),
        updated_at=t.updated_at.timestamp(),
        last_seen_at=t.last_seen_at.timestamp(),
        observations=t.observations,
        mean_distance=t.mean_distance,
        stable_window=t.stable_window,
        algorithm_version=t.algorithm_version,
        windows=[
            matcher_pb2.TemplateWindow(window=w.window, fingerprint=w.fingerprint, votes=w.votes) for w in t.windows
        ],
    )
