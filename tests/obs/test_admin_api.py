"""The admin endpoint's answers (obs/admin.py, obs/stats.py, obs/metrics.py) from a
shared mapping filled by hand: JSON shapes, state and weight changes, errors, the
token, and /metrics read back by Prometheus' own parser. No sockets."""

from __future__ import annotations

import json
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from trilb.config.load import parse_config
from trilb.control.shared import DRAIN, MAINT, READY, SharedState
from trilb.obs.admin import AdminServer, Reply
from trilb.obs.counters import (
    F_1XX,
    F_CONNECTIONS,
    LATENCY_BOUNDS,
    S_BUCKETS,
    SERVER_COUNTERS,
    quantile,
    server_counts,
    tally,
)
from trilb.obs.stats import Check

TOKEN = "a-long-enough-admin-token"


def make(token: str = "") -> tuple[AdminServer, SharedState]:
    admin: dict[str, Any] = {"bind": "127.0.0.1:0"}
    if token:
        admin["token"] = token
    config = parse_config({
        "admin": admin,
        "frontends": {"web": {"mode": "http", "bind": "127.0.0.1:0", "default_backend": "app"},
                      "db": {"mode": "tcp", "bind": "127.0.0.1:0", "default_backend": "pg"}},
        "backends": {"app": {"servers": ["127.0.0.1:1", {"address": "127.0.0.1:2",
                                                         "name": 'we"b\\2'}],
                             "health": {"type": "http"}},
                     "pg": {"servers": ["127.0.0.1:3"]}},
    })  # fmt: skip
    shared = SharedState(config, 2)
    checks = {("app", 0): Check(True, "passed", 0.0)}
    return AdminServer(config, shared, 3, checks), shared


HOST = {b"host": b"127.0.0.1:8404"}
JSON = {**HOST, b"content-type": b"application/json"}


def get(server: AdminServer, path: str, method: str = "GET", body: bytes = b"",
        headers: dict[bytes, bytes] | None = None) -> Any:  # fmt: skip
    fields = dict(JSON if method == "POST" else HOST) if headers is None else headers
    status, ctype, payload, _ = server.respond(method, path, fields, body)
    assert status == 200
    return json.loads(payload) if ctype == "application/json" else payload


def test_api_lists_frontends_backends_and_servers() -> None:
    server, shared = make()
    counts = server_counts()
    tally(counts, 200, 0.003)
    tally(counts, 503, 0.2)
    at = shared.server_offset("app", 0)
    shared.worker_block(1)[at : at + SERVER_COUNTERS] = __import__("array").array("Q", counts)
    shared.worker_block(0)[shared.frontend_offset("web") + F_CONNECTIONS] = 4
    shared.worker_block(0)[shared.frontend_offset("web") + F_1XX + 1] = 6
    data = get(server, "/api")
    assert data["generation"] == 3 and data["workers"] == 2
    web = data["frontends"][0]
    assert (web["name"], web["connections"], web["requests"]) == ("web", 4, 6)
    assert web["responses"]["2xx"] == 6 and data["frontends"][1]["mode"] == "tcp"
    app, pg = data["backends"]
    assert app["mode"] == "http" and pg["mode"] == "tcp"
    one = app["servers"][0]
    assert one["requests"] == 2 and one["responses"]["5xx"] == 1
    assert one["state"] == "up" and one["health"] == "up" and one["check"]["ok"]
    assert one["latency"]["p50"] is not None
    assert pg["servers"][0]["health"] is None  # no check configured
    assert get(server, "/api/backends")["backends"][1]["name"] == "pg"
    assert get(server, "/api/frontends")["frontends"][0]["name"] == "web"
    assert get(server, "/api/backends/pg")["servers"][0]["name"] == "127.0.0.1:3"


def test_post_sets_state_and_weight_in_the_shared_mapping() -> None:
    server, shared = make()
    path = "/api/backends/app/servers/127.0.0.1:1"
    answer = get(server, path, "POST", b'{"state": "drain"}')
    assert answer["state"] == "drain" and answer["admin"] == "drain"
    assert shared.server_state("app")[1] == bytes([DRAIN, READY])
    answer = get(server, path, "POST", b'{"state": "maint", "weight": 5}')
    assert (answer["state"], answer["weight"]) == ("maint", 5)
    shared.set_health("app", 0, False)
    assert get(server, path)["state"] == "maint"  # the operator's state comes first
    get(server, path, "POST", b'{"state": "ready"}')
    assert get(server, path)["state"] == "down"  # then the check's verdict
    assert shared.server_state("app")[1:] == (bytes([READY, READY]), [5, 1])
    assert shared.server_state("app")[1] != bytes([MAINT, READY])


