"""Postgres persistence of the tuner: load state at start, write outcomes and dirty state in batches."""

from __future__ import annotations

import json
import operator
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import asyncpg

from ollama_optimizer.db import DbConn

from .evidence import UNKNOWN
from .sketch import LogHistogram
from .state import ArmStats, ModelState, TemplateState

# Single-writer advisory lock key ("tuner" in ASCII).
WRITER_LOCK_KEY = 0x74756E6572


class FenceLost(Exception):
    """The session a write went through no longer holds the single-writer lock: nothing was written."""


# tuner_outcome columns written per outcome, with their unnest array types: the one list of the order
# (rows are built by name with outcome_row, never as positional tuples elsewhere).
OUTCOME_FIELDS = (
    ("outcome_id", "text"),
    ("decision_id", "text"),
    ("model", "text"),
    ("template_id", "int8"),
    ("prompt_units", "int4"),
    ("message_count", "int4"),
    ("action", "int2"),
    ("num_ctx", "int4"),
    ("num_batch", "int4"),
    ("num_predict", "int4"),
    ("prompt_eval_count", "int8"),
    ("eval_count", "int8"),
    ("total_duration_ns", "int8"),
    ("load_duration_ns", "int8"),
    ("prompt_eval_duration_ns", "int8"),
    ("eval_duration_ns", "int8"),
    ("done_reason", "text"),
    ("counts_known", "bool"),
    ("latency_seconds", "float8"),
    ("ttft_seconds", "float8"),
    ("host_rss_bytes", "int8"),
    ("gpu_memory_used_bytes", "int8"),
    ("gpu_memory_total_bytes", "int8"),
    ("loaded_context_length", "int8"),
    ("model_size_bytes", "int8"),
    ("model_vram_bytes", "int8"),
    ("reason_code", "text"),
    ("reload_caused", "bool"),
    ("reload_avoided", "bool"),
    ("truncation_prevented", "bool"),
    ("truncation_detected", "bool"),
    ("kv_tokens_saved", "int8"),
    ("finished_at", "float8"),
    ("ollama_host", "text"),
    ("prompt_eval_cached_count", "int8"),
    ("runner_loaded", "bool"),
    ("load_cause", "int2"),
    ("baseline_reload", "bool"),
    ("baseline_num_ctx", "int4"),
    ("baseline_truncated", "bool"),
    ("prompt_seconds_baseline", "float8"),
)
OUTCOME_COLUMNS = tuple(name for name, _ in OUTCOME_FIELDS)
OUTCOME_TYPES = tuple(kind for _, kind in OUTCOME_FIELDS)
_OUTCOME_ORDER: Callable[[dict[str, Any]], tuple[Any, ...]] = operator.itemgetter(*OUTCOME_COLUMNS)
_UNNEST = ", ".join(f"${i + 1}::{t}[]" for i, t in enumerate(OUTCOME_TYPES))
_SELECT = ", ".join("to_timestamp(finished_at)" if c == "finished_at" else c for c in OUTCOME_COLUMNS)
INSERT_OUTCOMES = (
    f"INSERT INTO tuner_outcome ({', '.join(OUTCOME_COLUMNS)}) "
    f"SELECT {_SELECT} FROM unnest({_UNNEST}) AS t({', '.join(OUTCOME_COLUMNS)}) "
    "ON CONFLICT (outcome_id) DO NOTHING"
)


def outcome_row(values: dict[str, Any]) -> tuple[Any, ...]:
    """One tuner_outcome row in OUTCOME_COLUMNS order from a dict keyed by column (all of them, no others)."""
    if len(values) != len(OUTCOME_COLUMNS):
        raise ValueError(f"outcome row has {sorted(values)}, expected {OUTCOME_COLUMNS}")
    return _OUTCOME_ORDER(values)


@dataclass(frozen=True)
class RuleRow:
    """A (model, template) snapshot taken on the event loop, written later."""

    model: str
    template_id: int
    ctx_value: int
    batch_value: int
    samples: int
    confidence: float
    successes: int
    pinned: bool
    pin_batch: int
    last_safe: int
    truncations: int
    state: str


