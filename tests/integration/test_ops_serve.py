"""`trilb reload` and `trilb stop` against a real `trilb serve` and its pidfile, and
their refusals when the pidfile names no trilb master."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.integration.conftest import Backend, Trilb, free_port, tcp_config

pytestmark = pytest.mark.slow

Factory = Callable[..., Trilb]


def trilb_cmd(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "trilb", *args], capture_output=True,
                          text=True, timeout=60)  # fmt: skip


def test_reload_and_stop_through_the_pidfile(trilb_factory: Factory) -> None:
    backend = Backend("A")
    try:
        port = free_port()
        trilb = trilb_factory(tcp_config(port, [backend.address]), workers=1)
        done = trilb_cmd("reload", "--pidfile", str(trilb.pidfile))
        assert done.returncode == 0, done.stderr
        assert done.stdout == f"trilb: sent SIGHUP to master {trilb.pid}: it reloads its " \
                              "config (see its log)\n"  # fmt: skip
        trilb.wait_ready(2)  # generation 2's worker is ready
        assert "generation 2: starting 1 worker(s)" in trilb.log()
        done = trilb_cmd("stop", "--pidfile", str(trilb.pidfile), "--timeout", "20")
        assert (done.returncode, done.stdout) == (0, f"trilb: master {trilb.pid} stopped\n")
        assert trilb.proc.wait(5) == 0
        assert not trilb.pidfile.exists()
    finally:
        backend.stop()


def test_a_pidfile_that_names_no_trilb_master_is_refused(tmp_path: Path) -> None:
    pidfile = tmp_path / "trilb.pid"
    done = trilb_cmd("stop", "--pidfile", str(pidfile))
    assert done.returncode == 1 and f"cannot read pidfile {pidfile}" in done.stderr
    pidfile.write_text("garbage\n")
    done = trilb_cmd("reload", "--pidfile", str(pidfile))
    assert done.returncode == 1 and "holds no process id: 'garbage'" in done.stderr
    other = subprocess.Popen(["sleep", "30"])
    try:
        pidfile.write_text(f"{other.pid}\n")  # a live process that is not trilb: untouched
        done = trilb_cmd("stop", "--pidfile", str(pidfile))
        assert done.returncode == 1 and "is not a trilb master" in done.stderr
        assert other.poll() is None
    finally:
        other.kill()
        other.wait()
    pidfile.write_text(f"{other.pid}\n")  # gone now: a stale pidfile
    done = trilb_cmd("reload", "--pidfile", str(pidfile))
    assert done.returncode == 1 and f"no process {other.pid} (a stale pidfile?)" in done.stderr
