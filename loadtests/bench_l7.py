"""Side-by-side L7 benchmark: trilb, HAProxy and nginx as HTTP/1.1 proxies, plus proxy.py.

Owns the HTTP run: the private nginx origin of bench_l4 (small file, keep-alive), each proxy
in turn in front of it (trilb `mode = "http"`, HAProxy `mode http`, nginx `http` with an
upstream keepalive pool, and proxy.py's reverse proxy as the packaged Python baseline),
wrk as the load generator, and the comparison table. Shared process, origin and wrk code is
in benchlib.py. It deliberately does not tune the kernel, pin CPUs or touch any system
service or config: numbers are only comparable within one run, hence the ratio to HAProxy.

    python loadtests/bench_l7.py [--duration 5] [--rounds 3] [--workers 1,2]
                                 [--only trilb,haproxy,nginx,proxy.py] [--markdown FILE]
                                 [--tls] [--install]

--tls: the proxies terminate TLS (a trustme certificate, ECDSA P-256) and wrk speaks
HTTPS: keep-alive requests/s, and with a connection per request, full handshakes per
second (wrk resumes no sessions). proxy.py is left out (it does not terminate TLS for a
reverse proxy).
"""

from __future__ import annotations

import argparse
import dataclasses
import http.client
import importlib.metadata
import json
import os
import shlex
import shutil
import ssl
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from benchlib import (
    MAXCONN,
    REPO,
    RESULTS,
    SMALL_BYTES,
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
    nginx_temps,
    notes,
    post_script,
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

PROXIES = ("trilb", "haproxy", "nginx", "proxy.py")
TOOLS = ("haproxy", "nginx", "wrk")
# nginx's http proxy module is built in, so unlike bench_l4 no extra module package.
APT_PACKAGES = "haproxy nginx wrk"
INSTALL_HINT = f"apt-get install -y {APT_PACKAGES}"
# proxy.py is a PyPI distribution, installed into the interpreter that runs this script.
PROXYPY_DIST = "proxy.py"
PROXYPY_INSTALL = (sys.executable, "-m", "pip", "install", PROXYPY_DIST)
PROXYPY_HINT = shlex.join(PROXYPY_INSTALL)
# proxy.py 2.4.10's default threadless executor dies (FileNotFoundError from
# selector.modify) on the second request of a keep-alive connection through its reverse
# proxy, so it runs threaded: one thread per client connection in each acceptor process.
PROXYPY_MODE = "--threaded"
PROXYPY_PLUGIN = "bench_proxypy_origin"
# Requests sent over one connection before measuring: two or more prove keep-alive works.
CHECK_REQUESTS = 3
# Per socket operation of that check; a proxy slower than this is broken, not slow.
CHECK_TIMEOUT = 5.0
ERROR_LOGS = ("origin-error.log", "http-error.log")


@dataclasses.dataclass
class Row:
    proxy: str
    workers: int
    keep: float | None = None
    keep_p99: float | None = None
    close: float | None = None
    close_p99: float | None = None
    notes: list[str] = dataclasses.field(default_factory=list)


# --- tools -------------------------------------------------------------------------------


def proxypy_version() -> str | None:
    try:
        return importlib.metadata.version(PROXYPY_DIST)
    except importlib.metadata.PackageNotFoundError:
        return None


def missing_tools() -> list[str]:
    return [t for t in TOOLS if shutil.which(t) is None]


def check_tools(args: argparse.Namespace) -> bool:
    """Install what is missing with --install; say how otherwise. False: cannot run at all."""
    missing = missing_tools()
    if args.install and missing:
        apt_install(APT_PACKAGES.split())
        missing = missing_tools()
    if args.install and PROXYPY_DIST in args.only and proxypy_version() is None:
        print(f"+ {PROXYPY_HINT}", flush=True)
        subprocess.run(PROXYPY_INSTALL, check=True)
    if PROXYPY_DIST in args.only and proxypy_version() is None:
        print(f"{PROXYPY_DIST} is not installed, skipping it; install: {PROXYPY_HINT}")
    if missing:
        print(f"missing: {', '.join(missing)}", file=sys.stderr)
        print(f"install them with: {INSTALL_HINT}", file=sys.stderr)
    return not missing


def python_proxy() -> str:
    """Which Python reverse proxy besides trilb this run measures, and how it runs."""
    version = proxypy_version()
    if version is None:
        return f"{PROXYPY_DIST}: not installed ({PROXYPY_HINT})"
    return (
        f"{PROXYPY_DIST} {version} (PyPI), its reverse proxy with a one-route plugin, "
        f"{PROXYPY_MODE}, --num-acceptors W; it opens a new origin connection per request"
    )


# --- configs -----------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Certs:
    """A server certificate for the --tls runs, as each proxy wants it."""

    cert: Path  # the chain
    key: Path
    both: Path  # chain and key in one file (HAProxy's crt)


def make_certs(tmp: Path) -> Certs:
    import trustme  # a dev dependency; only --tls needs it

    issued = trustme.CA().issue_cert("localhost", "127.0.0.1")
    certs = Certs(tmp / "bench.pem", tmp / "bench.key", tmp / "bench-both.pem")
    certs.cert.write_bytes(b"".join(p.bytes() for p in issued.cert_chain_pems))
    issued.private_key_pem.write_to_path(str(certs.key))
    issued.private_key_and_cert_chain_pem.write_to_path(str(certs.both))
    return certs


# What --plugins adds to trilb's config: each first-party plugin with typical settings.
PLUGIN_TABLES = {
    "headers": '[plugins.headers]\nrequest = { set = { "X-Env" = "bench" }, '
    'remove = ["X-Debug"] }\nresponse = { remove = ["Server"] }\nrequest_id = "X-Request-Id"\n',
    "sticky": '[plugins.sticky]\nkey = "a benchmark key, long enough"\n',
    "waf": '[plugins.waf]\nmode = "block"\n',
}


def trilb_config(
    port: int,
    origin: int,
    workers: int,
    tls: Certs | None = None,
    plugins: str = "",
    access_log: Path | None = None,
) -> str:
    cert = f'{{ cert = "{tls.cert}", key = "{tls.key}" }}' if tls else ""
    tls_line = f"tls = {{ certs = [{cert}] }}\n" if tls else ""
    names = [p for p in plugins.split(",") if p and p != "offpath"]
    listed = f"plugins = {json.dumps(names)}\n" if names else ""
    if "offpath" in plugins:  # plugins configured, on a route the benchmark never takes
        listed += '\n[[frontends.bench.routes]]\npath_prefix = "/offpath/"\nbackend = "origin"\n'
        listed += 'plugins = ["headers"]\n'
        names = ["headers"]
    logged = f'[access_log]\npath = "{access_log}"\n\n' if access_log else ""
    return (
        f'[global]\nworkers = {workers}\ngrace = "2s"\n\n{logged}'
        f'[frontends.bench]\nmode = "http"\nbind = "127.0.0.1:{port}"\n'
        f'default_backend = "origin"\n{tls_line}{listed}\n'
        f'[backends.origin]\nservers = ["127.0.0.1:{origin}"]\n\n'
        + "".join(PLUGIN_TABLES[n] for n in names)
    )


def haproxy_config(port: int, origin: int, workers: int, tls: Certs | None = None) -> str:
    ssl = f" ssl crt {tls.both} alpn http/1.1" if tls else ""
    # No `log` line anywhere: HAProxy logs nothing, like the others here.
    return (
        f"global\n  nbthread {workers}\n  maxconn {MAXCONN}\n\n"
        f"defaults\n  mode http\n  maxconn {MAXCONN}\n"
        "  option http-keep-alive\n  http-reuse always\n"
        "  timeout connect 5s\n  timeout client 60s\n  timeout server 60s\n"
        "  timeout http-keep-alive 60s\n\n"
        f"frontend bench\n  bind 127.0.0.1:{port}{ssl}\n  default_backend origin\n\n"
        f"backend origin\n  server origin 127.0.0.1:{origin}\n"
    )


def nginx_config(tmp: Path, port: int, origin: int, workers: int, tls: Certs | None = None) -> str:
    ssl = (
        f" ssl;\n    ssl_certificate {tls.cert};\n    ssl_certificate_key {tls.key};\n"
        "    ssl_session_cache shared:SSL:10m;\n    keepalive_requests 1000000000"
        if tls
        else ""
    )
    return nginx_main(tmp, "http", workers) + (
        "http {\n  access_log off;\n"
        "  keepalive_timeout 300s;\n  keepalive_requests 1000000000;\n"
        f"{nginx_temps(tmp)}"
        f"  upstream origin {{ server 127.0.0.1:{origin}; keepalive 32; }}\n"
        f"  server {{\n    listen 127.0.0.1:{port} backlog=4096{ssl};\n"
        "    location / {\n      proxy_pass http://origin;\n      proxy_http_version 1.1;\n"
        '      proxy_set_header Connection "";\n    }\n  }\n}\n'
    )


def proxypy_plugin(origin: int) -> str:
    # A static route: proxy.py replaces the request path with the route URL's path.
    return (
        "from proxy.http.server import ReverseProxyBasePlugin\n\n\n"
        "class Origin(ReverseProxyBasePlugin):\n"
        "    def routes(self):\n"
        f'        return [(r"/small$", [b"http://127.0.0.1:{origin}/small"])]\n'
    )


def proxypy_argv(port: int, workers: int) -> list[str]:
    return [
        *(sys.executable, "-m", "proxy", "--hostname", "127.0.0.1", "--port", str(port)),
        *("--backlog", "4096", PROXYPY_MODE, "--num-acceptors", str(workers)),
        *("--enable-reverse-proxy", "--disable-http-proxy"),
        *("--plugins", f"{PROXYPY_PLUGIN}.Origin", "--log-level", "WARNING"),
    ]


# --- servers -----------------------------------------------------------------------------


def start_proxy(
    proxy: str,
    workers: int,
    tmp: Path,
    run_dir: Path,
    origin: int,
    tls: Certs | None = None,
    plugins: str = "",
    access_log: bool = False,
) -> Server:
    port = free_port()
    env = dict(os.environ)
    log = run_dir / f"{proxy}-w{workers}.log"
    if proxy == "trilb":
        conf = tmp / f"trilb-w{workers}.toml"
        logged = run_dir / f"trilb-w{workers}-access.log" if access_log else None
        conf.write_text(trilb_config(port, origin, workers, tls, plugins, logged))
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
        argv = [sys.executable, "-m", "trilb", "serve", "-c", str(conf)]
    elif proxy == "haproxy":
        conf = tmp / f"haproxy-w{workers}.cfg"
        conf.write_text(haproxy_config(port, origin, workers, tls))
        argv = ["haproxy", "-db", "-f", str(conf)]
    elif proxy == "nginx":
        conf = tmp / f"http-w{workers}.conf"
        conf.write_text(nginx_config(tmp, port, origin, workers, tls))
        argv = nginx_argv(tmp, conf, "http-error.log")
    else:
        if proxypy_version() is None:
            raise BenchError(f"{PROXYPY_DIST} not installed: {PROXYPY_HINT}")
        conf = tmp / f"{PROXYPY_PLUGIN}.py"
        conf.write_text(proxypy_plugin(origin))
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(tmp), env.get("PYTHONPATH")]))
        env["HOME"] = str(tmp)  # proxy.py makes ~/.proxy at start; keep it in tmp/
        argv = proxypy_argv(port, workers)
    with log.open("a") as out:
        out.write(f"# {conf.name}\n{conf.read_text()}\n")
    return start_server(f"{proxy} x{workers}", argv, port, log, env, tls is not None)


