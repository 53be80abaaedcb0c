"""The ``trilb`` command line: serve, check, demo, and reload / stop of a running master.

Owns argument parsing, exit statuses and the pidfile. Overrides only what
CONVENTIONS.md allows (config path, worker count, log level); everything else comes
from the TOML file. It does not supervise anything itself: that is master/arbiter.py.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from trilb import __version__
from trilb.config.load import load_config
from trilb.config.schema import Config
from trilb.errors import ConfigError, StartupError
from trilb.obs.logging import setup_logging
from trilb.tls import server_tls

if TYPE_CHECKING:
    from trilb.master.arbiter import Arbiter

log = logging.getLogger("trilb")

EXIT_CONFIG = 2  # the config is invalid
EXIT_STARTUP = 1  # the config is valid but could not be served (port taken...)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="trilb", description="Layer 4 / Layer 7 load balancer")
    p.add_argument("--version", action="version", version=f"trilb {__version__}")
    sub = p.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run the load balancer")
    serve.add_argument("-c", "--config", required=True, help="the TOML config file")
    serve.add_argument("--workers", type=int, help="override global.workers")
    serve.add_argument("--log-level", choices=["debug", "info", "warning", "error"])
    serve.add_argument("--pidfile", help="write the master's PID here")
    check = sub.add_parser("check", help="validate a config file and exit")
    check.add_argument("-c", "--config", required=True)
    demo = sub.add_parser("demo", help="run trilb in front of built-in demo backends")
    demo.add_argument("--port", type=int, default=0, help="frontend port (default: any free)")
    demo.add_argument("--workers", type=int, default=2)
    reload = sub.add_parser("reload", help="make the master of a pidfile reload its config")
    reload.add_argument("--pidfile", required=True, help="the pidfile `serve` wrote")
    stop = sub.add_parser("stop", help="stop the master of a pidfile; wait for it to exit")
    stop.add_argument("--pidfile", required=True, help="the pidfile `serve` wrote")
    stop.add_argument("--timeout", type=float, default=60.0,
                      help="seconds to wait for the exit (default 60)")  # fmt: skip
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "check":
        return _check(args.config)
    if args.command == "demo":
        from trilb.demo import run_demo

        return run_demo(args.port, args.workers)
    if args.command in ("reload", "stop"):
        return _signal_master(args.command, args.pidfile, getattr(args, "timeout", 0.0))
    status: int = serve(args.config, args.workers, args.log_level, args.pidfile)
    return status


def _check(path: str) -> int:
    try:
        config = load_config(path)
        server_tls(config)  # certificates and keys load, and match
    except ConfigError as exc:
        print(f"trilb: error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    print(f"{path}: ok: {config.summary()}")
    return 0


def serve(
    path: str, workers: int | None = None, log_level: str | None = None, pidfile: str | None = None
) -> int:
    """Validate, bind, fork and supervise until stopped; returns the exit status."""
    setup_logging("master", log_level or "info")
    try:
        config = load_config(path, workers=workers, log_level=log_level)
        server_tls(config)  # a bad certificate is a config error, before anything binds
    except ConfigError as exc:
        print(f"trilb: error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    setup_logging("master", config.global_.log_level)
    return run_master(path, config, workers, pidfile, log_level=log_level)


def run_master(
    path: str,
    config: Config,
    workers: int | None,
    pidfile: str | None,
    on_started: Callable[[Arbiter], None] | None = None,
    log_level: str | None = None,
) -> int:
    """Bind, fork and supervise; ``on_started`` runs once the workers are forked."""
    from trilb.master.arbiter import Arbiter

    arbiter = Arbiter(path, config, workers, log_level)
    try:
        if pidfile:
            _write_pidfile(pidfile)
        arbiter.start()
    except StartupError as exc:
        print(f"trilb: error: {exc}", file=sys.stderr)
        arbiter.sockets.close_all()
        _remove_pidfile(pidfile)
        return EXIT_STARTUP
    log.info("trilb %s started, pid %d", __version__, os.getpid())
    if on_started is not None:
        on_started(arbiter)
    try:
        return arbiter.run()
    finally:
        _remove_pidfile(pidfile)


def _signal_master(command: str, pidfile: str, timeout: float) -> int:
    """``trilb reload``: SIGHUP to the pidfile's master. ``trilb stop``: SIGTERM, then
    wait until it has exited (its workers drain first, within global.grace)."""
    try:
        pid = _master_pid(pidfile)
    except StartupError as exc:
        print(f"trilb: error: {exc}", file=sys.stderr)
        return EXIT_STARTUP
    sig = signal.SIGHUP if command == "reload" else signal.SIGTERM
    try:
        os.kill(pid, sig)
    except OSError as exc:
        print(f"trilb: error: cannot signal pid {pid}: {exc.strerror}", file=sys.stderr)
        return EXIT_STARTUP
    if command == "reload":
        print(f"trilb: sent SIGHUP to master {pid}: it reloads its config (see its log)")
        return 0
    deadline = time.monotonic() + timeout
    while _alive(pid):
        if time.monotonic() > deadline:
            print(f"trilb: error: master {pid} still running after {timeout:g}s",
                  file=sys.stderr)  # fmt: skip
            return EXIT_STARTUP
        time.sleep(0.05)
    print(f"trilb: master {pid} stopped")
    return 0


def _master_pid(pidfile: str) -> int:
    """The PID in ``pidfile``, checked to be a running ``trilb serve`` (a stale pidfile
    may name a process that reused the number).

    Raises:
      StartupError: no such file, no number in it, or no trilb master behind it.
    """
    try:
        with open(pidfile) as f:
            text = f.read().strip()
    except OSError as exc:
        raise StartupError(f"cannot read pidfile {pidfile}: {exc.strerror}") from None
    if not text.isdigit():
        raise StartupError(f"pidfile {pidfile} holds no process id: {text[:40]!r}")
    pid = int(text)
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            argv = f.read().split(b"\0")
    except OSError:
        raise StartupError(f"pidfile {pidfile}: no process {pid} (a stale pidfile?)") from None
    if b"serve" not in argv or not any(b"trilb" in a for a in argv):
        raise StartupError(f"pidfile {pidfile}: process {pid} is not a trilb master "
                           "(a stale pidfile?)")  # fmt: skip
    return pid


def _alive(pid: int) -> bool:
    """Whether ``pid`` still runs (a zombie, exited but not reaped, does not count)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().split(b") ", 1)[1][:1] != b"Z"
    except (OSError, IndexError):
        return False


def _write_pidfile(pidfile: str) -> None:
    try:
        with open(pidfile, "w") as f:
            f.write(f"{os.getpid()}\n")
    except OSError as exc:
        raise StartupError(f"cannot write pidfile {pidfile}: {exc.strerror}") from None


def _remove_pidfile(pidfile: str | None) -> None:
    if pidfile:
        try:
            os.unlink(pidfile)
        except OSError:
            pass
