"""gRPC Tuner service: translates messages to the core and back, validates at the boundary."""

from __future__ import annotations

import asyncpg
import grpc

from ollama_optimizer.db import DB_UNAVAILABLE_ERRORS
from ollama_optimizer.gen.optimizer.v1 import tuner_pb2, tuner_pb2_grpc
from ollama_optimizer.server import Context
from ollama_optimizer.source_tokens import SourceTokens, bearer

from . import admin, lease
from .accounting import kv_memory
from .core import TunerCore
from .explain import explain, memory_advice
from .guard import Refused, ReportGuard, source_of
from .hosts import MAX_HOST_LEN, split_key, state_key, valid_host
from .policy import Demand
from .validation import MAX_OPTION, valid_model

MAX_MODEL_LEN = 256
MAX_UNITS = 10_000_000
MAX_PIN = 16_777_216


async def _check_model(context: Context, model: str, template_id: int, host: str = "") -> str:
    """The state key of (host, model) once both are valid names."""
    if not valid_model(model):
        await context.abort(
            grpc.StatusCode.INVALID_ARGUMENT,
            f"model must be 1..{MAX_MODEL_LEN} characters without control characters or spaces",
        )
    if template_id < 0:
        await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "template_id must not be negative")
    if not valid_host(host):
        await context.abort(
            grpc.StatusCode.INVALID_ARGUMENT,
            f"ollama_host must be at most {MAX_HOST_LEN} characters without control characters or spaces",
        )
    return state_key(model, host)


async def _refuse(context: Context, exc: admin.Refusal) -> None:
    await context.abort(grpc.StatusCode[exc.code], str(exc))


class TunerServicer(tuner_pb2_grpc.TunerServicer):
    def __init__(self, core: TunerCore, guard: ReportGuard | None = None, tokens: SourceTokens | None = None) -> None:
        self.core = core
        self.guard = guard or ReportGuard()
        self.tokens = tokens or SourceTokens()  # per-source bearer tokens: the Report source they name

    async def Recommend(self, request: tuner_pb2.RecommendRequest, context: Context) -> tuner_pb2.RecommendResponse:
        key = await _check_model(context, request.model, request.template_id, request.ollama_host)
        if request.prompt_units > MAX_UNITS:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"prompt_units above {MAX_UNITS}")
        if (
            request.model_context_limit > MAX_OPTION
            or request.default_num_ctx > MAX_OPTION
            or request.kv_bytes_per_token > 1 << 30
        ):
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT, "model_context_limit, default_num_ctx or kv_bytes_per_token absurd"
            )
        decision, did = self.core.recommend(
            Demand(
                model=key,
                template_id=request.template_id,
                prompt_units=request.prompt_units,
                client_options=frozenset(request.client_options),
                num_predict=request.num_predict,
                message_count=request.message_count,
                default_ctx=request.default_num_ctx,
            ),
            request.model_context_limit,
            request.kv_bytes_per_token,
        )
        ratio, cap = self.core.sizing(key, request.model_context_limit)
        return tuner_pb2.RecommendResponse(
            action=decision.action,
            num_ctx=decision.num_ctx,
            num_batch=decision.num_batch,
            decision_id=did,
            confidence=decision.confidence,
            reason=decision.reason,
            reason_code=decision.reason_code,
            estimated_need=min(decision.need, 2**32 - 1),
            units_to_tokens_ratio=ratio,
            num_ctx_cap=cap,
        )

    async def Lease(self, request: tuner_pb2.LeaseRequest, context: Context) -> tuner_pb2.LeaseResponse:
        key = await _check_model(context, request.model, 0, request.ollama_host)
        return lease.grant(self.core.policy, key, self.core.sizing(key)[1])

    async def Report(self, request: tuner_pb2.ReportRequest, context: Context) -> tuner_pb2.ReportResponse:
        limit = self.core.settings.max_report_batch
        if len(request.outcomes) > limit:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"at most {limit} outcomes per Report")
        try:
            source = source_of(
                context.peer_identities(), context.peer(), self.tokens.source(bearer(context.invocation_metadata()))
            )
            self.guard.check(source, len(request.outcomes))
        except Refused as exc:
            await context.abort(grpc.StatusCode[exc.code], str(exc))
        for key, template_id in {
            (state_key(o.model, o.ollama_host), o.template_id) for o in request.outcomes if o.template_id
        }:
            await self.core.residency.ensure(key, template_id)  # learn on top of what is stored
        result = self.core.report(list(request.outcomes))
        sync = self.core.settings.report_sync_seconds
        if result.kept and sync > 0:
            await self.core.writer.wait_stored(result.all_stored, sync)
        buffered = result.buffered()
        return tuner_pb2.ReportResponse(
            accepted=len(result.kept),
            duplicates=len(result.duplicates),
            stored=len(result.kept) - len(buffered),
            buffered=len(buffered),
            dropped=len(result.dropped),
            buffered_index=buffered,
            dropped_index=result.dropped,
            duplicate_index=result.duplicates,
            rejected=[tuner_pb2.Rejection(index=i, reason=reason) for i, reason in result.rejected],
        )

    async def Explain(self, request: tuner_pb2.ExplainRequest, context: Context) -> tuner_pb2.ExplainResponse:
        key = await _check_model(context, request.model, request.template_id, request.ollama_host)
        await self.core.residency.ensure(key, request.template_id)
        try:
            admin.known(self.core.policy, key, request.template_id)
        except admin.Refusal as exc:
            await _refuse(context, exc)
        return explain(self.core.policy, key, request.template_id, self.core.settings.limits)

    async def Pin(self, request: tuner_pb2.PinRequest, context: Context) -> tuner_pb2.PinResponse:
        key = await _check_model(context, request.model, request.template_id, request.ollama_host)
        if request.num_ctx > MAX_PIN or request.num_batch > MAX_PIN:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"pinned values must be at most {MAX_PIN}")
        await self._require_writer(context)
        await self.core.residency.ensure(key, request.template_id)
        try:
            admin.check_pin(self.core.policy, key, request.template_id, request.num_ctx, request.num_batch)
        except admin.Refusal as exc:
            await _refuse(context, exc)
        self.core.pin(key, request.template_id, request.num_ctx, request.num_batch)
        return tuner_pb2.PinResponse(
            state=explain(self.core.policy, key, request.template_id, self.core.settings.limits)
        )

    async def Reset(self, request: tuner_pb2.ResetRequest, context: Context) -> tuner_pb2.ResetResponse:
        key = await _check_model(context, request.model, request.template_id, request.ollama_host)
        if request.whole_model == bool(request.template_id):
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT,
                "name a template_id, or set whole_model to reset the whole model (not both)",
            )
        await self._require_writer(context)
        await self.core.residency.ensure(key, request.template_id)
        try:
            admin.known(self.core.policy, key, request.template_id)
        except admin.Refusal as exc:
            await _refuse(context, exc)
        if request.template_id:
            return tuner_pb2.ResetResponse(existed=self.core.reset(key, request.template_id))
        return tuner_pb2.ResetResponse(existed=self.core.reset_model(key))

    async def Summary(self, request: tuner_pb2.SummaryRequest, context: Context) -> tuner_pb2.SummaryResponse:
        period = request.period_seconds or 3600
        if request.model and not valid_model(request.model):
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "model filter is not a valid model name")
        try:
            rows = await self.core.summary(period, request.model)
        except DB_UNAVAILABLE_ERRORS as exc:
            await context.abort(grpc.StatusCode.UNAVAILABLE, f"database unavailable: {exc}")
        if (
            request.model
            and not any(row["model"] for row in rows)
            and not any(split_key(key)[0] == request.model for key in self.core.policy.models)
        ):
            await context.abort(
                grpc.StatusCode.NOT_FOUND,
                f"model {request.model!r} is unknown to the tuner (no state, no outcome in the period)",
            )
        response = tuner_pb2.SummaryResponse(period_seconds=period)
        default_unknown = False  # a model's default only assumed: the total against the default is unknown
        for row in rows:
            if row["model"] is None:
                _fill_total(response, row)
                continue
            model = self.core.policy.models.get(state_key(row["model"], row["ollama_host"]))
            summary = tuner_pb2.ModelSummary(
                model=row["model"],
                requests=row["requests"],
                optimized=row["optimized"],
                loaded_num_ctx=model.loaded_ctx if model else 0,
                loaded_num_batch=model.loaded_batch if model else 0,
                reloads=row["runner_loads"],
                memory_advice=memory_advice(self.core.policy, model) if model else "",
                ollama_host=row["ollama_host"],
                num_ctx_cap=model.num_ctx_cap if model else 0,
                benefit=_benefit(row),
            )
            if model is not None:
                memory = kv_memory(self.core.policy, model)
                summary.benefit.kv_bytes_loaded, summary.benefit.kv_bytes_default = memory.loaded, memory.default
                summary.benefit.loaded_num_ctx, summary.benefit.default_num_ctx = memory.loaded_ctx, memory.default_ctx
                summary.benefit.default_num_ctx_basis = memory.default_basis
                response.benefit.kv_bytes_loaded += memory.loaded
                response.benefit.kv_bytes_default += memory.default
                default_unknown = default_unknown or not memory.default
            response.models.append(summary)
        if default_unknown:
            response.benefit.kv_bytes_default = 0
        return response

    async def _require_writer(self, context: Context) -> None:
        if self.core.read_only:
            await context.abort(
                grpc.StatusCode.FAILED_PRECONDITION,
                "this tuner is a read-only standby: another process holds the writer lock",
            )


