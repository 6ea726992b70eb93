"""The host-agnostic core: ``prepare`` on the request path, ``observe`` after the response.

Nothing here raises into the host (except the host's own cancellation): every failure means
"pass the request through unchanged" and is counted by reason.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from ollama_optimizer.gen.optimizer.v1 import matcher_pb2, matcher_pb2_grpc, tuner_pb2, tuner_pb2_grpc
from prompt_fingerprint import OFF_LOOP_CHARS, count_tokens

from . import metrics
from .canonical import TUNED_OPTIONS, canonical_text, client_options, message_count, num_predict, within_cap
from .config import PluginConfig, load_config
from .context_guard import ContextGuard, TunerSaid
from .decision import FinishedRequest, RequestPlan
from .default_sightings import DefaultSightings
from .lease import RETRY_S, LeaseBook, ModelLease, filled
from .match_memo import MatchAnswer, MatchMemo
from .probes import HostProbes
from .rpc import ServiceClient
from .sticky import StickyOptions
from .telemetry import TelemetryPipeline
from .upstream_facts import UpstreamFacts

log = logging.getLogger(__name__)

_APPLIED = "applied"
LoadedContext = Callable[[str], Awaitable[int]]
SeenContext = Callable[[str], int]


class OptimizerCore:
    """One per process. Channels and the telemetry task are created on first use in the running loop."""

    def __init__(
        self,
        config: PluginConfig | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        lease_pause: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        """``clock`` times sticky options and leases; ``lease_pause`` is a lease keeper's wait before a renewal."""
        self.config = config or load_config()
        self.wall_clock: Callable[[], float] = time.time  # finish times of outcomes (a benchmark's virtual clock)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._matcher: ServiceClient | None = None
        self._tuner: ServiceClient | None = None
        self._telemetry: TelemetryPipeline | None = None
        self._leases: LeaseBook | None = None
        self._recommending: set[asyncio.Task[None]] = set()  # leased requests' Recommend, off the request path
        self._seen_context: SeenContext | None = None
        self._clock = clock
        self._lease_pause = lease_pause
        self._probes = HostProbes(self.config.probes)
        self._sticky = StickyOptions(self.config.sticky_ttl_s, clock)
        self._guard = ContextGuard(self.config.guard_tokens_per_unit, self.config.guard_output_tokens)
        self._loaded_context: LoadedContext | None = None
        self._memo = MatchMemo(self.config.match_memo_size, self.config.match_memo_ttl_s)
        self.upstream: UpstreamFacts | None = None  # set by a host that reads its Ollama (the gateway)
        self.defaults_seen: DefaultSightings | None = None  # likewise: Ollama's default context per model
        self._decided = {
            "apply": metrics.DECISIONS.labels("apply"),
            "passthrough": metrics.DECISIONS.labels("passthrough"),
        }

    def use_loaded_context(self, lookup: LoadedContext) -> None:
        """The host can tell the context a model is loaded with (0 = unknown): used on failure when this
        process has not sent the model a request recently (e.g. a replica started during an outage)."""
        self._loaded_context = lookup

    def use_seen_context(self, seen: SeenContext) -> None:
        """The host can tell, without waiting, the context it last saw the model loaded with (0 = unknown): a
        lease is used only while that is the leased context."""
        self._seen_context = seen

    # --- request path ---------------------------------------------------------------------------
    async def prepare(self, request: dict[str, Any], endpoint: str | None = None) -> tuple[dict[str, Any], RequestPlan]:
        """Return the request to send (the same object when passed through) and the decision."""
        started = time.monotonic()
        t0 = time.perf_counter()
        is_dict = isinstance(request, dict)
        endpoint = endpoint or ("chat" if is_dict and "messages" in request else "generate")
        model = request.get("model") if is_dict else None
        decision = RequestPlan(
            model=model if isinstance(model, str) else "",
            endpoint=endpoint,
            started=started,
            ollama_host=self.config.ollama_host,
        )
        try:
            result = await self._prepare(request, decision, t0)
        except Exception:
            log.exception("prepare failed; passing through")
            decision.action, decision.reason = tuner_pb2.PASSTHROUGH, "error"
            result = request
        metrics.OVERHEAD.observe(time.perf_counter() - t0)
        if decision.applied:
            self._decided["apply"].inc()
        else:
            self._decided["passthrough"].inc()
            metrics.PASSTHROUGH.labels(decision.reason).inc()
        return result, decision

    async def _prepare(self, request: dict[str, Any], d: RequestPlan, t0: float) -> dict[str, Any]:
        cfg = self.config
        if not d.model:
            d.reason = "no_model"
            return request
        if self.upstream is not None:
            facts = self.upstream.model(d.model)
            d.ollama_version, d.context_limit, d.kv_bytes_per_token = (
                self.upstream.version,
                facts.context_length,
                facts.kv_bytes_per_token,
            )
        if "options" in request and not isinstance(request["options"], dict):
            d.reason = "bad_options"  # Ollama will answer it; never replace what the client sent
            return request
        options = client_options(request)
        d.num_predict = num_predict(options)
        d.message_count = message_count(request)
        set_by_client = [name for name in TUNED_OPTIONS if name in options]
        d.num_ctx, d.num_batch = _int_option(options, "num_ctx"), _int_option(options, "num_batch")
        d.client_num_ctx, d.client_num_batch = d.num_ctx, d.num_batch
        if cfg.respect_client_options and len(set_by_client) == len(TUNED_OPTIONS):
            d.reason = "client_options"
            return request
        matcher, tuner = self._clients()
        if matcher.breaker.rejecting():  # decided before any work on the prompt: ~0 cost while down
            return await self._on_failure(request, options, d, "breaker_open")
        text = canonical_text(request)
        if not text:
            d.reason = "empty_text"
            return request
        if not within_cap(text, cfg.max_text_bytes):
            d.reason = "text_too_large"
            return request
        deadline = t0 + cfg.budget_ms / 1000.0
        match, reason = await self._match(matcher, d.model, text, deadline)
        if match is None:
            return await self._on_failure(request, options, d, reason)
        d.template_id, d.prompt_units, d.fingerprints = match.template_id, match.prompt_units, match.fingerprints
        recommend = tuner_pb2.RecommendRequest(
            model=d.model,
            template_id=match.template_id,
            prompt_units=match.prompt_units,
            client_options=set_by_client,
            num_predict=d.num_predict,
            message_count=d.message_count,
            model_context_limit=d.context_limit,
            kv_bytes_per_token=d.kv_bytes_per_token,
            ollama_host=d.ollama_host,
            default_num_ctx=self.defaults_seen.seen(d.model) if self.defaults_seen is not None else 0,
        )
        leases = self._leases
        lease = leases.lease(d.model) if cfg.leases and leases is not None else None
        if lease is not None:
            if not set_by_client and self._covers(lease, d):
                return self._leased(request, options, lease, tuner, recommend, d)
            metrics.LEASES.labels("not_covered").inc()
        rec, reason = await tuner.call("Recommend", recommend, self._timeout(deadline))
        if leases is not None and cfg.leases:
            leases.keep(d.model)
        if rec is None:
            return await self._on_failure(request, options, d, reason)
        self._remember_sizing(d.model, rec)
        if leases is not None and lease is not None and rec.action == tuner_pb2.APPLY and not lease.answers(rec):
            leases.revoke(d.model)  # the tuner moved on: a new lease is fetched on the next request
        d.decision_id = rec.decision_id
        if rec.action != tuner_pb2.APPLY:
            d.reason = "tuner_passthrough"
            return request
        if rec.confidence < cfg.min_confidence:
            d.reason = "low_confidence"
            return request
        if not cfg.apply_options:
            d.reason = "learn_only"
            return request
        return self._apply(request, options, rec.num_ctx, rec.num_batch, d, _APPLIED)

    def _covers(self, lease: ModelLease, d: RequestPlan) -> bool:
        """The lease answers for this request: its template and need are covered, and the model runs with the
        leased options as far as this host knows (this process last sent them; the host saw that context)."""
        if not self.config.apply_options or self._sticky.recall(d.model) != (lease.num_ctx, lease.num_batch):
            return False
        if self._seen_context is not None and self._seen_context(d.model) not in (0, lease.num_ctx):
            return False
        return lease.covers(d.template_id, d.prompt_units, d.message_count, d.num_predict, self.config.min_confidence)

    def _leased(
        self,
        request: dict[str, Any],
        options: dict[str, Any],
        lease: ModelLease,
        tuner: ServiceClient,
        recommend: tuner_pb2.RecommendRequest,
        d: RequestPlan,
    ) -> dict[str, Any]:
        """Send the leased options now; ask Recommend off the request path (the tuner sees every demand)."""
        metrics.LEASES.labels("used").inc()
        assert self._leases is not None
        self._leases.keep(d.model)
        task = asyncio.ensure_future(self._recommend_off_path(tuner, recommend, lease, d))
        self._recommending.add(task)
        task.add_done_callback(self._recommending.discard)
        d.recommending = task
        return self._apply(request, options, lease.num_ctx, lease.num_batch, d, "leased")

    async def _recommend_off_path(
        self, tuner: ServiceClient, recommend: tuner_pb2.RecommendRequest, lease: ModelLease, d: RequestPlan
    ) -> None:
        """The leased request's Recommend: its decision id goes with the outcome when the tuner answered as the
        lease did; otherwise the tuner decided a change (a shrink, a reload), which the model's next request,
        asking Recommend on the request path, carries out."""
        rec = await self._in_background(tuner, "Recommend", recommend)
        if rec is None:
            return
        self._remember_sizing(d.model, rec)
        if lease.answers(rec):
            d.decision_id = rec.decision_id
        elif self._leases is not None:
            self._leases.revoke(d.model)

    def _remember_sizing(self, model: str, rec: tuner_pb2.RecommendResponse) -> None:
        self._guard.remember(model, TunerSaid(rec.units_to_tokens_ratio, rec.num_ctx_cap, rec.num_ctx))

    async def _match(
        self, matcher: ServiceClient, model: str, text: str, deadline: float
    ) -> tuple[MatchAnswer | matcher_pb2.MatchResponse | None, str]:
        """The memo's answer when the text's Match input was matched recently, else a Match call."""
        key, answer = await self._memo.recall(text) if self._memo.enabled else (None, None)
        if answer is not None:
            return answer, ""
        request = matcher_pb2.MatchRequest(model=model, text=text)
        if key is not None and key.units_after:  # a long text: only the start Match reads, and a count
            request = matcher_pb2.MatchRequest(model=model, text=text[: key.read_end], units_after_text=key.units_after)
        match, reason = await matcher.call("Match", request, self._timeout(deadline))
        if match is not None and key is not None:
            self._memo.remember(key.key, match)
        return match, reason

    def _apply(
        self, request: dict[str, Any], options: dict[str, Any], num_ctx: int, num_batch: int, d: RequestPlan, why: str
    ) -> dict[str, Any]:
        result = self._with_options(request, options, num_ctx, num_batch, d, why)
        if d.applied:
            self._sticky.remember(d.model, d.num_ctx, d.num_batch)
        return result

    async def _on_failure(
        self, request: dict[str, Any], options: dict[str, Any], d: RequestPlan, reason: str
    ) -> dict[str, Any]:
        """A service failed: send the runner options the model's last request carried (else the context
        the host sees it loaded with), so Ollama keeps the runner, unless the prompt visibly does not fit
        that context (then a larger one: context_guard.py); with nothing known, pass through."""
        d.reason = reason
        if not self.config.apply_options:
            return request
        known = self._sticky.recall(d.model)
        if known is None and self._loaded_context is not None:
            loaded = await self._loaded_context(d.model)
            known = (loaded, 0) if loaded > 0 else None
        num_ctx, num_batch = known or (0, 0)
        raised = await self._guarded(request, options, d, num_ctx)
        if not (known or raised):
            return request
        result = self._with_options(
            request, options, raised or num_ctx, num_batch, d, "guarded" if raised else "sticky"
        )
        if d.applied:
            (metrics.GUARDED if raised else metrics.STICKY).labels(reason).inc()
            self._sticky.remember(d.model, d.num_ctx, d.num_batch)
        return result

    async def _guarded(self, request: dict[str, Any], options: dict[str, Any], d: RequestPlan, num_ctx: int) -> int:
        """A larger num_ctx when the prompt does not fit ``num_ctx`` (0 = what Ollama has loaded), else 0."""
        if not self._guard.enabled or (self.config.respect_client_options and "num_ctx" in options):
            return 0
        text = "" if d.prompt_units else canonical_text(request)
        if not within_cap(text, self.config.max_text_bytes):
            return 0
        if not num_ctx and self._loaded_context is not None:
            num_ctx = await self._loaded_context(d.model)
        units = d.prompt_units
        if not units and len(text) > OFF_LOOP_CHARS:  # a large prompt is counted off the event loop
            units = await asyncio.to_thread(count_tokens, text)
        return self._guard.raise_to(d.model, text, units, d.message_count, d.num_predict, num_ctx, d.context_limit)

    def _with_options(
        self,
        request: dict[str, Any],
        options: dict[str, Any],
        num_ctx: int,
        num_batch: int,
        d: RequestPlan,
        reason: str,
    ) -> dict[str, Any]:
        new_options = dict(options)
        for name, value in (("num_ctx", num_ctx), ("num_batch", num_batch)):
            if value > 0 and not (self.config.respect_client_options and name in options):
                new_options[name] = int(value)
        if new_options == options:
            d.reason = d.reason if reason in ("sticky", "guarded") else "nothing_to_apply"
            return request
        d.action, d.reason = tuner_pb2.APPLY, reason
        d.num_ctx, d.num_batch = _int_option(new_options, "num_ctx"), _int_option(new_options, "num_batch")
        return {**request, "options": new_options}

    def _timeout(self, deadline: float) -> float:
        return min(self.config.call_timeout_ms / 1000.0, deadline - time.perf_counter())

    # --- after the response ---------------------------------------------------------------------
    def observe(
        self,
        request: dict[str, Any],
        response: dict[str, Any],
        decision: RequestPlan,
        *,
        latency_s: float | None = None,
        ttft_s: float | None = None,
        loaded_context_length: int = 0,
        model_size_bytes: int = 0,
        model_vram_bytes: int = 0,
        runner_load: tuner_pb2.RunnerLoad = tuner_pb2.RUNNER_LOAD_UNKNOWN,
    ) -> None:
        """``request`` (as sent) was answered: note its runner options and queue the outcome for Observe +
        Report; returns at once, never raises."""
        try:
            if not decision.model:
                return
            sent = client_options(request) if isinstance(request, dict) else {}
            self._sticky.remember(decision.model, _int_option(sent, "num_ctx"), _int_option(sent, "num_batch"))
            self._clients()
            assert self._telemetry is not None
            latency = time.monotonic() - decision.started if latency_s is None else latency_s
            stats = response if isinstance(response, dict) else {}
            if self._leases is not None and filled(stats, decision.num_ctx):
                self._leases.revoke(decision.model, RETRY_S)  # until this outcome has reached the tuner
            item = FinishedRequest(
                decision,
                stats,
                latency,
                ttft_s or 0.0,
                self.wall_clock(),
                loaded_context_length,
                model_size_bytes,
                model_vram_bytes,
                runner_load,
            )
            telemetry, pending = self._telemetry, decision.recommending
            if pending is not None and not pending.done():  # its decision id is on the way
                pending.add_done_callback(lambda _done: telemetry.submit(item))
            else:
                telemetry.submit(item)
        except Exception:
            log.exception("observe failed; telemetry dropped")
            metrics.TELEMETRY_DROPPED.labels("error").inc()

    async def flush(self) -> None:
        """Wait until the queued telemetry has been sent or dropped (tests, shutdown)."""
        if self._telemetry is not None and self._loop is asyncio.get_running_loop():
            await asyncio.gather(*self._recommending, return_exceptions=True)
            await self._telemetry.flush()

    async def close(self, flush_timeout_s: float = 2.0) -> None:
        """Flush telemetry (bounded), stop the worker, close the channels."""
        if self._loop is not asyncio.get_running_loop():
            return
        assert self._telemetry and self._matcher and self._tuner and self._leases
        await self._leases.close()
        if self._recommending:
            await asyncio.wait(self._recommending, timeout=flush_timeout_s)
        await self._telemetry.close(flush_timeout_s)
        await asyncio.gather(self._matcher.close(), self._tuner.close())
        self._loop = None

    def connect(self) -> None:
        """Create the channels in the running loop and start connecting them (hosts call this at start-up)."""
        for client in self._clients():
            client.connect()

    def breaker_states(self) -> dict[str, str]:
        return {c.name: c.breaker.state.name.lower() for c in (self._matcher, self._tuner) if c is not None}

    def learning_breaker_states(self) -> dict[str, str]:
        """The breakers of the learning calls (Observe, Report), apart from the request path's."""
        return {c.name: c.learning_breaker.state.name.lower() for c in (self._matcher, self._tuner) if c is not None}

    def channel_states(self) -> dict[str, str]:
        """Connectivity per service channel (idle, connecting, ready, transient_failure, shutdown)."""
        return {c.name: c.channel.get_state().name.lower() for c in (self._matcher, self._tuner) if c is not None}

    async def _fetch_lease(self, model: str) -> tuner_pb2.LeaseResponse | None:
        assert self._tuner is not None
        request = tuner_pb2.LeaseRequest(model=model, ollama_host=self.config.ollama_host)
        answer = await self._in_background(self._tuner, "Lease", request)
        return answer if isinstance(answer, tuner_pb2.LeaseResponse) else None

    async def _in_background(self, service: ServiceClient, method: str, request: Any) -> Any:
        """A memory-only call made off the request path (Lease, a leased request's Recommend): the answer, or
        None. It goes on the request lane's channel (a Report stalled on the database must not stop it), with
        the off-path deadline, and leaves the request path's breaker to the request path's own calls."""
        answer, _reason = await service.call(method, request, self.config.offpath_timeout_ms / 1000.0, background=True)
        return answer

    def _clients(self) -> tuple[ServiceClient, ServiceClient]:
        loop = asyncio.get_running_loop()
        if self._loop is not loop:  # first use, or the host moved to another loop: channels are loop-bound
            cfg = self.config
            self._matcher = ServiceClient("matcher", cfg.matcher_address, matcher_pb2_grpc.MatcherStub, cfg)
            self._tuner = ServiceClient("tuner", cfg.tuner_address, tuner_pb2_grpc.TunerStub, cfg)
            self._telemetry = TelemetryPipeline(
                self._matcher,
                self._tuner,
                self._probes,
                cfg.queue_size,
                cfg.batch_size,
                cfg.offpath_timeout_ms / 1000.0,
            )
            self._leases = LeaseBook(self._fetch_lease, self._clock, self._lease_pause)
            self._loop = loop
        assert self._matcher is not None and self._tuner is not None
        return self._matcher, self._tuner


def _int_option(options: dict[str, Any], name: str) -> int:
    value = options.get(name)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return 0
    try:
        return int(value)
    except (ValueError, OverflowError):  # NaN, inf
        return 0
