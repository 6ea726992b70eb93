"""What the `ollama-optimizer` client commands share: the channel, one-line errors, tables, times, JSON."""

from __future__ import annotations

import json
import sys
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

import grpc
from google.protobuf.json_format import MessageToDict
from google.protobuf.message import Message

from .channels import ClientArgs, create_channel

CALL_TIMEOUT_SECONDS = 10.0
# Where each service is started from, for the hint when nothing answers.
_START_HINT = "start it with `ollama-optimizer up` or point --address at it"


class CliError(Exception):
    """A failure the command line reports as one line on stderr, with ``exit_code``."""

    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(" ".join(message.split()))
        self.exit_code = exit_code


def describe_rpc_error(service: str, address: str, exc: grpc.aio.AioRpcError) -> str:
    """One line saying which service failed how; a hint when nothing answers at ``address``."""
    details = exc.details() or ""
    if exc.code() == grpc.StatusCode.UNAVAILABLE and "connect" in details.lower():
        reason = "connection refused" if "Connection refused" in details else details
        return f"cannot reach the {service} at {address} ({reason}); {_START_HINT}"
    if exc.code() == grpc.StatusCode.DEADLINE_EXCEEDED:
        return f"the {service} at {address} did not answer within {CALL_TIMEOUT_SECONDS:g} s"
    return f"{service} at {address}: {exc.code().name}: {details}"


@asynccontextmanager
async def channel_to(service: str, address: str, channel_args: ClientArgs) -> AsyncIterator[grpc.aio.Channel]:
    """A channel to ``address``; gRPC failures inside the block become a CliError naming the service."""
    try:
        channel = create_channel(address, **channel_args)
    except OSError as exc:  # a TLS file named by OPTIMIZER_CLIENT_TLS_* that cannot be read
        raise CliError(f"cannot read a client TLS file: {exc}") from None
    try:
        async with channel:
            yield channel
    except grpc.aio.AioRpcError as exc:
        raise CliError(describe_rpc_error(service, address, exc)) from None


def table(rows: Sequence[Sequence[object]]) -> str:
    """Rows as left-aligned columns; the first row is the header."""
    widths = [max(len(str(row[i])) for row in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(str(v).ljust(w) for v, w in zip(row, widths)).rstrip() for row in rows)


def when(epoch_seconds: float) -> str:
    """A timestamp as ISO 8601 UTC to the second; '-' for none."""
    if not epoch_seconds:
        return "-"
    return datetime.fromtimestamp(epoch_seconds, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def as_dict(message: Message, timestamps: Sequence[str] = ()) -> dict[str, Any]:
    """A message as JSON-ready data: proto field names, every field, ``timestamps`` as ISO 8601."""
    data = MessageToDict(message, preserving_proto_field_name=True, always_print_fields_with_no_presence=True)
    for name in timestamps:
        data[name] = when(getattr(message, name))
    return data


def print_json(data: object) -> None:
    json.dump(data, sys.stdout, indent=2)
    sys.stdout.write("\n")
