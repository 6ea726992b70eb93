"""Writes the configuration tables of the READMEs and the plugin's ``config.json`` from the settings' declarations.

``python -m ollama_optimizer.config_docs`` rewrites them; ``--check`` lists the stale ones and exits 1. A table
stands between ``<!-- settings:NAME -->`` and ``<!-- /settings:NAME -->``; a variable declared for several
components (``same_as``) is listed once per file, where it first appears.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import re
import sys
from pathlib import Path

from matcher_service.settings import MatcherSettings
from proxy_plugin.config import DEFAULT_PATH as PLUGIN_JSON
from proxy_plugin.config import PluginConfig
from tuner_service.settings import TunerSettings

from .benefit import ReloadSettings
from .config import (
    PROJECT_ROOT,
    ClientSettings,
    DatabaseConfig,
    GatewaySettings,
    ListenSettings,
    LogSettings,
    ServerConfig,
)
from .fingerprint_kernel import KernelSettings
from .settings_env import Setting, specs

README = PROJECT_ROOT / "README.md"
PLUGIN_README = PROJECT_ROOT / "proxy_plugin" / "README.md"
TABLES: dict[Path, dict[str, tuple[type, ...]]] = {
    README: {
        "common": (
            DatabaseConfig,
            ListenSettings,
            GatewaySettings,
            ServerConfig,
            ClientSettings,
            LogSettings,
            ReloadSettings,
            KernelSettings,
        ),
        "matcher": (MatcherSettings,),
        "tuner": (TunerSettings,),
    },
    PLUGIN_README: {"plugin": (PluginConfig,)},
}


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def _default(spec: Setting) -> str:
    if not spec.shown_default:
        return "*(empty)*"
    return spec.shown_default if spec.shown_default.startswith("*") else f"`{_cell(spec.shown_default)}`"


def table(classes: tuple[type, ...], seen: set[str]) -> str:
    """One Markdown table of the settings of ``classes`` not in ``seen`` (which it extends)."""
    keyed = PluginConfig in classes
    lines = ["| key | variables | default | meaning |" if keyed else "| variable | default | meaning |"]
    lines.append("|---|---|---|---|" if keyed else "|---|---|---|")
    for cls in classes:
        for name, spec in specs(cls):
            if spec.env in seen and not keyed:
                continue
            seen.add(spec.env)
            names = [f"`{name}`", " / ".join(f"`{n}`" for n in spec.names)] if keyed else [f"`{spec.env}`"]
            row = [*names, _default(spec), _cell(spec.description)]
            lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines) + "\n"


def rendered(path: Path) -> str:
    """``path`` with its generated tables as they should read."""
    text = path.read_text()
    seen: set[str] = set()
    for name, classes in TABLES[path].items():
        pattern = re.compile(rf"(<!-- settings:{name} -->\n).*?(<!-- /settings:{name} -->)", re.S)
        match = pattern.search(text)
        if match is None:
            raise SystemExit(f"{path}: no <!-- settings:{name} --> block")
        start, end = match.span()
        text = text[:start] + match.group(1) + table(classes, seen) + match.group(2) + text[end:]
    return text


def plugin_json() -> str:
    values = {f.name: f.default for f in dataclasses.fields(PluginConfig)}
    return json.dumps(values, indent=2) + "\n"


def expected() -> dict[Path, str]:
    return {**{path: rendered(path) for path in TABLES}, PLUGIN_JSON: plugin_json()}


def stale() -> list[Path]:
    """The generated files that differ from what the declarations give."""
    return [path for path, text in expected().items() if not path.exists() or path.read_text() != text]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ollama_optimizer.config_docs", description=__doc__)
    parser.add_argument("--check", action="store_true", help="only list stale files; exit 1 when there are any")
    args = parser.parse_args(argv)
    if args.check:
        old = stale()
        for path in old:
            print(
                f"{path.relative_to(PROJECT_ROOT)} is stale: run python -m ollama_optimizer.config_docs",
                file=sys.stderr,
            )
        return 1 if old else 0
    for path, text in expected().items():
        if not path.exists() or path.read_text() != text:
            path.write_text(text)
            print(f"wrote {path.relative_to(PROJECT_ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
