"""Child processes that die with their parent, even when the parent is SIGKILLed (Linux)."""

from __future__ import annotations

import ctypes
import os
import signal
import sys
from collections.abc import Callable

_PR_SET_PDEATHSIG = 1


def die_with_parent(sig: signal.Signals = signal.SIGTERM) -> Callable[[], None] | None:
    """A ``preexec_fn`` asking the kernel to send ``sig`` to the child when this process exits.

    The child then shuts down as on Ctrl-C (graceful, bounded) instead of living on as an orphan
    holding its ports. None where ``prctl`` does not exist (not Linux): children are then stopped
    only by a clean exit of the parent.
    """
    if not sys.platform.startswith("linux"):
        return None
    parent = os.getpid()
    libc = ctypes.CDLL(None, use_errno=True)

    def arm() -> None:
        if libc.prctl(_PR_SET_PDEATHSIG, int(sig), 0, 0, 0) != 0:
            os._exit(70)  # never run a child that would outlive its parent
        if os.getppid() != parent:  # the parent died between fork and prctl
            os.kill(os.getpid(), sig)

    return arm
