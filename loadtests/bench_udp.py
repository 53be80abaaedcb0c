#!/usr/bin/env python3
"""Side-by-side UDP benchmark: DNS queries through trilb (`mode = "udp"`) and nginx
(`stream` with `listen ... udp`), to dnsmasq, driven by dnsperf.

Request-response datagrams: each DNS query is one datagram to the proxy, one to the
server, and the answer back the same way. dnsperf (Debian's) keeps up to ``--outstanding``
queries in flight from ``--clients`` source ports (each a flow), for ``--duration``
seconds, and reports queries per second and the average latency; dnsmasq answers from
its own table (`address=/bench.test/192.0.2.1`), never from upstream. "direct" is
dnsperf against dnsmasq itself: the ceiling of this machine. Every proxy is measured in
turn, ``--rounds`` times, medians reported, ratios against nginx from the same run.
HAProxy is absent: its community edition balances no UDP. The load generator, the
server and the proxy share the machine's cores, as in the other benchmarks.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from bench_l4 import nginx_stream_module
from benchlib import (
    REPO,
    RESULTS,
    BenchError,
    Server,
    apt_install,
    commit,
    keep_logs,
    markdown_grid,
    nginx_argv,
    nginx_main,
    render_grid,
    run_matrix,
    run_stamp,
    start_server,
    stop_server,
    utc_now,
    versions,
)

PROXIES = ("direct", "trilb", "nginx")
TOOLS = ("dnsperf", "dnsmasq", "nginx", "dig")
APT_PACKAGES = "dnsperf dnsmasq-base nginx libnginx-mod-stream bind9-dnsutils"
NAME = "www.bench.test"
ANSWER = "192.0.2.1"


@dataclass
class Row:
    proxy: str
    workers: int
    qps: float | None = None
    latency_ms: float | None = None
    lost: float | None = None  # percent
    notes: list[str] = field(default_factory=list)


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def answers(port: int) -> bool:
    """True when a DNS query through ``port`` gets dnsmasq's answer (dig, 1 s)."""
    try:
        done = subprocess.run(
            ["dig", "+short", "+tries=1", "+time=1", "-p", str(port), "@127.0.0.1", NAME, "A"],
            capture_output=True, text=True, timeout=5,
        )  # fmt: skip
    except subprocess.TimeoutExpired:
        return False
    return done.stdout.strip() == ANSWER


def start_dnsmasq(run_dir: Path) -> Server:
    port = free_udp_port()
    argv = ["dnsmasq", "--keep-in-foreground", f"--port={port}", "--listen-address=127.0.0.1",
            "--bind-interfaces", "--no-resolv", "--no-hosts", "--no-poll",
            f"--address=/bench.test/{ANSWER}", "--user=root", "--pid-file=",
            "--dns-forward-max=10000"]  # fmt: skip
    return start_server("dnsmasq", argv, port, run_dir / "dnsmasq.log", dict(os.environ),
                        ready=answers)  # fmt: skip


def trilb_config(port: int, origin: int, workers: int) -> str:
    return f"""
[global]
workers = {workers}
log_level = "warning"

[frontends.dns]
mode = "udp"
bind = "127.0.0.1:{port}"
default_backend = "dns"
idle_timeout = "10s"

[backends.dns]
servers = ["127.0.0.1:{origin}"]
"""


def nginx_config(tmp: Path, port: int, origin: int, workers: int, sessions: bool) -> str:
    """``sessions``: keep a client's session for proxy_timeout, as trilb keeps flows;
    else end it after one answer, as nginx's DNS example does (a new upstream socket per
    query)."""
    responses = "" if sessions else "proxy_responses 1;"
    module = nginx_stream_module()
    load = f"load_module {module};\n" if module else ""  # (Debian: libnginx-mod-stream)
    return (
        load
        + nginx_main(tmp, f"nginx-udp-w{workers}", workers)
        + (
            "stream {\n"
            f"  upstream dns {{ server 127.0.0.1:{origin}; }}\n"
            f"  server {{ listen 127.0.0.1:{port} udp reuseport; proxy_pass dns;\n"
            f"    {responses} proxy_timeout 10s; }}\n}}\n"
        )
    )


def start_proxy(
    row: Row, tmp: Path, run_dir: Path, origin: Server, nginx_sessions: bool = False
) -> Server:
    if row.proxy == "direct":
        return Server("direct", subprocess.Popen(["true"]), origin.port, run_dir / "direct.log")
    port = free_udp_port()
    log = run_dir / f"{row.proxy}-w{row.workers}.log"
    conf = tmp / f"{row.proxy}-udp-w{row.workers}.conf"
    if row.proxy == "trilb":
        conf.write_text(trilb_config(port, origin.port, row.workers))
        argv = [sys.executable, "-m", "trilb", "serve", "-c", str(conf)]
    else:
        conf.write_text(nginx_config(tmp, port, origin.port, row.workers, nginx_sessions))
        argv = nginx_argv(tmp, conf, f"nginx-udp-w{row.workers}-error.log")
    env = dict(os.environ, PYTHONPATH=str(REPO))
    return start_server(row.proxy, argv, port, log, env, ready=answers)


