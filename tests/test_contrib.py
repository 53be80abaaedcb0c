"""Every example config shipped in contrib/ is valid."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from trilb.config.load import load_config

CONTRIB = Path(__file__).resolve().parent.parent / "contrib"


@pytest.mark.parametrize("path", sorted(CONTRIB.glob("*.toml")), ids=lambda p: p.name)
def test_contrib_config_is_valid(path: Path) -> None:
    config = load_config(path)
    assert config.frontends, path


def test_contrib_has_configs() -> None:
    assert list(CONTRIB.glob("*.toml"))


IPALLOW = CONTRIB / "trilb-ipallow"


@pytest.mark.slow
def test_the_third_party_example_installs_and_is_used_by_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """pip installs contrib/trilb-ipallow (into a directory of its own, not this
    environment); a config names it by its entry point; a real trilb serves with it."""
    import socket
    import subprocess
    import sys

    from tests.integration.conftest import Trilb, free_port

    target = tmp_path / "site"
    build = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
         "--target", str(target), str(IPALLOW)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert build.returncode == 0, build.stderr
    assert (target / "trilb_ipallow").is_dir()
    monkeypatch.setenv("PYTHONPATH", str(target))  # (the trilb process inherits it)
    with socket.socket() as origin:
        origin.bind(("127.0.0.1", 0))
        origin.listen(8)
        port = free_port()
        config = f"""
[frontends.web]
mode = "http"
bind = "127.0.0.1:{port}"
default_backend = "app"
plugins = ["ipallow"]

[backends.app]
servers = ["127.0.0.1:{origin.getsockname()[1]}"]

[plugins.ipallow]
allow = ["127.0.0.1/32"]
maintenance = true
"""
        for text, ok in ((config, True), (config.replace('"127.0.0.1/32"', '"nope"'), False)):
            file = tmp_path / "check.toml"
            file.write_text(text)
            check = subprocess.run([sys.executable, "-m", "trilb", "check", "-c", str(file)],
                                   capture_output=True, text=True, timeout=60)  # fmt: skip
            assert (check.returncode == 0) is ok, check.stderr
            if not ok:
                assert "plugins.ipallow.allow[0]" in check.stderr
        (tmp_path / "run").mkdir()
        trilb = Trilb(tmp_path / "run", config, workers=1)
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
                sock.sendall(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
                answer = sock.recv(4096)
            assert answer.startswith(b"HTTP/1.1 503 "), answer
            assert answer.endswith(b"Down for maintenance, back soon.\n")
            with socket.create_connection(("127.0.0.1", port), timeout=5,
                                          source_address=("127.0.0.2", 0)) as sock:  # fmt: skip
                refused = b""
                while chunk := sock.recv(4096):
                    refused += chunk
            assert refused.startswith(b"HTTP/1.1 403 ")
        finally:
            trilb.stop()


def test_the_systemd_unit_matches_the_command_line() -> None:
    from trilb.cli import _parser
    from trilb.config.schema import Global

    unit: dict[str, list[str]] = {}
    for line in (CONTRIB / "trilb.service").read_text().splitlines():
        if "=" in line and not line.startswith(("#", "[")):
            key, _, value = line.partition("=")
            unit.setdefault(key, []).append(value)
    for command in unit["ExecStartPre"] + unit["ExecStart"] + unit["ExecReload"][:1]:
        argv = command.split()
        assert argv[0].endswith("/trilb")
        _parser().parse_args(argv[1:])  # (exits with status 2 on a flag trilb lacks)
    assert unit["ExecReload"][0].split()[1] == "check"  # a bad config never reaches HUP
    assert unit["ExecReload"][1] == "/bin/kill -HUP $MAINPID"
    assert unit["KillSignal"] == ["SIGTERM"]
    assert float(unit["TimeoutStopSec"][0]) > Global().grace  # the drain fits in the stop


HAPROXY = shutil.which("haproxy") or shutil.which("haproxy", path="/usr/sbin")
NGINX = shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin")
STREAM_MODULE = Path("/usr/lib/nginx/modules/ngx_stream_module.so")


@pytest.mark.skipif(HAPROXY is None, reason="needs haproxy (make tools installs it)")
@pytest.mark.parametrize("path", sorted(CONTRIB.glob("haproxy-*.cfg")), ids=lambda p: p.name)
def test_the_haproxy_twin_is_valid(path: Path) -> None:
    """The HAProxy version of each setup, checked by HAProxy itself."""
    assert HAPROXY is not None
    done = subprocess.run([HAPROXY, "-c", "-f", str(path)], capture_output=True, text=True,
                          timeout=30)  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.skipif(NGINX is None, reason="needs nginx (make tools installs it)")
@pytest.mark.parametrize("path", sorted(CONTRIB.glob("nginx-*.conf")), ids=lambda p: p.name)
def test_the_nginx_twin_is_valid(path: Path, tmp_path: Path) -> None:
    """The nginx version of each setup, checked by nginx itself (the stream module is
    loaded the way Debian ships it)."""
    assert NGINX is not None
    extra = f"load_module {STREAM_MODULE}; " if "stream {" in path.read_text() else ""
    done = subprocess.run(
        [NGINX, "-t", "-p", str(tmp_path), "-c", str(path), "-g",
         f"{extra}pid {tmp_path}/nginx.pid; error_log {tmp_path}/error.log;"],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr


def test_every_trilb_setup_has_its_haproxy_and_nginx_twins() -> None:
    for path in CONTRIB.glob("*.toml"):
        assert (CONTRIB / f"haproxy-{path.stem}.cfg").exists(), path
        assert (CONTRIB / f"nginx-{path.stem}.conf").exists(), path
