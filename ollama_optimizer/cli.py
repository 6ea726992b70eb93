"""The `ollama-optimizer` command line."""
from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from collections.abc import Callable, Coroutine
from typing import Any

from .config import StartupError, env_str


def _count(text: str) -> int:
    """argparse type: a whole number from 0 to 2**32 - 1 (a uint32 on the wire)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if not 0 <= value < 2**32:
        raise argparse.ArgumentTypeError(f"{value} is out of range (0 to {2**32 - 1})")
    return value


def _matcher_address() -> str:
    return env_str("MATCHER_ADDRESS", "127.0.0.1:50061")


def _tuner_address() -> str:
    return env_str("TUNER_ADDRESS", "127.0.0.1:50062")


async def _up(args: argparse.Namespace) -> int:
    from .supervisor import run_all

    return await run_all(with_gateway=not args.no_gateway)


async def _migrate(args: argparse.Namespace) -> int:
    from .config import DatabaseConfig
    from .db import embedded_or_configured_dsn
    from .migrations import apply_migrations, describe

    async with embedded_or_configured_dsn(DatabaseConfig()) as (dsn, _embedded):
        report = await apply_migrations(dsn, contract=args.contract)
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


def _client_tls_args() -> dict[str, str]:
    from .health_check import client_args_from_env

    return client_args_from_env()


async def _match(args: argparse.Namespace) -> int:
    from matcher_service.admin_cli import match

    text = args.text if args.text is not None else sys.stdin.read()
    return await match(args.address, args.model, text, observe=args.observe, **_client_tls_args())


async def _templates(args: argparse.Namespace) -> int:
    from matcher_service.admin_cli import list_templates

    return await list_templates(args.address, args.limit, **_client_tls_args())


async def _tuner_admin(args: argparse.Namespace) -> int:
    from tuner_service import admin_cli

    command: Callable[..., Coroutine[Any, Any, int]] = getattr(admin_cli, args.command)
    return await command(args, **_client_tls_args())


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ollama-optimizer", description=__doc__)
    parser.add_argument("--log-level", default=os.environ.get("OPTIMIZER_LOG_LEVEL", "INFO"))
    sub = parser.add_subparsers(dest="command", required=True)

    up = sub.add_parser("up", help="embedded Postgres (no DSN) + migrations + matcher + tuner + gateway")
    up.add_argument("--no-gateway", action="store_true", help="do not start the gateway")
    up.set_defaults(func=_up)
    migrate = sub.add_parser("migrate", help="apply the pending expand migrations (safe while older versions run)")
    migrate.add_argument("--contract", action="store_true",
                         help="also apply contract steps (drop what older versions use): only once none runs")
    migrate.set_defaults(func=_migrate)
    sub.add_parser("matcher", help="run the matcher gRPC service").set_defaults(func=_matcher)
    sub.add_parser("tuner", help="run the tuner gRPC service").set_defaults(func=_tuner)

    gateway = sub.add_parser("gateway", help="run the Ollama-API gateway")
    gateway.add_argument("--listen", default=env_str("GATEWAY_LISTEN", "127.0.0.1:11435"))
    gateway.add_argument("--upstream", default=env_str("OLLAMA_HOST", "127.0.0.1:11434"))
    gateway.set_defaults(func=_gateway)

    health = sub.add_parser("health", help="grpc.health.v1 check; exit 0 when SERVING")
    health.add_argument("address", help="HOST:PORT")
    health.add_argument("--service", default="", help="service name ('' = server overall)")
    health.add_argument("--timeout", type=float, default=2.0)
    health.set_defaults(func=_health)

    match = sub.add_parser("match", help="match a prompt (text argument or stdin) against the templates")
    match.add_argument("--address", default=_matcher_address())
    match.add_argument("--model", default="llama3.1:8b")
    match.add_argument("--text", default=None)
    match.add_argument("--observe", action="store_true", help="also learn from it (Observe)")
    match.set_defaults(func=_match)

    templates = sub.add_parser("templates", help="list learned templates")
    templates.add_argument("--address", default=_matcher_address())
    templates.add_argument("--limit", type=_count, default=20)
    templates.set_defaults(func=_templates)

    stats = sub.add_parser("stats", help="tuner summary over a period")
    stats.add_argument("--period", type=_count, default=3600, help="seconds")
    stats.add_argument("--model", default="")
    for name, helptext in (("explain", "why a template gets its options"), ("pin", "pin options"),
                           ("reset", "forget what was learned")):
        p = sub.add_parser(name, help=helptext)
        p.add_argument("model")
        if name == "pin":
            p.add_argument("template_id", type=_count)
            p.add_argument("--num-ctx", type=_count, default=0)
            p.add_argument("--num-batch", type=_count, default=0)
        else:  # without a template: the model as a whole
            p.add_argument("template_id", type=_count, nargs="?", default=0)
        p.add_argument("--host", default="", help="Ollama host label the state belongs to (gateway ollama_host)")
        p.add_argument("--address", default=_tuner_address())
        p.set_defaults(func=_tuner_admin)
    stats.add_argument("--address", default=_tuner_address())
    stats.set_defaults(func=_tuner_admin)
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        code = asyncio.run(args.func(args))
    except KeyboardInterrupt:
        code = 130
    except StartupError as exc:  # database unreachable or refusing, address in use: the message says it all
        logging.getLogger("ollama_optimizer").error("%s", exc)
        code = 1
    except (OSError, ValueError) as exc:  # a malformed setting, a missing TLS or config file: one line, no traceback
        print(f"ollama-optimizer {args.command}: {exc}", file=sys.stderr)
        code = 1
    sys.exit(code)


if __name__ == "__main__":
    main()
