"""Passive checks through a real `trilb serve`: a server that refuses connections is
left out after `eject_after` failures in a row, and tried again after `eject_for`."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable

import httpx
import pytest

from tests.integration.conftest import (
    Backend,
    HttpOrigin,
    Trilb,
    free_port,
    http_config,
    tcp_config,
)
from tests.integration.test_plugins_serve import echoes

pytestmark = pytest.mark.slow

Factory = Callable[..., Trilb]
__all__ = ["echoes"]  # a fixture used by name


def test_a_refusing_server_is_ejected_then_tried_again_tcp(trilb_factory: Factory) -> None:
    live = Backend("B")
    dead = free_port()  # nobody listens: every connect is refused
    port = free_port()
    config = tcp_config(port, [f"127.0.0.1:{dead}", live.address])
    config = config.replace('connect_timeout = "1s"', 'connect_timeout = "1s"\neject_after = 2\n'
                            'eject_for = "1s"')  # fmt: skip
    trilb = trilb_factory(config, workers=1)
    try:
        for _ in range(6):  # round robin: the dead server's turns fail over to B
            with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
                assert sock.recv(10) == b"B\n"
        trilb.wait_log(f"server 127.0.0.1:{dead} out for 1s: 2 failures in a row, the last: "
                       "refused", 5)  # fmt: skip
        assert trilb.log().count(" out for 1s") == 1  # left out: not tried, not failing
        time.sleep(1.6)
        with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
            assert sock.recv(10) == b"B\n"
        trilb.wait_log(f"server 127.0.0.1:{dead} back in the balancing", 5)
    finally:
        live.stop()


def test_a_refusing_server_is_ejected_http(trilb_factory: Factory, echoes: list[int]) -> None:
    dead = free_port()
    port = free_port()
    servers = [f"127.0.0.1:{dead}", f"127.0.0.1:{echoes[0]}"]
    ejecting = 'eject_after = 1\neject_for = "30s"\npool_max_idle = 0\n'
    trilb = trilb_factory(http_config(port, servers, backend=ejecting), workers=1)
    with httpx.Client() as client:
        for _ in range(5):
            assert client.get(f"http://127.0.0.1:{port}/").json()["server"] == "one"
    trilb.wait_log(f"server 127.0.0.1:{dead} out for 30s: 1 failure in a row", 5)
    assert trilb.log().count(" out for 30s") == 1


def test_5xx_answers_eject_a_server_with_eject_on_5xx(trilb_factory: Factory) -> None:
    bad, good = HttpOrigin("bad"), HttpOrigin("good")
    bad.status = b"500 Internal Server Error"
    port = free_port()
    ejecting = 'eject_after = 2\neject_for = "1s"\neject_on_5xx = true\n'
    config = http_config(port, [bad.address, good.address], backend=ejecting)
    trilb = trilb_factory(config, workers=1)
    try:
        with httpx.Client() as client:
            # Round robin: the bad server answers 500 twice (the client sees them: a 5xx
            # is an answer, not retried), then it is out and every request gets "good".
            statuses = [client.get(f"http://127.0.0.1:{port}/").status_code for _ in range(4)]
            assert statuses.count(500) == 2
            trilb.wait_log(f"server {bad.address} out for 1s: 2 failures in a row, the last: "
                           "HTTP 500", 5)  # fmt: skip
            assert {client.get(f"http://127.0.0.1:{port}/").text for _ in range(6)} == {"good"}
            bad.status = b"200 OK"  # recovered: after eject_for it is tried and stays
            trilb.wait_log(f"server {bad.address} back in the balancing", 5)
            texts = [client.get(f"http://127.0.0.1:{port}/").text for _ in range(6)]
            assert texts.count("bad") == 3
    finally:
        bad.stop()
        good.stop()
