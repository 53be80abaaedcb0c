"""Fixtures shared across test packages: connected loopback TCP socket pairs."""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterator

import pytest

TcpPair = Callable[[], tuple[socket.socket, socket.socket]]


@pytest.fixture
def tcp_pair() -> Iterator[TcpPair]:
    """A factory of connected, non-blocking TCP socket pairs on 127.0.0.1.

    Each pair is (connecting end, accepted end). The listener is closed once the pair is
    made; every socket made is closed at teardown (closing one earlier is harmless).
    """
    made: list[socket.socket] = []

    def make() -> tuple[socket.socket, socket.socket]:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as listener:
            listener.bind(("127.0.0.1", 0))
            listener.listen(1)
            connecting = socket.create_connection(listener.getsockname(), timeout=5)
            accepted, _ = listener.accept()
        for sock in (connecting, accepted):
            sock.setblocking(False)
            made.append(sock)
        return connecting, accepted

    yield make
    for sock in made:
        sock.close()