def check_http(port: int, tls: bool = False) -> None:
    """Several GETs on one connection, each a 200 with the whole small file, or BenchError."""
    conn = (
        http.client.HTTPSConnection(
            "127.0.0.1", port, timeout=CHECK_TIMEOUT, context=ssl._create_unverified_context()
        )
        if tls
        else http.client.HTTPConnection("127.0.0.1", port, timeout=CHECK_TIMEOUT)
    )
    try:
        for n in range(1, CHECK_REQUESTS + 1):
            conn.request("GET", "/small", headers={"Host": "bench"})
            response = conn.getresponse()
            body = response.read()
            if response.status != 200 or len(body) != SMALL_BYTES:
                raise BenchError(
                    f"request {n} on one connection answered {response.status} "
                    f"with {len(body)} bytes, expected 200 with {SMALL_BYTES}"
                )
    except (OSError, http.client.HTTPException) as exc:
        raise BenchError(f"request on one connection failed: {exc!r}") from exc
    finally:
        conn.close()


# --- measurements ------------------------------------------------------------------------


def measure(
    row: Row, server: Server, duration: int, tls: bool = False, post: Path | None = None
) -> None:
    print(f"  {row.proxy} x{row.workers}: check", end="", flush=True)
    scheme = "https" if tls else "http"
    try:
        check_http(server.port, tls)
    except BenchError:
        print(flush=True)  # end the progress line; run_matrix prints why on the next
        raise
    print(", keep-alive requests", end="", flush=True)
    keep = wrk(server.port, duration, False, server.log, True, scheme, post)
    print(", connection per request", flush=True)
    close = wrk(server.port, duration, True, server.log, True, scheme, post)
    row.keep, row.keep_p99 = keep.rate, keep.p99_ms
    row.close, row.close_p99 = close.rate, close.p99_ms
    row.notes += keep.notes + close.notes
    if server.proc.poll() is not None:
        row.notes.append(f"exited with {server.proc.returncode} during the run")


