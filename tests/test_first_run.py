"""A newcomer's first run: `make run` installs only what running needs, `ollama-optimizer up` says it is up
only once every service listens and says when no Ollama answers upstream, the embedded Postgres's own
output goes to a file, and the README stands on its own in a clone."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from bench.ollama_sim import EmulatorConfig, start_emulator
from bench.ports import free_port

REPO = Path(__file__).resolve().parent.parent
WAIT_S = 120


def accepts(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
    except OSError:
        return False
    return True


def console_script() -> str:
    beside = Path(sys.executable).with_name("ollama-optimizer")
    return str(beside) if beside.is_file() else (shutil.which("ollama-optimizer") or "ollama-optimizer")


# --- make run / make test ----------------------------------------------------------------------------
@pytest.mark.skipif(shutil.which("make") is None, reason="no make")
def test_make_run_installs_without_the_dev_extras(tmp_path: Path) -> None:
    for name in ("Makefile", "pyproject.toml"):
        shutil.copy(REPO / name, tmp_path / name)

    def dry_run(target: str) -> str:
        return subprocess.run(["make", "-n", target], cwd=tmp_path, capture_output=True, text=True, check=True).stdout

    run = dry_run("run")
    assert re.search(r"pip install .* -e \. ", run, re.M), run
    assert "[dev]" not in run and "ollama-optimizer up" in run
    test = dry_run("test")
    assert "-e '.[dev]'" in test and re.search(r"pip install .* -e \. ", test, re.M) and "pytest" in test


@pytest.mark.skipif(shutil.which("make") is None, reason="no make")
def test_make_run_shows_the_install_progress(tmp_path: Path) -> None:
    """The first install takes a minute: a line per package pip fetches, not pip's notices, and a failure
    still fails the step (pipefail)."""
    for name in ("Makefile", "pyproject.toml"):
        shutil.copy(REPO / name, tmp_path / name)
    run = subprocess.run(["make", "-n", "run"], cwd=tmp_path, capture_output=True, text=True, check=True).stdout
    (install,) = [line for line in run.splitlines() if re.search(r"pip install .* -e \. ", line)]
    assert "--quiet" not in install
    _pip, _, progress = install.partition(" 2>&1 | ")
    shell = subprocess.run(["make", "-p", "-n", "run"], cwd=tmp_path, capture_output=True, text=True).stdout
    assert re.search(r"^\.SHELLFLAGS := .*pipefail", shell, re.M)
    pip_output = (
        "Obtaining file:///src\nCollecting aiohttp>=3.9 (from ollama-optimizer==0.1.0)\n"
        "  Downloading aiohttp-3.9.5.whl (1.2 MB)\nRequirement already satisfied: numpy in x\n"
        "Collecting grpcio>=1.60\nInstalling collected packages: aiohttp, grpcio\n"
        "Successfully installed aiohttp-3.9.5 grpcio-1.62.0\n"
    )
    shown = subprocess.run(
        progress.replace(".venv/bin/python", sys.executable),
        shell=True,
        input=pip_output,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert shown.splitlines() == [
        "  fetching aiohttp>=3.9",
        "  fetching grpcio>=1.60",
        "Successfully installed aiohttp-3.9.5 grpcio-1.62.0",
    ]


# --- ollama-optimizer up -----------------------------------------------------------------------------
async def _up_until_banner(dsn: str, upstream: str) -> tuple[list[str], str, dict[str, int]]:
    """Run `up` against ``dsn`` until its banner is complete; at that moment every port must accept
    connections. Then SIGINT; returns (banner lines, stderr, ports)."""
    ports = {name: free_port() for name in ("matcher", "tuner", "gateway", "m_metrics", "t_metrics", "g_metrics")}
    env = {
        **os.environ,
        "OPTIMIZER_DSN": dsn,
        "OLLAMA_HOST": upstream,
        "MATCHER_LISTEN": f"127.0.0.1:{ports['matcher']}",
        "MATCHER_METRICS_PORT": str(ports["m_metrics"]),
        "TUNER_LISTEN": f"127.0.0.1:{ports['tuner']}",
        "TUNER_METRICS_PORT": str(ports["t_metrics"]),
        "GATEWAY_LISTEN": f"127.0.0.1:{ports['gateway']}",
        "GATEWAY_METRICS_PORT": str(ports["g_metrics"]),
        "OPTIMIZER_SHUTDOWN_GRACE_SECONDS": "1",
    }
    env.pop("MATCHER_ADDRESS", None)
    env.pop("TUNER_ADDRESS", None)
    proc = await asyncio.create_subprocess_exec(
        console_script(), "up", env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    assert proc.stdout is not None and proc.stderr is not None
    stderr_task = asyncio.ensure_future(proc.stderr.read())
    banner: list[str] = []
    try:
        while not banner or not banner[-1].lstrip().startswith("gateway"):
            line = (await asyncio.wait_for(proc.stdout.readline(), WAIT_S)).decode()
            assert line, f"up ended before its banner: {await stderr_task}"
            banner.append(line.rstrip())
        listening = {name: await asyncio.to_thread(accepts, ports[name]) for name in ("matcher", "tuner", "gateway")}
        assert all(listening.values()), f"banner printed before every service listened: {listening}"
        proc.send_signal(signal.SIGINT)
        assert await asyncio.wait_for(proc.wait(), WAIT_S) == 0
        return banner, (await stderr_task).decode(), ports
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def test_up_banner_once_listening_and_a_notice_without_ollama(dsn: str) -> None:
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        dead = sock.getsockname()[1]
    banner, stderr, _ports = await _up_until_banner(dsn, f"127.0.0.1:{dead}")
    assert banner[0] == "ollama-optimizer is up (Ctrl-C stops everything):"
    assert re.search(r"^starting matcher, tuner, gateway: done in \d+\.\d s$", stderr, re.M), stderr
    notices = [line for line in stderr.splitlines() if "nothing answers at the upstream Ollama" in line]
    assert len(notices) == 1, stderr
    assert f"http://127.0.0.1:{dead}" in notices[0] and f"bench.ollama_sim --port {dead}" in notices[0]


async def test_up_says_nothing_about_ollama_when_it_answers(dsn: str) -> None:
    async with start_emulator(EmulatorConfig(time_scale=1000)) as emu:
        banner, stderr, _ports = await _up_until_banner(dsn, emu.url)
    assert banner[0].startswith("ollama-optimizer is up")
    assert "nothing answers" not in stderr


# --- embedded Postgres output ------------------------------------------------------------------------
async def test_embedded_postgres_output_goes_to_a_file(tmp_path: Path) -> None:
    data_dir = tmp_path / "pg"
    env = {
        **os.environ,
        "OPTIMIZER_DSN": "",
        "OPTIMIZER_DATA_DIR": str(data_dir),
        "OPTIMIZER_EMBEDDED_SHARED_BUFFERS_MB": "128",
    }
    proc = await asyncio.create_subprocess_exec(
        console_script(), "migrate", env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await asyncio.wait_for(proc.communicate(), WAIT_S)
    assert proc.returncode == 0, err.decode()
    console = out.decode() + err.decode()
    log_file = tmp_path / "pg.log"
    assert console.count(f"embedded Postgres: its output goes to {log_file}") == 1, console
    for noise in ("creating subdirectories", "initdb", "pg_ctl", "XDG_RUNTIME_DIR"):
        assert noise not in console, console
    assert "creating subdirectories" in log_file.read_text()
    assert "applied migrations" in console
    # The long steps say what they do, then how long they took.
    first = f"creating the embedded Postgres in {data_dir} (first run only, up to a minute)"
    assert re.search(rf"^{re.escape(first)} \.\.\.$", console, re.M), console
    assert re.search(rf"^{re.escape(first)}: done in \d+\.\d s$", console, re.M), console
    assert re.search(r"^applying the schema migrations: done in \d+\.\d s$", console, re.M), console
    proc = await asyncio.create_subprocess_exec(
        console_script(), "migrate", env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    _out, err = await asyncio.wait_for(proc.communicate(), WAIT_S)
    assert proc.returncode == 0 and f"starting the embedded Postgres in {data_dir} ..." in err.decode()


# --- README ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("readme", ["README.md", "deploy/README.md", "proxy_plugin/README.md"])
def test_readme_links_stay_inside_the_repository(readme: str) -> None:
    path = REPO / readme
    text = path.read_text()
    assert "../shared" not in text and "DESIGN.md" not in text
    for target in re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", text):
        if "://" in target:
            continue
        resolved = (path.parent / target).resolve()
        assert resolved.is_relative_to(REPO) and resolved.exists(), f"{readme}: link {target}"


def test_readme_shell_examples_do_not_rely_on_echo_escapes() -> None:
    """bash's echo prints "\\n" literally: multi-line examples must use printf."""
    text = (REPO / "README.md").read_text()
    assert not re.search(r'echo\s+"[^"]*\\n', text)
    assert re.search(r"printf '[^']*\\n[^']*' *\\\n *\| ollama-optimizer match", text)
