"""The tuner's core: policy in memory, outcomes validated and folded, state written behind.

Everything on the request path (recommend) is memory-only. Reports are folded at once while this
process holds the writer lock, and queued unfolded otherwise (a standby, or a writer that lost its
lock: its state may have diverged from what another writer stored). On gaining the lock the core
reloads stored state, then folds what waited.
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
import os
import time
from collections import Counter, OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import asyncpg

from ollama_optimizer.gen.optimizer.v1 import tuner_pb2

from . import limits, metrics, store, tentative
from .accounting import MAX_HOST_LABELS, Accounting, Assessed
from .decision_token import NONE, DecisionFields, DecisionSigner, signing_key
from .evidence import HostVersions
from .hosts import split_key
from .policy import APPLY, Advice, Demand, Learned, Observation, Policy
from .residency import Residency
from .settings import TunerSettings
from .state import ModelState, TemplateState, rung_for
from .validation import Invalid, Valid, validate
from .writer import Dirty, Entry, WriteBehind

log = logging.getLogger(__name__)

ACTION_LABEL = {1: "passthrough", 2: "apply"}


@dataclass(eq=False)
class Pending:
    """A valid outcome, what its verified decision id said, and once folded its assessment and buffered row."""

    valid: Valid
    outcome: tuner_pb2.Outcome
    decision: DecisionFields
    entry: Entry[Pending] | None = None
    assessed: Assessed | None = None

    @property
    def stored(self) -> bool:
        return self.entry is not None and self.entry.stored


@dataclass
class ReportResult:
    """One Report batch by request index: outcomes kept (stored or buffered), duplicates, dropped, rejected."""

    kept: dict[int, Pending]
    duplicates: list[int]
    dropped: list[int]
    rejected: list[tuple[int, str]]

    def all_stored(self) -> bool:
        return all(item.stored for item in self.kept.values())

    def buffered(self) -> list[int]:
        """Indexes of kept outcomes not stored yet (in this process's memory only)."""
        return [index for index, item in self.kept.items() if not item.stored]


class TunerCore:
    """Policy + validation + write-behind; the gRPC layer only translates messages."""

    def __init__(self, pool: asyncpg.Pool, settings: TunerSettings) -> None:
        self.settings = settings
        self.policy = Policy(settings.policy)
        self.pool = pool
        self.writer = WriteBehind(
            pool, settings, self._snapshot, self._promoted, self._demoted, self._load, self._stored
        )
        self.accounting = Accounting(self.policy)
        self.residency = Residency(pool, self.policy, settings.templates_in_memory, lambda: self.writer.dirty)
        self.signer = DecisionSigner(signing_key(settings.decision_key))
        self._prefix = os.urandom(3).hex()
        self._seq = itertools.count(1)
        self._seen: OrderedDict[str, None] = OrderedDict()
        self._unfolded: list[Pending] = []
        self._host_labels: set[str] = set()  # label values of MODELS_BY_HOST set so far
        self.host_versions = HostVersions()

    # ---- lifecycle ---------------------------------------------------------------------------
    async def start(self) -> None:
        """Take the writer lock (loading state on promotion), or load state read-only as a standby."""
        await self.writer.start()
        if not self.writer.ever_writer:
            await self._load()

    async def stop(self) -> None:
        await self.residency.close()
        await self.writer.stop(self.settings.flush_interval_seconds * 10)

    async def _load(self) -> None:
        """Replace the learned state by what is stored; outcome ids still waiting stay remembered."""
        async with self.pool.acquire() as conn:
            self.policy.models = await store.load_state(conn)
            ids = await store.recent_outcome_ids(conn, self.settings.dedupe_window)
        self.host_versions = HostVersions()
        self.accounting.restart()
        for key, model in self.policy.models.items():
            self.host_versions.learn(split_key(key)[1], model.ollama_version, model.version_at)
        self._seen = OrderedDict.fromkeys(ids)
        for item in self._unfolded:
            self._remember(item.outcome.outcome_id)
        self._update_gauges()
        log.info("tuner state loaded: %d models", len(self.policy.models))

    async def _promoted(self) -> None:
        """Became the writer: reload what is stored (another writer may have written meanwhile), then
        fold what waited, except outcomes already stored (a commit whose answer the lock loss cut off)."""
        await self._load()
        ids = [item.outcome.outcome_id for item in self._unfolded]
        stored: set[str] = set()
        if ids:
            async with self.pool.acquire() as conn:
                stored = await store.stored_outcome_ids(conn, ids)
        for key in {(i.valid.observation.model, i.valid.observation.template_id) for i in self._unfolded}:
            await self.residency.ensure(*key)
        pending, self._unfolded = self._unfolded, []  # no await from here: Reports arriving meanwhile wait
        for item in pending:
            if item.outcome.outcome_id in stored:
                self._stored([item])
            else:
                self._fold(item)
        self._update_gauges()

    def _demoted(self, sources: list[Pending]) -> None:
        """Lost the writer lock: what was folded but not stored waits again, ahead of newer outcomes."""
        for item in sources:
            item.entry = None
        self._unfolded[:0] = sources
        self._update_gauges()

    def _stored(self, items: list[Pending]) -> None:
        """Their rows are committed: count their figures (once: an outcome is stored once)."""
        for item in items:
            if item.assessed is not None:
                self.accounting.count(item.assessed)
                item.assessed = None

    @property
    def read_only(self) -> bool:
        """Not the writer: Reports wait unfolded, operators' changes are refused."""
        return not self.writer.is_writer

    # ---- request path ------------------------------------------------------------------------
    def recommend(self, req: Demand, context_limit: int = 0, kv_bytes_per_token: int = 0) -> tuple[Advice, str]:
        """Decide, then apply the hard limits and caps (``context_limit``/``kv_bytes_per_token`` from /api/show)."""
        known = self.policy.models.get(req.model)
        if known is not None:
            limits.learn(known, context_limit, kv_bytes_per_token)
            known.num_ctx_cap = limits.hard_cap(req.model, known, self.settings.limits).value
        decision = self._limited(req, self.policy.recommend(req), context_limit, kv_bytes_per_token)
        model = self.policy.models.get(req.model)
        if req.template_id and model is not None and req.template_id not in model.templates:
            self.residency.want(req.model, req.template_id)
        did = self.signer.issue(
            f"{self._prefix}{next(self._seq):x}",
            DecisionFields(
                decision.reason_code, decision.reload, decision.reload_avoided, decision.truncation_prevented
            ),
        )
        metrics.RECOMMENDATIONS.labels(
            self.accounting.model_label(split_key(req.model)[0]), ACTION_LABEL[decision.action], decision.reason_code
        ).inc()
        if decision.reason_code == "runaway_stopped":
            metrics.RUNAWAY_STOPPED.inc()
        if decision.action == APPLY and decision.reload and not self.read_only and req.model in self.policy.models:
            self.writer.touch(req.model)
        return decision, did

    def sizing(self, key: str, context_limit: int = 0) -> tuple[float, int]:
        """What a host needs to size a request while the tuner cannot answer: the tokens-per-unit estimate and
        the hard cap of the model (RecommendResponse's units_to_tokens_ratio, num_ctx_cap); ``context_limit``
        from /api/show."""
        model = self.policy.models.get(key) or ModelState(context_limit=context_limit)
        return self.policy.ratio_upper(model), limits.hard_cap(key, model, self.settings.limits).value

    def _limited(self, req: Demand, decision: Advice, context_limit: int, kv_bytes_per_token: int) -> Advice:
        """The decision within the caps; the believed-loaded context follows a clamped APPLY."""
        if decision.action != APPLY:
            return decision
        model = self.policy.models.get(req.model)
        probe = model if model is not None else ModelState()
        limits.learn(probe, context_limit, kv_bytes_per_token)
        probe.num_ctx_cap = limits.hard_cap(req.model, probe, self.settings.limits).value
        value, why = limits.clamp(
            req.model,
            probe,
            decision.num_ctx,
            decision.need,
            self.policy.rungs(probe),
            self.settings.limits,
            self.policy.margin_for(probe),
            load=decision.reload or not probe.managed,
        )
        if not why:
            return decision
        if value < decision.num_ctx:
            metrics.CAPPED.inc()
        if model is not None and model.loaded_ctx == decision.num_ctx:
            model.loaded_ctx = value
        return dataclasses.replace(decision, num_ctx=value, reason=f"{decision.reason}; {why}")

    # ---- reports -----------------------------------------------------------------------------
    def report(self, outcomes: Sequence[tuner_pb2.Outcome]) -> ReportResult:
        """Validate, dedupe and fold (or queue) a batch."""
        result = ReportResult({}, [], [], [])
        now = time.time()
        for index, outcome in enumerate(outcomes):
            try:
                valid = validate(outcome, now)
            except Invalid as exc:
                metrics.OUTCOMES_REJECTED.labels(exc.rule).inc()
                result.rejected.append((index, str(exc)))
                continue
            if outcome.outcome_id in self._seen:
                result.duplicates.append(index)
                continue
            item = Pending(valid, outcome, self._verified(outcome.decision_id))
            if self.read_only:
                kept = len(self._unfolded) < self.settings.buffer_max
                if kept:
                    self._unfolded.append(item)
                else:
                    metrics.OUTCOMES_DROPPED.inc()
            else:
                kept = self._fold(item)
            if kept:  # a dropped outcome may come again: its id is not remembered
                self._remember(outcome.outcome_id)
                result.kept[index] = item
            else:
                result.dropped.append(index)
        metrics.OUTCOMES.labels("accepted").inc(len(result.kept))
        metrics.OUTCOMES.labels("duplicate").inc(len(result.duplicates))
        metrics.OUTCOMES.labels("rejected").inc(len(result.rejected))
        metrics.OUTCOMES.labels("dropped").inc(len(result.dropped))
        self._update_gauges()
        return result

    def _verified(self, decision_id: str) -> DecisionFields:
        if not decision_id:
            return NONE
        fields = self.signer.verify(decision_id)
        if fields is None:
            metrics.DECISIONS_UNVERIFIED.inc()
            return NONE
        return fields

    def _remember(self, outcome_id: str) -> None:
        self._seen[outcome_id] = None
        if len(self._seen) > self.settings.dedupe_window:
            self._seen.popitem(last=False)

    def _fold(self, item: Pending) -> bool:
        """Learn from the outcome and buffer its row; False when the buffer is full (row dropped)."""
        obs = self._with_host_version(item.valid.observation)
        learned = self.policy.observe(obs)
        self.residency.bound(obs.model, self.policy.models[obs.model])
        limits.learn(self.policy.models[obs.model], item.outcome.model_context_limit, item.outcome.kv_bytes_per_token)
        item.assessed = assessed = self.accounting.assess(item.outcome, obs, learned)
        self.writer.touch(obs.model, obs.template_id)
        item.entry = self.writer.enqueue(self._row(item, learned, assessed), item)
        return item.entry is not None

    def _with_host_version(self, obs: Observation) -> Observation:
        """An outcome that reports its Ollama version teaches its host's; one without is read as its host's."""
        host = split_key(obs.model)[1]
        if not obs.ollama_version:
            return dataclasses.replace(obs, ollama_version=self.host_versions.version(host))
        self.host_versions.learn(host, obs.ollama_version, obs.finished_at)
        model = self.policy.models.setdefault(obs.model, ModelState())
        if obs.finished_at >= model.version_at:
            model.ollama_version, model.version_at = obs.ollama_version, obs.finished_at
        return obs

    def _row(self, item: Pending, learned: Learned, assessed: Assessed) -> tuple[Any, ...]:
        o, obs = item.outcome, item.valid.observation
        model = self.policy.models[obs.model]
        known = self.policy.default_context(model).known
        saved = max(known - o.num_ctx, 0) if obs.applied and o.num_ctx > 0 else 0
        return store.outcome_row(
            dict(
                outcome_id=o.outcome_id,
                decision_id=o.decision_id[:128],
                model=o.model,
                template_id=o.template_id,
                prompt_units=o.prompt_units,
                message_count=o.message_count,
                action=o.action,
                num_ctx=o.num_ctx,
                num_batch=o.num_batch,
                num_predict=o.num_predict,
                prompt_eval_count=o.prompt_eval_count,
                eval_count=o.eval_count,
                total_duration_ns=o.total_duration_ns,
                load_duration_ns=o.load_duration_ns,
                prompt_eval_duration_ns=o.prompt_eval_duration_ns,
                eval_duration_ns=o.eval_duration_ns,
                done_reason=o.done_reason,
                counts_known=o.counts_known,
                latency_seconds=o.latency_seconds,
                ttft_seconds=o.ttft_seconds,
                host_rss_bytes=o.host_rss_bytes,
                gpu_memory_used_bytes=o.gpu_memory_used_bytes,
                gpu_memory_total_bytes=o.gpu_memory_total_bytes,
                loaded_context_length=o.loaded_context_length,
                model_size_bytes=o.model_size_bytes,
                model_vram_bytes=o.model_vram_bytes,
                reason_code=item.decision.reason_code,
                reload_caused=item.decision.reload_caused,
                reload_avoided=item.decision.reload_avoided,
                truncation_prevented=item.decision.truncation_prevented,
                truncation_detected=learned.truncated,
                kv_tokens_saved=saved,
                finished_at=item.valid.finished_at,
                ollama_host=o.ollama_host,
                prompt_eval_cached_count=o.prompt_eval_cached_count,
                runner_loaded=learned.reloaded,
                load_cause=assessed.benefit.load_cause,
                baseline_reload=assessed.benefit.baseline_reload,
                baseline_num_ctx=assessed.benefit.baseline_ctx,
                baseline_truncated=assessed.benefit.baseline_truncated,
                prompt_seconds_baseline=assessed.prompt_seconds_baseline,
            )
        )

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
            keep = rung_for(
                max((self.policy.template_need(t, margin) for t in model.templates.values()), default=0.0), rungs
            )
            model.claims = {rung: seen for rung, seen in model.claims.items() if rung <= keep}
            tentative.forget_template(model, template_id)
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
            try:
                await self.writer.flush()
            except store.FenceLost:  # demoted: the figures below are what the current writer stored
                pass
        async with self.pool.acquire() as conn:
            return await store.summary(conn, period_s, model)
