"""Side-by-side L4 benchmark: trilb, HAProxy `mode tcp` and nginx `stream`, one origin.

Owns the whole run: a private nginx origin on loopback, each proxy in turn in front of it
(child processes on free ports), curl and wrk as load generators, and the comparison table.
It deliberately does not tune the kernel, pin CPUs or touch any system service or config:
numbers are only comparable within one run on one machine, hence the ratio to HAProxy.

    python loadtests/bench_l4.py [--duration 5] [--workers 1,2] [--only trilb,haproxy,nginx]
                                 [--markdown FILE] [--install]
"""

from __future__ import annotations

import argparse
import concurrent.futures
import dataclasses
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from benchlib import (
    MAXCONN,
    REPO,
    RESULTS,
    SMALL_BYTES,
    TOOL_SLACK,
    WRK_ARGS,
    BenchError,
    Server,
    apt_install,
    commit,
    free_port,
    keep_logs,
    markdown_grid,
    nginx_argv,
    nginx_main,
    notes,
    ratio,
    render_grid,
    run_matrix,
    run_stamp,
    start_origin,
    start_server,
    stop_server,
    utc_now,
    versions,
    wrk,
)

PROXIES = ("trilb", "haproxy", "nginx")
TOOLS = ("haproxy", "nginx", "wrk", "curl")
# Debian ships nginx's stream module as a separate package; nginx alone cannot proxy TCP.
APT_PACKAGES = "haproxy nginx libnginx-mod-stream wrk curl"
INSTALL_HINT = f"apt-get install -y {APT_PACKAGES}"
# Big enough that a download lasts long enough to measure steady-state copying.
BULK_MIB = 256
# Four parallel downloads keep every worker of a 1-2 worker proxy busy.
BULK_LANES = 4
# Hard cap on downloads per lane, so a proxy that fails instantly cannot spin forever.
MAX_DOWNLOADS = 10_000


@dataclasses.dataclass
class Row:
    proxy: str
    workers: int
    bulk: float | None = None
    conns: float | None = None
    reqs: float | None = None
    notes: list[str] = dataclasses.field(default_factory=list)


# --- tools -------------------------------------------------------------------------------


def nginx_stream_module() -> str | None:
    """Return the load_module path ("" when built in), or None when nginx lacks `stream`."""
    out = subprocess.run(["nginx", "-V"], capture_output=True, text=True, check=False).stderr
    if re.search(r"--with-stream(\s|$)", out):
        return ""
    match = re.search(r"--modules-path=(\S+)", out)
    if "--with-stream=dynamic" not in out or not match:
        return None
    path = Path(match.group(1)) / "ngx_stream_module.so"
    return str(path) if path.exists() else None


def missing_tools(only: Sequence[str]) -> list[str]:
    needed = [t for t in TOOLS if t in ("nginx", "wrk", "curl") or t in only]
    missing = [t for t in needed if shutil.which(t) is None]
    if "nginx" in only and "nginx" not in missing and nginx_stream_module() is None:
        missing.append("nginx stream module (libnginx-mod-stream)")
    return missing


def install_tools() -> None:
    apt_install(APT_PACKAGES.split())


# --- configs -----------------------------------------------------------------------------


def nginx_stream_config(tmp: Path, port: int, origin: int, workers: int) -> str:
    module = nginx_stream_module()
    load = f"load_module {module};\n" if module else ""
    return (
        load
        + nginx_main(tmp, "stream", workers)
        + f"stream {{ server {{ listen 127.0.0.1:{port} backlog=4096; "
        f"proxy_pass 127.0.0.1:{origin}; }} }}\n"
    )


def haproxy_config(port: int, origin: int, workers: int) -> str:
    return (
        f"global\n  nbthread {workers}\n  maxconn {MAXCONN}\n\n"
        f"defaults\n  mode tcp\n  maxconn {MAXCONN}\n"
        "  timeout connect 5s\n  timeout client 60s\n  timeout server 60s\n\n"
        f"frontend bench\n  bind 127.0.0.1:{port}\n  default_backend origin\n\n"
        f"backend origin\n  server origin 127.0.0.1:{origin}\n"
    )


