"""The ``tls`` table of a frontend: certificates, ALPN, versions, ciphers, timeouts.

Owns validating the table and resolving certificate paths (relative ones against the
config file's directory, as nginx resolves against its prefix). It checks that each file
can be opened; whether it holds a certificate, and whether the key matches it, is found
when trilb/tls.py builds the SSL contexts, which reports that with the same key paths.
"""

from __future__ import annotations

import os

from trilb.config.schema import ALPN_PROTOCOLS, TLS_VERSIONS, BackendTls, Tls, TlsCert
from trilb.config.table import Table
from trilb.config.values import parse_bool, parse_choice, parse_name, parse_timeout
from trilb.errors import ConfigError


def parse_tls(value: object, path: str, base: str) -> Tls:
    """A frontend's ``tls`` table; ``base``: the directory relative paths start from.

    Raises:
      ConfigError: a key is missing, unknown, of the wrong type, or a file cannot be read.
    """
    t = Table(value, path)
    certs = t.take("certs", lambda v, p: _certs(v, p, base))
    if certs is None:
        raise ConfigError(t.key("certs"), 'required: a list of { cert = "FILE", key = "FILE" }')
    t.take("alpn", _alpn)
    t.take("min_version", parse_choice(TLS_VERSIONS))
    t.take("ciphers", parse_name)
    t.take("handshake_timeout", parse_timeout)
    t.take("session_tickets", parse_bool)
    return t.build(Tls)


def parse_backend_tls(value: object, path: str, base: str) -> BackendTls | None:
    """A backend's ``tls``: true (system CAs, verified, SNI from the server's host),
    false, or a table ``{ ca, sni, verify }``.

    Raises:
      ConfigError: a key is unknown or of the wrong type, the CA file cannot be read.
    """
    if value is True:
        return BackendTls()
    if value is False:
        return None
    t = Table(value, path)
    t.take("ca", lambda v, p: _file(v, p, base))
    sni = t.take("sni", parse_name)
    if sni is not None and not _is_sni_name(sni):
        raise ConfigError(t.key("sni"), f"expected a host name, got {sni!r}")
    t.take("verify", parse_bool)
    return t.build(BackendTls)


def _certs(value: object, path: str, base: str) -> tuple[TlsCert, ...]:
    if not isinstance(value, list) or not value:
        raise ConfigError(path, f"expected a non-empty list of certificate tables, got {value!r}")
    return tuple(_cert(v, f"{path}[{i}]", base) for i, v in enumerate(value))


def _cert(value: object, path: str, base: str) -> TlsCert:
    t = Table(value, path)
    cert = t.take("cert", lambda v, p: _file(v, p, base))
    if cert is None:
        raise ConfigError(t.key("cert"), "required: the certificate (chain) file, PEM")
    key = t.take("key", lambda v, p: _file(v, p, base))
    t.take("names", _names)
    t.values["key"] = key or cert
    return t.build(TlsCert)


def _file(value: object, path: str, base: str) -> str:
    name = parse_name(value, path)
    full = os.path.normpath(os.path.join(base, name))
    try:
        with open(full, "rb"):
            pass
    except OSError as exc:
        raise ConfigError(path, f"cannot read {full}: {exc.strerror}") from None
    return full


def _names(value: object, path: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not value:
        raise ConfigError(path, f"expected a non-empty list of host names, got {value!r}")
    out = []
    for i, name in enumerate(value):
        if not isinstance(name, str) or not _is_sni_name(name):
            raise ConfigError(f"{path}[{i}]", f'expected a host name or "*.domain", got {name!r}')
        out.append(name.lower())
    return tuple(out)


def _is_sni_name(name: str) -> bool:
    labels = name.split(".")
    if labels[0] == "*":
        labels = labels[1:]
        if len(labels) < 2:
            return False  # "*.com": a wildcard over a whole top-level domain
    return bool(labels) and all(
        label and len(label) <= 63 and all(c.isalnum() or c in "-_" for c in label)
        and label.isascii()
        for label in labels
    )  # fmt: skip


def _alpn(value: object, path: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not value:
        raise ConfigError(path, f'expected a non-empty list such as ["http/1.1"], got {value!r}')
    out: list[str] = []
    for i, proto in enumerate(value):
        where = f"{path}[{i}]"
        if proto not in ALPN_PROTOCOLS:
            wanted = " | ".join(f'"{p}"' for p in ALPN_PROTOCOLS)
            raise ConfigError(where, f"expected {wanted}, got {proto!r}")
        if proto in out:
            raise ConfigError(where, f'"{proto}" is listed twice')
        out.append(proto)
    return tuple(out)