def run_all(args: argparse.Namespace, tmp: Path, run_dir: Path, origin: Server) -> list[Row]:
    """Every proxy and worker count, ``--rounds`` times over, in turn (so that a change in
    what else the machine does hits all of them alike); the median of each figure."""
    runs = run_matrix(
        [Row(p, w) for _ in range(args.rounds) for w in args.workers for p in args.only],
        lambda row: start_proxy(
            row.proxy,
            row.workers,
            tmp,
            run_dir,
            origin.port,
            args.certs,
            args.plugins,
            args.access_log,
        ),
        lambda row, server: measure(
            row, server, args.duration, args.certs is not None, args.post_script
        ),
    )
    return [median_row([r for r in runs if (r.proxy, r.workers) == (p, w)])
            for w in args.workers for p in args.only]  # fmt: skip


def median_row(rows: list[Row]) -> Row:
    out = Row(rows[0].proxy, rows[0].workers)
    for name in ("keep", "keep_p99", "close", "close_p99"):
        values = [v for r in rows if (v := getattr(r, name)) is not None]
        setattr(out, name, statistics.median(values) if values else None)
    out.notes = sorted({n for r in rows for n in r.notes})
    return out


# --- report ------------------------------------------------------------------------------

HEADERS = (
    "proxy",
    "workers",
    "keep-alive req/s",
    "vs HAProxy",
    "keep-alive p99 ms",
    "vs HAProxy",
    "conn-per-req req/s",
    "vs HAProxy",
    "conn-per-req p99 ms",
    "vs HAProxy",
)


