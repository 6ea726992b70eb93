"""Operator commands behind `ollama-optimizer stats|explain|pin|reset`: readable tables by default, JSON
with --json; a failed call raises CliError (one line, non-zero exit)."""

from __future__ import annotations

import argparse
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar, Unpack

from google.protobuf.message import Message

from ollama_optimizer.channels import ClientArgs
from ollama_optimizer.cli_support import CALL_TIMEOUT_SECONDS, as_dict, channel_to, print_json, table
from ollama_optimizer.gen.optimizer.v1 import tuner_pb2, tuner_pb2_grpc

from . import benefit_view

SERVICE = "tuner"
Response = TypeVar("Response", bound=Message)


def _print_state(state: tuner_pb2.ExplainResponse) -> None:
    if not state.known:
        print(f"{state.model} template {state.template_id}: nothing learned")
    rows = [
        ("field", "value"),
        ("observations", state.observations),
        ("need p50 / p95 / max", f"{state.need_p50:.0f} / {state.need_p95:.0f} / {state.need_max:.0f}"),
        ("num_ctx (current / last safe)", f"{state.current_num_ctx} / {state.last_safe_num_ctx}"),
        ("num_batch", state.num_batch or "default"),
        ("pinned", state.pinned),
        ("truncations detected", state.truncations_detected),
        (
            "model loaded num_ctx / num_batch",
            f"{state.loaded_num_ctx or 'default'} / {state.loaded_num_batch or 'default'}",
        ),
        ("tokens per unit", f"{state.units_to_tokens_ratio:.3f}"),
        ("reload cost (s)", f"{state.reload_cost_seconds:.2f}"),
        ("model context limit", state.model_context_limit or "unknown"),
        ("num_ctx cap", state.num_ctx_cap or "none"),
        ("count semantics", state.count_semantics or "unknown"),
        ("ollama host", state.ollama_host or "default"),
        ("confidence", f"{state.confidence:.2f}"),
    ]
    print(table(rows))
    print("\n" + state.reason)


async def _call(
    args: argparse.Namespace,
    channel_args: ClientArgs,
    rpc: Callable[[tuner_pb2_grpc.TunerAsyncStub], Awaitable[Response]],
    shape: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
) -> Response:
    """The tuner's answer; with ``--json`` printed as JSON (``shape`` adjusts it first)."""
    async with channel_to(SERVICE, args.address, channel_args) as channel:
        response = await rpc(tuner_pb2_grpc.TunerStub(channel))
    if args.json:
        data = as_dict(response)
        print_json(shape(data) if shape else data)
    return response


async def stats(args: argparse.Namespace, **channel_args: Unpack[ClientArgs]) -> int:
    request = tuner_pb2.SummaryRequest(period_seconds=args.period, model=args.model)
    response = await _call(
        args,
        channel_args,
        lambda stub: stub.Summary(request, timeout=CALL_TIMEOUT_SECONDS),
        benefit_view.json_unknowns,
    )
    if args.json:
        return 0
    b = response.benefit
    print(
        table(
            [
                ("period", f"last {response.period_seconds} s" + (f", model {args.model}" if args.model else "")),
                ("requests", response.requests),
                ("optimized", f"{response.optimized} ({response.optimized_share:.0%})"),
                ("template match rate", f"{response.match_rate:.0%}"),
                (
                    "latency p50 / p95 optimized",
                    f"{b.latency_p50_optimized_seconds:.3f} s / {b.latency_p95_optimized_seconds:.3f} s",
                ),
                (
                    "latency p50 / p95 passed through",
                    f"{b.latency_p50_passthrough_seconds:.3f} s / {b.latency_p95_passthrough_seconds:.3f} s",
                ),
            ]
        )
    )
    if response.models:
        print("\nWhat the optimizer changed against Ollama alone (its defaults and the clients' own options):\n")
        print(benefit_view.render(response))
        print()
        print(
            table(
                [
                    ("model", "host", "loaded num_ctx", "loaded num_batch", "num_ctx cap"),
                    *[
                        (
                            m.model,
                            m.ollama_host or "default",
                            m.loaded_num_ctx or "default",
                            m.loaded_num_batch or "default",
                            m.num_ctx_cap or "none",
                        )
                        for m in response.models
                    ],
                ]
            )
        )
        for m in response.models:
            if m.memory_advice:
                print(f"{m.model}: {m.memory_advice}")
    return 0


async def explain(args: argparse.Namespace, **channel_args: Unpack[ClientArgs]) -> int:
    request = tuner_pb2.ExplainRequest(
        model=args.model, template_id=args.template_id, ollama_host=getattr(args, "host", "")
    )
    response = await _call(args, channel_args, lambda stub: stub.Explain(request, timeout=CALL_TIMEOUT_SECONDS))
    if not args.json:
        _print_state(response)
    return 0


async def pin(args: argparse.Namespace, **channel_args: Unpack[ClientArgs]) -> int:
    request = tuner_pb2.PinRequest(
        model=args.model,
        template_id=args.template_id,
        num_ctx=args.num_ctx,
        num_batch=args.num_batch,
        ollama_host=getattr(args, "host", ""),
    )
    response = await _call(args, channel_args, lambda stub: stub.Pin(request, timeout=CALL_TIMEOUT_SECONDS))
    if not args.json:
        print(f"pinned {args.model} template {args.template_id}")
        _print_state(response.state)
    return 0


async def reset(args: argparse.Namespace, **channel_args: Unpack[ClientArgs]) -> int:
    request = tuner_pb2.ResetRequest(
        model=args.model,
        template_id=args.template_id,
        whole_model=not args.template_id,
        ollama_host=getattr(args, "host", ""),
    )
    await _call(args, channel_args, lambda stub: stub.Reset(request, timeout=CALL_TIMEOUT_SECONDS))
    if not args.json:
        what = f"template {args.template_id}" if args.template_id else "the whole model (back to Ollama's defaults)"
        print(f"reset {args.model} {what}: learned state forgotten")
    return 0