def _benefit(row: asyncpg.Record) -> tuner_pb2.Benefit:
    """The benefit figures of one summary row (KV memory is filled from the learned state)."""
    optimized, passthrough = row["latency_optimized"] or (0.0, 0.0), row["latency_passthrough"] or (0.0, 0.0)
    return tuner_pb2.Benefit(
        requests=row["requests"],
        optimized=row["optimized"],
        truncations_prevented=row["prevented"],
        baseline_unknown_requests=row["baseline_unknown"],
        truncated=row["truncations_detected"],
        runner_loads=row["runner_loads"],
        loads_by_optimizer=row["loads_by_optimizer"],
        loads_by_clients_baseline=row["loads_by_clients_baseline"],
        latency_p50_optimized_seconds=optimized[0],
        latency_p95_optimized_seconds=optimized[1],
        latency_p50_passthrough_seconds=passthrough[0],
        latency_p95_passthrough_seconds=passthrough[1],
        prompt_seconds=row["prompt_seconds"],
        prompt_seconds_baseline=row["prompt_seconds_baseline"],
        prompt_estimated_requests=row["prompt_estimated"],
    )


def _fill_total(response: tuner_pb2.SummaryResponse, row: asyncpg.Record) -> None:
    requests = row["requests"]
    response.requests = requests
    response.optimized = row["optimized"]
    response.optimized_share = row["optimized"] / requests if requests else 0.0
    response.match_rate = row["matched"] / requests if requests else 0.0
    response.benefit.MergeFrom(_benefit(row))
    response.latency_p50_optimized_seconds = response.benefit.latency_p50_optimized_seconds
    response.latency_p50_passthrough_seconds = response.benefit.latency_p50_passthrough_seconds
    response.truncations_prevented = row["prevented"]
    response.truncations_detected = row["truncations_detected"]
    response.reloads_caused = row["loads_by_optimizer"]