def table(rows: list[Row]) -> list[list[str]]:
    bases = {r.workers: r for r in rows if r.proxy == "haproxy"}
    cells = []
    for row in rows:
        base = bases.get(row.workers, Row("haproxy", row.workers))
        line = [row.proxy, str(row.workers)]
        for value, ref, form in (
            (row.keep, base.keep, "{:,.0f}"),
            (row.keep_p99, base.keep_p99, "{:,.2f}"),
            (row.close, base.close, "{:,.0f}"),
            (row.close_p99, base.close_p99, "{:,.2f}"),
        ):
            line += ["-" if value is None else form.format(value), ratio(value, ref)]
        cells.append(line)
    return cells


def render_text(rows: list[Row]) -> str:
    head = [f"python proxy: {python_proxy()}", ""]
    return "\n".join(head + render_grid(HEADERS, table(rows)) + notes(rows))


def render_markdown(rows: list[Row], args: argparse.Namespace) -> str:
    load = " ".join(WRK_ARGS[:2])
    head = [
        f"### L7 benchmark{' over TLS' if args.tls else ''}, {utc_now()}, commit {commit()}",
        "",
        f"{os.cpu_count()} CPUs, {versions()}; {args.duration}s per measurement, median of "
        f"{args.rounds} rounds (every proxy in turn, each round); "
        f"keep-alive = wrk {load} --latency, conn-per-req = the same with "
        f"`Connection: close`, on a {SMALL_BYTES}-byte file"
        + (f" (POSTs of a {args.post}-byte JSON body)" if args.post else "")
        + "; p99 = wrk's 99th percentile "
        f"latency (its ratio: lower is better); Python proxy: {python_proxy()}.",
        "",
    ]
    body = markdown_grid(HEADERS, table(rows))
    extra = [f"- {n.removeprefix('note: ')}" for n in notes(rows)]
    return "\n".join(head + body + (["", *extra] if extra else [])) + "\n\n"


