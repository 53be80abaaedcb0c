"""Side-by-side HTTP/2 benchmark: trilb, HAProxy and nginx taking HTTP/2 from h2load.

Owns the HTTP/2 run: each proxy in turn in front of the private nginx origin of the other
benchmarks (HTTP/1.1 to it, as trilb speaks to backends), once over h2c (prior knowledge,
cleartext) and once over TLS (ALPN h2, a trustme certificate), driven by h2load; and,
for scale against another Python HTTP/2 implementation, hypercorn answering a fixed
response itself (no proxying: an upper bound for a Python HTTP/2 proxy). Requests/s in
one table, each with its ratio to HAProxy in the same run. Shared process, origin and
table code is in benchlib.py.

    python loadtests/bench_h2.py [--duration 5] [--rounds 3] [--workers 1]
                                 [--only trilb,haproxy,nginx,hypercorn] [--install]

Needs h2load (apt-get install nghttp2-client), haproxy and nginx; hypercorn from pip.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.metadata
import os
import re
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from bench_l7 import Certs, make_certs
from benchlib import (
    MAXCONN,
    REPO,
    RESULTS,
    SMALL_BYTES,
    TOOL_SLACK,
    BenchError,
    Server,
    apt_install,
    free_port,
    keep_logs,
    nginx_argv,
    nginx_main,
    nginx_temps,
    notes,
    ratio,
    render_grid,
    run_matrix,
    run_stamp,
    start_origin,
    start_server,
    stop_server,
)

SERVERS = ("trilb", "haproxy", "nginx", "hypercorn")
TOOLS = ("h2load", "haproxy", "nginx")
APT_PACKAGES = "nghttp2-client haproxy nginx"
# 2 client threads for the 2-core box; 16 connections x 10 concurrent streams each.
H2LOAD_ARGS = ("-t2", "-c16", "-m10")
HEADERS = ("server", "workers", "h2c req/s", "vs HAProxy", "h2 TLS req/s", "vs HAProxy")
ERROR_LOGS = ("http-error.log",)
HYPERCORN_APP = "fixed"


@dataclasses.dataclass
class Row:
    proxy: str
    workers: int
    h2c: float | None = None
    tls: float | None = None
    notes: list[str] = dataclasses.field(default_factory=list)


# --- configs -----------------------------------------------------------------------------


def trilb_config(port: int, origin: int, workers: int, tls: Certs | None) -> str:
    cert = f'{{ cert = "{tls.cert}", key = "{tls.key}" }}' if tls else ""
    tls_line = f'tls = {{ certs = [{cert}], alpn = ["h2", "http/1.1"] }}\n' if tls else ""
    return (
        f'[global]\nworkers = {workers}\ngrace = "2s"\n\n'
        f'[frontends.bench]\nmode = "http"\nbind = "127.0.0.1:{port}"\n'
        f'default_backend = "origin"\n{tls_line}\n'
        f'[backends.origin]\nservers = ["127.0.0.1:{origin}"]\n'
    )


def haproxy_config(port: int, origin: int, workers: int, tls: Certs | None) -> str:
    bind = f"ssl crt {tls.both} alpn h2,http/1.1" if tls else "proto h2"
    return (
        f"global\n  nbthread {workers}\n  maxconn {MAXCONN}\n\n"
        f"defaults\n  mode http\n  maxconn {MAXCONN}\n"
        "  option http-keep-alive\n  http-reuse always\n"
        "  timeout connect 5s\n  timeout client 60s\n  timeout server 60s\n\n"
        f"frontend bench\n  bind 127.0.0.1:{port} {bind}\n  default_backend origin\n\n"
        f"backend origin\n  server origin 127.0.0.1:{origin}\n"
    )


def nginx_config(tmp: Path, port: int, origin: int, workers: int, tls: Certs | None) -> str:
    listen = f"{port} ssl http2" if tls else f"{port} http2"
    certs = f"    ssl_certificate {tls.cert};\n    ssl_certificate_key {tls.key};\n" if tls else ""
    return nginx_main(tmp, "http", workers) + (
        "http {\n  access_log off;\n  keepalive_requests 1000000000;\n"
        "  http2_max_requests 1000000000;\n"
        f"{nginx_temps(tmp)}"
        f"  upstream origin {{ server 127.0.0.1:{origin}; keepalive 32; }}\n"
        f"  server {{\n    listen 127.0.0.1:{listen};\n{certs}"
        "    location / {\n      proxy_pass http://origin;\n      proxy_http_version 1.1;\n"
        '      proxy_set_header Connection "";\n    }\n  }\n}\n'
    )


def hypercorn_app() -> str:
    body = b"x" * SMALL_BYTES
    return (
        "async def app(scope, receive, send):\n"
        "    if scope['type'] != 'http':\n        return\n"
        "    await send({'type': 'http.response.start', 'status': 200,\n"
        f"                'headers': [(b'content-length', b'{len(body)}')]}})\n"
        f"    await send({{'type': 'http.response.body', 'body': {body!r}}})\n"
    )


# --- servers -----------------------------------------------------------------------------


def h2_ready(tls: bool) -> object:
    def ready(port: int) -> bool:
        scheme = "https" if tls else "http"
        try:
            done = subprocess.run(["h2load", "-n2", "-c1", f"{scheme}://127.0.0.1:{port}/small"],
                                  capture_output=True, text=True, timeout=5)  # fmt: skip
        except subprocess.TimeoutExpired:
            return False
        return "2 succeeded" in done.stdout

    return ready


def start(proxy: str, workers: int, tmp: Path, run_dir: Path, origin: int,
          tls: Certs | None) -> Server:  # fmt: skip
    port = free_port()
    env = dict(os.environ)
    kind = "tls" if tls else "h2c"
    log = run_dir / f"{proxy}-w{workers}-{kind}.log"
    if proxy == "trilb":
        conf = tmp / f"trilb-{kind}.toml"
        conf.write_text(trilb_config(port, origin, workers, tls))
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
        argv = [sys.executable, "-m", "trilb", "serve", "-c", str(conf)]
    elif proxy == "haproxy":
        conf = tmp / f"haproxy-{kind}.cfg"
        conf.write_text(haproxy_config(port, origin, workers, tls))
        argv = ["haproxy", "-db", "-f", str(conf)]
    elif proxy == "nginx":
        conf = tmp / f"http-{kind}.conf"
        conf.write_text(nginx_config(tmp, port, origin, workers, tls))
        argv = nginx_argv(tmp, conf, "http-error.log")
    else:
        conf = tmp / f"{HYPERCORN_APP}.py"
        conf.write_text(hypercorn_app())
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(tmp), env.get("PYTHONPATH")]))
        argv = [
            sys.executable,
            "-m",
            "hypercorn",
            f"{HYPERCORN_APP}:app",
            "--bind",
            f"127.0.0.1:{port}",
            "--workers",
            str(workers),
            "--log-level",
            "warning",
        ]
        if tls:
            argv += ["--certfile", str(tls.cert), "--keyfile", str(tls.key)]
    with log.open("a") as out:
        out.write(f"# {conf.name}\n{conf.read_text()}\n")
    return start_server(f"{proxy} x{workers} {kind}", argv, port, log, env,
                        ready=h2_ready(tls is not None))  # type: ignore[arg-type]  # fmt: skip


def h2load(port: int, duration: int, tls: bool, log: Path) -> tuple[float | None, list[str]]:
    scheme = "https" if tls else "http"
    argv = ["h2load", *H2LOAD_ARGS, "-D", str(duration), "--warm-up-time", "1",
            f"{scheme}://127.0.0.1:{port}/small"]  # fmt: skip
    done = subprocess.run(argv, capture_output=True, text=True, timeout=duration + TOOL_SLACK)
    with log.open("a") as out:
        out.write(f"$ {shlex.join(argv)}\n{done.stdout}{done.stderr}\n")
    rate = re.search(r"finished in [\d.]+\w+, ([\d.]+) req/s", done.stdout)
    counts = re.search(r"requests: \d+ total, \d+ started, (\d+) done, (\d+) succeeded, "
                       r"(\d+) failed, (\d+) errored", done.stdout)  # fmt: skip
    problems = []
    if counts and (int(counts.group(3)) or int(counts.group(4))):
        problems.append(f"h2load {scheme}: {counts.group(3)} failed, {counts.group(4)} errored")
    if counts and int(counts.group(1)) != int(counts.group(2)):
        problems.append(f"h2load {scheme}: {counts.group(2)} of {counts.group(1)} succeeded")
    return (float(rate.group(1)) if rate and done.returncode == 0 else None), problems


# --- run ---------------------------------------------------------------------------------


def run_all(args: argparse.Namespace, tmp: Path, run_dir: Path, origin: Server) -> list[Row]:
    out = []
    for tls in (None, args.certs):
        rows = [Row(p, w) for _ in range(args.rounds) for w in args.workers for p in args.only]

        def measure(row: Row, server: Server, tls: Certs | None = tls) -> None:
            print(f"  {server.name}: h2load", flush=True)
            rate, problems = h2load(server.port, args.duration, tls is not None, server.log)
            row.notes += problems
            if tls is None:
                row.h2c = rate
            else:
                row.tls = rate

        run_matrix(rows, lambda row, tls=tls: start(row.proxy, row.workers, tmp, run_dir,
                                                   origin.port, tls), measure)  # fmt: skip
        out.append(rows)
    merged = []
    for plain, secure in zip(*out, strict=True):
        plain.tls = secure.tls
        plain.notes += secure.notes
        merged.append(plain)
    return [median(rows) for rows in group(merged)]


def group(rows: list[Row]) -> list[list[Row]]:
    keys: dict[tuple[str, int], list[Row]] = {}
    for row in rows:
        keys.setdefault((row.proxy, row.workers), []).append(row)
    return list(keys.values())


def median(rows: list[Row]) -> Row:
    def mid(values: list[float | None]) -> float | None:
        got = [v for v in values if v is not None]
        return statistics.median(got) if got else None

    return Row(rows[0].proxy, rows[0].workers, mid([r.h2c for r in rows]),
               mid([r.tls for r in rows]), sorted({n for r in rows for n in r.notes}))  # fmt: skip


def table(rows: list[Row]) -> list[list[str]]:
    bases = {r.workers: r for r in rows if r.proxy == "haproxy"}
    cells = []
    for row in rows:
        base = bases.get(row.workers, Row("haproxy", row.workers))
        line = [row.proxy, str(row.workers)]
        for value, ref in ((row.h2c, base.h2c), (row.tls, base.tls)):
            line += ["-" if value is None else f"{value:,.0f}", ratio(value, ref)]
        cells.append(line)
    return cells


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=int, default=5, help="seconds per measurement")
    parser.add_argument("--rounds", type=int, default=3, help="runs of each; medians")
    parser.add_argument("--workers", default="1", help="comma-separated worker counts")
    parser.add_argument("--only", default=",".join(SERVERS), help="comma-separated servers")
    parser.add_argument("--install", action="store_true", help="apt-get the tools, pip hypercorn")
    args = parser.parse_args(argv)
    args.workers = [int(w) for w in args.workers.split(",") if w]
    args.only = [p for p in args.only.split(",") if p]
    if unknown := set(args.only) - set(SERVERS):
        parser.error(f"unknown server {', '.join(sorted(unknown))}: choose from {SERVERS}")
    return args


def check_tools(args: argparse.Namespace) -> bool:
    missing = [t for t in TOOLS if shutil.which(t) is None]
    if missing and args.install:
        apt_install(APT_PACKAGES.split())
        missing = [t for t in TOOLS if shutil.which(t) is None]
    if missing:
        print(f"missing {', '.join(missing)}: apt-get install -y {APT_PACKAGES}", file=sys.stderr)
        return False
    if "hypercorn" in args.only:
        try:
            importlib.metadata.version("hypercorn")
        except importlib.metadata.PackageNotFoundError:
            if args.install:
                subprocess.run([sys.executable, "-m", "pip", "install", "-q", "hypercorn"],
                               check=True)  # fmt: skip
            else:
                print("hypercorn not installed (pip install hypercorn): left out", flush=True)
                args.only.remove("hypercorn")
    return True


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if not check_tools(args):
        return 2
    run_dir = RESULTS / f"h2-{run_stamp()}"
    run_dir.mkdir(parents=True)
    print(f"raw output: {run_dir}", flush=True)
    with tempfile.TemporaryDirectory(prefix="trilb-bench-") as tmp:
        args.certs = make_certs(Path(tmp))
        try:
            origin = start_origin(Path(tmp), run_dir, 0)
        except BenchError as exc:
            print(f"origin: {exc}", file=sys.stderr)
            return 1
        try:
            rows = run_all(args, Path(tmp), run_dir, origin)
        finally:
            stop_server(origin)
            keep_logs(Path(tmp), run_dir, ERROR_LOGS)
    text = "\n".join(render_grid(HEADERS, table(rows)) + notes(rows))
    print("\n" + text)
    (run_dir / "table.txt").write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
