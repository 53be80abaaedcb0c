"""A real `trilb serve` terminating TLS (certificates from trustme) in front of real
HTTP backends: curl and Python clients, SNI, ALPN, resumption, handshake limits."""

from __future__ import annotations

import hashlib
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest
import trustme

from tests.integration.conftest import Trilb, free_port

pytestmark = pytest.mark.slow

Factory = Callable[..., Trilb]


class Origin(BaseHTTPRequestHandler):
    """GET /big/N: N bytes of a pattern; /slow/MS: "slow" after MS milliseconds;
    /drip/N: N bytes, one every 0.3 s; GET
    anything else: the forwarding headers;
    POST: the SHA-256 of the body ("chunked " first when it came chunked)."""

    protocol_version = "HTTP/1.1"

    def log_message(self, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        if self.path.startswith("/big/"):
            body = pattern(int(self.path[5:]))
        elif self.path.startswith("/slow/"):
            time.sleep(int(self.path[6:]) / 1000)
            body = b"slow"
        elif self.path.startswith("/drip/"):  # N bytes, one every 0.3 s
            n = int(self.path[6:])
            self.send_response(200)
            self.send_header("content-length", str(n))
            self.end_headers()
            for _ in range(n):
                self.wfile.write(b"d")
                self.wfile.flush()
                time.sleep(0.3)
            return
        else:
            proto = self.headers.get("x-forwarded-proto")
            body = f"{self.path} proto={proto} host={self.headers.get('host')}".encode()
        self._send(body)

    def do_POST(self) -> None:
        digest = hashlib.sha256()
        if self.headers.get("transfer-encoding") == "chunked":
            while size := int(self.rfile.readline(), 16):
                digest.update(self.rfile.read(size))
                self.rfile.readline()
            self.rfile.readline()
            self._send(b"chunked " + digest.hexdigest().encode())
            return
        n = int(self.headers["content-length"])
        while n:
            data = self.rfile.read(min(n, 1 << 20))
            digest.update(data)
            n -= len(data)
        self._send(digest.hexdigest().encode())

    def _send(self, body: bytes) -> None:
        self.send_response(200)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def pattern(n: int) -> bytes:
    return (b"0123456789abcdef" * (n // 16 + 1))[:n]


@dataclass
class Pki:
    ca: Path  # the CA certificate clients trust
    ca_key: Path  # its key (to issue more certificates)
    files: dict[str, tuple[Path, Path]]  # name -> (certificate chain, key)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    tmp = tmp_path_factory.mktemp("pki")
    ca = trustme.CA()
    ca.cert_pem.write_to_path(str(tmp / "ca.pem"))
    ca.private_key_pem.write_to_path(str(tmp / "ca.key"))
    files = {}
    for label, names in {
        "default": ("localhost", "default.test"),
        "a": ("a.test",),
        "wild": ("*.b.test",),
    }.items():
        cert = ca.issue_cert(*names)
        chain, key = tmp / f"{label}.pem", tmp / f"{label}.key"
        chain.write_bytes(b"".join(p.bytes() for p in cert.cert_chain_pems))
        cert.private_key_pem.write_to_path(str(key))
        files[label] = (chain, key)
    return Pki(tmp / "ca.pem", tmp / "ca.key", files)


class OriginServer(ThreadingHTTPServer):
    request_queue_size = 256  # (the default 5 drops SYNs when many streams connect at once)


@pytest.fixture(scope="module")
def origin() -> Iterator[int]:
    server = OriginServer(("127.0.0.1", 0), Origin)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


def tls_config(port: int, origin: int, pki: Pki, extra: str = "") -> str:
    certs = ", ".join(
        f'{{ cert = "{pki.files[n][0]}", key = "{pki.files[n][1]}" }}'
        for n in ("default", "a", "wild")
    )
    return f"""
[global]
grace = "1s"

[frontends.websecure]
mode = "http"
bind = "127.0.0.1:{port}"
default_backend = "app"
header_timeout = "2s"
tls = {{ certs = [{certs}], handshake_timeout = "500ms" {extra} }}

[backends.app]
servers = ["127.0.0.1:{origin}"]
"""


@pytest.fixture
def secure(trilb_factory: Factory, pki: Pki, origin: int) -> int:
    port = free_port()
    trilb_factory(tls_config(port, origin, pki), workers=2, ready=2)
    return port


def client_context(pki: Pki) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(pki.ca))
    ctx.set_alpn_protocols(["h2", "http/1.1"])
    return ctx


def handshake(port: int, ctx: ssl.SSLContext, name: str | None, **kw: object) -> ssl.SSLSocket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    return ctx.wrap_socket(sock, server_hostname=name, **kw)  # type: ignore[arg-type]


def test_curl_over_tls_reaches_the_backend_with_https_forwarded(secure: int, pki: Pki) -> None:
    out = subprocess.run(
        ["curl", "-sS", "--cacert", str(pki.ca), "--resolve", f"a.test:{secure}:127.0.0.1",
         f"https://a.test:{secure}/hello", f"https://a.test:{secure}/again"],
        capture_output=True, timeout=20,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    host = f"a.test:{secure}"
    assert out.stdout == f"/hello proto=https host={host}/again proto=https host={host}".encode()


def test_keep_alive_bodies_both_ways_over_tls(secure: int, pki: Pki) -> None:
    body = pattern(3 << 20)
    ctx = client_context(pki)
    with httpx.Client(verify=ctx, base_url=f"https://localhost:{secure}") as client:
        for _ in range(3):
            assert client.post("/up", content=body).text == hashlib.sha256(body).hexdigest()
            big = client.get(f"/big/{5 << 20}")
            assert big.status_code == 200 and big.content == pattern(5 << 20)
            assert client.get("/small").text.startswith("/small proto=https")


def test_sni_picks_the_certificate_exact_wildcard_and_default(secure: int, pki: Pki) -> None:
    ctx = client_context(pki)
    for name in ("a.test", "x.b.test", "localhost"):
        with handshake(secure, ctx, name) as tls:  # verified: the name is in its certificate
            assert tls.version() in ("TLSv1.2", "TLSv1.3")
    loose = client_context(pki)
    loose.check_hostname = False
    for name in ("unknown.test", "y.x.b.test", None):  # (a wildcard covers one label only)
        with handshake(secure, loose, name) as tls:
            sans = {v for _, v in tls.getpeercert()["subjectAltName"]}
            assert sans == {"localhost", "default.test"}
    with handshake(secure, loose, "A.Test.") as tls:  # case and a trailing dot do not matter
        assert {v for _, v in tls.getpeercert()["subjectAltName"]} == {"a.test"}


def test_alpn_selects_http11_and_tls_below_12_is_refused(secure: int, pki: Pki) -> None:
    with handshake(secure, client_context(pki), "localhost") as tls:
        assert tls.selected_alpn_protocol() == "http/1.1"
    old = client_context(pki)
    with warnings.catch_warnings():  # (TLS 1.1 is deprecated: that is the point)
        warnings.simplefilter("ignore", DeprecationWarning)
        old.minimum_version = ssl.TLSVersion.TLSv1
        old.maximum_version = ssl.TLSVersion.TLSv1_1
    old.set_ciphers("DEFAULT:@SECLEVEL=0")
    with pytest.raises(ssl.SSLError):
        handshake(secure, old, "localhost")


def test_sessions_resume_across_workers(secure: int, pki: Pki) -> None:
    ctx = client_context(pki)
    ctx.maximum_version = ssl.TLSVersion.TLSv1_2  # (1.2: the session is known at once)
    with handshake(secure, ctx, "localhost") as first:
        session = first.session
        assert not first.session_reused
    reused = 0
    for _ in range(12):  # SO_REUSEPORT spreads these over both workers
        with handshake(secure, ctx, "localhost", session=session) as tls:
            reused += tls.session_reused
    assert reused == 12


def test_a_silent_or_plain_http_client_is_dropped_and_service_goes_on(
    secure: int, pki: Pki
) -> None:
    silent = socket.create_connection(("127.0.0.1", secure), timeout=5)
    start = time.monotonic()
    assert silent.recv(100) == b""  # closed at handshake_timeout
    assert 0.3 < time.monotonic() - start < 3
    silent.close()
    with socket.create_connection(("127.0.0.1", secure), timeout=5) as plain:
        plain.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        try:
            reply = plain.recv(100)
        except ConnectionResetError:
            reply = b""
        assert not reply.startswith(b"HTTP/")
    with handshake(secure, client_context(pki), "localhost") as tls:
        tls.sendall(b"GET /after HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        data = b""
        while chunk := tls.recv(65536):
            data += chunk
    assert data.startswith(b"HTTP/1.1 200 ") and data.endswith(b"/after proto=https host=localhost")


def test_bad_certificate_config_is_an_error_naming_the_key(tmp_path: Path, pki: Pki) -> None:
    a_cert, _ = pki.files["a"]
    _, wild_key = pki.files["wild"]
    cases = {
        f'{{ cert = "{a_cert}", key = "{wild_key}" }}': (
            "frontends.websecure.tls.certs[0].key", "does not match"),
        f'{{ cert = "{a_cert}", key = "missing.key" }}': (
            "frontends.websecure.tls.certs[0].key", "cannot read"),
        f'{{ cert = "{pki.ca.parent / "nothing.pem"}" }}': (
            "frontends.websecure.tls.certs[0].cert", "cannot read"),
        f'{{ cert = "{a_cert}" }}': (  # no key in the file
            "frontends.websecure.tls.certs[0].cert", "must hold a PEM certificate and its key"),
    }  # fmt: skip
    for cert, (path, message) in cases.items():
        config = tmp_path / "bad.toml"
        config.write_text(f"""
[frontends.websecure]
mode = "http"
bind = "127.0.0.1:{free_port()}"
default_backend = "app"
tls = {{ certs = [{cert}] }}

[backends.app]
servers = ["127.0.0.1:9"]
""")
        for command in ("check", "serve"):
            out = subprocess.run([sys.executable, "-m", "trilb", command, "-c", str(config)],
                                 capture_output=True, text=True, timeout=20)  # fmt: skip
            assert out.returncode != 0
            assert path in out.stderr and message in out.stderr, out.stderr


def test_sighup_rereads_the_certificates_and_a_bad_one_is_refused(
    trilb_factory: Factory, pki: Pki, origin: int, tmp_path: Path
) -> None:
    live_cert, live_key = tmp_path / "live.pem", tmp_path / "live.key"
    a_cert, a_key = pki.files["a"]
    live_cert.write_bytes(a_cert.read_bytes())
    live_key.write_bytes(a_key.read_bytes())
    port = free_port()
    trilb = trilb_factory(f"""
[global]
grace = "1s"

[frontends.websecure]
mode = "http"
bind = "127.0.0.1:{port}"
default_backend = "app"
tls = {{ certs = [{{ cert = "{live_cert}", key = "{live_key}" }}] }}

[backends.app]
servers = ["127.0.0.1:{origin}"]
""", workers=1, ready=1)  # fmt: skip
    loose = client_context(pki)
    loose.check_hostname = False

    def names() -> set[str]:
        with handshake(port, loose, "a.test") as tls:
            return {v for _, v in tls.getpeercert()["subjectAltName"]}

    assert names() == {"a.test"}
    # Renewed: the files now hold the wildcard certificate.
    wild_cert, wild_key = pki.files["wild"]
    live_cert.write_bytes(wild_cert.read_bytes())
    live_key.write_bytes(wild_key.read_bytes())
    trilb.signal(signal.SIGHUP)
    trilb.wait_log("generation 1: draining", 10)
    # The old worker shares the slot's socket until it has taken its SIGTERM: a
    # connection it accepted in that moment still gets the old certificate.
    deadline = time.monotonic() + 5
    while names() != {"*.b.test"}:
        assert time.monotonic() < deadline, "the reloaded certificate is never served"
        time.sleep(0.1)
    # A key that does not match: the reload is refused, the running certificate stays.
    live_key.write_bytes(a_key.read_bytes())
    trilb.signal(signal.SIGHUP)
    trilb.wait_log("reload rejected", 10)
    assert "does not match" in trilb.log()
    assert names() == {"*.b.test"}


@pytest.fixture(scope="module")
def tls_origin(pki: Pki, tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    """The Origin behind TLS, its certificate for backend.test and 127.0.0.1."""
    tmp = tmp_path_factory.mktemp("origin")
    ca = trustme.CA.from_pem(pki.ca.read_bytes(), pki.ca_key.read_bytes())
    cert = ca.issue_cert("backend.test", "127.0.0.1")
    chain, key = tmp / "origin.pem", tmp / "origin.key"
    chain.write_bytes(b"".join(p.bytes() for p in cert.cert_chain_pems))
    cert.private_key_pem.write_to_path(str(key))
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(chain, key)
    server = OriginServer(("127.0.0.1", 0), Origin)
    server.daemon_threads = True
    server.socket = ctx.wrap_socket(server.socket, server_side=True)
    server.connections = 0  # type: ignore[attr-defined]
    original = server.get_request

    def counted() -> tuple[socket.socket, object]:
        server.connections += 1  # type: ignore[attr-defined]
        return original()

    server.get_request = counted  # type: ignore[method-assign]
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


def tls_backend_config(port: int, server: str, tls: str) -> str:
    return f"""
[global]
grace = "1s"

[frontends.web]
mode = "http"
bind = "127.0.0.1:{port}"
default_backend = "app"

[backends.app]
servers = ["{server}"]
tls = {tls}
"""


def test_tls_to_a_backend_verified_by_name_and_by_address(
    trilb_factory: Factory, pki: Pki, tls_origin: int
) -> None:
    by_name, by_ip = free_port(), free_port()
    trilb_factory(tls_backend_config(by_name, f"127.0.0.1:{tls_origin}",
                                     f'{{ ca = "{pki.ca}", sni = "backend.test" }}'),
                  workers=1, ready=1)  # fmt: skip
    trilb_factory(tls_backend_config(by_ip, f"127.0.0.1:{tls_origin}", f'{{ ca = "{pki.ca}" }}'),
                  workers=1, ready=1)  # fmt: skip
    up = pattern(3 << 20)
    for port in (by_name, by_ip):
        with httpx.Client(base_url=f"http://127.0.0.1:{port}") as client:
            for _ in range(3):
                assert client.get("/small").text.startswith("/small proto=http")
                assert client.post("/up", content=up).text == hashlib.sha256(up).hexdigest()
                assert client.get(f"/big/{5 << 20}").content == pattern(5 << 20)


def test_an_untrusted_backend_certificate_is_a_502_unless_verify_is_off(
    trilb_factory: Factory, tls_origin: int, tmp_path: Path
) -> None:
    other = tmp_path / "other-ca.pem"
    trustme.CA().cert_pem.write_to_path(str(other))
    strict, loose = free_port(), free_port()
    origin = f"127.0.0.1:{tls_origin}"
    strict_tls, loose_tls = f'{{ ca = "{other}" }}', f'{{ ca = "{other}", verify = false }}'
    trilb = trilb_factory(tls_backend_config(strict, origin, strict_tls), workers=1, ready=1)
    trilb_factory(tls_backend_config(loose, origin, loose_tls), workers=1, ready=1)
    reply = httpx.get(f"http://127.0.0.1:{strict}/x")
    assert reply.status_code == 502 and "127.0.0.1" not in reply.text
    assert "certificate not trusted" in trilb.log()
    assert httpx.get(f"http://127.0.0.1:{loose}/x").status_code == 200


def test_a_backend_ca_file_without_certificates_is_a_config_error(tmp_path: Path, pki: Pki) -> None:
    config = tmp_path / "bad.toml"
    empty = tmp_path / "empty.pem"
    empty.write_text("not a certificate\n")
    config.write_text(tls_backend_config(free_port(), "127.0.0.1:9", f'{{ ca = "{empty}" }}'))
    out = subprocess.run([sys.executable, "-m", "trilb", "check", "-c", str(config)],
                         capture_output=True, text=True, timeout=20)  # fmt: skip
    assert out.returncode != 0 and "backends.app.tls.ca" in out.stderr, out.stderr


def test_http_health_checks_speak_tls_to_a_tls_backend(
    trilb_factory: Factory, pki: Pki, tls_origin: int, tmp_path: Path
) -> None:
    other = trustme.CA()  # a CA the origin's certificate does not come from
    other.cert_pem.write_to_path(str(tmp_path / "other.pem"))
    health = (
        '\n[backends.app.health]\ntype = "http"\ninterval = "500ms"\ntimeout = "400ms"\nfall = 1\n'
    )
    good, bad = free_port(), free_port()
    # (One at a time: the origin's TLS listener shakes hands in its accept loop.)
    untrusted = trilb_factory(tls_backend_config(bad, f"127.0.0.1:{tls_origin}",
                                                 f'{{ ca = "{tmp_path / "other.pem"}" }}')
                              + health, workers=1, ready=1)  # fmt: skip
    # Checks verified against the wrong CA fail, and the log says why...
    untrusted.wait_log(f"server 127.0.0.1:{tls_origin} is down (1 http check(s) failed", 5)
    assert "CERTIFICATE_VERIFY_FAILED" in untrusted.log()
    untrusted.stop()
    trusted = trilb_factory(tls_backend_config(good, f"127.0.0.1:{tls_origin}",
                                               f'{{ ca = "{pki.ca}", sni = "backend.test" }}')
                            + health, workers=1, ready=1)  # fmt: skip
    # ...and pass with the right one (a plain-HTTP check of a TLS server would fail).
    time.sleep(2.0)
    assert " is down " not in trusted.log()
    assert httpx.get(f"http://127.0.0.1:{good}/h").status_code == 200
