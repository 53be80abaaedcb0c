"""gRPC through trilb: a grpcio client, HTTP/2 (h2c) to trilb, HTTP/2 (h2c) to a grpcio
server behind a ``protocol = "h2"`` backend; trailers (gRPC's status) end to end."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from concurrent import futures
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import grpc
import pytest
import trustme

from tests.integration.conftest import Trilb, free_port

pytestmark = pytest.mark.slow

Factory = Callable[..., Trilb]


def unary(request: bytes, context: grpc.ServicerContext) -> bytes:
    return b"echo:" + request


def stream(request: bytes, context: grpc.ServicerContext) -> Iterator[bytes]:
    for i in range(int(request)):
        yield b"item %d " % i + b"x" * 10_000


def fail(request: bytes, context: grpc.ServicerContext) -> bytes:
    context.abort(grpc.StatusCode.NOT_FOUND, "no such thing: " + request.decode())
    return b""  # (abort raises)


@pytest.fixture(scope="module")
def grpc_server() -> Iterator[int]:
    handler = grpc.method_handlers_generic_handler("test.Echo", {
        "Unary": grpc.unary_unary_rpc_method_handler(unary),
        "Stream": grpc.unary_stream_rpc_method_handler(stream),
        "Fail": grpc.unary_unary_rpc_method_handler(fail),
    })  # fmt: skip
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    server.add_generic_rpc_handlers((handler,))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield port
    server.stop(grace=None)


def grpc_config(port: int, servers: list[int], backend_extra: str = "") -> str:
    listed = ", ".join(f'"127.0.0.1:{s}"' for s in servers)
    return f"""
[global]
grace = "1s"

[frontends.grpc]
mode = "http"
bind = "127.0.0.1:{port}"
default_backend = "svc"

[backends.svc]
protocol = "h2"
servers = [{listed}]
{backend_extra}
"""


@pytest.fixture
def channel(trilb_factory: Factory, grpc_server: int) -> Iterator[grpc.Channel]:
    port = free_port()
    trilb_factory(grpc_config(port, [grpc_server]), workers=1, ready=1)
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        yield channel


def test_unary_calls(channel: grpc.Channel) -> None:
    call = channel.unary_unary("/test.Echo/Unary")
    for n in range(20):
        assert call(b"hello %d" % n, timeout=5) == b"echo:hello %d" % n
    big = b"b" * (1 << 20)  # past the initial flow-control windows both ways
    assert call(big, timeout=10) == b"echo:" + big


def test_a_server_streaming_call(channel: grpc.Channel) -> None:
    items = list(channel.unary_stream("/test.Echo/Stream")(b"50", timeout=10))
    assert len(items) == 50 and items[7].startswith(b"item 7 ")


def test_a_grpc_error_status_arrives_in_the_trailers(channel: grpc.Channel) -> None:
    with pytest.raises(grpc.RpcError) as err:
        channel.unary_unary("/test.Echo/Fail")(b"x1", timeout=5)
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    assert err.value.details() == "no such thing: x1"


def test_grpc_to_a_tls_backend_and_h2_refused_by_a_plain_http11_one(
    trilb_factory: Factory, tmp_path_factory: pytest.TempPathFactory
) -> None:
    tmp = tmp_path_factory.mktemp("grpc-tls")
    ca = trustme.CA()
    cert = ca.issue_cert("svc.test")
    ca.cert_pem.write_to_path(str(tmp / "ca.pem"))
    handler = grpc.method_handlers_generic_handler(
        "test.Echo", {"Unary": grpc.unary_unary_rpc_method_handler(unary)}
    )
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    server.add_generic_rpc_handlers((handler,))
    creds = grpc.ssl_server_credentials(
        [(cert.private_key_pem.bytes(), b"".join(p.bytes() for p in cert.cert_chain_pems))]
    )
    secure = server.add_secure_port("127.0.0.1:0", creds)
    server.start()
    plain = ThreadingHTTPServer(("127.0.0.1", 0), BaseHTTPRequestHandler)  # HTTP/1.1 only
    threading.Thread(target=plain.serve_forever, daemon=True).start()
    try:
        port = free_port()
        trilb = trilb_factory(f"""
[global]
grace = "1s"

[frontends.grpc]
mode = "http"
bind = "127.0.0.1:{port}"
default_backend = "svc"

[[frontends.grpc.routes]]
path_prefix = "/plain."
backend = "plain"

[backends.svc]
protocol = "h2"
servers = ["127.0.0.1:{secure}"]
tls = {{ ca = "{tmp / 'ca.pem'}", sni = "svc.test" }}

[backends.plain]
protocol = "h2"
servers = ["127.0.0.1:{plain.server_address[1]}"]
""", workers=1, ready=1)  # fmt: skip
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            assert channel.unary_unary("/test.Echo/Unary")(b"tls", timeout=5) == b"echo:tls"
            with pytest.raises(grpc.RpcError) as err:
                channel.unary_unary("/plain.Echo/Unary")(b"x", timeout=5)
            assert err.value.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.UNKNOWN)
        assert "502" in trilb.log()
    finally:
        server.stop(grace=None)
        plain.shutdown()
        plain.server_close()


def test_a_dead_server_of_an_h2_backend_is_skipped(
    trilb_factory: Factory, grpc_server: int
) -> None:
    port = free_port()
    trilb_factory(grpc_config(port, [free_port(), grpc_server]), workers=1, ready=1)
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        call = channel.unary_unary("/test.Echo/Unary")
        for n in range(10):  # round-robin: every other one picks the dead server first
            assert call(b"%d" % n, timeout=5) == b"echo:%d" % n
