"""The tuner's core: policy in memory, outcomes validated and folded, state written behind.

Everything on the request path (recommend) is memory-only; reports are folded at once when
this process is the writer and queued unfolded while it is a standby.
"""
from __future__ import annotations

import dataclasses
import itertools
import logging
import os
import time
from collections import Counter, OrderedDict
from dataclasses import dataclass
from typing import Any

import asyncpg

from . import limits, metrics, store
from .hosts import split_key
from .policy import APPLY, REASON_CODES, Decision, Learned, Policy, Request
from .residency import Residency
from .settings import TunerSettings
from .state import ModelState, TemplateState, rung_for
from .validation import Invalid, Valid, validate
from .writer import Dirty, WriteBehind

log = logging.getLogger(__name__)

FLAG_RELOAD, FLAG_AVOIDED, FLAG_PREVENTED = 1, 2, 4
ACTION_LABEL = {1: "passthrough", 2: "apply"}
MAX_HOST_LABELS = 32


@dataclass(frozen=True)
class Pending:
    """A valid outcome waiting to be folded (standby) with what its decision id said."""

    valid: Valid
    outcome: Any  # tuner_pb2.Outcome
    reason_code: str
    flags: int


def decision_id(prefix: str, seq: int, decision: Decision) -> str:
    flags = ((FLAG_RELOAD if decision.reload else 0) | (FLAG_AVOIDED if decision.reload_avoided else 0)
             | (FLAG_PREVENTED if decision.truncation_prevented else 0))
    return f"{prefix}{seq:x}.{REASON_CODES.index(decision.reason_code)}.{flags}"


def parse_decision_id(value: str) -> tuple[str, int]:
    """(reason_code, flags) from a decision id; ('', 0) when absent or not ours."""
    parts = value.split(".")
    if len(parts) != 3 or not parts[1].isdigit() or not parts[2].isdigit():
        return "", 0
    index = int(parts[1])
    return (REASON_CODES[index] if index < len(REASON_CODES) else ""), int(parts[2]) & 7