def measure(row: Row, server: Server, args: argparse.Namespace, queries: Path) -> None:
    print(f"  {row.proxy} x{row.workers}: dnsperf", flush=True)
    argv = ["dnsperf", "-s", "127.0.0.1", "-p", str(server.port), "-d", str(queries),
            "-l", str(args.duration), "-c", str(args.clients), "-q", str(args.outstanding),
            "-t", "2"]  # fmt: skip
    done = subprocess.run(argv, capture_output=True, text=True, timeout=args.duration + 30)
    with server.log.open("a") as out:
        out.write(f"$ {' '.join(argv)}\n{done.stdout}{done.stderr}\n")
    qps = re.search(r"Queries per second:\s+([\d.]+)", done.stdout)
    lat = re.search(r"Average Latency \(s\):\s+([\d.]+)", done.stdout)
    lost = re.search(r"Queries lost:\s+\d+ \(([\d.]+)%\)", done.stdout)
    if qps is None:
        raise BenchError(f"dnsperf said no rate: {done.stdout[-300:]!r} {done.stderr[-300:]!r}")
    row.qps = float(qps.group(1))
    row.latency_ms = float(lat.group(1)) * 1000 if lat else None
    row.lost = float(lost.group(1)) if lost else None
    if row.lost:
        row.notes.append(f"{row.proxy} x{row.workers}: {row.lost:.2f}% of queries lost")


def median_row(rows: list[Row]) -> Row:
    def med(values: list[float | None]) -> float | None:
        known = [v for v in values if v is not None]
        return statistics.median(known) if known else None

    first = rows[0]
    return Row(first.proxy, first.workers, med([r.qps for r in rows]),
               med([r.latency_ms for r in rows]), med([r.lost for r in rows]),
               [n for r in rows for n in r.notes])  # fmt: skip


HEADERS = ["proxy", "workers", "queries/s", "vs nginx", "avg latency ms", "lost %"]


def table(rows: list[Row]) -> list[list[str]]:
    out = []
    for row in rows:
        base = next((r.qps for r in rows if r.proxy == "nginx" and r.workers == row.workers),
                    None)  # fmt: skip
        ratio = f"{row.qps / base:.2f}x" if row.qps and base else "-"
        out.append([row.proxy, str(row.workers), f"{row.qps:,.0f}" if row.qps else "-", ratio,
                    f"{row.latency_ms:.3f}" if row.latency_ms else "-",
                    f"{row.lost:.2f}" if row.lost is not None else "-"])  # fmt: skip
    return out


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=int, default=5, help="seconds per measurement")
    parser.add_argument("--rounds", type=int, default=3, help="runs of every proxy; medians")
    parser.add_argument("--workers", default="1,2", help="comma-separated worker counts")
    parser.add_argument("--clients", type=int, default=32, help="dnsperf source ports (flows)")
    parser.add_argument("--outstanding", type=int, default=64, help="queries in flight")
    parser.add_argument("--markdown", type=Path, help="append the table as Markdown to FILE")
    parser.add_argument("--install", action="store_true", help="apt-get install the tools")
    parser.add_argument("--nginx-sessions", action="store_true",
                        help="nginx keeps a client's session (no proxy_responses 1)")  # fmt: skip
    args = parser.parse_args(argv)
    args.workers = [int(w) for w in args.workers.split(",") if w]
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    missing = [t for t in TOOLS if shutil.which(t) is None and not Path(f"/usr/sbin/{t}").exists()]
    if missing and args.install:
        apt_install(APT_PACKAGES.split())
    elif missing:
        print(f"missing: {', '.join(missing)} (apt-get install {APT_PACKAGES}, or --install)",
              file=sys.stderr)  # fmt: skip
        return 2
    os.environ["PATH"] += ":/usr/sbin"
    run_dir = RESULTS / f"udp-{run_stamp()}"
    run_dir.mkdir(parents=True)
    print(f"raw output: {run_dir}", flush=True)
    with tempfile.TemporaryDirectory(prefix="trilb-bench-udp-") as tmp_name:
        tmp = Path(tmp_name)
        queries = tmp / "queries.txt"
        queries.write_text(f"{NAME} A\n")
        origin = start_dnsmasq(run_dir)
        try:
            rows = [Row(p, w) for _ in range(args.rounds) for w in args.workers for p in PROXIES
                    if not (p == "direct" and w != args.workers[0])]  # fmt: skip
            sessions = args.nginx_sessions
            runs = run_matrix(rows, lambda row: start_proxy(row, tmp, run_dir, origin, sessions),
                              lambda row, server: measure(row, server, args, queries))  # fmt: skip
        finally:
            stop_server(origin)
            keep_logs(tmp, run_dir, [f"nginx-udp-w{w}-error.log" for w in args.workers])
        time.sleep(0.1)
    keys = list(dict.fromkeys((r.proxy, r.workers) for r in runs))
    medians = [median_row([r for r in runs if (r.proxy, r.workers) == k]) for k in keys]
    lines = render_grid(HEADERS, table(medians))
    notes = sorted({n for r in medians for n in r.notes})
    text = "\n".join([*lines, "", *notes])
    print("\n" + text)
    (run_dir / "table.txt").write_text(text + "\n")
    if args.markdown:
        head = (f"### UDP benchmark, {utc_now()}, commit {commit()}\n\n{os.cpu_count()} CPUs, "
                f"{versions()}; dnsperf -c {args.clients} -q {args.outstanding}, "
                f"{args.duration}s, median of {args.rounds} rounds\n\n")  # fmt: skip
        with args.markdown.open("a") as out:
            out.write(head + "\n".join(markdown_grid(HEADERS, table(medians))) + "\n\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
