"""CPU time a running proxy spends per request, read from /proc around one wrk run.

Unlike requests/s on a small shared box, CPU per request hardly depends on what else
the cores are doing, so it is the figure to compare before and after a change to the
per-request path (see docs/benchmarks.md). The process and all its descendants (a
trilb master and its workers, an nginx and its workers) are counted.

    python loadtests/cpu_per_request.py --pid MASTER_PID --url http://127.0.0.1:PORT/small
        [--duration 5] [--connections 32] [--close]
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
from pathlib import Path

# Clock ticks per second of /proc/PID/stat's utime and stime.
TICKS = os.sysconf("SC_CLK_TCK")


def tree(pid: int) -> list[int]:
    """``pid`` and every descendant."""
    out = [pid]
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            children = (task / "children").read_text().split()
        except OSError:
            continue
        for child in children:
            out += tree(int(child))
    return out


def cpu(pids: list[int]) -> tuple[int, int]:
    """(user, system) clock ticks used so far by ``pids``."""
    user = system = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        user += int(fields[11])
        system += int(fields[12])
    return user, system


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--pid", type=int, required=True, help="the proxy's (master) process")
    p.add_argument("--url", required=True)
    p.add_argument("--duration", type=int, default=5)
    p.add_argument("--connections", type=int, default=32)
    p.add_argument("--close", action="store_true", help="a new connection per request")
    args = p.parse_args(argv)
    pids = tree(args.pid)
    wrk = ["wrk", "-t2", f"-c{args.connections}", f"-d{args.duration}s", args.url]
    if args.close:
        wrk[1:1] = ["-H", "Connection: close"]
    before = cpu(pids)
    done = subprocess.run(wrk, capture_output=True, text=True, timeout=args.duration + 30)
    after = cpu(pids)
    found = re.search(r"(\d+) requests in", done.stdout)
    if done.returncode or not found:
        print(done.stdout + done.stderr, file=sys.stderr)
        return 1
    requests = int(found.group(1))
    user = (after[0] - before[0]) / TICKS / requests * 1e6
    system = (after[1] - before[1]) / TICKS / requests * 1e6
    rate = requests / args.duration
    print(f"{rate:,.0f} req/s; CPU per request: {user:.1f} us user + {system:.1f} us system "
          f"({len(pids)} processes)")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