class TunerCore:
    """Policy + validation + write-behind; the gRPC layer only translates messages."""

    def __init__(self, pool: asyncpg.Pool, settings: TunerSettings) -> None:
        self.settings = settings
        self.policy = Policy(settings.policy)
        self.pool = pool
        self.writer = WriteBehind(pool, settings, self._snapshot, self._promoted)
        self.residency = Residency(pool, self.policy, settings.templates_in_memory, lambda: self.writer.dirty)
        self._prefix = os.urandom(3).hex() + "-"
        self._seq = itertools.count(1)
        self._seen: OrderedDict[str, None] = OrderedDict()
        self._unfolded: list[Pending] = []
        self._host_labels: set[str] = set()  # label values of MODELS_BY_HOST set so far

    # ---- lifecycle ---------------------------------------------------------------------------
    async def start(self) -> None:
        """Take the writer lock (loading state on promotion), or load state read-only as a standby."""
        await self.writer.start()
        if self.read_only:
            await self._load()

    async def stop(self) -> None:
        await self.residency.close()
        await self.writer.stop(self.settings.flush_interval_seconds * 10)

    async def _load(self) -> None:
        async with self.pool.acquire() as conn:
            self.policy.models = await store.load_state(conn)
            ids = await store.recent_outcome_ids(conn, self.settings.dedupe_window)
        self._seen = OrderedDict.fromkeys(ids)
        self._update_gauges()
        log.info("tuner state loaded: %d models", len(self.policy.models))

    async def _promoted(self) -> None:
        """Became the writer: reload what the previous writer left, then fold what waited."""
        await self._load()
        pending, self._unfolded = self._unfolded, []
        for item in pending:
            await self.residency.ensure(item.valid.observation.model, item.valid.observation.template_id)
        for item in pending:
            self._fold(item)
        metrics.OUTCOME_BUFFER.set(len(self.writer.rows))

    @property
    def read_only(self) -> bool:
        """A standby that never held the writer lock (a writer that lost its session keeps learning)."""
        return not self.writer.ever_writer

    # ---- request path ------------------------------------------------------------------------
    def recommend(self, req: Request, context_limit: int = 0, kv_bytes_per_token: int = 0) -> tuple[Decision, str]:
        """Decide, then apply the hard limits and caps (``context_limit``/``kv_bytes_per_token`` from /api/show)."""
        known = self.policy.models.get(req.model)
        if known is not None:
            limits.learn(known, context_limit, kv_bytes_per_token)
            known.num_ctx_cap = limits.hard_cap(req.model, known, self.settings.limits).value
        decision = self._limited(req, self.policy.recommend(req), context_limit, kv_bytes_per_token)
        model = self.policy.models.get(req.model)
        if req.template_id and model is not None and req.template_id not in model.templates:
            self.residency.want(req.model, req.template_id)
        did = decision_id(self._prefix, next(self._seq), decision)
        metrics.RECOMMENDATIONS.labels(ACTION_LABEL[decision.action], decision.reason_code).inc()
        if decision.reload:
            metrics.RELOADS.labels("caused").inc()
        if decision.reload_avoided:
            metrics.RELOADS.labels("avoided").inc()
        if decision.truncation_prevented:
            metrics.TRUNCATIONS.labels("prevented").inc()
        if decision.action == APPLY:
            model = self.policy.models.get(req.model)
            if model is not None:
                metrics.KV_TOKENS_SAVED.inc(max(0, self.policy.default_ctx(model) - decision.num_ctx))
                if decision.reload and not self.read_only:
                    self.writer.touch(req.model)
        return decision, did

    def _limited(self, req: Request, decision: Decision, context_limit: int, kv_bytes_per_token: int) -> Decision:
        """The decision within the caps; the believed-loaded context follows a clamped APPLY."""
        if decision.action != APPLY:
            return decision
        model = self.policy.models.get(req.model)
        probe = model if model is not None else ModelState()
        limits.learn(probe, context_limit, kv_bytes_per_token)
        probe.num_ctx_cap = limits.hard_cap(req.model, probe, self.settings.limits).value
        value, why = limits.clamp(req.model, probe, decision.num_ctx, decision.need, self.policy.rungs(probe),
                                  self.settings.limits)
        if not why:
            return decision
        if value < decision.num_ctx:
            metrics.CAPPED.inc()
        if model is not None and model.loaded_ctx == decision.num_ctx:
            model.loaded_ctx = value
        return dataclasses.replace(decision, num_ctx=value, reason=f"{decision.reason}; {why}")

    # ---- reports -----------------------------------------------------------------------------
    def report(self, outcomes: list[Any]) -> tuple[int, int, list[tuple[int, str]]]:
        """Validate, dedupe and fold a batch; returns (accepted, duplicates, [(index, reason)])."""
        accepted = duplicates = 0
        rejected: list[tuple[int, str]] = []
        now = time.time()
        for index, outcome in enumerate(outcomes):
            try:
                valid = validate(outcome, now)
            except Invalid as exc:
                metrics.OUTCOMES_REJECTED.labels(exc.rule).inc()
                rejected.append((index, str(exc)))
                continue
            if outcome.outcome_id in self._seen:
                duplicates += 1
                continue
            self._remember(outcome.outcome_id)
            code, flags = parse_decision_id(outcome.decision_id)
            item = Pending(valid, outcome, code, flags)
            if self.read_only:
                if len(self._unfolded) < self.settings.buffer_max:
                    self._unfolded.append(item)
                else:
                    metrics.OUTCOMES_DROPPED.inc()
            else:
                self._fold(item)
            accepted += 1
        metrics.OUTCOMES.labels("accepted").inc(accepted)
        metrics.OUTCOMES.labels("duplicate").inc(duplicates)
        metrics.OUTCOMES.labels("rejected").inc(len(rejected))
        self._update_gauges()
        return accepted, duplicates, rejected

    def _remember(self, outcome_id: str) -> None:
        self._seen[outcome_id] = None
        if len(self._seen) > self.settings.dedupe_window:
            self._seen.popitem(last=False)

    def _fold(self, item: Pending) -> None:
        obs = item.valid.observation
        learned = self.policy.observe(obs)
        self.residency.bound(obs.model, self.policy.models[obs.model])
        limits.learn(self.policy.models[obs.model], item.outcome.model_context_limit, item.outcome.kv_bytes_per_token)
        if learned.foreign:
            metrics.TRUNCATIONS.labels("foreign_context").inc()
        elif learned.truncated:
            metrics.TRUNCATIONS.labels("detected").inc()
        if learned.reloaded:
            metrics.RELOADS.labels("observed").inc()
        self.writer.touch(obs.model, obs.template_id)
        self.writer.enqueue(self._row(item, learned))

    def _row(self, item: Pending, learned: Learned) -> tuple[Any, ...]:
        o, obs = item.outcome, item.valid.observation
        model = self.policy.models[obs.model]
        saved = self.policy.default_ctx(model) - o.num_ctx if obs.applied and o.num_ctx > 0 else 0
        return store.outcome_row(dict(
            outcome_id=o.outcome_id, decision_id=o.decision_id[:128], model=o.model, template_id=o.template_id,
            prompt_units=o.prompt_units, message_count=o.message_count, action=o.action, num_ctx=o.num_ctx,
            num_batch=o.num_batch, num_predict=o.num_predict, prompt_eval_count=o.prompt_eval_count,
            eval_count=o.eval_count, total_duration_ns=o.total_duration_ns, load_duration_ns=o.load_duration_ns,
            prompt_eval_duration_ns=o.prompt_eval_duration_ns, eval_duration_ns=o.eval_duration_ns,
            done_reason=o.done_reason, counts_known=o.counts_known, latency_seconds=o.latency_seconds,
            ttft_seconds=o.ttft_seconds, host_rss_bytes=o.host_rss_bytes,
            gpu_memory_used_bytes=o.gpu_memory_used_bytes, gpu_memory_total_bytes=o.gpu_memory_total_bytes,
            loaded_context_length=o.loaded_context_length, model_size_bytes=o.model_size_bytes,
            model_vram_bytes=o.model_vram_bytes, reason_code=item.reason_code,
            reload_caused=bool(item.flags & FLAG_RELOAD), reload_avoided=bool(item.flags & FLAG_AVOIDED),
            truncation_prevented=bool(item.flags & FLAG_PREVENTED), truncation_detected=learned.truncated,
            kv_tokens_saved=saved, finished_at=item.valid.finished_at, ollama_host=o.ollama_host,
            prompt_eval_cached_count=o.prompt_eval_cached_count))

    def _snapshot(self, dirty: Dirty) -> tuple[list[tuple[Any, ...]], list[store.RuleRow], list[tuple[Any, ...]]]:
        models, rules, arms = [], [], []
        for name in sorted(dirty.models):
            model = self.policy.models.get(name)
            if model is not None and model.confirmed:
                models.append(store.model_row(name, model, self.policy.ratio_upper(model)))
                arms.extend(store.arm_rows(name, model))
        for name, template_id in sorted(dirty.rules):
            model = self.policy.models.get(name)
            template = model.templates.get(template_id) if model and model.confirmed else None
            if template is not None:
                rules.append(store.rule_row(name, template_id, template, self.policy.confidence(template)))
        return models, rules, arms

    def _update_gauges(self) -> None:
        metrics.MODELS.set(len(self.policy.models))
        by_host = Counter(split_key(key)[1] for key in self.policy.models)
        shown = Counter(dict(by_host.most_common(MAX_HOST_LABELS)))
        if len(by_host) > MAX_HOST_LABELS:
            shown["other"] += sum(by_host.values()) - sum(shown.values())
        for host in self._host_labels - shown.keys():
            metrics.MODELS_BY_HOST.labels(host).set(0)
        for host, count in shown.items():
            metrics.MODELS_BY_HOST.labels(host).set(count)
        self._host_labels = set(shown)
        metrics.TEMPLATES.set(sum(len(m.templates) for m in self.policy.models.values()))
        metrics.OUTCOME_BUFFER.set(len(self.writer.rows) + len(self._unfolded))

    # ---- operators ---------------------------------------------------------------------------
    def pin(self, model_name: str, template_id: int, num_ctx: int, num_batch: int) -> None:
        """Pin a template (the service has validated names and values with admin.check_pin)."""
        model = self.policy.models.setdefault(model_name, ModelState())
        model.confirmed = True  # the operator vouches for it
        template = model.templates.setdefault(template_id, TemplateState())
        template.pinned, template.pin_ctx, template.pin_batch = True, num_ctx, num_batch
        template.cached_need = -1.0
        self.writer.touch(model_name, template_id)

    def reset(self, model_name: str, template_id: int) -> bool:
        model = self.policy.models.get(model_name)
        if model is None or template_id not in model.templates:
            return False
        del model.templates[template_id]
        if model.managed:  # the next request moves the model down to what its other templates need
            rungs, margin = self.policy.rungs(model), self.policy.margin_for(model)
            keep = rung_for(max((self.policy.template_need(t, margin) for t in model.templates.values()),
                                default=0.0), rungs)
            model.claims = {rung: seen for rung, seen in model.claims.items() if rung <= keep}
            model.relieve = ("reset", f"template {template_id} was reset")
        self.writer.forget(model_name, template_id)
        self.residency.forget(model_name, template_id)
        self._update_gauges()
        return True

    def reset_model(self, model_name: str) -> bool:
        """Forget everything learned for a model: its requests pass through again (Ollama's defaults)."""
        if self.policy.models.pop(model_name, None) is None:
            return False
        self.writer.forget(model_name, 0)
        self._update_gauges()
        return True

    async def summary(self, period_s: float, model: str) -> list[asyncpg.Record]:
        if self.writer.is_writer:
            await self.writer.flush()
        reload_ns = int(self.settings.policy.reload_threshold_seconds * 1e9)
        async with self.pool.acquire() as conn:
            return await store.summary(conn, period_s, model, reload_ns)

