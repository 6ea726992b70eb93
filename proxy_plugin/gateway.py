"""``ollama-optimizer gateway``: an Ollama-API reverse proxy that runs the core on /api/chat, /api/generate and
/api/embed, and on the compatible /v1 doors (``compat_forward``).

- Every other path and method is relayed untouched (request and response bodies streamed).
- Streaming NDJSON is written to the client chunk by chunk as it arrives; the final ``done: true``
  chunk feeds learning and the request metrics.
- A request the core leaves alone is forwarded as the original body bytes.
- A body that is not a JSON object is forwarded untouched: Ollama answers it (its own 400).
- Chat/generate bodies above ``optimize_max_body_bytes`` are relayed untouched (streamed, counted as
  passthrough ``large_body``), as Ollama takes bodies of any size; only an operator's ``max_body_bytes``
  limit answers 413 ``{"error": ...}``. An unreachable upstream gets 502.
- A client disconnect cancels the handler, which closes the upstream request.
- /metrics is served on its own port (GATEWAY_METRICS_PORT, default 9463).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from typing import Any

import aiohttp
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from ollama_optimizer.benefit import ReloadSettings
from ollama_optimizer.config import GatewaySettings
from ollama_optimizer.fingerprint_kernel import KernelSettings, warm_up_at_start
from ollama_optimizer.gen.optimizer.v1 import tuner_pb2
from ollama_optimizer.server import wait_for_shutdown_signal
from ollama_optimizer.settings_env import ConfigError, load

from . import metrics
from .command import strip_command
from .compat_forward import COMPAT_DOORS, serve_compat
from .config import PluginConfig, load_config
from .core import OptimizerCore
from .decision import RequestPlan
from .default_sightings import DefaultSightings
from .forwarded import forward_headers
from .gateway_metrics import RequestMetrics
from .loaded_models import LoadedModels, find
from .loop_guard import HOP_HEADER, HopGuard, SelfUpstream, check_upstream
from .outcome import stat_int
from .runner_loads import RunnerLoads, Sent, answer_clock
from .tail import FinalObject
from .upstream_facts import UpstreamFacts

log = logging.getLogger(__name__)

OPTIMIZED_PATHS = {"/api/chat": "chat", "/api/generate": "generate", "/api/embed": "embed"}
_COMPAT_DROP = frozenset({"accept-encoding", "content-type"})  # the native answer must be parseable JSON
LEARN_DRAIN_S = 5.0  # at shutdown: how long the outcomes of answered requests may take to be queued


def _port(text: str, lowest: int, what: str) -> int:
    if not text.isdigit() or not lowest <= int(text) <= 65535:
        raise ValueError(f"{what}: port {text!r} is not a number from {lowest} to 65535")
    return int(text)


def normalise_upstream(upstream: str) -> str:
    """``127.0.0.1:11434``, ``localhost``, ``:11434`` (OLLAMA_HOST forms) or a full URL -> base URL;
    ValueError saying why for anything else."""
    value = upstream.strip().rstrip("/")
    if "://" not in value:
        value = "http://" + value
    scheme, rest = value.split("://", 1)
    if scheme not in ("http", "https"):
        raise ValueError(f"upstream {upstream!r}: the scheme must be http or https")
    hostport, _, path = rest.partition("/")
    host, sep, port = hostport.rpartition(":") if not hostport.endswith("]") else (hostport, "", "")
    if not sep:
        host, port = hostport, ""
    if (":" in host and not (host.startswith("[") and host.endswith("]"))) or " " in host:
        raise ValueError(f"upstream {upstream!r} is not HOST:PORT or a URL (an IPv6 host goes in brackets)")
    host = host or "127.0.0.1"
    port = str(_port(port, 1, f"upstream {upstream!r}")) if port else ("11434" if scheme == "http" else "443")
    return f"{scheme}://{host}:{port}" + (f"/{path}" if path else "")


def split_listen(listen: str) -> tuple[str, int]:
    """``HOST:PORT`` or ``:PORT`` (port 0: any free one) -> (host, port); ValueError saying why otherwise."""
    host, sep, port = listen.strip().rpartition(":")
    if not sep:
        raise ValueError(f"listen address {listen!r} is not HOST:PORT")
    return (host.strip("[]") or "127.0.0.1"), _port(port, 0, f"listen address {listen!r}")


def _body_to_send(body: bytes, original: dict[str, Any], to_send: dict[str, Any]) -> bytes:
    """The bytes to forward: the client's own when nothing changed; when only runner options were added to
    a UTF-8 body that had none, the client's bytes with them appended (a large prompt is not encoded again
    on the event loop); else the JSON of ``to_send``."""
    if to_send is original:
        return body
    head, tail = body.rstrip(), body.lstrip()
    only_options = (
        "options" not in original
        and len(to_send) == len(original) + 1
        and all(to_send.get(key) is value for key, value in original.items())
    )
    if only_options and tail[:1] == b"{" and head[-1:] == b"}" and head[:-1].rstrip()[-1:] not in (b"{", b""):
        options = json.dumps(to_send["options"], separators=(",", ":")).encode()
        return head[:-1] + b',"options":' + options + b"}"
    return json.dumps(to_send, separators=(",", ":")).encode()


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


@dataclass(frozen=True)
class _Answered:
    """An answered request, as the gateway learns from it."""

    payload: dict[str, Any]
    decision: RequestPlan
    stats: dict[str, Any] | None
    latency_s: float
    ttft_s: float | None
    sent: Sent


class Gateway:
    """The proxy application; owns the upstream HTTP session, uses a shared core."""

    def __init__(self, upstream: str, core: OptimizerCore, reload: ReloadSettings | None = None) -> None:
        self.upstream = normalise_upstream(upstream)
        self._reload_threshold_ns = int((reload or ReloadSettings()).reload_threshold_seconds * 1e9)
        self.core = core
        self.config: PluginConfig = core.config
        self._metrics = RequestMetrics(core.config)
        self._session: aiohttp.ClientSession | None = None
        self.loaded_models = LoadedModels(self.upstream)
        self.defaults = core.defaults_seen = DefaultSightings()
        self.facts = core.upstream = UpstreamFacts(self.upstream)  # version at start, /api/show per model
        self.hops = HopGuard()
        core.use_loaded_context(self._loaded_context)
        core.use_seen_context(lambda model: self.loaded_models.get(model).context_length)
        self.runner_loads = RunnerLoads()
        self._learning = 0  # answers sent whose outcome is not queued yet (e.g. waiting for /api/ps)
        self._learned = asyncio.Event()
        self._learned.set()
        self._learning_tasks: set[asyncio.Task[None]] = set()
        self._read_cap = self.config.max_body_bytes or self.config.optimize_max_body_bytes
        self.app = web.Application(client_max_size=self._read_cap)
        self.app.router.add_route("*", "/{tail:.*}", self.handle)
        self.app.on_startup.append(self._start)
        self.app.on_cleanup.append(self._stop)

    async def _start(self, _app: web.Application) -> None:
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0),
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=10),
            auto_decompress=False,  # relay bytes exactly as Ollama sent them
        )
        self.core.connect()
        self.facts.session = self._session
        await self.facts.read_version()

    async def _stop(self, _app: web.Application) -> None:
        if self._learning_tasks:  # every request has ended: their judgements can be made
            await asyncio.wait(self._learning_tasks, timeout=LEARN_DRAIN_S)
        for task in self._learning_tasks:
            task.cancel()
        await self.facts.close()
        await self.loaded_models.close()
        if self._session is not None:
            await self._session.close()

    async def _loaded_context(self, model: str) -> int:
        """The context Ollama has ``model`` loaded with, from /api/ps (0 = unknown or not loaded)."""
        if self._session is None:
            return 0
        return await self.loaded_models.context_length(self._session, model)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        if self.hops.is_loop(request.headers.get(HOP_HEADER)):
            return _error(
                508,
                f"loop detected: this request already passed through this gateway ({HOP_HEADER}); "
                "its upstream leads back to it",
            )
        endpoint = OPTIMIZED_PATHS.get(request.path) if request.method == "POST" else None
        door = COMPAT_DOORS.get(request.path) if request.method == "POST" else None
        if door is not None:
            return await serve_compat(
                self, request, door, self._hop(request, forward_headers(request.headers, drop=_COMPAT_DROP))
            )
        if endpoint is None:
            return await self._relay(request, "other", request.content if request.body_exists else None)
        return await self._optimized(request, endpoint)

    def _hop(self, request: web.Request, headers: dict[str, str]) -> dict[str, str]:
        """``headers`` to send upstream, with this gateway added to the loop guard's header."""
        headers = {k: v for k, v in headers.items() if k.lower() != HOP_HEADER.lower()}
        headers[HOP_HEADER] = self.hops.outgoing(request.headers.get(HOP_HEADER))
        return headers

    async def _relay(self, request: web.Request, endpoint: str, body: Any) -> web.StreamResponse:
        """Forward as is and stream the answer back (no learning)."""
        response, _status, _first = await self._pipe(request, endpoint, body, forward_headers(request.headers))
        return response

    async def _pipe(
        self,
        request: web.Request,
        endpoint: str,
        body: Any,
        headers: dict[str, str],
        final: FinalObject | None = None,
    ) -> tuple[web.StreamResponse, int, float | None]:
        """Send upstream and stream the answer back chunk by chunk; feed ``final`` on HTTP 200.

        Returns the response, the upstream status and when the first chunk arrived.
        """
        assert self._session is not None
        headers = self._hop(request, headers)
        first_chunk: float | None = None
        response: web.StreamResponse | None = None
        try:
            async with self._session.request(
                request.method,
                self.upstream + str(request.rel_url),
                headers=headers,
                data=body,
                allow_redirects=False,
            ) as upstream:
                response = self._response_for(upstream, endpoint)
                await response.prepare(request)
                feed = final.feed if final is not None and upstream.status == 200 else None
                async for chunk in upstream.content.iter_any():
                    if first_chunk is None:
                        first_chunk = time.monotonic()
                    if feed is not None:
                        feed(chunk)
                    await response.write(chunk)
                await response.write_eof()
                return response, upstream.status, first_chunk
        except (asyncio.CancelledError, ConnectionResetError):  # the client went away
            metrics.CLIENT_DISCONNECTS.labels(endpoint).inc()
            raise
        except aiohttp.ClientError as exc:
            metrics.UPSTREAM_ERRORS.labels(endpoint).inc()
            if response is not None and response.prepared:
                raise  # mid-response: the connection is closed, the client sees a cut stream
            metrics.REQUESTS.labels(endpoint, "502").inc()
            return _error(502, f"upstream {self.upstream} unreachable: {exc}"), 502, None

    async def _optimized(self, request: web.Request, endpoint: str) -> web.StreamResponse:
        received = time.monotonic()
        body = await self.body_to_optimize(request, endpoint, _error)
        if not isinstance(body, bytes):
            return body
        try:
            payload = json.loads(body)
        except (ValueError, RecursionError):  # not JSON, or nested deeper than Python parses: Ollama answers
            payload = None
        if not isinstance(payload, dict):
            return await self._relay(request, endpoint, body)
        original = payload
        if not self.config.always_on:
            payload = strip_command(payload)
            if payload is None:
                return await self._relay(request, endpoint, body)
        to_send, decision = await self.core.prepare(payload, endpoint)
        send_body = _body_to_send(body, original, to_send)
        return await self._forward(request, endpoint, to_send, send_body, decision, received)

    async def _forward(
        self,
        request: web.Request,
        endpoint: str,
        payload: dict[str, Any],
        body: bytes,
        decision: RequestPlan,
        received: float,
    ) -> web.StreamResponse:
        headers = forward_headers(request.headers, drop=frozenset({"accept-encoding"}))  # parseable answer
        final = FinalObject(require_done=endpoint != "embed")  # /api/embed answers one object without done
        sent = self.sending(decision)
        with self.outcome_pending():
            answer: dict[str, Any] | None = None
            try:
                response, status, first_chunk = await self._pipe(request, endpoint, body, headers, final)
                answer = final.result() if status == 200 else None
            finally:
                self.runner_loads.finished(sent, *answer_clock(answer))
            if status == 200:
                self.learn(payload, decision, answer, received, first_chunk, sent)
        return response

    @contextlib.contextmanager
    def outcome_pending(self) -> Iterator[None]:
        """Around sending a request upstream and handing its answer to ``learn``: ``flush`` waits for it."""
        self._hold()
        try:
            yield
        finally:
            self._release()

    def _hold(self) -> None:
        self._learning += 1
        self._learned.clear()

    def _release(self) -> None:
        self._learning -= 1
        if not self._learning:
            self._learned.set()

    async def flush(self) -> None:
        """Wait until the outcome of every request answered so far is queued, then until it has been sent
        (or dropped). A client may have the whole answer before then: after a runner load the gateway reads
        ``/api/ps`` before queueing the outcome."""
        await self._learned.wait()
        await self.core.flush()

    def sending(self, decision: RequestPlan) -> Sent:
        """Note the options a request goes upstream with: the runner-load ticket (end it with
        ``runner_loads.finished``, with the answer's clock) and the num_batch /api/ps does not show."""
        self.loaded_models.sent(decision.model, decision.num_batch)
        ticket = self.runner_loads.sent(decision.model, (decision.num_ctx, decision.num_batch))
        ticket.ctx_mark = self.defaults.sent(decision.model, decision.num_ctx)
        return ticket

    def learn(
        self,
        payload: dict[str, Any],
        decision: RequestPlan,
        stats: dict[str, Any] | None,
        received: float,
        first_chunk: float | None,
        sent: Sent,
    ) -> None:
        """Record the request metrics and queue the outcome of an answered request, in the background (the
        runner-load judgement may wait for requests that overlapped this one; the client's connection does
        not); ``sent`` is the runner-load ticket taken when the request went upstream, already finished."""
        ttft = None if first_chunk is None else first_chunk - received
        answered = _Answered(payload, decision, stats, time.monotonic() - received, ttft, sent)
        self._hold()
        task = asyncio.create_task(self._learn(answered))
        self._learning_tasks.add(task)
        task.add_done_callback(self._learnt)

    def _learnt(self, task: asyncio.Task[None]) -> None:
        self._learning_tasks.discard(task)
        self._release()
        if not task.cancelled() and task.exception() is not None:
            log.error("learning from an answer failed", exc_info=task.exception())

    async def _learn(self, answered: _Answered) -> None:
        payload, decision, stats = answered.payload, answered.decision, answered.stats
        latency, ttft = answered.latency_s, answered.ttft_s
        final_stats = stats or {}
        runner = await self.runner_loads.judge(
            answered.sent, stat_int(final_stats, "load_duration"), self._reload_threshold_ns
        )
        self._metrics.record(decision, stats, latency, ttft, runner == tuner_pb2.RUNNER_LOADED)
        loaded = self.loaded_models.get(decision.model)
        fresh = False
        if self._session is not None:
            if (
                runner == tuner_pb2.RUNNER_LOADED
                or not (decision.num_ctx or loaded.context_length)
                or self.defaults.wants_reading(decision.model, decision.num_ctx)
            ):
                # The answer is sent: read what this load placed (context, size, VRAM) before reporting.
                listed = await self.loaded_models.refresh(self._session)
                loaded = self.loaded_models.get(decision.model)
                fresh = listed is not None and find(listed, decision.model) is not None
            else:
                self.loaded_models.refresh_soon(self._session)
        default_ctx = self.defaults.attribute(
            decision.model, decision.num_ctx, answered.sent.ctx_mark, loaded.context_length, fresh
        )
        self.core.observe(
            payload,
            stats or {},
            decision,
            latency_s=latency,
            ttft_s=ttft,
            # Ollama's default context: what /api/ps shows after a request without num_ctx (default_sightings).
            loaded_context_length=default_ctx,
            model_size_bytes=loaded.size,
            model_vram_bytes=loaded.size_vram,
            runner_load=runner,
        )

    @staticmethod
    def _response_for(upstream: aiohttp.ClientResponse, endpoint: str) -> web.StreamResponse:
        response = web.StreamResponse(
            status=upstream.status, reason=upstream.reason, headers=forward_headers(upstream.headers)
        )
        if upstream.content_length is not None:
            response.content_length = upstream.content_length
        metrics.REQUESTS.labels(endpoint, str(upstream.status)).inc()
        return response

    async def body_to_optimize(
        self, request: web.Request, endpoint: str, refuse: Callable[[int, str], web.Response]
    ) -> bytes | web.StreamResponse:
        """The body when it is small enough to optimize (``optimize_max_body_bytes``); else the answer already
        sent: above the operator's limit (``max_body_bytes``, 0 = none, as Ollama) ``refuse``'s 413, below it
        the request relayed untouched (counted: passthrough reason large_body)."""
        limit = self.config.max_body_bytes
        if limit and (request.content_length or 0) > limit:
            return self._too_large(endpoint, refuse)
        body, complete = await _read_up_to(request.content, self._read_cap)
        if complete and len(body) <= self.config.optimize_max_body_bytes:
            return body
        if limit and not complete:
            return self._too_large(endpoint, refuse)
        metrics.PASSTHROUGH.labels("large_body").inc()
        return await self._relay(request, endpoint, body if complete else _prefixed(body, request.content))

    def _too_large(self, endpoint: str, refuse: Callable[[int, str], web.Response]) -> web.Response:
        metrics.REQUESTS.labels(endpoint, "413").inc()
        return refuse(413, f"request body larger than {self.config.max_body_bytes} bytes")


