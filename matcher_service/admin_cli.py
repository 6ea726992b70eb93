"""`ollama-optimizer match` and `ollama-optimizer templates`: readable by default, JSON with --json."""

from __future__ import annotations

import argparse
from typing import Unpack

from ollama_optimizer.channels import ClientArgs
from ollama_optimizer.cli_support import CALL_TIMEOUT_SECONDS, CliError, as_dict, channel_to, print_json, table, when
from ollama_optimizer.gen.optimizer.v1 import matcher_pb2, matcher_pb2_grpc

SERVICE = "matcher"
TEMPLATE_TIMES = ("created_at", "updated_at", "last_seen_at")


async def match(args: argparse.Namespace, text: str, **channel_args: Unpack[ClientArgs]) -> int:
    """Match ``text`` for ``args.model`` (then Observe it with ``args.observe``) and print the result."""
    if not text.strip():
        raise CliError("no prompt text: pass --text or pipe the prompt on standard input", exit_code=2)
    async with channel_to(SERVICE, args.address, channel_args) as channel:
        stub = matcher_pb2_grpc.MatcherStub(channel)
        response = await stub.Match(matcher_pb2.MatchRequest(model=args.model, text=text), timeout=CALL_TIMEOUT_SECONDS)
        observed = None
        if args.observe:
            observed = await stub.Observe(
                matcher_pb2.ObserveRequest(
                    model=args.model,
                    fingerprints=response.fingerprints,
                    template_id=response.template_id,
                ),
                timeout=CALL_TIMEOUT_SECONDS,
            )
    if args.json:
        data = {"model": args.model, "match": as_dict(response)}
        if observed is not None:
            data["observe"] = as_dict(observed)
        print_json(data)
        return 0
    rows: list[tuple[object, object]] = [("model", args.model)]
    if response.matched:
        rows += [
            ("template", response.template_id),
            ("window", f"{response.window} units"),
            ("distance", f"{response.distance} bits (similarity {response.similarity:.2f})"),
            ("observations", response.observations),
        ]
    else:
        rows.append(("template", "none matched (a prompt shape not seen before)"))
    rows += [("prompt units", response.prompt_units), ("answered from cache", "yes" if response.cache_hit else "no")]
    if observed is not None:
        how = "created" if observed.created else "folded into"
        rows.append(
            (
                "observed",
                f"{how} template {observed.template_id} (stable window "
                f"{observed.stable_window}, {observed.observations} observations)",
            )
        )
    print(table(rows))
    return 0


async def templates(args: argparse.Namespace, **channel_args: Unpack[ClientArgs]) -> int:
    """Print one page of learned templates (fingerprints and counters; no prompt text exists)."""
    async with channel_to(SERVICE, args.address, channel_args) as channel:
        response = await matcher_pb2_grpc.MatcherStub(channel).ListTemplates(
            matcher_pb2.ListTemplatesRequest(limit=args.limit, after_id=args.after_id), timeout=CALL_TIMEOUT_SECONDS
        )
    if args.json:
        print_json(
            {
                "templates": [as_dict(t, TEMPLATE_TIMES) for t in response.templates],
                "next_after_id": response.next_after_id,
            }
        )
        return 0
    if not response.templates:
        print("no templates learned yet" if not args.after_id else f"no templates after id {args.after_id}")
        return 0
    print(
        table(
            [
                ("id", "observations", "stable window", "mean distance", "windows", "created", "last seen"),
                *[
                    (
                        t.template_id,
                        t.observations,
                        t.stable_window,
                        f"{t.mean_distance:.1f}",
                        len(t.windows),
                        when(t.created_at),
                        when(t.last_seen_at),
                    )
                    for t in response.templates
                ],
            ]
        )
    )
    print("\nTemplates are shared by every model; `ollama-optimizer explain MODEL ID` shows a model's options.")
    if response.next_after_id:
        print(f"More: ollama-optimizer templates --after-id {response.next_after_id}")
    return 0
