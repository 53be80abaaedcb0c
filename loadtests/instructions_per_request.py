"""Instructions a trilb HTTP worker executes per request, counted by callgrind.

CPU time per request on this shared 2-core box moves by 30% or more between identical
runs; an instruction count does not (two runs of the same code agree within 0.5%). So
this is the figure to compare before and after a change to the per-request path, next
to the side-by-side req/s of bench_l7.py and bench_h2.py. It runs one worker in this
process's child (no master, no fork, so valgrind follows it), in front of the nginx
origin of the benchmarks, and drives it with a few client threads on keep-alive
connections, then with one connection per request, then with h2load over h2c (10
streams in flight on each connection). Counts are user-space instructions: the
kernel's share (the syscalls) is not in them.

    python loadtests/instructions_per_request.py [--requests 1000] [--clients 8]
                                                 [--modes keep-alive,conn-per-req,h2c]
                                                 [--repo PATH] [--annotate PREFIX]

Needs valgrind (apt-get install valgrind), nginx, and h2load for h2c.
"""

from __future__ import annotations

import argparse
import glob
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
import tomllib
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path

from bench_l7 import trilb_config
from benchlib import REPO, start_origin, stop_server

REQUEST = b"GET /small HTTP/1.1\r\nHost: bench\r\n\r\n"
CLOSING = b"GET /small HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n"
WARMUP = 200
# Under callgrind the worker runs ~50x slower than natively; generous, still bounded.
START_TIMEOUT = 300.0
DUMP_TIMEOUT = 120.0


def run_worker(config_path: str, port_file: str) -> None:
    """The child: one worker of the config's only frontend, on a port it picks."""
    import trio

    from trilb.config.load import parse_config
    from trilb.worker.serve import serve_worker

    config = parse_config(tomllib.loads(Path(config_path).read_text()))
    frontend = next(iter(config.frontends.values()))
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1024)
    listener.setblocking(False)
    _, ready = os.pipe()
    Path(port_file).write_text(str(listener.getsockname()[1]))
    trio.run(serve_worker, config, {frontend.name: [listener]}, ready)


def exchange(sock: socket.socket, request: bytes) -> None:
    """Send a request and read its whole response (Content-Length framed)."""
    sock.sendall(request)
    data = b""
    while True:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
        head, sep, body = data.partition(b"\r\n\r\n")
        if sep:
            length = int(head.lower().split(b"content-length:")[1].split()[0])
            if len(body) >= length:
                break
    if not data.startswith(b"HTTP/1.1 200 "):
        raise SystemExit(f"unexpected answer: {data[:200]!r}")


def keep_alive(port: int, count: int) -> None:
    with socket.create_connection(("127.0.0.1", port)) as sock:
        for _ in range(count):
            exchange(sock, REQUEST)


def per_request(port: int, count: int) -> None:
    for _ in range(count):
        with socket.create_connection(("127.0.0.1", port)) as sock:
            exchange(sock, CLOSING)


def load(fn: Callable[[int, int], None], port: int, total: int, clients: int) -> int:
    """``total`` requests (rounded down to a multiple of ``clients``) in threads; the
    count made."""
    threads = [threading.Thread(target=fn, args=(port, total // clients)) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return total // clients * clients


def h2c(port: int, total: int, clients: int) -> int:
    """``total`` requests from h2load over h2c, ``clients`` connections; the count."""
    out = subprocess.run(["h2load", f"-c{clients}", "-m10", "-n", str(total),
                          f"http://127.0.0.1:{port}/small"],
                         capture_output=True, text=True, timeout=START_TIMEOUT)  # fmt: skip
    if f" {total} succeeded" not in out.stdout:
        raise SystemExit(f"h2load: not all requests succeeded:\n{out.stdout[-600:]}")
    return total


MODES: dict[str, Callable[[int, int, int], int]] = {
    "keep-alive": partial(load, keep_alive),
    "conn-per-req": partial(load, per_request),
    "h2c": h2c,
}


def total_instructions(dump: str) -> int:
    with open(dump) as f:
        for line in f:
            if line.startswith(("summary:", "totals:")):
                return int(line.split()[1])
    raise SystemExit(f"no totals in {dump}")


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--requests", type=int, default=1000)
    p.add_argument("--clients", type=int, default=8)
    p.add_argument(
        "--modes", default=",".join(MODES), help="comma-separated, of: " + ", ".join(MODES)
    )
    p.add_argument("--repo", type=Path, default=REPO, help="the trilb tree to measure")
    p.add_argument("--annotate", help="write callgrind_annotate output to PREFIX.MODE")
    p.add_argument("--worker", nargs=2, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        run_worker(*args.worker)
        return 0
    tmp = Path(tempfile.mkdtemp(prefix="trilb-ipr-"))
    run_dir = tmp / "run"
    run_dir.mkdir()
    origin = start_origin(tmp, run_dir, 0)
    config = tmp / "trilb.toml"
    config.write_text(trilb_config(1, origin.port, 1))  # the port is the child's choice
    port_file = tmp / "port"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(args.repo), str(Path(__file__).parent)]))
    argv_child = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={tmp}/cg.out",
                  sys.executable, __file__, "--worker", str(config), str(port_file)]  # fmt: skip
    with (tmp / "worker.log").open("w") as log:
        child = subprocess.Popen(argv_child, env=env, stdout=log, stderr=subprocess.STDOUT,
                                 start_new_session=True)  # fmt: skip
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while not (port_file.exists() and port_file.read_text()):
            if child.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"the worker did not start; see {tmp / 'worker.log'}")
            time.sleep(0.5)
        port = int(port_file.read_text())
        ctl = ["callgrind_control"]
        for mode in args.modes.split(","):
            drive = MODES[mode]
            drive(port, WARMUP, args.clients)
            subprocess.run([*ctl, "-z", str(child.pid)], capture_output=True, timeout=60)
            done = drive(port, args.requests, args.clients)
            before = set(glob.glob(f"{tmp}/cg.out.*"))
            subprocess.run([*ctl, "-d", str(child.pid)], capture_output=True, timeout=60)
            deadline = time.monotonic() + DUMP_TIMEOUT
            while not (new := set(glob.glob(f"{tmp}/cg.out.*")) - before):
                if time.monotonic() > deadline:
                    raise SystemExit("callgrind wrote no dump")
                time.sleep(0.5)
            time.sleep(1.0)  # let the dump finish
            dump = new.pop()
            print(f"{mode}: {total_instructions(dump) / done:,.0f} instructions per request "
                  f"({done} requests, {args.clients} clients)", flush=True)  # fmt: skip
            if args.annotate:
                with open(f"{args.annotate}.{mode}", "w") as out:
                    subprocess.run(["callgrind_annotate", "--inclusive=yes", dump], stdout=out)
    finally:
        os.killpg(child.pid, 9)
        child.wait()
        stop_server(origin)
    return 0


if __name__ == "__main__":
    sys.exit(main())
