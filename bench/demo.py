"""``make demo``: the two runs of bench/demo_runs.py, printed without the services' logs.

gRPC's core reads its settings when ``grpc`` is imported: they are set before the demo imports it. Without fork
handlers (the demo starts Postgres helpers beside gRPC threads, and none of its children runs gRPC before
exec) the core has nothing to log about them; it logs errors only.
"""

from __future__ import annotations

import os
import sys


def main(argv: list[str] | None = None) -> None:
    os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")
    os.environ.setdefault("GRPC_VERBOSITY", "ERROR")
    os.environ.setdefault("OPTIMIZER_LOG_LEVEL", "ERROR")  # the matcher and tuner processes it starts
    from bench.demo_runs import main as run

    run(sys.argv[1:] if argv is None else argv)


if __name__ == "__main__":
    main()
