"""A worker's life after fork: logging, parent-death signal, then trio.run.

Owns the boundary between the synchronous forked child and its event loop. What the
worker serves is worker/serve.py's business.
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import socket

import trio

from trilb.config.schema import Config
from trilb.control.shared import SharedState
from trilb.obs.logging import setup_logging
from trilb.tls import ServerTls
from trilb.worker.serve import serve_worker

log = logging.getLogger(__name__)

_PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>


def die_with_parent(master: int) -> bool:
    """Ask the kernel to SIGTERM us when the master dies; False if it is already gone."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        failed = libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0) != 0
    except (OSError, AttributeError):
        failed = True
    if failed:
        log.warning("prctl(PR_SET_PDEATHSIG) unavailable: workers may outlive the master")
    # The master may have died between fork and prctl: then nobody sends the signal.
    return os.getppid() == master


def run_worker(
    config: Config,
    slot: int,
    generation: int,
    listeners: dict[str, list[socket.socket]],
    ready_fd: int,
    master: int,
    tls: dict[str, ServerTls] | None = None,
    shared: SharedState | None = None,
) -> int:
    """Serve one slot until SIGTERM and the drain that follows; returns the exit status.
    ``shared``: the generation's shared mapping (control/shared.py), when it has a
    control process."""
    setup_logging(f"worker {slot + 1}", config.global_.log_level)
    if not die_with_parent(master):
        return 0
    log.debug("generation %d started", generation)
    trio.run(serve_worker, config, listeners, ready_fd, tls, shared, slot)
    return 0
