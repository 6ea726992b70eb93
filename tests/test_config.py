"""One configuration loader: settings are plain values, the environment is read by ``load`` only, every
variable has one default and one description, and the generated tables and config.json are current."""

from __future__ import annotations

import json
import os
from collections import defaultdict
from pathlib import Path

import pytest
from test_cli import cli

from matcher_service.settings import MatcherSettings
from ollama_optimizer import config_docs
from ollama_optimizer.config import DatabaseConfig, ServerConfig
from ollama_optimizer.settings_env import ConfigError, Setting, load, specs
from proxy_plugin.config import PluginConfig, load_config
from tuner_service.settings import TunerSettings


def test_constructing_settings_never_reads_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MATCHER_GROW_AFTER", "40")
    monkeypatch.setenv("TUNER_MARGIN", "1.5")
    monkeypatch.setenv("OPT_BUDGET_MS", "7")
    assert MatcherSettings().grow_after == 30 and TunerSettings().policy.margin == 1.15
    assert PluginConfig().budget_ms == 50.0
    assert load(MatcherSettings, os.environ).grow_after == 40
    assert load(TunerSettings, os.environ).policy.margin == 1.5


def test_every_variable_has_one_default_one_type_and_one_description() -> None:
    declared: dict[str, list[Setting]] = defaultdict(list)
    for tables in config_docs.TABLES.values():
        for classes in tables.values():
            for cls in classes:
                for _name, spec in specs(cls):
                    for name in spec.names:
                        declared[name].append(spec)
    for name, found in declared.items():
        defaults = {repr(s.default) for s in found}
        descriptions = {s.description for s in found}
        assert len(defaults) == 1 and len(descriptions) == 1, name
        assert found[0].description, name


def test_the_generated_tables_and_config_json_are_current() -> None:
    stale = [str(path) for path in config_docs.stale()]
    assert stale == [], "run python -m ollama_optimizer.config_docs"
    shipped = json.loads(config_docs.PLUGIN_JSON.read_text())
    assert load_config(config_docs.PLUGIN_JSON, env={}) == PluginConfig()
    assert shipped["budget_ms"] == PluginConfig().budget_ms


def test_a_bad_value_names_its_variable() -> None:
    cases = [
        (DatabaseConfig, {"OPTIMIZER_DB_POOL_MAX": "ten"}, "OPTIMIZER_DB_POOL_MAX: must be an integer, got 'ten'"),
        (MatcherSettings, {"MATCHER_NORMALIZE": "maybe"}, "MATCHER_NORMALIZE: must be a boolean"),
        (MatcherSettings, {"MATCHER_SHINGLE_SIZE": "9"}, "MATCHER_SHINGLE_SIZE must be in 3..5, got 9"),
        (TunerSettings, {"TUNER_LADDER": "1024,x"}, "TUNER_LADDER: must be positive integers"),
        (TunerSettings, {"TUNER_MODEL_MAX_NUM_CTX": "llama"}, "TUNER_MODEL_MAX_NUM_CTX: expected model=integer"),
        (TunerSettings, {"TUNER_REPORT_RATE": "-1"}, "TUNER_REPORT_RATE must be in 0..1e+09, got -1"),
    ]
    for cls, env, says in cases:
        with pytest.raises(ConfigError) as error:
            load(cls, env)
        assert str(error.value).startswith(says), (str(error.value), says)
    with pytest.raises(ConfigError, match="OPTIMIZER_MAX_CONCURRENT_RPCS must be in"):
        ServerConfig.matcher({"OPTIMIZER_MAX_CONCURRENT_RPCS": "0"})


def test_plugin_file_then_variables_in_their_order(tmp_path: Path) -> None:
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"budget_ms": 30, "always_on": False, "matcher_address": "file:1"}))
    cfg = load_config(path, env={"MATCHER_ADDRESS": "alias:2", "OPT_ALWAYS_ON": "yes"})
    assert (cfg.budget_ms, cfg.always_on, cfg.matcher_address) == (30.0, True, "alias:2")
    cfg = load_config(path, env={"MATCHER_ADDRESS": "alias:2", "OPT_MATCHER_ADDRESS": "opt:3"})
    assert cfg.matcher_address == "opt:3"
    assert load_config(path, env={"GATEWAY_MAX_BODY_BYTES": "10"}).max_body_bytes == 10
    with pytest.raises(ConfigError, match="OPT_ALWAYS_ON: must be a boolean"):
        load_config(path, env={"OPT_ALWAYS_ON": "sometimes"})
    path.write_text(json.dumps({"always_on": "sometimes"}))
    with pytest.raises(ConfigError, match=r"config\.json: always_on: must be a boolean"):
        load_config(path, env={})
    path.write_text(json.dumps({"queue_size": 1.5}))
    with pytest.raises(ConfigError, match=r"config\.json: queue_size must be an integer"):
        load_config(path, env={})


def test_a_secret_comes_from_its_file_and_is_never_echoed(tmp_path: Path) -> None:
    secret = tmp_path / "token"
    secret.write_text("from-a-file\n")
    assert load(PluginConfig, {"OPTIMIZER_AUTH_TOKEN_FILE": str(secret)}).auth_token == "from-a-file"
    assert load(TunerSettings, {"TUNER_DECISION_KEY": " k "}).decision_key == "k"


async def test_the_cli_and_a_service_stop_on_a_bad_value_with_one_line() -> None:
    code, _out, err = await cli("stats", "--address", "127.0.0.1:1", env={"GATEWAY_METRICS_PORT": "http"})
    assert code == 2 and err.count("\n") == 1 and "GATEWAY_METRICS_PORT: must be an integer" in err, err
    code, _out, err = await cli("matcher", env={"MATCHER_GROW_AFTER": "5", "OPTIMIZER_DSN": "postgresql://x/none"})
    assert code == 2 and "Traceback" not in err and "MATCHER_GROW_AFTER must be in 20..50, got 5" in err, err