# ---- state <-> rows --------------------------------------------------------------------------
def model_row(name: str, m: ModelState, ratio_upper: float) -> tuple[Any, ...]:
    state = {
        "ratio": m.ratio.to_json(),
        "request_s": m.request_s,
        "gpu_free": m.gpu_free,
        "gpu_total": m.gpu_total,
        "class_tokens": {str(k): v for k, v in m.class_tokens.items()},
        "spt": {str(k): v for k, v in m.seconds_per_token.items()},
        "tight": m.tight,
        "batch_cap": m.batch_cap,
        "counts": m.count_semantics,
        "version": m.ollama_version,
        "version_at": m.version_at,
    }
    return (
        name,
        ratio_upper,
        m.calibration_samples,
        m.managed,
        m.loaded_ctx,
        m.loaded_batch,
        m.default_ctx,
        m.context_limit,
        m.reload_cost_s,
        m.reloads,
        m.requests,
        json.dumps(state),
    )


def rule_row(model: str, template_id: int, t: TemplateState, confidence: float) -> RuleRow:
    state = {"need": t.need.to_json(), "output": t.output.to_json(), "floor": t.floor_ctx, "last_seen": t.last_seen}
    return RuleRow(
        model,
        template_id,
        t.pin_ctx if t.pinned else t.current_ctx,
        t.pin_batch if t.pinned else t.current_batch,
        t.observations,
        confidence,
        t.successes,
        t.pinned,
        t.pin_batch,
        t.last_safe_ctx,
        t.truncations,
        json.dumps(state),
    )


def arm_rows(name: str, m: ModelState) -> list[tuple[Any, ...]]:
    return [(name, klass, batch, s.pulls, s.mean) for (klass, batch), s in m.arms.items()]


def _model_from(r: asyncpg.Record) -> ModelState:
    state = json.loads(r["state"]) if isinstance(r["state"], str) else dict(r["state"])
    return ModelState(
        ratio=LogHistogram.from_json(state.get("ratio")),
        calibration_samples=r["calibration_samples"],
        managed=r["managed"],
        loaded_ctx=r["loaded_num_ctx"],
        loaded_batch=r["loaded_num_batch"],
        default_ctx=r["default_num_ctx"],
        context_limit=r["context_limit"],
        reload_cost_s=r["reload_cost_seconds"],
        reloads=r["reloads"],
        requests=r["requests"],
        request_s=float(state.get("request_s", 0.0)),
        gpu_free=int(state.get("gpu_free", 0)),
        gpu_total=int(state.get("gpu_total", 0)),
        class_tokens={int(k): float(v) for k, v in (state.get("class_tokens") or {}).items()},
        seconds_per_token={int(k): float(v) for k, v in (state.get("spt") or {}).items()},
        tight=str(state.get("tight") or ""),
        batch_cap=int(state.get("batch_cap") or 0),
        count_semantics=str(state.get("counts") or UNKNOWN),
        ollama_version=str(state.get("version") or ""),
        version_at=float(state.get("version_at") or 0.0),
    )


def _template_from(ctx: asyncpg.Record, batch: asyncpg.Record | None) -> TemplateState:
    state = json.loads(ctx["state"]) if isinstance(ctx["state"], str) else dict(ctx["state"])
    pinned = bool(ctx["pinned"])
    return TemplateState(
        need=LogHistogram.from_json(state.get("need")),
        output=LogHistogram.from_json(state.get("output")),
        observations=ctx["sample_count"],
        successes=ctx["success_count"],
        truncations=ctx["truncations"],
        last_safe_ctx=ctx["last_safe_value"],
        floor_ctx=int(state.get("floor", 0)),
        current_ctx=ctx["value"],
        current_batch=batch["value"] if batch else 0,
        pinned=pinned,
        pin_ctx=ctx["value"] if pinned else 0,
        pin_batch=batch["value"] if pinned and batch else 0,
        last_seen=int(state.get("last_seen", 0)),
    )


# ---- queries -----------------------------------------------------------------------------------
async def load_state(conn: DbConn) -> dict[str, ModelState]:
    """Every model and arm, and the pinned templates; other templates are loaded on demand (load_template)."""
    models = {r["model"]: _model_from(r) for r in await conn.fetch("SELECT * FROM tuner_model")}
    rules: dict[tuple[str, int], dict[str, asyncpg.Record]] = {}
    for r in await conn.fetch("SELECT * FROM tuner_rule WHERE pinned"):
        rules.setdefault((r["model"], r["template_id"]), {})[r["param"]] = r
    for (name, template_id), params in rules.items():
        if "num_ctx" in params:
            model = models.setdefault(name, ModelState())
            model.templates[template_id] = _template_from(params["num_ctx"], params.get("num_batch"))
    for r in await conn.fetch("SELECT model, size_class, num_batch, pulls, reward_mean FROM tuner_arm"):
        model = models.setdefault(r["model"], ModelState())
        model.arms[(r["size_class"], r["num_batch"])] = ArmStats(r["pulls"], r["reward_mean"])
    for model in models.values():
        model.confirmed = True
    return models


