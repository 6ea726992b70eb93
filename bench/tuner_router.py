"""A gRPC front for several tuner processes, as a load balancer that follows the writer would be.

Every call goes to the tuner that last reported itself the writer (``optimizer_tuner_writer`` 1);
answers can be delayed (a slow stand-in: SIGUSR1 on, SIGUSR2 off). Report requests and answers are
decoded on the way: each outcome id is recorded with the tuner it was sent to and its fate there
(stored, buffered), so the fault benchmark compares sets of ids, never counts. Run as its own process
(`python -m bench.tuner_router`, used by bench.faults) so it competes less with the load generator;
it appends one JSON line per Report and per change of writer to ``--records``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TextIO

import aiohttp
import grpc

from ollama_optimizer.gen.optimizer.v1 import tuner_pb2

REPORT = "/optimizer.v1.Tuner/Report"
POLL_EVERY_S = 0.2  # how often each tuner is asked whether it is the writer
POLL_TIMEOUT_S = 0.5
_OPTIONS = [
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 500),
    ("grpc.min_reconnect_backoff_ms", 100),
]


class TunerRouter:
    def __init__(
        self,
        addresses: dict[str, str],
        is_writer: Callable[[str], Awaitable[bool]],
        records: TextIO | None = None,
        writer_file: Path | None = None,
    ) -> None:
        self.addresses, self._is_writer, self._records = addresses, is_writer, records
        self._writer_file = writer_file
        self.current = next(iter(addresses), "")
        self._claims: dict[str, bool] = {}  # tuner -> whether its last answer said writer
        self.delay_s = 0.0
        self.sent_to: dict[str, str] = {}  # outcome id -> tuner it was last sent to
        self.stored: set[str] = set()  # ids a Report answered as stored
        self.buffered: set[str] = set()  # ids a Report answered as buffered (and never as stored)
        self.port = 0
        self._channels = {name: grpc.aio.insecure_channel(a, options=_OPTIONS) for name, a in addresses.items()}
        self._server: grpc.aio.Server | None = None
        self._task: asyncio.Task[None] | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def start(self) -> TunerRouter:
        self._server = grpc.aio.server()
        self._server.add_generic_rpc_handlers([_Handler(self)])
        self.port = self._server.add_insecure_port("127.0.0.1:0")
        await self._server.start()
        self._task = asyncio.create_task(self._follow_writer())
        return self

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
        if self._server is not None:
            await self._server.stop(0)
        for channel in self._channels.values():
            await channel.close()

    async def _follow_writer(self) -> None:
        """Each tuner asked on its own (a hung one never delays hearing from the others); the calls
        move to a tuner that says it is the writer once the current one no longer says so."""
        await asyncio.gather(*(self._poll(name) for name in self.addresses))

    async def _poll(self, name: str) -> None:
        while True:
            try:
                self._claims[name] = await asyncio.wait_for(self._is_writer(name), POLL_TIMEOUT_S) is True
            except Exception:  # noqa: BLE001 (unreachable, hung or answering nonsense: not the writer)
                self._claims[name] = False
            if self._claims[name] and name != self.current and not self._claims.get(self.current, False):
                self.current = name
                self._write({"writer": name})
                if self._writer_file is not None:
                    self._writer_file.write_text(name)
            await asyncio.sleep(POLL_EVERY_S)

    async def forward(self, method: str, request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        target = self.current
        remaining = context.time_remaining()
        call = self._channels[target].unary_unary(method)
        try:
            answer: bytes = await call(request, timeout=remaining if remaining is not None else 30.0)
        except grpc.aio.AioRpcError as exc:
            await context.abort(exc.code(), exc.details() or "")
        if method == REPORT:
            self._record(target, request, answer)
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        return answer

    def _record(self, target: str, request: bytes, answer: bytes) -> None:
        ids = [o.outcome_id for o in tuner_pb2.ReportRequest.FromString(request).outcomes]
        reply = tuner_pb2.ReportResponse.FromString(answer)
        not_stored = {
            *reply.buffered_index,
            *reply.dropped_index,
            *reply.duplicate_index,
            *(r.index for r in reply.rejected),
        }
        self._write(
            {"target": target, "ids": ids, "not_stored": sorted(not_stored), "buffered": list(reply.buffered_index)}
        )
        for index, outcome_id in enumerate(ids):
            self.sent_to[outcome_id] = target
            if index not in not_stored:
                self.stored.add(outcome_id)
                self.buffered.discard(outcome_id)
            elif index in reply.buffered_index and outcome_id not in self.stored:
                self.buffered.add(outcome_id)

    def _write(self, record: dict[str, Any]) -> None:
        if self._records is not None:
            self._records.write(json.dumps(record) + "\n")
            self._records.flush()

    @classmethod
    def replay(cls, path: Path) -> TunerRouter:
        """A router's records read back (ids, fates, writer changes) without serving."""
        router = cls({}, _never)
        for line in path.read_text().splitlines():
            record = json.loads(line)
            if "writer" in record:
                router.current = record["writer"]
                continue
            ids, not_stored, buffered = record["ids"], set(record["not_stored"]), set(record["buffered"])
            for index, outcome_id in enumerate(ids):
                router.sent_to[outcome_id] = record["target"]
                if index not in not_stored:
                    router.stored.add(outcome_id)
                    router.buffered.discard(outcome_id)
                elif index in buffered and outcome_id not in router.stored:
                    router.buffered.add(outcome_id)
        return router


async def _never(name: str) -> bool:
    return False


class _Handler(grpc.GenericRpcHandler):
    def __init__(self, router: TunerRouter) -> None:
        self._router = router

    def service(self, details: grpc.HandlerCallDetails) -> Any:
        method = details.method

        async def forward(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
            return await self._router.forward(method, request, context)

        return grpc.unary_unary_rpc_method_handler(forward)


async def _serve(args: argparse.Namespace) -> None:
    tuners = dict(part.split("=", 1) for part in args.tuner)  # name=grpc_port:metrics_port
    addresses = {name: f"127.0.0.1:{ports.split(':')[0]}" for name, ports in tuners.items()}

    async def is_writer(name: str) -> bool:
        url = f"http://127.0.0.1:{tuners[name].split(':')[1]}/metrics"
        async with aiohttp.ClientSession() as session, session.get(url) as response:
            text = await response.text()
        return any(
            line.startswith("optimizer_tuner_writer ") and float(line.split()[1]) == 1 for line in text.splitlines()
        )

    with open(args.records, "a") as records:
        writer_file = Path(args.records).with_suffix(".writer")
        writer_file.write_text(next(iter(addresses)))
        router = await TunerRouter(addresses, is_writer, records, writer_file).start()
        loop, done = asyncio.get_running_loop(), asyncio.Event()
        loop.add_signal_handler(signal.SIGUSR1, lambda: setattr(router, "delay_s", args.delay))
        loop.add_signal_handler(signal.SIGUSR2, lambda: setattr(router, "delay_s", 0.0))
        loop.add_signal_handler(signal.SIGTERM, done.set)
        Path(args.port_file).write_text(str(router.port))
        await done.wait()
        await router.stop()


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m bench.tuner_router", description=__doc__)
    p.add_argument("--tuner", action="append", required=True, help="name=grpc_port:metrics_port (first: writer)")
    p.add_argument("--records", required=True)
    p.add_argument("--port-file", required=True)
    p.add_argument("--delay", type=float, default=0.2)
    asyncio.run(_serve(p.parse_args(argv)))


if __name__ == "__main__":
    main()
