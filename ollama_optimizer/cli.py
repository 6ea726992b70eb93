"""The `ollama-optimizer` command line."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
import warnings
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from .cli_support import CliError
from .config import ClientSettings, GatewaySettings, LogSettings, StartupError
from .settings_env import ConfigError, load
from .version import package_version

if TYPE_CHECKING:
    from .channels import ClientArgs


async def _up(args: argparse.Namespace) -> int:
    from .supervisor import run_all

    return await run_all(with_gateway=not args.no_gateway)


async def _migrate(args: argparse.Namespace) -> int:
    from .config import DatabaseConfig
    from .migrations import describe
    from .startup import migrated_database

    async with migrated_database(load(DatabaseConfig, os.environ), contract=args.contract) as (_dsn, _embedded, report):
        pass
    print(describe(report))
    return 0


async def _matcher(args: argparse.Namespace) -> int:
    from matcher_service.main import serve

    return await serve()


async def _tuner(args: argparse.Namespace) -> int:
    from tuner_service.main import serve

    return await serve()


async def _gateway(args: argparse.Namespace) -> int:
    from proxy_plugin.gateway import serve

    return await serve(listen=args.listen, upstream=args.upstream)


async def _health(args: argparse.Namespace) -> int:
    from .health_check import check

    code, message = await check(args.address, args.service, args.timeout, **_client_tls_args())
    print(message, file=sys.stderr if code else sys.stdout)
    return code


def _client_tls_args() -> ClientArgs:
    from .health_check import client_args_from_env

    return client_args_from_env()


def _prompt_text(args: argparse.Namespace) -> str:
    if args.text is not None:
        return str(args.text)
    if sys.stdin.isatty():
        print(
            "Reading the prompt from standard input: type or paste it, then Ctrl-D (or pass --text, or pipe it in).",
            file=sys.stderr,
            flush=True,
        )
    return sys.stdin.read()


async def _match(args: argparse.Namespace) -> int:
    from matcher_service.admin_cli import match

    return await match(args, _prompt_text(args), **_client_tls_args())


async def _templates(args: argparse.Namespace) -> int:
    from matcher_service.admin_cli import templates

    return await templates(args, **_client_tls_args())


async def _tuner_admin(args: argparse.Namespace) -> int:
    from tuner_service import admin_cli

    command: Callable[..., Coroutine[Any, Any, int]] = getattr(admin_cli, args.command)
    return await command(args, **_client_tls_args())


class _HelpFormatter(argparse.HelpFormatter):
    """Shows each option's default (when it has one) after its description."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if not action.option_strings or action.default is argparse.SUPPRESS or "default" in text:
            return text
        if action.default is False:
            return text + " (default: off)"
        return text + (" (default: %(default)s)" if action.default not in (None, "") else " (default: none)")


