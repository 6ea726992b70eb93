"""Embedded Postgres (pgserver) for local runs and tests, with no orphan server, ever.

Every process that opens the data directory is an owner, recorded in pgserver's handle list; the
first one starts the server, the others attach to it. A tiny reaper process per owner watches it
through a pipe: when the owner exits (even on SIGKILL) the reaper removes it from the list and
stops the server only if no live owner remains, so no process ever stops a Postgres another one
uses. The stop is a "smart" shutdown first (sessions of the owner's children finish their work),
then fast, then a kill.

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
from contextlib import AbstractContextManager
from pathlib import Path
from typing import TYPE_CHECKING

import psutil

if TYPE_CHECKING:
    from pgserver.postgres_server import PostgresServer

log = logging.getLogger(__name__)

HANDLE_FILE = ".handle_pids.json"
MAX_AUTO_SHARED_BUFFERS_MB = 1024
SMART_SHUTDOWN_SECONDS = 30.0  # the owner's children close their sessions (a tuner flushes) meanwhile
FAST_SHUTDOWN_SECONDS = 20.0


def default_shared_buffers_mb(configured: int = 0) -> int:
    """``configured`` (OPTIMIZER_EMBEDDED_SHARED_BUFFERS_MB) when set, else a quarter of the RAM, between 128 MB
    and 1 GiB."""
    if configured > 0:
        return configured
    quarter = psutil.virtual_memory().total // 4 // (1 << 20)
    return max(128, min(MAX_AUTO_SHARED_BUFFERS_MB, quarter))


class EmbeddedPostgres:
    """A pgserver instance owned by this process; ``stop()`` (or exit) shuts it down."""

    def __init__(self, data_dir: Path, shared_buffers_mb: int | None = None) -> None:
        from pgserver.postgres_server import get_server  # heavy import, only when embedded Postgres is used

        data_dir.mkdir(parents=True, exist_ok=True)
        data_dir = data_dir.resolve()  # pgserver keys its handle list by the resolved path
        with _owners_lock():
            _drop_stale_handles(data_dir)
        self.data_dir = data_dir
        self._server: PostgresServer | None = get_server(data_dir, cleanup_mode="stop")
        self._reaper = _start_reaper(data_dir)
        wanted = default_shared_buffers_mb(shared_buffers_mb or 0)
        server = self._server
        if _shared_buffers_mb(server) == wanted:
            return
        server.psql(f"ALTER SYSTEM SET shared_buffers = '{int(wanted)}MB';")  # read at the next start
        if owners(data_dir) == [os.getpid()]:
            server.cleanup()
            self._server = get_server(data_dir, cleanup_mode="stop")
            log.info("embedded Postgres restarted with shared_buffers = %d MB", wanted)
        else:
            log.info("embedded Postgres shared by other processes: shared_buffers = %d MB at its next start", wanted)

    def uri(self, database: str = "postgres") -> str:
        """libpq URI (Unix socket) usable by asyncpg."""
        if self._server is None:
            raise RuntimeError("embedded Postgres is stopped")
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


def _shared_buffers_mb(server: PostgresServer) -> int:
    """The running server's shared_buffers in MB (psql's aligned output: header, rule, value)."""
    output = server.psql("SELECT setting::bigint * 8 / 1024 FROM pg_settings WHERE name = 'shared_buffers';")
    return int(output.splitlines()[2])


def _owners_lock() -> AbstractContextManager[object]:
    """pgserver's inter-process lock, under which it adds and removes owners and starts or stops servers."""
    from pgserver.postgres_server import PostgresServer

    lock: AbstractContextManager[object] = PostgresServer._lock  # a fasteners.InterProcessLock (untyped)
    return lock


def owners(data_dir: Path) -> list[int]:
    """Pids of the processes recorded as using the embedded server of ``data_dir``."""
    try:
        return [int(pid) for pid in json.loads((data_dir / HANDLE_FILE).read_text())]
    except (OSError, ValueError, TypeError):
        return []


def _drop_stale_handles(data_dir: Path, *also: int) -> list[int]:
    """Forget owners that died without cleanup (and ``also``); returns the live owners left."""
    recorded = owners(data_dir)
    alive = [pid for pid in recorded if pid not in also and _alive(pid)]
    if alive != recorded:  # never create the file: initdb wants an empty directory
        (data_dir / HANDLE_FILE).write_text(json.dumps(alive))
    return alive


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _start_reaper(data_dir: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "ollama_optimizer.embedded_pg", str(data_dir), str(os.getpid())],
        stdin=subprocess.PIPE,
        start_new_session=True,  # survives the owner's Ctrl-C to do its job
    )


def _postmaster_pid(data_dir: Path) -> int | None:
    try:
        return int((data_dir / "postmaster.pid").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def _shut_down(postmaster_pid: int) -> None:
    """Smart shutdown (waits for sessions to end), then fast, then kill, each bounded."""
    try:
        process = psutil.Process(postmaster_pid)
        for sig, seconds in ((signal.SIGTERM, SMART_SHUTDOWN_SECONDS), (signal.SIGINT, FAST_SHUTDOWN_SECONDS)):
            process.send_signal(sig)
            try:
                process.wait(timeout=seconds)
                return
            except psutil.TimeoutExpired:
                continue
        process.kill()
    except psutil.NoSuchProcess:
        pass


def _reap(data_dir: Path, owner_pid: int) -> None:
    """Block until the owner's pipe closes; then release its ownership and stop the server if it was the last."""
    sys.stdin.buffer.read()
    with _owners_lock():
        if _drop_stale_handles(data_dir, owner_pid):
            return  # another process uses the server
        postmaster_pid = _postmaster_pid(data_dir)
        if postmaster_pid is not None and psutil.pid_exists(postmaster_pid):
            _shut_down(postmaster_pid)


if __name__ == "__main__":
    _reap(Path(sys.argv[1]), int(sys.argv[2]))