def trilb_config(port: int, origin: int, workers: int) -> str:
    return (
        f'[global]\nworkers = {workers}\ngrace = "2s"\n\n'
        f'[frontends.bench]\nmode = "tcp"\nbind = "127.0.0.1:{port}"\n'
        'default_backend = "origin"\n\n'
        f'[backends.origin]\nservers = ["127.0.0.1:{origin}"]\n'
    )


# --- servers -----------------------------------------------------------------------------


def start_proxy(proxy: str, workers: int, tmp: Path, run_dir: Path, origin: int) -> Server:
    port = free_port()
    env = dict(os.environ)
    log = run_dir / f"{proxy}-w{workers}.log"
    if proxy == "trilb":
        conf = tmp / f"trilb-w{workers}.toml"
        conf.write_text(trilb_config(port, origin, workers))
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
        argv = [sys.executable, "-m", "trilb", "serve", "-c", str(conf)]
    elif proxy == "haproxy":
        conf = tmp / f"haproxy-w{workers}.cfg"
        conf.write_text(haproxy_config(port, origin, workers))
        argv = ["haproxy", "-db", "-f", str(conf)]
    else:
        conf = tmp / f"stream-w{workers}.conf"
        conf.write_text(nginx_stream_config(tmp, port, origin, workers))
        argv = nginx_argv(tmp, conf, "stream-error.log")
    with log.open("a") as out:
        out.write(f"# {conf.name}\n{conf.read_text()}\n")
    return start_server(f"{proxy} x{workers}", argv, port, log, env)


# --- measurements ------------------------------------------------------------------------


def download_lane(url: str, deadline: float) -> list[tuple[int, str]]:
    """Download back to back until the deadline; return (curl exit code, -w output) each."""
    runs: list[tuple[int, str]] = []
    for _ in range(MAX_DOWNLOADS):
        left = deadline - time.monotonic()
        if left < 0.05:
            break
        argv = ["curl", "-s", "-o", "/dev/null", "--noproxy", "*", "--max-time", f"{left:.2f}"]
        argv += ["-w", "%{http_code} %{size_download} %{time_total}", url]
        done = subprocess.run(argv, capture_output=True, text=True, timeout=left + TOOL_SLACK)
        runs.append((done.returncode, done.stdout.strip()))
    return runs


def measure_bulk(row: Row, port: int, duration: int, size: int, log: Path) -> None:
    """Aggregate MiB/s of parallel downloads; a download cut at the deadline counts its bytes."""
    url = f"http://127.0.0.1:{port}/large"
    start = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(BULK_LANES) as pool:
        lanes = list(pool.map(download_lane, [url] * BULK_LANES, [start + duration] * BULK_LANES))
    elapsed = time.monotonic() - start
    total = complete = 0
    with log.open("a") as out:
        out.write(f"# bulk: {BULK_LANES} lanes of curl {url}, exit code + code bytes seconds\n")
        for lane, runs in enumerate(lanes):
            for code, line in runs:
                out.write(f"lane {lane}: exit {code}: {line}\n")
                status, got = [*line.split(), "0", "0"][:2]
                total += int(float(got))
                if code == 0 and (status != "200" or int(float(got)) != size):
                    raise BenchError(f"download incomplete: {line} of {size} bytes")
                if code not in (0, 28):  # 28: cut by --max-time at the deadline, expected
                    row.notes.append(f"curl exit {code}")
                complete += code == 0
    if complete == 0:
        row.notes.append("no download completed: size unverified")
    row.bulk = total / elapsed / (1 << 20) if total else None


def run_wrk(row: Row, port: int, duration: int, close: bool, log: Path) -> float | None:
    result = wrk(port, duration, close, log)
    row.notes += result.notes
    return result.rate


def measure(row: Row, server: Server, duration: int, size: int) -> None:
    print(f"  {row.proxy} x{row.workers}: bulk", end="", flush=True)
    measure_bulk(row, server.port, duration, size, server.log)
    print(", new connections", end="", flush=True)
    row.conns = run_wrk(row, server.port, duration, True, server.log)
    print(", keep-alive requests", flush=True)
    row.reqs = run_wrk(row, server.port, duration, False, server.log)
    if server.proc.poll() is not None:
        row.notes.append(f"exited with {server.proc.returncode} during the run")