async def load_template(conn: DbConn, model: str, template_id: int) -> TemplateState | None:
    """One stored template (None when nothing is stored for it)."""
    params = {
        r["param"]: r
        for r in await conn.fetch("SELECT * FROM tuner_rule WHERE model = $1 AND template_id = $2", model, template_id)
    }
    return _template_from(params["num_ctx"], params.get("num_batch")) if "num_ctx" in params else None


async def recent_outcome_ids(conn: DbConn, limit: int) -> list[str]:
    rows = await conn.fetch("SELECT outcome_id FROM tuner_outcome ORDER BY id DESC LIMIT $1", limit)
    return [r["outcome_id"] for r in reversed(rows)]


async def write_outcomes(conn: DbConn, rows: list[tuple[Any, ...]]) -> None:
    if rows:
        await conn.execute(INSERT_OUTCOMES, *[list(column) for column in zip(*rows)])


async def write_models(conn: DbConn, rows: list[tuple[Any, ...]]) -> None:
    await conn.executemany(
        """INSERT INTO tuner_model (model, units_ratio, calibration_samples, managed, loaded_num_ctx,
               loaded_num_batch, default_num_ctx, context_limit, reload_cost_seconds, reloads, requests, state,
               updated_at)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12::jsonb, now())
           ON CONFLICT (model) DO UPDATE SET units_ratio = EXCLUDED.units_ratio,
               calibration_samples = EXCLUDED.calibration_samples, managed = EXCLUDED.managed,
               loaded_num_ctx = EXCLUDED.loaded_num_ctx, loaded_num_batch = EXCLUDED.loaded_num_batch,
               default_num_ctx = EXCLUDED.default_num_ctx, context_limit = EXCLUDED.context_limit,
               reload_cost_seconds = EXCLUDED.reload_cost_seconds, reloads = EXCLUDED.reloads,
               requests = EXCLUDED.requests, state = EXCLUDED.state, updated_at = now()""",
        rows,
    )


async def write_rules(conn: DbConn, rules: list[RuleRow]) -> None:
    rows = []
    for r in rules:
        rows.append(
            (
                r.model,
                r.template_id,
                "num_ctx",
                r.ctx_value,
                r.samples,
                r.confidence,
                r.successes,
                r.pinned,
                r.last_safe,
                r.truncations,
                r.state,
            )
        )
        rows.append(
            (
                r.model,
                r.template_id,
                "num_batch",
                r.batch_value,
                r.samples,
                r.confidence,
                r.successes,
                r.pinned,
                0,
                0,
                "{}",
            )
        )
    await conn.executemany(
        """INSERT INTO tuner_rule (model, template_id, param, value, sample_count, confidence, success_count,
               total_count, pinned, last_safe_value, truncations, state, updated_at)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $5, $8, $9, $10, $11::jsonb, now())
           ON CONFLICT (model, template_id, param) DO UPDATE SET value = EXCLUDED.value,
               sample_count = EXCLUDED.sample_count, confidence = EXCLUDED.confidence,
               success_count = EXCLUDED.success_count, total_count = EXCLUDED.total_count,
               pinned = EXCLUDED.pinned, last_safe_value = EXCLUDED.last_safe_value,
               truncations = EXCLUDED.truncations, state = EXCLUDED.state, updated_at = now()""",
        rows,
    )


async def write_arms(conn: DbConn, rows: list[tuple[Any, ...]]) -> None:
    await conn.executemany(
        """INSERT INTO tuner_arm (model, size_class, num_batch, pulls, reward_mean, updated_at)
           VALUES ($1, $2, $3, $4, $5, now())
           ON CONFLICT (model, size_class, num_batch) DO UPDATE SET pulls = EXCLUDED.pulls,
               reward_mean = EXCLUDED.reward_mean, updated_at = now()""",
        rows,
    )


async def delete_rules(conn: DbConn, keys: list[tuple[str, int]]) -> None:
    """Delete (model, template) rules; template 0 deletes everything stored for the model."""
    await conn.executemany("DELETE FROM tuner_rule WHERE model = $1 AND (template_id = $2 OR $2 = 0)", keys)
    models = [(model,) for model, template_id in keys if template_id == 0]
    if models:
        await conn.executemany("DELETE FROM tuner_arm WHERE model = $1", models)
        await conn.executemany("DELETE FROM tuner_model WHERE model = $1", models)