class _Parser(argparse.ArgumentParser):
    """Bad arguments: one line on stderr and exit 2 (usage stays in --help)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see `{self.prog} --help`)\n")


def _command(
    sub: argparse._SubParsersAction[_Parser],
    name: str,
    description: str,
    func: Callable[[argparse.Namespace], Coroutine[Any, Any, int]],
) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = sub.add_parser(
        name, help=description, description=description, formatter_class=_HelpFormatter
    )
    parser.set_defaults(func=func)
    return parser


def _client_options(parser: argparse.ArgumentParser, address: str, service: str, variable: str) -> None:
    parser.add_argument(
        "--address", default=address, help=f"the {service} to call, HOST:PORT or dns:///HOST:PORT (${variable})"
    )
    parser.add_argument("--json", action="store_true", help="print JSON for scripts instead of tables")


def build_parser() -> argparse.ArgumentParser:
    """The parser; option defaults come from the settings' declarations and the environment."""
    client, gateway_settings = load(ClientSettings, os.environ), load(GatewaySettings, os.environ)
    parser = _Parser(
        prog="ollama-optimizer",
        formatter_class=_HelpFormatter,
        description=(
            "Learns num_ctx/num_batch for Ollama prompt templates. Runs the services (up, matcher, tuner, "
            "gateway, migrate) and talks to them (health, match, templates, stats, explain, pin, reset). "
            "Configured by environment variables (README: Configuration); client commands read "
            "OPTIMIZER_AUTH_TOKEN and OPTIMIZER_CLIENT_TLS_*."
        ),
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {package_version()}")
    parser.add_argument(
        "--log-level",
        default=load(LogSettings, os.environ).level,
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        type=str.upper,
        help="log level of the services ($OPTIMIZER_LOG_LEVEL)",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    up = _command(
        sub,
        "up",
        "run everything: embedded Postgres when no OPTIMIZER_DSN, migrations, matcher, "
        "tuner and gateway; Ctrl-C stops all",
        _up,
    )
    up.add_argument("--no-gateway", action="store_true", help="do not start the gateway")
    migrate = _command(sub, "migrate", "apply the pending expand migrations (safe while older versions run)", _migrate)
    migrate.add_argument(
        "--contract",
        action="store_true",
        help="also apply contract steps (drop what older versions use): only once none runs",
    )
    _command(sub, "matcher", "run the matcher gRPC service ($MATCHER_LISTEN)", _matcher)
    _command(sub, "tuner", "run the tuner gRPC service ($TUNER_LISTEN)", _tuner)

    gateway = _command(sub, "gateway", "run the Ollama-API gateway in front of Ollama", _gateway)
    gateway.add_argument(
        "--listen",
        default=gateway_settings.listen,
        help="HOST:PORT the gateway serves the Ollama API on ($GATEWAY_LISTEN)",
    )
    gateway.add_argument(
        "--upstream", default=gateway_settings.upstream, help="the Ollama it forwards to ($OLLAMA_HOST)"
    )

    health = _command(
        sub,
        "health",
        "grpc.health.v1 check of a service; exit 0 SERVING, 2 no connection, 3 RPC failure, 4 NOT_SERVING",
        _health,
    )
    health.add_argument("address", help="HOST:PORT of the matcher or tuner")
    health.add_argument(
        "--service", default="", help="service name, e.g. optimizer.v1.Matcher (default: none, the server as a whole)"
    )
    health.add_argument("--timeout", type=float, default=2.0, help="seconds to wait for the answer")

    match = _command(sub, "match", "match a prompt against the learned templates (--text, or standard input)", _match)
    _client_options(match, client.matcher_address, "matcher", "MATCHER_ADDRESS")
    match.add_argument("--model", default="llama3.1:8b", help="the model the prompt is for")
    match.add_argument("--text", default=None, help="the prompt text (default: read standard input)")
    match.add_argument("--observe", action="store_true", help="also learn from it (Observe)")

    templates = _command(sub, "templates", "list learned templates (fingerprints and counters, no text)", _templates)
    _client_options(templates, client.matcher_address, "matcher", "MATCHER_ADDRESS")
    templates.add_argument("--limit", type=_positive_int, default=20, help="templates per page")
    templates.add_argument("--after-id", type=_after_id, default=0, help="start after this template id (the next page)")

    stats = _command(
        sub,
        "stats",
        "tuner summary over a period: requests, optimized share, reloads, truncations, per model",
        _tuner_admin,
    )
    _client_options(stats, client.tuner_address, "tuner", "TUNER_ADDRESS")
    stats.add_argument("--period", type=_positive_int, default=3600, help="seconds back from now")
    stats.add_argument("--model", default="", help="only this model (empty: all)")
    for name, description in (
        ("explain", "why a template gets its options on a model"),
        ("pin", "pin a template's options on a model"),
        (
            "reset",
            "forget what was learned for a template on a model, or (no template) "
            "for the whole model: back to Ollama's defaults",
        ),
    ):
        command = _command(sub, name, description, _tuner_admin)
        _client_options(command, client.tuner_address, "tuner", "TUNER_ADDRESS")
        command.add_argument("model", help="model name, e.g. llama3.1:8b")
        if name == "pin":
            command.add_argument("template_id", type=_template_id, help="template id (see `templates`, `match`)")
        else:
            command.add_argument(
                "template_id",
                type=_template_id,
                nargs="?",
                default=0,
                help="template id (see `templates`, `match`); none: the model as a whole",
            )
        command.add_argument(
            "--host", default="", help="the Ollama host label the state belongs to (a gateway's OPT_OLLAMA_HOST)"
        )
        if name == "pin":
            command.add_argument("--num-ctx", type=_non_negative_int, default=0, help="num_ctx to pin (0: keep)")
            command.add_argument("--num-batch", type=_non_negative_int, default=0, help="num_batch to pin (0: keep)")
    return parser


def _int_between(minimum: int, maximum: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if not minimum <= value <= maximum:
            raise argparse.ArgumentTypeError(f"must be between {minimum} and {maximum}, not {value}")
        return value

    return parse


_UINT32_MAX, _INT64_MAX = 2**32 - 1, 2**63 - 1
_non_negative_int = _int_between(0, _UINT32_MAX)
_positive_int = _int_between(1, _UINT32_MAX)
_template_id = _int_between(1, _INT64_MAX)
_after_id = _int_between(0, _INT64_MAX)


class _EmbeddedPostgresLog(logging.FileHandler):
    """pgserver's output (initdb, pg_ctl: dozens of lines) to a file; one console line says where."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        super().__init__(path, delay=True)
        self._announced = False

    def emit(self, record: logging.LogRecord) -> None:
        if not self._announced:
            self._announced = True
            print(f"embedded Postgres: its output goes to {self.baseFilename}", file=sys.stderr, flush=True)
        super().emit(record)


def _send_pgserver_output_to_a_file() -> None:
    from .config import DatabaseConfig

    data_dir = load(DatabaseConfig, os.environ).data_dir
    handler = _EmbeddedPostgresLog(data_dir.with_name(data_dir.name + ".log"))
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    pgserver_log = logging.getLogger("pgserver")
    pgserver_log.addHandler(handler)
    pgserver_log.propagate = False
    # pgserver's platformdirs warns on every start where no XDG_RUNTIME_DIR is set (containers, CI), in
    # this process and in the helper processes it starts.
    quiet = "ignore:XDG_RUNTIME_DIR is not set"
    warnings.filterwarnings("ignore", message="XDG_RUNTIME_DIR is not set")
    os.environ["PYTHONWARNINGS"] = ",".join(filter(None, (os.environ.get("PYTHONWARNINGS"), quiet)))


def main(argv: list[str] | None = None) -> None:
    try:
        args = build_parser().parse_args(argv)
        logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
        if args.command in ("up", "migrate", "matcher", "tuner"):
            _send_pgserver_output_to_a_file()
    except ConfigError as exc:
        print(f"ollama-optimizer: bad configuration: {exc}", file=sys.stderr)
        sys.exit(2)
    try:
        code = asyncio.run(args.func(args))
    except KeyboardInterrupt:
        code = 130
    except ConfigError as exc:
        print(f"ollama-optimizer {args.command}: bad configuration: {exc}", file=sys.stderr)
        code = 2
    except StartupError as exc:  # database unreachable or refusing, address in use: the message says it all
        logging.getLogger("ollama_optimizer").error("%s", exc)
        code = 1
    except CliError as exc:
        print(f"ollama-optimizer {args.command}: error: {exc}", file=sys.stderr)
        code = exc.exit_code
    except Exception as exc:  # one line for the user, the traceback at DEBUG
        logging.getLogger("ollama_optimizer").debug("%s failed", args.command, exc_info=True)
        print(
            f"ollama-optimizer {args.command}: error: {type(exc).__name__}: {' '.join(str(exc).split())} "
            "(--log-level DEBUG shows the traceback)",
            file=sys.stderr,
        )
        code = 1
    sys.exit(code)


if __name__ == "__main__":
    main()
