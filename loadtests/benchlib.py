"""Shared pieces of the side-by-side benchmarks (bench_l4.py, bench_l7.py).

Owns what every benchmark does the same way: child processes on free loopback ports and
their start, probe and stop; the private nginx origin; one bounded wrk run and the parsing
of its output; the text and Markdown tables; the tool install step and version strings.
It does not know which proxies a benchmark compares, how they are configured or what the
columns mean: each bench_*.py script owns those.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import os
import platform
import re
import shlex
import shutil
import signal
import socket
import ssl
import subprocess
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Protocol, TypeVar

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "loadtests" / "results"
# Small enough that per-request and per-connection cost dominate, not copying bytes.
SMALL_BYTES = 64
# Two load threads fit a 2-core box; 32 connections keep every proxy worker fed.
WRK_ARGS = ("-t2", "-c32", "--timeout", "5s")
# trilb forks workers and imports Python modules before it listens: give it room.
START_TIMEOUT = 15.0
# After SIGTERM; above trilb's 2s drain grace, so a clean stop is never cut short.
STOP_TIMEOUT = 10.0
# How long wrk/curl may overrun --duration before we call the run hung.
TOOL_SLACK = 30.0
# Connection counts below stay well under `ulimit -n` (each proxied flow holds two sockets).
MAXCONN = 8000
# wrk prints latencies with these units; we report milliseconds.
LATENCY_UNITS_MS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3, "h": 3600e3}


class BenchError(Exception):
    """A server or tool failed in a way that makes one measurement meaningless."""


@dataclasses.dataclass
class Server:
    name: str
    proc: subprocess.Popen[bytes]
    port: int
    log: Path


class Noted(Protocol):
    """A table row: which proxy, how many workers, and what went wrong while measuring it."""

    proxy: str
    workers: int
    notes: list[str]


R = TypeVar("R", bound=Noted)


@dataclasses.dataclass(frozen=True)
class WrkResult:
    rate: float | None
    p99_ms: float | None
    notes: list[str]


# --- tools -------------------------------------------------------------------------------


def apt_install(packages: Sequence[str]) -> None:
    for argv in (["apt-get", "update"], ["apt-get", "install", "-y", *packages]):
        print("+", " ".join(argv), flush=True)
        subprocess.run(argv, check=True)


def commit() -> str:
    def git(*argv: str) -> str:
        done = subprocess.run(["git", "-C", str(REPO), *argv], capture_output=True, text=True)
        return done.stdout.strip() if done.returncode == 0 else ""

    sha = git("rev-parse", "--short", "HEAD") or "none"
    return sha + (" (dirty)" if git("status", "--porcelain") else "")


def versions() -> str:
    def first_line(argv: list[str]) -> str:
        done = subprocess.run(argv, capture_output=True, text=True, check=False)
        return (done.stdout + done.stderr).splitlines()[0]

    haproxy = first_line(["haproxy", "-v"]).split()[2] if shutil.which("haproxy") else "-"
    nginx = first_line(["nginx", "-v"]).rsplit("/", 1)[-1]
    return f"HAProxy {haproxy}, nginx {nginx}, Python {platform.python_version()}"


def run_stamp() -> str:
    return datetime.datetime.now().strftime("%Y%m%d-%H%M%S")


def utc_now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")


# --- process control ---------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def probe(port: int, tls: bool = False) -> bool:
    """True when a GET for the small file comes back 200 through this port (over TLS,
    certificate unchecked, with ``tls``)."""
    request = b"GET /small HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n"
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1.0) as plain:
            sock = ssl._create_unverified_context().wrap_socket(plain) if tls else plain
            sock.sendall(request)
            return sock.recv(64).startswith(b"HTTP/1.1 200")
    except OSError:
        return False


def start_server(
    name: str,
    argv: list[str],
    port: int,
    log: Path,
    env: dict[str, str],
    tls: bool = False,
    ready: Callable[[int], bool] | None = None,
) -> Server:
    """Start a server and wait until ``ready`` (default: an HTTP/1.1 GET, over TLS with
    ``tls``) says it serves."""
    with log.open("ab") as out:
        out.write(f"$ {shlex.join(argv)}\n".encode())
        out.flush()
        # A session of its own: Ctrl-C reaches only us, and we stop the group on the way out.
        proc = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=out, stderr=out, env=env, start_new_session=True
        )
    server = Server(name, proc, port, log)
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline and proc.poll() is None:
        if ready(port) if ready is not None else probe(port, tls):
            time.sleep(0.5)  # let every worker reach its accept loop, not just the first
            return server
        time.sleep(0.05)
    stop_server(server)
    lines = [line for line in log.read_text(errors="replace").splitlines() if line.strip()]
    why = f"exit {proc.returncode}, last output: {lines[-1].strip()!r}" if lines else "no output"
    raise BenchError(f"{name} not serving on 127.0.0.1:{port} ({why}); see {log}")


def stop_server(server: Server) -> None:
    proc = server.proc
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            print(f"  {server.name} (pid {proc.pid}) ignored SIGTERM, killing", flush=True)
    # The group is the session made for this child; it holds its workers and nothing else.
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def run_matrix(
    rows: list[R], start: Callable[[R], Server], measure: Callable[[R, Server], None]
) -> list[R]:
    """Start, measure and stop one proxy per row in turn; a failure becomes a note on its row."""
    for row in rows:
        try:
            server = start(row)
        except BenchError as exc:
            row.notes.append(str(exc))
            print(f"  {row.proxy} x{row.workers}: {exc}", flush=True)
            continue
        try:
            measure(row, server)
        except (BenchError, subprocess.TimeoutExpired) as exc:
            row.notes.append(str(exc))
            print(f"  {row.proxy} x{row.workers}: {exc}", flush=True)
        finally:
            stop_server(server)
    return rows


# --- nginx -------------------------------------------------------------------------------


def nginx_main(tmp: Path, name: str, workers: int | str) -> str:
    user = "user root;\n" if os.geteuid() == 0 else ""  # else workers cannot read tmp/
    return (
        f"daemon off;\nworker_processes {workers};\n{user}"
        f"pid {tmp / name}.pid;\nerror_log {tmp / name}-error.log warn;\n"
        f"events {{ worker_connections {MAXCONN}; }}\n"
    )


def nginx_temps(tmp: Path) -> str:
    """Temp paths under tmp/, so an unprivileged or packaged nginx never writes elsewhere."""
    return "".join(
        f"  {kind}_temp_path {tmp / kind};\n"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )


def nginx_argv(tmp: Path, conf: Path, error_log: str) -> list[str]:
    return ["nginx", "-p", f"{tmp}/", "-e", str(tmp / error_log), "-c", str(conf)]


def origin_config(tmp: Path, port: int) -> str:
    return nginx_main(tmp, "origin", "auto") + (
        "http {\n  access_log off;\n  sendfile on;\n  tcp_nopush on;\n"
        "  keepalive_timeout 300s;\n  keepalive_requests 1000000000;\n"
        f"  default_type application/octet-stream;\n{nginx_temps(tmp)}"
        f"  server {{ listen 127.0.0.1:{port} backlog=4096; root {tmp / 'www'};\n"
        # (POST benchmarks: the body is read and dropped, the answer is small)
        '    location = /post { return 200 "ok\\n"; } }\n}\n'
    )


def write_files(www: Path, bulk_mib: int) -> None:
    """The small file, and a large one of bulk_mib MiB unless bulk_mib is 0."""
    www.mkdir()
    (www / "small").write_bytes(b"x" * (SMALL_BYTES - 1) + b"\n")
    if not bulk_mib:
        return
    block = os.urandom(1 << 20)  # real bytes, not a sparse file: sendfile reads pages
    with (www / "large").open("wb") as out:
        for _ in range(bulk_mib):
            out.write(block)


def start_origin(tmp: Path, run_dir: Path, bulk_mib: int) -> Server:
    write_files(tmp / "www", bulk_mib)
    port = free_port()
    conf = tmp / "origin.conf"
    conf.write_text(origin_config(tmp, port))
    argv = nginx_argv(tmp, conf, "origin-error.log")
    return start_server("origin", argv, port, run_dir / "origin.log", dict(os.environ))


def keep_logs(tmp: Path, run_dir: Path, names: Iterable[str]) -> None:
    for name in names:
        if (tmp / name).exists():
            shutil.copy(tmp / name, run_dir / name)


# --- wrk ---------------------------------------------------------------------------------


def wrk(
    port: int,
    duration: int,
    close: bool,
    log: Path,
    latency: bool = False,
    scheme: str = "http",
    post: Path | None = None,
) -> WrkResult:
    """One wrk run on the small file, bounded by duration plus TOOL_SLACK; output to log.
    ``scheme`` "https": over TLS (wrk does not verify the certificate). ``post``: a wrk
    script (post_script) that makes the requests POSTs to the origin's /post instead."""
    argv = ["wrk", *WRK_ARGS, f"-d{duration}s"]
    if latency:
        argv.append("--latency")
    if close:
        argv += ["-H", "Connection: close"]
    if post is not None:
        argv += ["-s", str(post)]
    argv.append(f"{scheme}://127.0.0.1:{port}/{'post' if post else 'small'}")
    done = subprocess.run(argv, capture_output=True, text=True, timeout=duration + TOOL_SLACK)
    with log.open("a") as out:
        out.write(f"$ {shlex.join(argv)}\n{done.stdout}{done.stderr}\n")
    kind = "close" if close else "keep-alive"
    problems = []
    for pattern in (r"Socket errors: .*", r"Non-2xx or 3xx responses: \d+"):
        if found := re.search(pattern, done.stdout):
            problems.append(f"wrk {kind}: {found.group(0)}")
    ok = done.returncode == 0
    rate = re.search(r"Requests/sec:\s+([\d.]+)", done.stdout)
    p99 = re.search(r"^\s*99%\s+([\d.]+)(us|ms|s|m|h)\s*$", done.stdout, re.MULTILINE)
    return WrkResult(
        rate=float(rate.group(1)) if rate and ok else None,
        p99_ms=float(p99.group(1)) * LATENCY_UNITS_MS[p99.group(2)] if p99 and ok else None,
        notes=problems,
    )


