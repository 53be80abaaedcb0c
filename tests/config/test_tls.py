"""The ``tls`` table of a frontend, and the SSL contexts built from it."""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest
import trustme

from trilb.config.load import load_config
from trilb.errors import ConfigError
from trilb.tls import certificate_names, server_tls


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("tls")
    ca = trustme.CA()
    site = ca.issue_cert("Site.Example", "*.apps.example")
    site.cert_chain_pems[0].write_to_path(str(tmp / "site.pem"))
    site.private_key_pem.write_to_path(str(tmp / "site.key"))
    site.private_key_and_cert_chain_pem.write_to_path(str(tmp / "both.pem"))
    return tmp


def config(directory: Path, tls: str) -> Path:
    path = directory / "trilb.toml"
    path.write_text(f"""
[frontends.web]
mode = "http"
bind = "127.0.0.1:8443"
default_backend = "app"
tls = {tls}

[backends.app]
servers = ["127.0.0.1:9001"]
""")
    return path


def test_relative_paths_start_from_the_config_directory_and_defaults_apply(
    files: Path,
) -> None:
    loaded = load_config(config(files, '{ certs = [{ cert = "site.pem", key = "site.key" }] }'))
    tls = loaded.frontends["web"].tls
    assert tls is not None
    assert tls.certs[0].cert == str(files / "site.pem")
    assert tls.certs[0].key == str(files / "site.key")
    assert (tls.alpn, tls.min_version, tls.handshake_timeout) == (("http/1.1",), "1.2", 10.0)
    built = server_tls(loaded)["web"]
    assert built.default.minimum_version == ssl.TLSVersion.TLSv1_2
    assert set(built.exact) == {"site.example"} and set(built.wildcard) == {"apps.example"}


def test_one_file_may_hold_certificate_and_key(files: Path) -> None:
    loaded = load_config(config(files, '{ certs = [{ cert = "both.pem" }], min_version = "1.3" }'))
    tls = loaded.frontends["web"].tls
    assert tls is not None and tls.certs[0].key == tls.certs[0].cert
    assert server_tls(loaded)["web"].default.minimum_version == ssl.TLSVersion.TLSv1_3


def test_certificate_names_are_its_dns_names_lowercased(files: Path) -> None:
    assert certificate_names(str(files / "site.pem"), "x") == ["site.example", "*.apps.example"]
    with pytest.raises(ConfigError, match="cannot read a PEM certificate"):
        certificate_names(str(files / "site.key"), "x")


CERT = '{ cert = "site.pem", key = "site.key" }'


