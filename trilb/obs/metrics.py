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


class _Families:
    """Samples grouped by family, each family written once with its HELP and TYPE."""

    def __init__(self) -> None:
        self.order: list[str] = []
        self.meta: dict[str, tuple[str, str]] = {}
        self.lines: dict[str, list[str]] = {}

    def add(self, family: str, kind: str, help_: str, sample: str, labels: str,
            value: float) -> None:  # fmt: skip
        if family not in self.meta:
            self.order.append(family)
            self.meta[family] = (kind, help_)
            self.lines[family] = []
        text = repr(float(value)) if isinstance(value, float) else str(value)
        name = f"{sample}{{{labels}}}" if labels else sample
        self.lines[family].append(f"{name} {text}")

    def text(self) -> str:
        out = []
        for family in self.order:
            kind, help_ = self.meta[family]
            out.append(f"# HELP {family} {help_}")
            out.append(f"# TYPE {family} {kind}")
            out.extend(self.lines[family])
        return "\n".join(out) + "\n"


def exposition(config: Config, shared: SharedState, totals: list[int], generation: int) -> str:
    """The text of /metrics."""
    f = _Families()
    f.add("trilb_generation", "gauge", "The config generation serving (1 + reloads).",
          "trilb_generation", "", generation)  # fmt: skip
    f.add("trilb_workers", "gauge", "Worker processes of the serving generation.",
          "trilb_workers", "", shared.workers)  # fmt: skip
    for name, fe in config.frontends.items():
        at = shared.frontend_offset(name)
        lab = f'frontend="{_label(name)}",mode="{fe.mode}"'
        f.add("trilb_frontend_connections", "gauge", "Client connections open (udp: flows).",
              "trilb_frontend_connections", lab, totals[at + F_ACTIVE])  # fmt: skip
        f.add("trilb_frontend_connections_total", "counter",
              "Client connections accepted (udp: flows made).",
              "trilb_frontend_connections_total", lab, totals[at + F_CONNECTIONS])  # fmt: skip
        f.add("trilb_frontend_refused_total", "counter",
              "Connections (udp: new flows) refused by limits or a bad PROXY header.",
              "trilb_frontend_refused_total", lab, totals[at + F_REFUSED])  # fmt: skip
        f.add("trilb_frontend_received_bytes_total", "counter",
              "Bytes received from clients (after TLS; HTTP/2 frames included).",
              "trilb_frontend_received_bytes_total", lab, totals[at + F_BYTES_IN])  # fmt: skip
        f.add("trilb_frontend_sent_bytes_total", "counter", "Bytes sent to clients.",
              "trilb_frontend_sent_bytes_total", lab, totals[at + F_BYTES_OUT])  # fmt: skip
        if fe.mode == "http":
            for i, code in enumerate(CLASSES):
                f.add("trilb_frontend_responses_total", "counter",
                      "Responses sent to clients by status class, trilb's own included.",
                      "trilb_frontend_responses_total", f'{lab},code="{code}"',
                      totals[at + F_1XX + i])  # fmt: skip
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
                      "trilb_server_state", f'{lab},state="{s}"', int(s == state))  # fmt: skip
            f.add("trilb_server_check_up", "gauge",
                  "The active check's verdict (1: up); 1 without a check.",
                  "trilb_server_check_up", lab, int(not checked or health[i] == UP))  # fmt: skip
            f.add("trilb_server_weight", "gauge", "The server's weight (the API may change it).",
                  "trilb_server_weight", lab, weights[i])  # fmt: skip
            f.add("trilb_server_active", "gauge",
                  "Connections (tcp, udp flows) or requests (http) in flight to the server.",
                  "trilb_server_active", lab, totals[at + S_ACTIVE])  # fmt: skip
            f.add("trilb_server_sessions_total", "counter",
                  "Connections made (tcp), flows made (udp) or responses received (http).",
                  "trilb_server_sessions_total", lab, totals[at + S_TOTAL])  # fmt: skip
            f.add("trilb_server_failures_total", "counter",
                  "Connects refused or timed out.",
                  "trilb_server_failures_total", lab, totals[at + S_FAILURES])  # fmt: skip
            f.add("trilb_server_received_bytes_total", "counter",
                  "Bytes received from the server.",
                  "trilb_server_received_bytes_total", lab, totals[at + S_BYTES_IN])  # fmt: skip
            f.add("trilb_server_sent_bytes_total", "counter", "Bytes sent to the server.",
                  "trilb_server_sent_bytes_total", lab, totals[at + S_BYTES_OUT])  # fmt: skip
            for j, code in enumerate(CLASSES):
                f.add("trilb_server_responses_total", "counter",
                      "Responses received from the server by status class (http).",
                      "trilb_server_responses_total", f'{lab},code="{code}"',
                      totals[at + S_1XX + j])  # fmt: skip
            hist = "trilb_server_response_seconds"
            help_ = "Time from the request sent to the response head received (http)."
            seen = 0
            for j, bound in enumerate(LATENCY_BOUNDS):
                seen += totals[at + S_BUCKETS + j]
                f.add(hist, "histogram", help_, f"{hist}_bucket", f'{lab},le="{bound}"', seen)
            count = seen + totals[at + S_BUCKETS + len(LATENCY_BOUNDS)]
            f.add(hist, "histogram", help_, f"{hist}_bucket", f'{lab},le="+Inf"', count)
            f.add(hist, "histogram", help_, f"{hist}_sum", lab,
                  totals[at + S_LATENCY_SUM] / 1_000_000)  # fmt: skip
            f.add(hist, "histogram", help_, f"{hist}_count", lab, count)
    return f.text()
