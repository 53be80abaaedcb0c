"""The counters a worker keeps per server and per frontend: their layout, and the one
function that tallies a response.

A worker counts in plain lists (a list item increment is the cheapest write Python
has) and copies them into its slot of the generation's shared mapping once per sweeper
tick (control/shared.py); the control process sums the slots for /stats, /metrics and
/api. Every counter but the ``ACTIVE`` gauges only grows, so a respawned worker starts
from the values its predecessor published. Pure: no trio, no I/O.
"""

from __future__ import annotations

from bisect import bisect_left

# A server's counters.
S_ACTIVE = 0  # gauge: connections (L4) or requests (L7) in flight to it
S_TOTAL = 1  # connections made (L4), responses received (L7)
S_1XX = 2  # S_1XX .. S_1XX + 4: responses by status class (L7)
S_FAILURES = 7  # connects refused or timed out, and servers that broke before answering
S_BYTES_IN = 8  # from the server (as read: after TLS, HTTP/2 frames included)
S_BYTES_OUT = 9  # to the server
S_LATENCY_SUM = 10  # microseconds from request sent to response head, summed (L7)
S_BUCKETS = 11  # one count per LATENCY_BOUNDS upper bound, then one for the rest
# Upper bounds in seconds of the latency histogram (Prometheus' default buckets, with
# finer steps below 5 ms where a proxy on a LAN lives).
LATENCY_BOUNDS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
                  2.5, 5.0, 10.0)  # fmt: skip
SERVER_COUNTERS = S_BUCKETS + len(LATENCY_BOUNDS) + 1

# A frontend's counters.
F_ACTIVE = 0  # gauge: client connections open
F_CONNECTIONS = 1  # client connections accepted
F_1XX = 2  # F_1XX .. F_1XX + 4: responses sent by status class (http), trilb's own too
F_REFUSED = 7  # connections (or datagrams) refused by limits, or by a bad PROXY header
F_BYTES_IN = 8  # from the clients (as read: after TLS, HTTP/2 frames included)
F_BYTES_OUT = 9  # to the clients
FRONTEND_COUNTERS = 10

CLASSES = ("1xx", "2xx", "3xx", "4xx", "5xx")


def server_counts() -> list[int]:
    return [0] * SERVER_COUNTERS


def frontend_counts() -> list[int]:
    return [0] * FRONTEND_COUNTERS


def tally(counts: list[int], status: int, elapsed: float) -> None:
    """Count a server's final response of ``status`` that took ``elapsed`` seconds."""
    counts[S_TOTAL] += 1
    counts[S_1XX - 1 + status // 100] += 1
    counts[S_LATENCY_SUM] += int(elapsed * 1_000_000)
    counts[S_BUCKETS + bisect_left(LATENCY_BOUNDS, elapsed)] += 1


def quantile(buckets: list[int], q: float) -> float | None:
    """The ``q`` quantile (0..1) of a latency histogram's per-bucket counts, linear
    inside the bucket it falls in (as Prometheus' histogram_quantile); None when empty.
    A quantile in the open last bucket is reported as the last bound."""
    total = sum(buckets)
    if not total:
        return None
    rank = q * total
    seen = 0
    lower = 0.0
    for i, count in enumerate(buckets):
        if count and seen + count >= rank:
            if i == len(LATENCY_BOUNDS):
                return LATENCY_BOUNDS[-1]
            upper = LATENCY_BOUNDS[i]
            return lower + (upper - lower) * (rank - seen) / count
        seen += count
        lower = LATENCY_BOUNDS[i] if i < len(LATENCY_BOUNDS) else lower
    return LATENCY_BOUNDS[-1]
