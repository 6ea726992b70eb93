"""bench.faults' slow stand-in (a TCP relay) shuts down without leaving a connection handler to be cancelled
(asyncio then logs "Exception in callback" with a CancelledError traceback), and a bad --only is one line."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from typing import Any

from bench.faults import Relay


async def _echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while data := await reader.read(65536):
        writer.write(data)
        await writer.drain()
    writer.close()


async def _relay_then_stop(errors: list[dict[str, Any]]) -> bytes:
    """An echo server behind the relay, one connection through it left open, then the relay stopped."""
    asyncio.get_running_loop().set_exception_handler(lambda _loop, context: errors.append(context))
    echo = await asyncio.start_server(_echo, "127.0.0.1", 0)
    relay = await Relay(int(echo.sockets[0].getsockname()[1])).start()
    reader, writer = await asyncio.open_connection("127.0.0.1", relay.port)
    writer.write(b"ping")
    await writer.drain()
    answer = await reader.readexactly(4)
    await relay.stop()
    writer.close()
    echo.close()
    return answer


def test_the_relay_stops_without_leaving_a_handler_to_cancel() -> None:
    """asyncio.run cancels the tasks left at the end: the relay's connection handler used to be one of them."""
    errors: list[dict[str, Any]] = []
    assert asyncio.run(_relay_then_stop(errors)) == b"ping"
    assert errors == []


def test_an_unknown_fault_name_is_one_line_and_a_non_zero_exit() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "bench.faults", "--only", "kill-matcher"], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 2
    assert "unknown fault name(s) in --only: kill-matcher" in done.stderr and "Traceback" not in done.stderr
