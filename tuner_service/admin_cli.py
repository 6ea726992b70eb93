"""Operator commands behind `ollama-optimizer stats|explain|pin|reset`: readable tables, exit codes."""
from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

import grpc

from ollama_optimizer.channels import create_channel
from ollama_optimizer.gen.optimizer.v1 import tuner_pb2, tuner_pb2_grpc

TIMEOUT_S = 10.0


def _table(rows: Sequence[Sequence[object]]) -> str:
    widths = [max(len(str(row[i])) for row in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(str(v).ljust(w) for v, w in zip(row, widths)).rstrip() for row in rows)


def _print_state(state: tuner_pb2.ExplainResponse) -> None:
    if not state.known:
        print(f"{state.model} template {state.template_id}: nothing learned")
    rows = [("field", "value"),
            ("observations", state.observations),
            ("need p50 / p95 / max", f"{state.need_p50:.0f} / {state.need_p95:.0f} / {state.need_max:.0f}"),
            ("num_ctx (current / last safe)", f"{state.current_num_ctx} / {state.last_safe_num_ctx}"),
            ("num_batch", state.num_batch or "default"),
            ("pinned", state.pinned),
            ("truncations detected", state.truncations_detected),
            ("model loaded num_ctx / num_batch",
             f"{state.loaded_num_ctx or 'default'} / {state.loaded_num_batch or 'default'}"),
            ("tokens per unit", f"{state.units_to_tokens_ratio:.3f}"),
            ("reload cost (s)", f"{state.reload_cost_seconds:.2f}"),
            ("model context limit", state.model_context_limit or "unknown"),
            ("num_ctx cap", state.num_ctx_cap or "none"),
            ("count semantics", state.count_semantics or "unknown"),
            ("ollama host", state.ollama_host or "default"),
            ("confidence", f"{state.confidence:.2f}")]
    print(_table(rows))
    print("\n" + state.reason)


async def _call(args: argparse.Namespace, channel_args: dict[str, str], method: str, request: object) -> object:
    channel = create_channel(args.address, **channel_args)
    try:
        stub = tuner_pb2_grpc.TunerStub(channel)
        return await getattr(stub, method)(request, timeout=TIMEOUT_S)
    finally:
        await channel.close()


async def _run(args: argparse.Namespace, channel_args: dict[str, str], method: str, request: object) -> object | None:
    try:
        return await _call(args, channel_args, method, request)
    except grpc.aio.AioRpcError as exc:
        print(f"tuner at {args.address}: {exc.code().name}: {exc.details()}", file=sys.stderr)
        return None


async def stats(args: argparse.Namespace, **channel_args: str) -> int:
    response = await _run(args, channel_args, "Summary",
                          tuner_pb2.SummaryRequest(period_seconds=args.period, model=args.model))
    if response is None:
        return 1
    assert isinstance(response, tuner_pb2.SummaryResponse)
    print(_table([
        ("period (s)", "requests", "optimized", "match rate", "p50 opt (s)", "p50 pass (s)", "KV tokens saved",
         "trunc prevented", "trunc detected", "reloads caused", "reloads avoided"),
        (response.period_seconds, response.requests, f"{response.optimized_share:.0%}",
         f"{response.match_rate:.0%}", f"{response.latency_p50_optimized_seconds:.3f}",
         f"{response.latency_p50_passthrough_seconds:.3f}", response.kv_tokens_saved,
         response.truncations_prevented, response.truncations_detected, response.reloads_caused,
         response.reloads_avoided)]))
    if response.models:
        print()
        print(_table([("model", "host", "requests", "optimized", "loaded num_ctx", "loaded num_batch", "num_ctx cap",
                       "reloads"),
                      *[(m.model, m.ollama_host or "default", m.requests, m.optimized, m.loaded_num_ctx or "default",
                         m.loaded_num_batch or "default", m.num_ctx_cap or "none", m.reloads)
                        for m in response.models]]))
    return 0


async def explain(args: argparse.Namespace, **channel_args: str) -> int:
    response = await _run(args, channel_args, "Explain",
                          tuner_pb2.ExplainRequest(model=args.model, template_id=args.template_id,
                                                   ollama_host=getattr(args, "host", "")))
    if response is None:
        return 1
    assert isinstance(response, tuner_pb2.ExplainResponse)
    _print_state(response)
    return 0


async def pin(args: argparse.Namespace, **channel_args: str) -> int:
    response = await _run(args, channel_args, "Pin", tuner_pb2.PinRequest(
        model=args.model, template_id=args.template_id, num_ctx=args.num_ctx, num_batch=args.num_batch,
        ollama_host=getattr(args, "host", "")))
    if response is None:
        return 1
    assert isinstance(response, tuner_pb2.PinResponse)
    print(f"pinned {args.model} template {args.template_id}")
    _print_state(response.state)
    return 0


async def reset(args: argparse.Namespace, **channel_args: str) -> int:
    response = await _run(args, channel_args, "Reset",
                          tuner_pb2.ResetRequest(model=args.model, template_id=args.template_id,
                                                 whole_model=not args.template_id, ollama_host=getattr(args, "host", "")))
    if response is None:
        return 1
    assert isinstance(response, tuner_pb2.ResetResponse)
    what = f"template {args.template_id}" if args.template_id else "the whole model (back to Ollama's defaults)"
    print(f"reset {args.model} {what}: learned state forgotten")
    return 0
