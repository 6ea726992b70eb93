"""Embedded Postgres (pgserver) for local runs and tests, with no orphan server, ever.

The owning process starts the server; a tiny reaper process watches the owner
through a pipe and shuts the server down (fast mode) if the owner dies without
cleaning up, even on SIGKILL.

Unlike a bare pgserver, the server gets a ``shared_buffers`` sized for the matcher's block indexes
(about 0.8 GB at a million templates): Postgres's 128 MB default makes every lookup copy index pages
from the OS cache. Set once with ALTER SYSTEM (one restart when a data directory is new or the size
changes).
"""
from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
from pathlib import Path

import psutil

from .config import env_int

log = logging.getLogger(__name__)

HANDLE_FILE = ".handle_pids.json"
MAX_AUTO_SHARED_BUFFERS_MB = 1024


def default_shared_buffers_mb() -> int:
    """``OPTIMIZER_EMBEDDED_SHARED_BUFFERS_MB``, else a quarter of the RAM, between 128 MB and 1 GiB."""
    configured = env_int("OPTIMIZER_EMBEDDED_SHARED_BUFFERS_MB", 0)
    if configured > 0:
        return configured
    quarter = psutil.virtual_memory().total // 4 // (1 << 20)
    return max(128, min(MAX_AUTO_SHARED_BUFFERS_MB, quarter))


class EmbeddedPostgres:
    """A pgserver instance owned by this process; ``stop()`` (or exit) shuts it down."""

    def __init__(self, data_dir: Path, shared_buffers_mb: int | None = None) -> None:
        import pgserver  # heavy import, only when embedded Postgres is used

        data_dir.mkdir(parents=True, exist_ok=True)
        _drop_stale_handles(data_dir)
        self.data_dir = data_dir
        self._server = pgserver.get_server(data_dir, cleanup_mode="stop")
        wanted = shared_buffers_mb or default_shared_buffers_mb()
        if _shared_buffers_mb(self._server) != wanted:  # takes effect at the next start only
            self._server.psql(f"ALTER SYSTEM SET shared_buffers = '{int(wanted)}MB';")
            self._server.cleanup()
            self._server = pgserver.get_server(data_dir, cleanup_mode="stop")
            log.info("embedded Postgres restarted with shared_buffers = %d MB", wanted)
        self._reaper = _start_reaper(data_dir, self._server.get_pid())

    def uri(self, database: str = "postgres") -> str:
        """libpq URI (Unix socket) usable by asyncpg."""
        return self._server.get_uri(database)

    def stop(self) -> None:
        """Stop the server (idempotent) and release the reaper."""
        if self._server is None:
            return
        self._server.cleanup()
        self._server = None
        if self._reaper.stdin:
            self._reaper.stdin.close()
        try:
            self._reaper.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._reaper.kill()


def _shared_buffers_mb(server) -> int:  # type: ignore[no-untyped-def]  # a pgserver.PostgresServer
    """The running server's shared_buffers in MB (psql's aligned output: header, rule, value)."""
    output = server.psql("SELECT setting::bigint * 8 / 1024 FROM pg_settings WHERE name = 'shared_buffers';")
    return int(output.splitlines()[2])


def _drop_stale_handles(data_dir: Path) -> None:
    """Forget handles of processes that died without cleanup, so the last live owner stops the server."""
    handles = data_dir / HANDLE_FILE
    if not handles.exists():
        return
    try:
        pids = json.loads(handles.read_text())
    except (OSError, ValueError):
        pids = []
    alive = [pid for pid in pids if psutil.pid_exists(pid) and pid != os.getpid()]
    handles.write_text(json.dumps(alive))


def _start_reaper(data_dir: Path, postmaster_pid: int | None) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "ollama_optimizer.embedded_pg", str(data_dir), str(postmaster_pid or 0)],
        stdin=subprocess.PIPE,
        start_new_session=True,  # survives the owner's Ctrl-C to do its job
    )


def _reap(data_dir: Path, postmaster_pid: int) -> None:
    """Block until the owner's pipe closes; then stop the server if it is still up."""
    sys.stdin.buffer.read()
    if not postmaster_pid or not psutil.pid_exists(postmaster_pid):
        return
    if not (data_dir / "postmaster.pid").exists():
        return
    try:
        os.kill(postmaster_pid, signal.SIGINT)  # Postgres "fast shutdown"
        psutil.Process(postmaster_pid).wait(timeout=20)
    except (ProcessLookupError, psutil.NoSuchProcess):
        pass
    except psutil.TimeoutExpired:
        os.kill(postmaster_pid, signal.SIGKILL)
    _drop_stale_handles(data_dir)


if __name__ == "__main__":
    _reap(Path(sys.argv[1]), int(sys.argv[2]))