@pytest.mark.parametrize(
    ("method", "path", "body", "status", "says"),
    [
        ("POST", "/api/backends/app/servers/127.0.0.1:1", b'{"state": "off"}', 400, "state"),
        ("POST", "/api/backends/app/servers/127.0.0.1:1", b'{"weight": -1}', 400, "weight"),
        ("POST", "/api/backends/app/servers/127.0.0.1:1", b'{"weight": true}', 400, "weight"),
        ("POST", "/api/backends/app/servers/127.0.0.1:1", b'{"colour": 1}', 400, "expected"),
        ("POST", "/api/backends/app/servers/127.0.0.1:1", b"{nope", 400, "not JSON"),
        ("POST", "/api/backends/app/servers/127.0.0.1:9", b'{"state": "drain"}', 404, "no server"),
        ("GET", "/api/backends/nope", b"", 404, "no backend"),
        ("GET", "/nope", b"", 404, "/stats"),
        ("DELETE", "/api/backends", b"", 405, "allowed"),
        ("POST", "/metrics", b"", 405, "allowed"),
        ("POST", "/api/backends/app/servers/127.0.0.1:1", b"[" * 5000, 400, "not JSON"),
    ],
)
def test_bad_requests_get_a_clear_error_and_change_nothing(
    method: str, path: str, body: bytes, status: int, says: str
) -> None:
    server, shared = make()
    before = shared.server_state("app")
    with pytest.raises(Reply) as caught:
        server.respond(method, path, JSON, body)
    assert caught.value.status == status and says in str(caught.value)
    assert shared.server_state("app") == before


def test_a_token_guards_everything_but_the_page() -> None:
    server, _ = make(TOKEN)
    assert b"<html" in get(server, "/stats").lower()  # the page: no data in it
    for headers in ({}, {b"authorization": b"Bearer wrong-token-of-some-length"},
                    {b"authorization": TOKEN.encode()}, HOST):  # fmt: skip
        with pytest.raises(Reply) as caught:
            server.respond("GET", "/api", headers, b"")
        assert caught.value.status == 401
        assert ("WWW-Authenticate", 'Bearer realm="trilb"') in caught.value.headers
    good = {b"authorization": f"Bearer {TOKEN}".encode()}
    assert get(server, "/api", headers=good)["generation"] == 3
    assert get(server, "/metrics", headers=good)


def test_metrics_parse_with_the_prometheus_parser() -> None:
    server, shared = make()
    counts = server_counts()
    for elapsed in (0.0004, 0.002, 0.002, 0.3, 20.0):
        tally(counts, 200, elapsed)
    at = shared.server_offset("app", 1)
    shared.worker_block(0)[at : at + SERVER_COUNTERS] = __import__("array").array("Q", counts)
    shared.set_admin("app", 1, DRAIN)
    text = get(server, "/metrics").decode()
    families = {f.name: f for f in text_string_to_metric_families(text)}
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for f in families.values() for s in f.samples}  # fmt: skip
    lab = (("backend", "app"), ("server", 'we"b\\2'))

    def le(bound: str) -> tuple[tuple[str, str], ...]:
        return tuple(sorted((*lab, ("le", bound))))

    assert families["trilb_server_response_seconds"].type == "histogram"
    assert samples[("trilb_server_response_seconds_count", lab)] == 5
    assert samples[("trilb_server_response_seconds_bucket", le("0.0005"))] == 1
    assert samples[("trilb_server_response_seconds_bucket", le("0.0025"))] == 3
    assert samples[("trilb_server_response_seconds_bucket", le("+Inf"))] == 5
    assert samples[("trilb_server_response_seconds_sum", lab)] == pytest.approx(20.3044)
    assert samples[("trilb_server_state", tuple(sorted((*lab, ("state", "drain")))))] == 1
    assert samples[("trilb_server_state", tuple(sorted((*lab, ("state", "up")))))] == 0
    assert families["trilb_server_sessions"].type == "counter"  # (_total is the sample's)
    assert samples[("trilb_generation", ())] == 3


def test_quantiles_interpolate_inside_their_bucket() -> None:
    buckets = [0] * (len(LATENCY_BOUNDS) + 1)
    assert quantile(buckets, 0.5) is None
    buckets[LATENCY_BOUNDS.index(0.01)] = 10  # ten responses between 5 and 10 ms
    assert quantile(buckets, 0.5) == pytest.approx(0.0075)
    buckets[-1] = 1  # one over the last bound
    assert quantile(buckets, 0.99) == LATENCY_BOUNDS[-1]
    counts = server_counts()
    tally(counts, 204, 0.004)
    assert counts[S_BUCKETS + LATENCY_BOUNDS.index(0.005)] == 1


def test_requests_a_web_page_could_forge_are_refused() -> None:
    """Without a token the endpoint trusts loopback, so a page elsewhere must not make
    a browser act on it: a Host naming another site (DNS rebinding) and a form's POST
    (no JSON content type, no preflight) are refused."""
    server, shared = make()
    path = "/api/backends/app/servers/127.0.0.1:1"
    for headers, status in (({b"host": b"evil.example:8404"}, 403), ({}, 415),
                            ({**HOST, b"content-type": b"text/plain"}, 415),
                            (HOST, 415)):  # fmt: skip
        with pytest.raises(Reply) as caught:
            server.respond("POST", path, headers, b'{"state": "maint"}')
        assert caught.value.status == status
    assert shared.server_state("app")[1] == bytes([READY, READY])
    for host in (
        b"localhost:8404",
        b"[::1]:8404",
        b"127.0.0.1",
        b"LOCALHOST",
        b"localhost.",
        b"10.1.2.3:8404",
        b"",
    ):  # (an IP literal or none: not a rebinding)
        assert get(server, "/api", headers={b"host": host})["generation"] == 3
