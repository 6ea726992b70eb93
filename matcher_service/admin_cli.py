"""Command-line clients: `ollama-optimizer match` and `ollama-optimizer templates` (JSON lines on stdout)."""
from __future__ import annotations

import json
import sys

import grpc
from google.protobuf.json_format import MessageToDict
from google.protobuf.message import Message

from ollama_optimizer.channels import create_channel
from ollama_optimizer.gen.optimizer.v1 import matcher_pb2, matcher_pb2_grpc

CALL_TIMEOUT_SECONDS = 10.0


def _print(message: Message) -> None:
    print(json.dumps(MessageToDict(message, preserving_proto_field_name=True,
                                   always_print_fields_with_no_presence=True)))


async def match(address: str, model: str, text: str, *, observe: bool = False, **channel_args: str) -> int:
    """Match ``text`` (and Observe it with ``observe``); prints the responses; exit code 0 or 1."""
    async with create_channel(address, **channel_args) as channel:
        stub = matcher_pb2_grpc.MatcherStub(channel)
        try:
            response = await stub.Match(matcher_pb2.MatchRequest(model=model, text=text),
                                        timeout=CALL_TIMEOUT_SECONDS)
            _print(response)
            if observe:
                _print(await stub.Observe(matcher_pb2.ObserveRequest(
                    model=model, fingerprints=response.fingerprints, template_id=response.template_id,
                ), timeout=CALL_TIMEOUT_SECONDS))
        except grpc.aio.AioRpcError as exc:
            print(f"error: {exc.code().name}: {exc.details()}", file=sys.stderr)
            return 1
    return 0


async def list_templates(address: str, limit: int, **channel_args: str) -> int:
    """Print up to ``limit`` templates (one JSON object each); exit code 0 or 1."""
    async with create_channel(address, **channel_args) as channel:
        stub = matcher_pb2_grpc.MatcherStub(channel)
        try:
            response = await stub.ListTemplates(matcher_pb2.ListTemplatesRequest(limit=limit),
                                                timeout=CALL_TIMEOUT_SECONDS)
        except grpc.aio.AioRpcError as exc:
            print(f"error: {exc.code().name}: {exc.details()}", file=sys.stderr)
            return 1
    for template in response.templates:
        _print(template)
    return 0