async def _read_up_to(stream: aiohttp.StreamReader, cap: int) -> tuple[bytes, bool]:
    """The body, or its first chunks once they exceed ``cap`` bytes; and whether it is complete."""
    parts: list[bytes] = []
    size = 0
    async for chunk in stream.iter_any():
        parts.append(chunk)
        size += len(chunk)
        if size > cap:
            return b"".join(parts), False
    return b"".join(parts), True


async def _prefixed(prefix: bytes, rest: aiohttp.StreamReader) -> AsyncIterator[bytes]:
    yield prefix
    async for chunk in rest.iter_any():
        yield chunk


async def _metrics_handler(_request: web.Request) -> web.Response:
    return web.Response(body=generate_latest(metrics.REGISTRY), headers={"Content-Type": CONTENT_TYPE_LATEST})


@dataclass
class RunningGateway:
    """A started gateway; ports are the bound ones (useful with port 0)."""

    gateway: Gateway
    runners: list[web.AppRunner]
    port: int
    metrics_port: int

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def stop(self, flush_timeout_s: float = 2.0) -> None:
        """Stop accepting, let in-flight requests finish (runner shutdown timeout), flush telemetry."""
        for runner in self.runners:
            await runner.cleanup()
        await self.gateway.core.close(flush_timeout_s)


