"""The ``trilb`` command line, run as a real subprocess: check, --version, serve failures."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

import trilb

GOOD = """
[global]
workers = 2

[frontends.db]
mode = "tcp"
bind = "{bind}"
default_backend = "pg"

[backends.pg]
servers = ["127.0.0.1:5432", "127.0.0.1:5433"]
"""


@dataclass
class Run:
    status: int | None  # None: still running at the deadline (then killed)
    stdout: str
    stderr: str
    seconds: float


def trilb_cmd(*args: str, timeout: float = 20.0) -> Run:
    """Run ``python -m trilb ARGS`` in its own session, killing the whole group on timeout.

    A serve that wrongly succeeds forks workers; killing the group (which only this
    test's processes are in) makes sure none outlives the test.
    """
    start = time.monotonic()
    proc = subprocess.Popen(
        [sys.executable, "-m", "trilb", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        out, err = proc.communicate(timeout=timeout)
        status: int | None = proc.returncode
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        status = None
    return Run(status, out, err, time.monotonic() - start)


@pytest.fixture
def held() -> Iterator[int]:
    """A loopback port someone else is listening on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "trilb.toml"
    path.write_text(text)
    return path


def test_check_good_config(tmp_path: Path) -> None:
    file = write(tmp_path, GOOD.format(bind="127.0.0.1:15432"))
    run = trilb_cmd("check", "-c", str(file))
    assert run.status == 0, run.stderr
    assert run.stdout == f"{file}: ok: 1 frontend(s), 1 backend(s), 2 server(s), workers=2\n"
    assert run.stderr == ""


def test_check_misspelled_backend(tmp_path: Path) -> None:
    text = GOOD.format(bind="127.0.0.1:15432").replace(
        'default_backend = "pg"', 'default_backend = "gp"'
    )
    file = write(tmp_path, text)
    run = trilb_cmd("check", "-c", str(file))
    assert run.status == 2
    assert run.stdout == ""
    assert run.stderr == (
        f'trilb: error: {file}: frontends.db.default_backend: unknown backend "gp" '
        '(backends: "pg")\n'
    )


def test_check_missing_file(tmp_path: Path) -> None:
    file = tmp_path / "absent.toml"
    run = trilb_cmd("check", "-c", str(file))
    assert run.status == 2
    assert run.stderr == f"trilb: error: {file}: cannot read config: No such file or directory\n"


def test_version() -> None:
    run = trilb_cmd("--version")
    assert run.status == 0
    assert run.stdout == f"trilb {trilb.__version__}\n"


def test_check_requires_a_config() -> None:
    run = trilb_cmd("check")
    assert run.status == 2  # argparse's usage error
    assert "-c/--config" in run.stderr


def test_serve_on_a_taken_port_fails_fast(tmp_path: Path, held: int) -> None:
    file = write(tmp_path, GOOD.format(bind=f"127.0.0.1:{held}"))
    run = trilb_cmd("serve", "-c", str(file), timeout=10)
    assert run.status == 1, run.stderr
    assert run.seconds < 5
    lines = run.stderr.splitlines()
    assert len(lines) == 1, run.stderr
    assert lines[0] == (
        f"trilb: error: frontends.db.bind: cannot listen on 127.0.0.1:{held}: "
        "address already in use"
    )
    assert "worker" not in run.stderr
    assert run.stdout == ""


def test_serve_invalid_config_forks_nothing(tmp_path: Path) -> None:
    text = GOOD.format(bind="127.0.0.1:0").replace('mode = "tcp"', 'mode = "quic"')
    file = write(tmp_path, text)
    run = trilb_cmd("serve", "-c", str(file), timeout=10)
    assert run.status == 2
    assert run.stderr == (
        f'trilb: error: {file}: frontends.db.mode: expected "tcp" | "udp" | "http", got \'quic\'\n'
    )


def test_serve_rejects_zero_workers(tmp_path: Path) -> None:
    # global.workers must be 1..1024; --workers 0 must not start a master with no
    # workers that serves nothing and never exits.
    file = write(tmp_path, GOOD.format(bind="127.0.0.1:0"))
    run = trilb_cmd("serve", "-c", str(file), "--workers", "0", timeout=5)
    assert run.status is not None, f"still running after 5s: {run.stderr}"
    assert run.status != 0
    assert "workers" in run.stderr