def run_all(args: argparse.Namespace, tmp: Path, run_dir: Path, origin: Server) -> list[Row]:
    size = args.bulk_mib << 20
    return run_matrix(
        [Row(proxy, workers) for workers in args.workers for proxy in args.only],
        lambda row: start_proxy(row.proxy, row.workers, tmp, run_dir, origin.port),
        lambda row, server: measure(row, server, args.duration, size),
    )


# --- report ------------------------------------------------------------------------------

HEADERS = (
    "proxy",
    "workers",
    "bulk MiB/s",
    "vs HAProxy",
    "new conn/s",
    "vs HAProxy",
    "keep-alive req/s",
    "vs HAProxy",
)


def table(rows: list[Row]) -> list[list[str]]:
    bases = {r.workers: r for r in rows if r.proxy == "haproxy"}
    cells = []
    for row in rows:
        base = bases.get(row.workers, Row("haproxy", row.workers))
        line = [row.proxy, str(row.workers)]
        for value, ref in ((row.bulk, base.bulk), (row.conns, base.conns), (row.reqs, base.reqs)):
            line += ["-" if value is None else f"{value:,.0f}", ratio(value, ref)]
        cells.append(line)
    return cells


def render_text(rows: list[Row]) -> str:
    return "\n".join(render_grid(HEADERS, table(rows)) + notes(rows))


def render_markdown(rows: list[Row], args: argparse.Namespace) -> str:
    head = [
        f"### L4 benchmark, {utc_now()}, commit {commit()}",
        "",
        f"{os.cpu_count()} CPUs, {versions()}; {args.duration}s per measurement; bulk = "
        f"{BULK_LANES} parallel curl downloads of {args.bulk_mib} MiB; new conn/s and "
        f"keep-alive req/s = wrk {' '.join(WRK_ARGS[:2])} on a {SMALL_BYTES}-byte file.",
        "",
    ]
    body = markdown_grid(HEADERS, table(rows))
    extra = [f"- {n.removeprefix('note: ')}" for n in notes(rows)]
    return "\n".join(head + body + (["", *extra] if extra else [])) + "\n\n"


# --- main --------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=int, default=5, help="seconds per measurement")
    parser.add_argument("--workers", default="1,2", help="comma-separated worker counts")
    parser.add_argument("--only", default=",".join(PROXIES), help="comma-separated proxies")
    parser.add_argument("--markdown", type=Path, help="append the table as Markdown to FILE")
    parser.add_argument("--bulk-mib", type=int, default=BULK_MIB, help="large file size, MiB")
    parser.add_argument("--install", action="store_true", help="apt-get install missing tools")
    args = parser.parse_args(argv)
    args.workers = [int(w) for w in args.workers.split(",") if w]
    args.only = [p for p in args.only.split(",") if p]
    if unknown := set(args.only) - set(PROXIES):
        parser.error(f"unknown proxy {', '.join(sorted(unknown))}: choose from {PROXIES}")
    if args.duration < 1 or args.bulk_mib < 1 or not args.workers or min(args.workers) < 1:
        parser.error("--duration, --bulk-mib and --workers must be positive")
    return args


def check_tools(args: argparse.Namespace) -> bool:
    missing = missing_tools(args.only)
    if missing and args.install:
        install_tools()
        missing = missing_tools(args.only)
    if missing:
        print(f"missing: {', '.join(missing)}", file=sys.stderr)
        print(f"install them with: {INSTALL_HINT}", file=sys.stderr)
    return not missing


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if not check_tools(args):
        return 2
    run_dir = RESULTS / f"l4-{run_stamp()}"
    run_dir.mkdir(parents=True)
    print(f"raw output: {run_dir}", flush=True)
    with tempfile.TemporaryDirectory(prefix="trilb-bench-") as tmp:
        try:
            origin = start_origin(Path(tmp), run_dir, args.bulk_mib)
        except BenchError as exc:
            print(f"origin: {exc}", file=sys.stderr)
            return 1
        try:
            rows = run_all(args, Path(tmp), run_dir, origin)
        finally:
            stop_server(origin)
            keep_logs(Path(tmp), run_dir, ("origin-error.log", "stream-error.log"))
    text = render_text(rows)
    print("\n" + text)
    (run_dir / "table.txt").write_text(text + "\n")
    if args.markdown:
        with args.markdown.open("a") as out:
            out.write(render_markdown(rows, args))
        print(f"appended to {args.markdown}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