def post_script(path: Path, size: int) -> Path:
    """A wrk script whose requests are POSTs of a ``size``-byte JSON body."""
    filler = max(size - 8, 0)
    path.write_text('wrk.method = "POST"\n'
                    f'wrk.body = \'{{"q": "\' .. string.rep("a", {filler}) .. \'"}}\'\n'
                    'wrk.headers["Content-Type"] = "application/json"\n')  # fmt: skip
    return path


# --- report ------------------------------------------------------------------------------


def ratio(value: float | None, base: float | None) -> str:
    return f"{value / base:.2f}x" if value is not None and base else "-"


def render_grid(headers: Sequence[str], cells: list[list[str]], left: int = 2) -> list[str]:
    """Aligned text table: the first `left` columns flush left, the rest flush right."""
    grid = [list(headers), *cells]
    widths = [max(len(line[i]) for line in grid) for i in range(len(headers))]
    lines = [
        "  ".join(c.ljust(w) if i < left else c.rjust(w) for i, (c, w) in enumerate(pairs))
        for pairs in (zip(line, widths, strict=True) for line in grid)
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return lines


def markdown_grid(headers: Sequence[str], cells: list[list[str]], left: int = 2) -> list[str]:
    head = [
        "| " + " | ".join(headers) + " |",
        "|" + "|".join(["---"] * left + ["---:"] * (len(headers) - left)) + "|",
    ]
    return head + ["| " + " | ".join(line) + " |" for line in cells]


def notes(rows: Iterable[Noted]) -> list[str]:
    return [f"note: {r.proxy} x{r.workers}: {n}" for r in rows for n in dict.fromkeys(r.notes)]
