"""The `ollama-optimizer` console script as a user runs it (a real subprocess against real services):
tables by default and --json for scripts, --help and --version, one-line errors with a non-zero exit."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import pty
import re
import shutil
import socket
import sys
from pathlib import Path

import pytest

from ollama_optimizer.cli import build_parser
from ollama_optimizer.gen.optimizer.v1 import tuner_pb2
from ollama_optimizer.version import package_version

from matcher_fixtures import prompt
from tuner_fixtures import make_outcome

MODEL = "llama3.1:8b"
WAIT_S = 60
ISO = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ")


def console_script() -> str:
    beside = Path(sys.executable).with_name("ollama-optimizer")
    found = str(beside) if beside.is_file() else shutil.which("ollama-optimizer")
    assert found, "the ollama-optimizer console script is not installed"
    return found


async def cli(*args: str, stdin: bytes = b"", env: dict[str, str] | None = None) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        console_script(),
        *args,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, **(env or {})},
    )
    out, err = await asyncio.wait_for(proc.communicate(stdin), WAIT_S)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


def closed_address() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{sock.getsockname()[1]}"


def assert_one_line_error(code: int, err: str, expected_code: int = 1) -> str:
    assert code == expected_code, err
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("ollama-optimizer"), err
    return lines[0]


def subcommands() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    (sub,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return dict(sub.choices)


# --- --version, --help --------------------------------------------------------------------------------
async def test_version() -> None:
    code, out, _ = await cli("--version")
    assert code == 0 and out.strip() == f"ollama-optimizer {package_version()}"
    assert package_version()[0].isdigit()


async def test_help_describes_every_command() -> None:
    code, out, _ = await cli("--help")
    assert code == 0
    for name, parser in subcommands().items():
        assert parser.description, name
        assert re.search(rf"^\s+{name}\s+\S", out, re.M), f"{name} has no description in --help"


def test_every_option_has_a_description_and_a_default() -> None:
    for name, parser in subcommands().items():
        text = parser.format_help()
        for action in parser._actions:
            if not action.option_strings or action.dest == "help":
                continue
            assert action.help, f"{name} {action.option_strings[0]}: no description"
        options = [a for a in parser._actions if a.option_strings and a.dest != "help"]
        assert len(re.findall(r"\(default:", " ".join(text.split()))) == len(options), f"{name}:\n{text}"
        for action in parser._actions:
            if not action.option_strings and action.dest != "command":
                assert action.help, f"{name} {action.dest}: no description"


async def test_subcommand_help_runs() -> None:
    code, out, _ = await cli("pin", "--help")
    assert code == 0
    assert "pin a template's options on a model" in out and "(default: 127.0.0.1:50062)" in " ".join(out.split())


# --- bad arguments -----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "args",
    [
        ("templates", "--limit", "0"),
        ("templates", "--limit", "many"),
        ("pin", MODEL, "seventeen"),
        ("explain", MODEL, str(2**63)),
        ("stats", "--period", "-5"),
        ("no-such-command",),
        (),
        ("--log-level", "LOUD", "stats"),
    ],
)
async def test_bad_arguments_are_one_line_and_exit_2(args: tuple[str, ...]) -> None:
    code, out, err = await cli(*args)
    line = assert_one_line_error(code, err, expected_code=2)
    assert "error:" in line and "--help" in line and out == ""


@pytest.mark.parametrize(
    ("args", "expected_code"),
    [
        (("gateway", "--listen", "nonsense"), 2),
        (("gateway", "--listen", "127.0.0.1:99999"), 2),
        (("gateway", "--upstream", "::::"), 2),
        (("gateway", "--upstream", "ftp://ollama:11434"), 2),
        (("gateway", "--upstream", "127.0.0.1:port"), 2),
        (("health", "nonsense"), 1),  # grpc_health_probe's code for invalid arguments
        (("health", "127.0.0.1:99999"), 1),
        (("health", "[::1"), 1),
        (("health", "127.0.0.1:50061", "--timeout", "-1"), 1),
        (("health", "127.0.0.1:50061", "--timeout", "nan"), 1),
        (("health",), 1),
    ],
)
async def test_bad_service_addresses_are_one_line_before_anything_starts(
    args: tuple[str, ...], expected_code: int
) -> None:
    code, out, err = await cli(*args)
    line = assert_one_line_error(code, err, expected_code)
    assert "error: argument" in line or "required" in line, line
    assert "--help" in line and out == ""


async def test_a_bad_listen_address_from_the_environment_is_one_line() -> None:
    code, _, err = await cli("gateway", env={"GATEWAY_LISTEN": "localhost"})
    line = assert_one_line_error(code, err, 2)
    assert "'localhost' is not HOST:PORT" in line


@pytest.mark.parametrize(
    ("variable", "value"), [("OLLAMA_HOST", "::::"), ("OLLAMA_HOST", "http://ollama:99999"), ("GATEWAY_LISTEN", "x")]
)
async def test_up_refuses_a_bad_gateway_address_before_starting_anything(variable: str, value: str) -> None:
    code, out, err = await cli("up", env={variable: value, "OPTIMIZER_DSN": "postgresql://127.0.0.1:1/none"})
    assert code == 1 and out == "" and "Traceback" not in err
    (line,) = err.strip().splitlines()
    assert f"{variable}: " in line and repr(value) in line


async def test_health_prints_a_line_or_json(matcher) -> None:
    code, out, err = await cli("health", matcher.address)
    assert (code, out.strip(), err) == (0, "status: SERVING", "")
    code, out, err = await cli("health", matcher.address, "--json")
    assert code == 0 and json.loads(out) == {
        "address": matcher.address,
        "service": "",
        "exit_code": 0,
        "message": "status: SERVING",
    }
    closed = closed_address()
    code, out, err = await cli("health", closed, "--timeout", "0.5", "--json")
    assert code == 2 and json.loads(out)["exit_code"] == 2 and err == ""


# --- nothing answering, wrong service, unreadable TLS file ------------------------------------------
@pytest.mark.parametrize(
    "args",
    [
        ("match", "--text", "hello"),
        ("templates",),
        ("stats",),
        ("explain", MODEL, "1"),
        ("pin", MODEL, "1", "--num-ctx", "8192"),
        ("reset", MODEL, "1"),
        ("templates", "--json"),
    ],
)
async def test_unreachable_service_is_one_line_with_a_hint(args: tuple[str, ...]) -> None:
    code, out, err = await cli(*args, "--address", closed_address())
    line = assert_one_line_error(code, err)
    assert "cannot reach the" in line and "connection refused" in line and "ollama-optimizer up" in line
    assert out == ""


async def test_grpc_error_from_a_server_is_one_line(matcher) -> None:
    """Any gRPC status (here UNIMPLEMENTED: the tuner's method asked of the matcher) is one line, exit 1."""
    code, _, err = await cli("explain", MODEL, "1", "--address", matcher.address)
    line = assert_one_line_error(code, err)
    assert f"tuner at {matcher.address}: UNIMPLEMENTED" in line


async def test_unreadable_client_tls_file_is_one_line() -> None:
    code, _, err = await cli(
        "templates", "--address", closed_address(), env={"OPTIMIZER_CLIENT_TLS_CA": "/nonexistent/ca.crt"}
    )
    line = assert_one_line_error(code, err)
    assert "cannot read a client TLS file" in line and "/nonexistent/ca.crt" in line


# --- match and templates -----------------------------------------------------------------------------
async def test_match_and_templates_print_tables_and_json(matcher) -> None:
    text = prompt(1, 300)
    code, out, err = await cli(
        "match", "--address", matcher.address, "--model", MODEL, "--observe", stdin=text.encode()
    )
    assert code == 0, err
    assert re.search(rf"^model\s+{re.escape(MODEL)}$", out, re.M)
    assert re.search(r"^template\s+none matched", out, re.M)
    created = re.search(r"^observed\s+created template (\d+)", out, re.M)
    assert created, out
    template_id = int(created.group(1))

    code, out, err = await cli("match", "--address", matcher.address, "--model", MODEL, "--text", text)
    assert code == 0, err
    assert re.search(rf"^template\s+{template_id}$", out, re.M) and "similarity" in out

    code, out, err = await cli("match", "--address", matcher.address, "--model", MODEL, "--json", "--text", text)
    data = json.loads(out)
    assert data["model"] == MODEL and data["match"]["matched"] is True
    assert int(data["match"]["template_id"]) == template_id and "observe" not in data

    code, out, err = await cli("templates", "--address", matcher.address)
    assert code == 0, err
    header, row = out.splitlines()[:2]
    assert header.split()[:3] == ["id", "observations", "stable"]
    assert row.split()[0] == str(template_id)
    assert len(ISO.findall(row)) == 2, row  # created, last seen: readable times, not epoch seconds
    assert not re.search(r"\b1[7-9]\d{8}\b", out), "epoch timestamps in the table"

    code, out, err = await cli("templates", "--address", matcher.address, "--json")
    data = json.loads(out)
    (template,) = data["templates"]
    assert int(template["template_id"]) == template_id and ISO.fullmatch(template["created_at"])
    assert data["next_after_id"] in (0, "0")

    code, out, _ = await cli("templates", "--address", matcher.address, "--after-id", str(template_id))
    assert code == 0 and out.strip() == f"no templates after id {template_id}"


async def test_match_without_text_is_an_error(matcher) -> None:
    code, out, err = await cli("match", "--address", matcher.address, stdin=b"  \n")
    line = assert_one_line_error(code, err, expected_code=2)
    assert "no prompt text" in line and out == ""


async def test_match_on_a_terminal_says_what_it_waits_for(matcher) -> None:
    master, slave = pty.openpty()
    proc = await asyncio.create_subprocess_exec(
        console_script(),
        "match",
        "--address",
        matcher.address,
        "--json",
        stdin=slave,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    os.close(slave)
    try:
        assert proc.stderr is not None
        said = await asyncio.wait_for(proc.stderr.readline(), WAIT_S)
        assert b"Reading the prompt from standard input" in said and b"Ctrl-D" in said
        os.write(master, prompt(2, 100).encode() + b"\n\x04")  # the line, then end of input
        out, _ = await asyncio.wait_for(proc.communicate(), WAIT_S)
        assert proc.returncode == 0 and json.loads(out)["match"]["matched"] is False
    finally:
        os.close(master)
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


# --- tuner commands ----------------------------------------------------------------------------------
async def test_tuner_commands_print_tables_and_json(tuner, tuner_stub) -> None:
    await tuner_stub.Report(tuner_pb2.ReportRequest(outcomes=[make_outcome(template_id=4) for _ in range(4)]))
    address = ("--address", tuner.address)

    code, out, err = await cli("explain", MODEL, "4", *address)
    assert code == 0 and re.search(r"^observations\s+4$", out, re.M), out + err
    code, out, _ = await cli("explain", MODEL, "4", *address, "--json")
    assert code == 0 and json.loads(out)["observations"] in (4, "4")

    code, out, _ = await cli("pin", MODEL, "4", "--num-ctx", "8192", *address)
    assert code == 0 and out.startswith(f"pinned {MODEL} template 4")
    code, out, _ = await cli("pin", MODEL, "4", "--num-ctx", "8192", *address, "--json")
    assert code == 0 and json.loads(out)["state"]["pinned"] is True

    code, out, _ = await cli("stats", "--period", "600", *address)
    assert code == 0 and re.search(r"^requests\s+\d+$", out, re.M), out
    code, out, _ = await cli("stats", "--period", "600", *address, "--json")
    assert code == 0 and json.loads(out)["period_seconds"] == 600

    code, out, _ = await cli("reset", MODEL, "4", *address)
    assert code == 0 and "learned state forgotten" in out
    code, out, err = await cli("reset", MODEL, "4", *address, "--json")  # forgotten already: it does not exist
    assert code == 1 and out == "" and len(err.strip().splitlines()) == 1 and "NOT_FOUND" in err, err