@pytest.mark.parametrize(
    ("tls", "path", "message"),
    [
        ("{ alpn = [] }", "frontends.web.tls.certs", "required"),
        ("{ certs = [] }", "frontends.web.tls.certs", "non-empty list"),
        ('{ certs = [{ key = "site.key" }] }', "frontends.web.tls.certs[0].cert", "required"),
        (f'{{ certs = [{CERT}], alpn = ["h3"] }}', "frontends.web.tls.alpn[0]", "expected"),
        (
            f'{{ certs = [{CERT}], alpn = ["http/1.1", "http/1.1"] }}',
            "frontends.web.tls.alpn[1]",
            "listed twice",
        ),
        (f'{{ certs = [{CERT}], min_version = "1.1" }}', "frontends.web.tls.min_version", '"1.2"'),
        (
            f'{{ certs = [{CERT}], handshake_timeout = "0s" }}',
            "frontends.web.tls.handshake_timeout",
            "above zero",
        ),
        (
            f"{{ certs = [{CERT}], session_tickets = 1 }}",
            "frontends.web.tls.session_tickets",
            "true or false",
        ),
        (f"{{ certs = [{CERT}], sni = true }}", "frontends.web.tls.sni", "unknown key"),
        (
            '{ certs = [{ cert = "site.pem", key = "site.key", names = ["*.com"] }] }',
            "frontends.web.tls.certs[0].names[0]",
            "host name",
        ),
        (
            '{ certs = [{ cert = "site.pem", key = "site.key", names = ["a b"] }] }',
            "frontends.web.tls.certs[0].names[0]",
            "host name",
        ),
    ],
)
def test_invalid_tls_tables_name_the_key(files: Path, tls: str, path: str, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_config(config(files, tls))
    assert err.value.path == path
    assert message in str(err.value)


def test_a_cipher_list_matching_nothing_is_a_config_error(files: Path) -> None:
    loaded = load_config(config(files, f'{{ certs = [{CERT}], ciphers = "NO-SUCH-CIPHER" }}'))
    with pytest.raises(ConfigError) as err:
        server_tls(loaded)
    assert err.value.path == "frontends.web.tls.ciphers"


def test_explicit_names_replace_the_certificate_s(files: Path) -> None:
    named = '{ certs = [{ cert = "site.pem", key = "site.key", names = ["Other.Test"] }] }'
    loaded = load_config(config(files, named))
    built = server_tls(loaded)["web"]
    assert set(built.exact) == {"other.test"} and not built.wildcard


def backend_config(directory: Path, tls: str, mode: str = "http") -> Path:
    path = directory / "backend.toml"
    path.write_text(f"""
[frontends.web]
mode = "{mode}"
bind = "127.0.0.1:8080"
default_backend = "app"

[backends.app]
servers = ["127.0.0.1:443"]
tls = {tls}
""")
    return path


def test_backend_tls_forms(files: Path) -> None:
    on = load_config(backend_config(files, "true")).backends["app"].tls
    assert on is not None and (on.ca, on.sni, on.verify) == (None, None, True)
    assert load_config(backend_config(files, "false")).backends["app"].tls is None
    table = load_config(backend_config(files, '{ ca = "site.pem", sni = "API.test" }'))
    tls = table.backends["app"].tls
    assert tls is not None and tls.ca == str(files / "site.pem") and tls.sni == "API.test"


@pytest.mark.parametrize(
    ("tls", "mode", "path", "message"),
    [
        ('{ ca = "missing.pem" }', "http", "backends.app.tls.ca", "cannot read"),
        ('{ sni = "a b" }', "http", "backends.app.tls.sni", "host name"),
        ("{ verify = 0 }", "http", "backends.app.tls.verify", "true or false"),
        ('{ cert = "x" }', "http", "backends.app.tls.cert", "unknown key"),
        ('"yes"', "http", "backends.app.tls", "expected a table"),
        ("true", "tcp", "frontends.web.default_backend", 'needs mode "http"'),
    ],
)
def test_invalid_backend_tls_names_the_key(
    files: Path, tls: str, mode: str, path: str, message: str
) -> None:
    with pytest.raises(ConfigError) as err:
        load_config(backend_config(files, tls, mode))
    assert err.value.path == path
    assert message in str(err.value)


def test_backend_sni_is_the_configured_name_or_the_server_host() -> None:
    from trilb.config.schema import BackendTls
    from trilb.tls import sni_name

    assert sni_name(BackendTls(sni="api.test"), "10.0.0.1:443") == "api.test"
    assert sni_name(BackendTls(), "api.internal:8443") == "api.internal"
    assert sni_name(BackendTls(), "[::1]:8443") == "::1"


def test_an_encrypted_key_is_a_config_error_not_a_prompt(files: Path) -> None:
    from cryptography.hazmat.primitives import serialization

    key = serialization.load_pem_private_key((files / "site.key").read_bytes(), None)
    (files / "encrypted.key").write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"secret")))  # fmt: skip
    loaded = load_config(
        config(files, '{ certs = [{ cert = "site.pem", key = "encrypted.key" }] }')
    )
    with pytest.raises(ConfigError) as err:
        server_tls(loaded)
    assert err.value.path == "frontends.web.tls.certs[0].key"
    assert "is encrypted" in str(err.value)