async def _start_site(app: web.Application, host: str, port: int, shutdown_timeout: float) -> tuple[web.AppRunner, int]:
    runner = web.AppRunner(app, handler_cancellation=True, shutdown_timeout=shutdown_timeout, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    try:
        await site.start()
    except OSError:
        await runner.cleanup()
        raise
    return runner, int(runner.addresses[0][1])


async def start_gateway(
    listen: str,
    upstream: str,
    *,
    core: OptimizerCore | None = None,
    metrics_port: int = 0,
    shutdown_timeout: float = 10.0,
    reload: ReloadSettings | None = None,
) -> RunningGateway:
    """Start the proxy on ``listen`` and /metrics on ``metrics_port`` (same host); raises OSError on bind."""
    gateway = Gateway(upstream, core or OptimizerCore(), reload)
    host, port = split_listen(listen)
    check_upstream(host, port, gateway.upstream)
    proxy_runner, bound = await _start_site(gateway.app, host, port, shutdown_timeout)
    metrics_app = web.Application()
    metrics_app.router.add_get("/metrics", _metrics_handler)
    try:
        metrics_runner, metrics_bound = await _start_site(metrics_app, host, metrics_port, 1.0)
    except OSError:
        await proxy_runner.cleanup()
        raise
    log.info("gateway http://%s:%d -> %s, metrics :%d/metrics", host, bound, gateway.upstream, metrics_bound)
    return RunningGateway(gateway, [proxy_runner, metrics_runner], bound, metrics_bound)


async def serve(listen: str, upstream: str) -> int:
    """Run until SIGTERM/SIGINT, then shut down gracefully. Exit code 2 when a port cannot be bound."""
    try:
        config, reload = load_config(), load(ReloadSettings, os.environ)
        metrics_port = load(GatewaySettings, os.environ).metrics_port
        kernel = load(KernelSettings, os.environ)
    except ConfigError as exc:
        log.error("bad configuration: %s", exc)
        return 2
    warm_up_at_start(kernel)
    try:
        running = await start_gateway(
            listen, upstream, core=OptimizerCore(config), metrics_port=metrics_port, reload=reload
        )
    except SelfUpstream as exc:
        log.error("gateway refused: %s", exc)
        return 2
    except OSError as exc:
        log.error("gateway cannot bind: %s", exc)
        return 2
    await wait_for_shutdown_signal()
    log.info("gateway shutting down: draining in-flight requests")
    await running.stop()
    return 0
