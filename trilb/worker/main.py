"""A worker's life after fork: logging, parent-death signal, then trio.run.

Owns the boundary between the synchronous forked child and its event loop. What the
worker serves is worker/serve.py's business.
"""

from __future__ import annotations

import ctypes
import logging
import signal
import socket

import trio

from trilb.config.schema import Config
from trilb.obs.logging import setup_logging
from trilb.worker.serve import serve_worker

log = logging.getLogger(__name__)

_PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>


def _die_with_parent() -> None:
    """Ask the kernel to SIGTERM us when the master dies, so no orphan keeps serving."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    except (OSError, AttributeError):
        log.warning("prctl(PR_SET_PDEATHSIG) unavailable: workers may outlive the master")


def run_worker(
    config: Config,
    slot: int,
    generation: int,
    listeners: dict[str, list[socket.socket]],
    ready_fd: int,
) -> int:
    """Serve one slot until SIGTERM and the drain that follows; returns the exit status."""
    setup_logging(f"worker {slot + 1}", config.global_.log_level)
    _die_with_parent()
    log.debug("generation %d started", generation)
    trio.run(serve_worker, config, listeners, ready_fd)
    return 0