# --- main --------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=int, default=5, help="seconds per measurement")
    parser.add_argument(
        "--rounds", type=int, default=3, help="runs of every proxy, in turn; medians reported"
    )
    parser.add_argument("--workers", default="1,2", help="comma-separated worker counts")
    parser.add_argument("--only", default=",".join(PROXIES), help="comma-separated proxies")
    parser.add_argument("--markdown", type=Path, help="append the table as Markdown to FILE")
    parser.add_argument("--tls", action="store_true", help="proxies terminate TLS; wrk on https")
    parser.add_argument(
        "--plugins",
        default="",
        help=f"trilb runs these first-party plugins: {list(PLUGIN_TABLES)}, or 'offpath'",
    )
    parser.add_argument(
        "--access-log", action="store_true",
        help="trilb writes a text access log (into the run's folder); the others log nothing",
    )  # fmt: skip
    parser.add_argument(
        "--post", type=int, default=0, metavar="BYTES",
        help="requests are POSTs with a JSON body of BYTES (the origin drops it)",
    )  # fmt: skip
    parser.add_argument(
        "--install", action="store_true", help=f"apt-get install missing tools, pip {PROXYPY_DIST}"
    )
    args = parser.parse_args(argv)
    args.workers = [int(w) for w in args.workers.split(",") if w]
    args.only = [p for p in args.only.split(",") if p and not (args.tls and p == "proxy.py")]
    args.certs = None
    if unknown := set(args.only) - set(PROXIES):
        parser.error(f"unknown proxy {', '.join(sorted(unknown))}: choose from {PROXIES}")
    if args.duration < 1 or args.rounds < 1 or not args.workers or min(args.workers) < 1:
        parser.error("--duration, --rounds and --workers must be positive")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if not check_tools(args):
        return 2
    run_dir = RESULTS / f"l7-{run_stamp()}"
    run_dir.mkdir(parents=True)
    print(f"raw output: {run_dir}", flush=True)
    with tempfile.TemporaryDirectory(prefix="trilb-bench-") as tmp:
        if args.tls:
            args.certs = make_certs(Path(tmp))
        args.post_script = post_script(Path(tmp) / "post.lua", args.post) if args.post else None
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
