"""Processes of a run that die with their parent: after a SIGKILL of ``batch`` no decoding worker (hundreds of MB
each), forkserver or resource tracker is left behind.

The local engine's DataLoader workers are children of multiprocessing's forkserver, not of the run's process, and
each holds the write end of the forkserver's "alive" pipe: so the forkserver never sees that pipe close while they
live, and they never see their parent go. Linux's parent-death signal breaks the circle: the forkserver dies with
the run's process (:mod:`.forkserver_preload`, imported by the forkserver when it starts) and each worker with the
forkserver (:func:`die_with_parent` as the DataLoader's ``worker_init_fn``); the resource tracker then reads the end
of its pipe and exits by itself. Elsewhere this does nothing.
"""

from __future__ import annotations

import ctypes
import signal
import sys

PR_SET_PDEATHSIG = 1  # <linux/prctl.h>

PRELOAD = "explainers.batch.forkserver_preload"


def die_with_parent(_worker_id: int | None = None) -> bool:
    """Ask the kernel to SIGKILL this process when its parent dies (Linux ``prctl(PR_SET_PDEATHSIG)``); whether it
    could. Takes (and ignores) a DataLoader worker id, so it serves as ``worker_init_fn``."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0) == 0
    except (OSError, AttributeError):  # no libc prctl (e.g. a static or unusual runtime): workers live as before
        return False
