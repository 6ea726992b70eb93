"""Grafana dashboards as code: writes deploy/grafana/dashboards/*.json (file-provisioned).

    .venv/bin/python deploy/grafana/build_dashboards.py          # regenerate
    .venv/bin/python deploy/grafana/build_dashboards.py --check  # exit 1 when a JSON file is stale

Every expression names only metrics the services export: matcher_service/metrics.py,
tuner_service/metrics.py, proxy_plugin/metrics.py and the go-grpc-prometheus names of
ollama_optimizer/grpc_interceptors.py. tests/test_deploy_prometheus_e2e.py runs each one through a real
Prometheus scraping the real services; tests/test_deploy_grafana.py checks the files against this script.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

OUT = Path(__file__).resolve().parent / "dashboards"
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
RI = "$__rate_interval"
# Passthrough reasons that mean "something was down or slow" (proxy_plugin/rpc.py, core.py) — as
# opposed to policy passthroughs (no match, low confidence, client set the options...).
FAIL_OPEN_REASONS = "breaker_open|budget_exhausted|timeout|rpc_error|error"


@dataclass
class Panel:
    title: str
    targets: list[tuple[str, str]]  # (expr, legend)
    unit: str = "short"
    kind: str = "timeseries"
    width: int = 12
    height: int = 8
    description: str = ""
    stack: bool = False
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class Row:
    title: str


def rate(metric: str, selector: str = "", by: str = "") -> str:
    inner = f"rate({metric}{{{selector}}}[{RI}])" if selector else f"rate({metric}[{RI}])"
    return f"sum by ({by}) ({inner})" if by else f"sum({inner})"


def quantile(q: float, histogram: str, selector: str = "", by: str = "") -> str:
    sel = f"{{{selector}}}" if selector else ""
    group = f"le, {by}" if by else "le"
    return f"histogram_quantile({q}, sum by ({group}) (rate({histogram}_bucket{sel}[{RI}])))"


def ratio(numerator: str, denominator: str) -> str:
    return f"{numerator} / {denominator}"


def _panel_json(panel: Panel, pid: int, x: int, y: int) -> dict[str, Any]:
    defaults: dict[str, Any] = {"unit": panel.unit}
    if panel.kind == "timeseries":
        defaults["custom"] = {
            "drawStyle": "line",
            "lineWidth": 1,
            "fillOpacity": 10,
            "showPoints": "never",
            "spanNulls": False,
            "stacking": {"mode": "normal" if panel.stack else "none", "group": "A"},
        }
    if panel.unit == "percentunit":
        defaults.update(min=0, max=1)
    out: dict[str, Any] = {
        "id": pid,
        "type": panel.kind,
        "title": panel.title,
        "description": panel.description,
        "datasource": DATASOURCE,
        "gridPos": {"h": panel.height, "w": panel.width, "x": x, "y": y},
        "fieldConfig": {"defaults": defaults, "overrides": []},
        "options": {
            "legend": {"displayMode": "list", "placement": "bottom", "showLegend": True},
            "tooltip": {"mode": "multi", "sort": "desc"},
        }
        if panel.kind == "timeseries"
        else {
            "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
            "colorMode": "value",
            "graphMode": "area",
            "justifyMode": "auto",
            "textMode": "auto",
        },
        "targets": [
            {
                "refId": chr(ord("A") + i),
                "datasource": DATASOURCE,
                "expr": expr,
                "legendFormat": legend,
                "range": True,
                "instant": False,
                "editorMode": "code",
            }
            for i, (expr, legend) in enumerate(panel.targets)
        ],
    }
    out.update(panel.extra)
    return out


def dashboard(
    uid: str, title: str, description: str, items: list[Panel | Row], variables: list[dict[str, Any]] | None = None
) -> dict[str, Any]:
    panels, pid, x, y, row_h = [], 1, 0, 0, 0
    for item in items:
        if isinstance(item, Row):
            if x:
                x, y = 0, y + row_h
            panels.append(
                {
                    "id": pid,
                    "type": "row",
                    "title": item.title,
                    "collapsed": False,
                    "panels": [],
                    "gridPos": {"h": 1, "w": 24, "x": 0, "y": y},
                }
            )
            pid, y, row_h = pid + 1, y + 1, 0
            continue
        if x + item.width > 24:
            x, y, row_h = 0, y + row_h, 0
        panels.append(_panel_json(item, pid, x, y))
        pid, x, row_h = pid + 1, x + item.width, max(row_h, item.height)
    templating = [
        {
            "name": "datasource",
            "label": "Prometheus",
            "type": "datasource",
            "query": "prometheus",
            "current": {"text": "Prometheus", "value": "prometheus"},
            "hide": 0,
            "refresh": 1,
            "regex": "",
            "options": [],
        }
    ]
    for var in variables or []:
        templating.append(var)
    return {
        "uid": uid,
        "title": title,
        "description": description,
        "tags": ["ollama-optimizer"],
        "editable": False,
        "graphTooltip": 1,
        "timezone": "browser",
        "time": {"from": "now-3h", "to": "now"},
        "refresh": "30s",
        "schemaVersion": 39,
        "version": 1,
        "fiscalYearStartMonth": 0,
        "liveNow": False,
        "annotations": {
            "list": [
                {
                    "builtIn": 1,
                    "datasource": {"type": "grafana", "uid": "-- Grafana --"},
                    "enable": True,
                    "hide": True,
                    "iconColor": "rgba(0, 211, 255, 1)",
                    "name": "Annotations & Alerts",
                    "type": "dashboard",
                }
            ]
        },
        "links": [
            {
                "title": "ollama-optimizer",
                "type": "dashboards",
                "tags": ["ollama-optimizer"],
                "asDropdown": True,
                "includeVars": False,
                "keepTime": True,
            }
        ],
        "templating": {"list": templating},
        "panels": panels,
    }


def query_variable(name: str, label: str, metric: str, label_name: str) -> dict[str, Any]:
    return {
        "name": name,
        "label": label,
        "type": "query",
        "datasource": DATASOURCE,
        "query": {"query": f"label_values({metric}, {label_name})", "refId": f"{name}-values"},
        "definition": f"label_values({metric}, {label_name})",
        "refresh": 2,
        "includeAll": True,
        "multi": True,
        "allValue": ".*",
        "current": {"text": "All", "value": "$__all"},
        "hide": 0,
        "sort": 1,
        "regex": "",
        "options": [],
    }


DECISIONS = "optimizer_plugin_decisions_total"
TRUNCATIONS = "optimizer_tuner_truncations_total"
REQUESTS_BY_MODEL = "optimizer_tuner_requests_total"
MATCHES = "optimizer_matcher_matches_total"
# Requests whose (matched) Match answer the plugin reused without calling the matcher; 0 without gateways.
MEMO_HITS = "(" + rate("optimizer_plugin_match_memo_total", 'result="hit"') + " or vector(0))"
MATCHED = rate(MATCHES, 'result=~"matched|partial"')


def overview() -> dict[str, Any]:
    return dashboard(
        "ollama-optimizer-overview",
        "ollama-optimizer / Overview",
        "Is the optimizer helping? Requests, optimized share, match rate, latency optimized vs "
        "passed through, and the benefit against Ollama alone: truncations prevented, reloads by "
        "cause, KV memory, prompt time.",
        [
            Panel(
                "Requests/s (gateway)",
                [(rate("optimizer_gateway_requests_total"), "requests/s")],
                "reqps",
                "stat",
                4,
                4,
            ),
            Panel(
                "Optimized share",
                [(ratio(rate(DECISIONS, 'action="apply"'), rate(DECISIONS)), "optimized")],
                "percentunit",
                "stat",
                4,
                4,
                "Requests whose options the optimizer set.",
            ),
            Panel(
                "Template match rate",
                [(ratio(f"({MATCHED} + {MEMO_HITS})", f"({rate(MATCHES)} + {MEMO_HITS})"), "matched")],
                "percentunit",
                "stat",
                4,
                4,
                "Matched prompts, counting those the plugin answered from its Match memo.",
            ),
            Panel(
                "Fail-open share",
                [
                    (
                        ratio(
                            rate("optimizer_plugin_passthrough_total", f'reason=~"{FAIL_OPEN_REASONS}"'),
                            rate(DECISIONS),
                        ),
                        "fail-open",
                    )
                ],
                "percentunit",
                "stat",
                4,
                4,
                "Requests passed through because a service was down, slow or erroring.",
            ),
            Panel(
                "Truncations prevented (range)",
                [(f'sum(increase({TRUNCATIONS}{{kind="prevented"}}[$__range]))', "prevented")],
                "short",
                "stat",
                4,
                4,
                "Optimized requests, not truncated, whose prompt was longer than the context Ollama would have used.",
            ),
            Panel(
                "Services up", [('sum by (job) (up{job=~"matcher|tuner|gateway"})', "{{job}}")], "short", "stat", 4, 4
            ),
            Panel(
                "Versions running",
                [("count by (version) (optimizer_build_info)", "{{version}}")],
                "short",
                "stat",
                4,
                4,
                "Processes per ollama-optimizer version (optimizer_build_info): more than one means a rollout.",
            ),
            Row("Traffic"),
            Panel("Decisions", [(rate(DECISIONS, by="action"), "{{action}}")], "reqps", stack=True),
            Panel(
                "Passthroughs by reason",
                [(rate("optimizer_plugin_passthrough_total", by="reason"), "{{reason}}")],
                "reqps",
                stack=True,
            ),
            Row("Latency"),
            Panel(
                "Request latency: optimized vs passed through",
                [
                    (
                        quantile(0.5, "optimizer_gateway_request_duration_seconds", by="optimized"),
                        "p50 optimized={{optimized}}",
                    ),
                    (
                        quantile(0.95, "optimizer_gateway_request_duration_seconds", by="optimized"),
                        "p95 optimized={{optimized}}",
                    ),
                ],
                "s",
            ),
            Panel(
                "Plugin overhead (Match + Recommend)",
                [
                    (quantile(0.5, "optimizer_plugin_overhead_seconds"), "p50"),
                    (quantile(0.99, "optimizer_plugin_overhead_seconds"), "p99"),
                ],
                "s",
            ),
            Panel(
                "Match answers reused by the plugin",
                [
                    (
                        ratio(
                            rate("optimizer_plugin_match_memo_total", 'result="hit"'),
                            rate("optimizer_plugin_match_memo_total"),
                        ),
                        "memo hits",
                    ),
                ],
                "percentunit",
                description="Requests whose Match input (windows and the tokens inside the largest) was "
                "matched in the last 2 s: one round trip (Recommend) instead of two.",
            ),
            *benefit_row(),
        ],
    )


def benefit_row(m: str = "") -> list[Panel | Row]:
    """What the optimizer changed against Ollama alone, per model (ollama_optimizer/benefit.py); ``m``: a
    model selector."""
    sel = f"{m}, " if m else ""
    return [
        Row("Benefit: against Ollama alone (its defaults, the clients' own options)"),
        Panel(
            "Requests optimized by model",
            [
                (f'sum by (model) (increase({REQUESTS_BY_MODEL}{{{sel}action="apply"}}[{RI}]))', "optimized {{model}}"),
                (
                    f'sum by (model) (increase({REQUESTS_BY_MODEL}{{{sel}action="passthrough"}}[{RI}]))',
                    "passed through {{model}}",
                ),
            ],
            "short",
            width=8,
        ),
        Panel(
            "Truncations: prevented vs happened, by model",
            [
                (f"sum by (model, kind) (increase({TRUNCATIONS}{{{m}}}[{RI}]))", "{{kind}} {{model}}"),
                (
                    f"sum by (model) (increase(optimizer_tuner_baseline_unknown_total{{{m}}}[{RI}]))",
                    "unknown (default assumed) {{model}}",
                ),
            ],
            "short",
            width=8,
            description="prevented: optimized requests, not truncated, whose prompt was longer than the context "
            "Ollama would have used (the client's num_ctx, else its default from /api/ps or TUNER_DEFAULT_NUM_CTX); "
            "truncated: requests cut anyway (the tuner's judgement); unknown: optimized requests while the default "
            "was only assumed (whether Ollama would have cut them is not known; not counted as prevented).",
        ),
        Panel(
            "Reloads by cause, and what the clients' options would cause",
            [
                (f"sum by (cause) (increase(optimizer_tuner_runner_loads_total{{{m}}}[{RI}]))", "{{cause}}"),
                (
                    f"sum(increase(optimizer_tuner_baseline_reloads_total{{{m}}}[{RI}]))",
                    "without the optimizer: clients",
                ),
            ],
            "short",
            width=8,
            description="Runner loads Ollama made (judged from its clock): optimizer = after an option change it "
            "made; client = after a client's own change; other = first load, expiry, eviction. "
            "Without the optimizer: option changes between the clients' own requests.",
        ),
        Panel(
            "KV memory: loaded vs Ollama's default context",
            [
                (
                    f'sum by (model) (max by (model, ollama_host) (optimizer_tuner_kv_bytes{{{sel}context="loaded"}}))',
                    "loaded {{model}}",
                ),
                (
                    f'sum by (model) (max by (model, ollama_host) (optimizer_tuner_kv_bytes{{{sel}context="default"}}))',  # noqa: E501
                    "default {{model}}",
                ),
            ],
            "bytes",
            width=12,
            description="KV-cache bytes of the context each model is loaded with and of the "
            "context Ollama would use (models whose KV bytes per token are known; the default once learned from "
            "/api/ps or set by TUNER_DEFAULT_NUM_CTX, never an assumed one).",
        ),
        Panel(
            "Prompt time: measured vs at Ollama's own options (estimate)",
            [
                (f'sum(increase(optimizer_tuner_prompt_seconds_total{{{sel}measure="measured"}}[{RI}]))', "measured"),
                (
                    f'sum(increase(optimizer_tuner_prompt_seconds_total{{{sel}measure="baseline"}}[{RI}]))',
                    "baseline estimate",
                ),
            ],
            "s",
            width=12,
            description="Optimized requests' prompt processing, and the same prompts at the prompt speed Ollama "
            "showed for the model with the clients' own options (same prompt size class); only once "
            "that speed has samples, never for a prevented truncation.",
        ),
        Panel(
            "Decisions by reason, by model",
            [
                (
                    f"sum by (model, action, reason) (increase(optimizer_tuner_recommendations_total{{{m}}}[{RI}]))",
                    "{{model}} {{action}}: {{reason}}",
                )
            ],
            "short",
            width=24,
            description="What the tuner decided for each model and why (reason codes: README, How the tuner decides).",
        ),
    ]


def matcher() -> dict[str, Any]:
    grpc = 'job="matcher", grpc_service="optimizer.v1.Matcher"'
    return dashboard(
        "ollama-optimizer-matcher",
        "ollama-optimizer / Matcher",
        "Template matching: RPS, latency, soft cache, templates, learning, Postgres.",
        [
            Panel("Replicas up", [('sum(up{job="matcher"})', "up")], "short", "stat", 6, 4),
            Panel("Templates", [("max(optimizer_matcher_templates)", "templates")], "short", "stat", 6, 4),
            Panel(
                "Cache hit ratio",
                [
                    (
                        ratio(
                            rate("optimizer_matcher_cache_requests_total", 'result="hit"'),
                            rate("optimizer_matcher_cache_requests_total"),
                        ),
                        "hit",
                    )
                ],
                "percentunit",
                "stat",
                6,
                4,
            ),
            Panel(
                "Match rate",
                [(ratio(rate(MATCHES, 'result=~"matched|partial"'), rate(MATCHES)), "matched")],
                "percentunit",
                "stat",
                6,
                4,
            ),
            Row("gRPC"),
            Panel(
                "RPS by method", [(rate("grpc_server_handled_total", grpc, "grpc_method"), "{{grpc_method}}")], "reqps"
            ),
            Panel(
                "Errors by method and code",
                [
                    (
                        rate("grpc_server_handled_total", grpc + ', grpc_code!="OK"', "grpc_method, grpc_code"),
                        "{{grpc_method}} {{grpc_code}}",
                    )
                ],
                "reqps",
            ),
            Panel(
                "Latency by method",
                [
                    (quantile(0.5, "grpc_server_handling_seconds", grpc, "grpc_method"), "p50 {{grpc_method}}"),
                    (quantile(0.99, "grpc_server_handling_seconds", grpc, "grpc_method"), "p99 {{grpc_method}}"),
                ],
                "s",
            ),
            Panel(
                "Fingerprint and lookup time",
                [
                    (quantile(0.99, "optimizer_matcher_fingerprint_seconds"), "fingerprint p99"),
                    (quantile(0.99, "optimizer_matcher_lookup_seconds"), "lookup p99"),
                ],
                "s",
            ),
            Row("Matching and learning"),
            Panel("Match results", [(rate(MATCHES, by="result"), "{{result}}")], "reqps", stack=True, width=8),
            Panel(
                "Matched window",
                [(rate(MATCHES, 'result=~"matched|partial"', "window"), "W={{window}}")],
                "reqps",
                stack=True,
                width=8,
            ),
            Panel(
                "Soft cache",
                [(rate("optimizer_matcher_cache_requests_total", by="result"), "{{result}}")],
                "reqps",
                stack=True,
                width=8,
            ),
            Panel(
                "Observes",
                [(rate("optimizer_matcher_observes_total", by="result"), "{{result}}")],
                "reqps",
                stack=True,
                width=8,
            ),
            Panel(
                "Stable-window changes",
                [(f"sum by (direction) (increase(optimizer_matcher_window_changes_total[{RI}]))", "{{direction}}")],
                "short",
                width=8,
            ),
            Panel(
                "Templates and retention",
                [
                    ("max(optimizer_matcher_templates)", "templates"),
                    (f"sum(increase(optimizer_matcher_retention_deleted_total[{RI}]))", "deleted by retention"),
                ],
                "short",
                width=8,
            ),
            Row("Postgres"),
            Panel(
                "Database errors",
                [(rate("optimizer_matcher_db_errors_total", by="operation"), "{{operation}}")],
                "ops",
                width=24,
            ),
        ],
    )


def tuner() -> dict[str, Any]:
    grpc = 'job="tuner", grpc_service="optimizer.v1.Tuner"'
    return dashboard(
        "ollama-optimizer-tuner",
        "ollama-optimizer / Tuner",
        "num_ctx / num_batch decisions, what was learned, and telemetry ingest.",
        [
            Panel("Up", [('sum(up{job="tuner"})', "up")], "short", "stat", 4, 4),
            Panel("Holds the writer lock", [("max(optimizer_tuner_writer)", "writer")], "short", "stat", 4, 4),
            Panel("Models", [("max(optimizer_tuner_models)", "models")], "short", "stat", 4, 4),
            Panel("Model x template states", [("max(optimizer_tuner_templates)", "templates")], "short", "stat", 4, 4),
            Panel("Outcome buffer", [("max(optimizer_tuner_outcome_buffer)", "waiting")], "short", "stat", 4, 4),
            Panel(
                "Outcomes dropped (range)",
                [("sum(increase(optimizer_tuner_outcomes_dropped_total[$__range]))", "dropped")],
                "short",
                "stat",
                4,
                4,
            ),
            Row("Decisions"),
            Panel(
                "Recommendations by action",
                [(rate("optimizer_tuner_recommendations_total", by="action"), "{{action}}")],
                "reqps",
                stack=True,
            ),
            Panel(
                "Recommendations by reason",
                [(rate("optimizer_tuner_recommendations_total", by="action, reason"), "{{action}}: {{reason}}")],
                "reqps",
            ),
            Panel(
                "RPC rate by method",
                [(rate("grpc_server_handled_total", grpc, "grpc_method, grpc_code"), "{{grpc_method}} {{grpc_code}}")],
                "reqps",
            ),
            Panel(
                "RPC latency by method",
                [
                    (quantile(0.5, "grpc_server_handling_seconds", grpc, "grpc_method"), "p50 {{grpc_method}}"),
                    (quantile(0.99, "grpc_server_handling_seconds", grpc, "grpc_method"), "p99 {{grpc_method}}"),
                ],
                "s",
            ),
            Row("Learning"),
            Panel(
                "Reloads by cause",
                [(f"sum by (cause) (increase(optimizer_tuner_runner_loads_total[{RI}]))", "{{cause}}")],
                "short",
                width=8,
            ),
            Panel("Truncations", [(f"sum by (kind) (increase({TRUNCATIONS}[{RI}]))", "{{kind}}")], "short", width=8),
            Panel(
                "Recommendations not applied, by reason",
                [(rate("optimizer_tuner_recommendations_total", 'action="passthrough"', "reason"), "{{reason}}")],
                "reqps",
                width=8,
                description="no_data / low_confidence: templates still being learned; "
                "client_set: the client set num_ctx/num_batch itself.",
            ),
            Row("Ingest"),
            Panel(
                "Outcomes reported",
                [(rate("optimizer_tuner_outcomes_total", by="result"), "{{result}}")],
                "ops",
                stack=True,
                width=8,
            ),
            Panel(
                "Rejected outcomes by rule",
                [(rate("optimizer_tuner_outcomes_rejected_total", by="rule"), "{{rule}}")],
                "ops",
                width=8,
            ),
            Panel(
                "Write-behind",
                [
                    (rate("optimizer_tuner_outcomes_written_total"), "written/s"),
                    (rate("optimizer_tuner_outcomes_dropped_total"), "dropped/s"),
                    ("max(optimizer_tuner_outcome_buffer)", "buffered"),
                ],
                "short",
                width=8,
            ),
            Panel(
                "Flush time",
                [
                    (quantile(0.5, "optimizer_tuner_flush_seconds"), "p50"),
                    (quantile(0.99, "optimizer_tuner_flush_seconds"), "p99"),
                ],
                "s",
            ),
            Panel("Database errors", [(rate("optimizer_tuner_db_errors_total", by="op"), "{{op}}")], "ops"),
        ],
    )


def gateway() -> dict[str, Any]:
    m = 'model=~"$model"'
    return dashboard(
        "ollama-optimizer-gateway",
        "ollama-optimizer / Gateway",
        "What Ollama does not export: per-model latency, time to first token, tokens/s; and the "
        "plugin core's health (breakers, telemetry).",
        [
            Panel(
                "Requests by endpoint and code",
                [(rate("optimizer_gateway_requests_total", by="endpoint, code"), "{{endpoint}} {{code}}")],
                "reqps",
            ),
            Panel(
                "Upstream errors and client disconnects",
                [
                    (rate("optimizer_gateway_upstream_errors_total", by="endpoint"), "upstream error {{endpoint}}"),
                    (rate("optimizer_gateway_client_disconnects_total", by="endpoint"), "disconnect {{endpoint}}"),
                ],
                "reqps",
            ),
            Row("Per model"),
            Panel(
                "Request latency by model",
                [
                    (quantile(0.5, "optimizer_gateway_request_duration_seconds", m, "model"), "p50 {{model}}"),
                    (quantile(0.95, "optimizer_gateway_request_duration_seconds", m, "model"), "p95 {{model}}"),
                ],
                "s",
            ),
            Panel(
                "Time to first token by model",
                [
                    (quantile(0.5, "optimizer_gateway_time_to_first_token_seconds", m, "model"), "p50 {{model}}"),
                    (quantile(0.95, "optimizer_gateway_time_to_first_token_seconds", m, "model"), "p95 {{model}}"),
                ],
                "s",
            ),
            Panel(
                "Tokens/s per request (median)",
                [(quantile(0.5, "optimizer_gateway_tokens_per_second", m, "model, phase"), "{{phase}} {{model}}")],
                "short",
                description="Ollama-reported speed: prompt processing and generation.",
            ),
            Panel(
                "Token throughput",
                [
                    (rate("optimizer_gateway_prompt_tokens_total", m, "model"), "prompt {{model}}"),
                    (rate("optimizer_gateway_eval_tokens_total", m, "model"), "generated {{model}}"),
                ],
                "short",
            ),
            Panel(
                "Loaded num_ctx by model (/api/ps)",
                [(f"max by (model) (optimizer_gateway_loaded_num_ctx{{{m}}})", "{{model}}")],
                "short",
                description="The context each model is loaded with right now; a change means Ollama reloaded it.",
            ),
            Panel(
                "Loaded size by model (/api/ps)",
                [(f"max by (model) (optimizer_gateway_loaded_size_bytes{{{m}}})", "{{model}}")],
                "bytes",
                description="Weights and KV cache: a larger num_ctx makes it grow.",
            ),
            Panel(
                "VRAM share by model (/api/ps)",
                [(f"min by (model) (optimizer_gateway_loaded_vram_share{{{m}}})", "{{model}}")],
                "percentunit",
                description="Below 100 % (on a GPU host) the model runs partly on the CPU.",
            ),
            Panel(
                "Loaded num_batch by model (as sent)",
                [(f"max by (model) (optimizer_gateway_loaded_num_batch{{{m}}})", "{{model}}")],
                "short",
                description="/api/ps does not show num_batch: what this gateway last sent for each loaded model "
                "(0 = Ollama's automatic value).",
            ),
            Panel(
                "Reloads seen by model",
                [(f"sum by (model) (increase(optimizer_gateway_reloads_seen_total{{{m}}}[{RI}]))", "{{model}}")],
                "short",
            ),
            *benefit_row(m),
            Row("Optimizer core"),
            Panel(
                "Plugin overhead",
                [
                    (quantile(0.5, "optimizer_plugin_overhead_seconds"), "p50"),
                    (quantile(0.99, "optimizer_plugin_overhead_seconds"), "p99"),
                ],
                "s",
                width=8,
            ),
            Panel(
                "Circuit breakers (0 closed, 1 open, 2 half-open)",
                [("max by (service) (optimizer_plugin_breaker_state)", "{{service}}")],
                "short",
                width=8,
            ),
            Panel(
                "Service call errors",
                [
                    (
                        rate("optimizer_plugin_rpc_errors_total", by="service, method, code"),
                        "{{service}}.{{method}} {{code}}",
                    )
                ],
                "reqps",
                width=8,
            ),
            Panel(
                "Telemetry",
                [
                    (rate("optimizer_plugin_telemetry_sent_total", by="kind"), "sent {{kind}}"),
                    (rate("optimizer_plugin_telemetry_dropped_total", by="reason"), "dropped {{reason}}"),
                ],
                "ops",
                width=12,
            ),
            Panel(
                "Telemetry queue depth", [("max(optimizer_plugin_telemetry_queue_depth)", "queued")], "short", width=12
            ),
        ],
        [query_variable("model", "Model", "optimizer_gateway_request_duration_seconds_count", "model")],
    )


DASHBOARDS = {"overview.json": overview, "matcher.json": matcher, "tuner.json": tuner, "gateway.json": gateway}


def render_all() -> dict[str, str]:
    return {name: json.dumps(build(), indent=2, sort_keys=False) + "\n" for name, build in DASHBOARDS.items()}


def main(argv: list[str]) -> int:
    rendered = render_all()
    if "--check" in argv:
        stale = [n for n, text in rendered.items() if not (OUT / n).is_file() or (OUT / n).read_text() != text]
        for name in stale:
            print(f"stale: deploy/grafana/dashboards/{name} (run deploy/grafana/build_dashboards.py)")
        return 1 if stale else 0
    OUT.mkdir(parents=True, exist_ok=True)
    for name, text in rendered.items():
        (OUT / name).write_text(text)
        print(f"wrote deploy/grafana/dashboards/{name}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