async def delete_old_outcomes(conn: DbConn, days: float) -> str:
    return await conn.execute(
        "DELETE FROM tuner_outcome WHERE finished_at < now() - make_interval(secs => $1)", days * 86400
    )


async def try_writer_lock(conn: DbConn) -> bool:
    return bool(await conn.fetchval("SELECT pg_try_advisory_lock($1)", WRITER_LOCK_KEY))


# Session settings that bound how long a silent client keeps its session, and with it the writer lock:
# idle between statements, idle inside a transaction, and unacknowledged data to a vanished host.
LOCK_SESSION_BOUNDS = (
    ("idle_session_timeout", 1000),
    ("idle_in_transaction_session_timeout", 1000),
    ("tcp_user_timeout", 1000),
)


async def bound_lock_session(conn: DbConn, seconds: float) -> list[str]:
    """Have Postgres end this session once its client is silent for ``seconds``; the settings this
    server does not know (``idle_session_timeout`` needs Postgres 14) are returned, not applied."""
    unknown = []
    for name, per_second in LOCK_SESSION_BOUNDS:
        try:
            await conn.execute("SELECT set_config($1, $2, false)", name, str(int(seconds * per_second)))
        except asyncpg.UndefinedObjectError:
            unknown.append(name)
    return unknown


# A bigint advisory key shows in pg_locks as classid (high 32 bits), objid (low 32 bits), objsubid 1.
HOLDS_WRITER_LOCK = """
SELECT EXISTS (SELECT 1 FROM pg_locks
               WHERE locktype = 'advisory' AND pid = pg_backend_pid() AND granted AND objsubid = 1
                 AND classid::text::bigint = $1::bigint >> 32 AND objid::text::bigint = $1::bigint & 4294967295)"""


async def holds_writer_lock(conn: DbConn) -> bool:
    """Whether this very session holds the single-writer lock (the fence checked by every write)."""
    return bool(await conn.fetchval(HOLDS_WRITER_LOCK, WRITER_LOCK_KEY))


async def stored_outcome_ids(conn: DbConn, ids: list[str]) -> set[str]:
    """The subset of ``ids`` already stored."""
    rows = await conn.fetch("SELECT outcome_id FROM tuner_outcome WHERE outcome_id = ANY($1::text[])", ids)
    return {r["outcome_id"] for r in rows}


SUMMARY_SQL = """
SELECT model, ollama_host,
       count(*) AS requests,
       count(*) FILTER (WHERE action = 2) AS optimized,
       count(*) FILTER (WHERE template_id <> 0) AS matched,
       count(*) FILTER (WHERE truncation_detected) AS truncations_detected,
       count(*) FILTER (WHERE action = 2 AND baseline_truncated AND NOT truncation_detected) AS prevented,
       count(*) FILTER (WHERE action = 2 AND baseline_num_ctx = 0) AS baseline_unknown,
       count(*) FILTER (WHERE runner_loaded) AS runner_loads,
       count(*) FILTER (WHERE load_cause = 1) AS loads_by_optimizer,
       count(*) FILTER (WHERE baseline_reload) AS loads_by_clients_baseline,
       coalesce(sum(prompt_eval_duration_ns) FILTER (WHERE prompt_seconds_baseline > 0), 0) / 1e9 AS prompt_seconds,
       coalesce(sum(prompt_seconds_baseline), 0) AS prompt_seconds_baseline,
       count(*) FILTER (WHERE prompt_seconds_baseline > 0) AS prompt_estimated,
       percentile_cont(ARRAY[0.5, 0.95]) WITHIN GROUP (ORDER BY latency_seconds)
           FILTER (WHERE action = 2 AND latency_seconds > 0) AS latency_optimized,
       percentile_cont(ARRAY[0.5, 0.95]) WITHIN GROUP (ORDER BY latency_seconds)
           FILTER (WHERE action = 1 AND latency_seconds > 0) AS latency_passthrough
FROM tuner_outcome
WHERE finished_at >= now() - make_interval(secs => $1) AND ($2 = '' OR model = $2)
GROUP BY GROUPING SETS ((model, ollama_host), ())
"""


async def summary(conn: DbConn, period_s: float, model: str) -> list[asyncpg.Record]:
    """Rows per (model, Ollama host) plus a total row (model NULL)."""
    return await conn.fetch(SUMMARY_SQL, period_s, model)
