"""/metrics: the counters of a generation in Prometheus' text exposition format 0.0.4.

One family per metric, labelled by frontend, or by backend and server; the latency of
each server is a histogram (cumulative ``le`` buckets, ``_sum`` in seconds, ``_count``).
Built from the summed counters (control/shared.py ``totals``). Pure: no I/O.
"""

from __future__ import annotations

from trilb.config.schema import Config
from trilb.control.shared import UP, SharedState
from trilb.obs.counters import (
    CLASSES,
    F_1XX,
    F_ACTIVE,
    F_BYTES_IN,
    F_BYTES_OUT,
    F_CONNECTIONS,
    F_REFUSED,
    LATENCY_BOUNDS,
    S_1XX,
    S_ACTIVE,
    S_BUCKETS,
    S_BYTES_IN,
    S_BYTES_OUT,
    S_FAILURES,
    S_LATENCY_SUM,
    S_TOTAL,
)
from trilb.obs.stats import state_name

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
STATES = ("up", "down", "drain", "maint")


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


# The plain families: (name, type, help, the counter's index in its block).
FRONTEND_FAMILIES = (
    ("trilb_frontend_connections", "gauge", "Client connections open (udp: flows).", F_ACTIVE),
    ("trilb_frontend_connections_total", "counter",
     "Client connections accepted (udp: flows made).", F_CONNECTIONS),
    ("trilb_frontend_refused_total", "counter",
     "Connections (udp: new flows) refused by limits or a bad PROXY header.", F_REFUSED),
    ("trilb_frontend_received_bytes_total", "counter",
     "Bytes received from clients (after TLS; HTTP/2 frames included).", F_BYTES_IN),
    ("trilb_frontend_sent_bytes_total", "counter", "Bytes sent to clients.", F_BYTES_OUT),
)  # fmt: skip
SERVER_FAMILIES = (
    ("trilb_server_active", "gauge",
     "Connections (tcp, udp flows) or requests (http) in flight to the server.", S_ACTIVE),
    ("trilb_server_sessions_total", "counter",
     "Connections made (tcp), flows made (udp) or responses received (http).", S_TOTAL),
    ("trilb_server_failures_total", "counter", "Connects refused or timed out.", S_FAILURES),
    ("trilb_server_received_bytes_total", "counter", "Bytes received from the server.",
     S_BYTES_IN),
    ("trilb_server_sent_bytes_total", "counter", "Bytes sent to the server.", S_BYTES_OUT),
)  # fmt: skip
HISTOGRAM = "trilb_server_response_seconds"
HISTOGRAM_HELP = "Time from the request sent to the response head received (http)."


class _Families:
    """Samples grouped by family, each family written once with its HELP and TYPE."""

    def __init__(self) -> None:
        self.meta: dict[str, tuple[str, str]] = {}  # (insertion order: the output's)
        self.lines: dict[str, list[str]] = {}

    def add(self, family: str, kind: str, help_: str, labels: str, value: float,
            suffix: str = "") -> None:  # fmt: skip
        """A sample of ``family`` (named ``family + suffix``: a histogram's parts)."""
        if family not in self.meta:
            self.meta[family] = (kind, help_)
            self.lines[family] = []
        text = repr(float(value)) if isinstance(value, float) else str(value)
        name = f"{family}{suffix}{{{labels}}}" if labels else f"{family}{suffix}"
        self.lines[family].append(f"{name} {text}")

    def text(self) -> str:
        out = []
        for family, (kind, help_) in self.meta.items():
            out.append(f"# HELP {family} {help_}")
            out.append(f"# TYPE {family} {kind}")
            out.extend(self.lines[family])
        return "\n".join(out) + "\n"


def exposition(config: Config, shared: SharedState, totals: list[int], generation: int) -> str:
    """The text of /metrics."""
    f = _Families()
    f.add("trilb_generation", "gauge", "The config generation serving (1 + reloads).", "",
          generation)  # fmt: skip
    f.add("trilb_workers", "gauge", "Worker processes of the serving generation.", "",
          shared.workers)  # fmt: skip
    for name, fe in config.frontends.items():
        at = shared.frontend_offset(name)
        lab = f'frontend="{_label(name)}",mode="{fe.mode}"'
        for family, kind, help_, index in FRONTEND_FAMILIES:
            f.add(family, kind, help_, lab, totals[at + index])
        if fe.mode == "http":
            for i, code in enumerate(CLASSES):
                f.add("trilb_frontend_responses_total", "counter",
                      "Responses sent to clients by status class, trilb's own included.",
                      f'{lab},code="{code}"', totals[at + F_1XX + i])  # fmt: skip
    for name, backend in config.backends.items():
        health, admin, weights = shared.server_state(name)
        checked = backend.health is not None
        for i, server in enumerate(backend.servers):
            at = shared.server_offset(name, i)
            lab = f'backend="{_label(name)}",server="{_label(server.name)}"'
            state = state_name(health[i], admin[i], checked)
            for s in STATES:
                f.add("trilb_server_state", "gauge",
                      "1 for the server's state: up, down (its check), drain or maint.",
                      f'{lab},state="{s}"', int(s == state))  # fmt: skip
            f.add("trilb_server_check_up", "gauge",
                  "The active check's verdict (1: up); 1 without a check.", lab,
                  int(not checked or health[i] == UP))  # fmt: skip
            f.add("trilb_server_weight", "gauge", "The server's weight (the API may change it).",
                  lab, weights[i])  # fmt: skip
            for family, kind, help_, index in SERVER_FAMILIES:
                f.add(family, kind, help_, lab, totals[at + index])
            for j, code in enumerate(CLASSES):
                f.add("trilb_server_responses_total", "counter",
                      "Responses received from the server by status class (http).",
                      f'{lab},code="{code}"', totals[at + S_1XX + j])  # fmt: skip
            seen = 0
            for j, bound in enumerate((*LATENCY_BOUNDS, "+Inf")):
                seen += totals[at + S_BUCKETS + j]
                f.add(HISTOGRAM, "histogram", HISTOGRAM_HELP, f'{lab},le="{bound}"', seen,
                      "_bucket")  # fmt: skip
            f.add(HISTOGRAM, "histogram", HISTOGRAM_HELP, lab,
                  totals[at + S_LATENCY_SUM] / 1_000_000, "_sum")  # fmt: skip
            f.add(HISTOGRAM, "histogram", HISTOGRAM_HELP, lab, seen, "_count")
    return f.text()
