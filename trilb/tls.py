"""TLS termination: a frontend's SSL contexts, and the choice of one by SNI.

Owns turning a frontend's ``tls`` config into ssl.SSLContext objects: one per
certificate, all with the same protocol settings (TLS 1.2 or 1.3 minimum, the ALPN
list, forward-secret AEAD suites for TLS 1.2, no renegotiation, no compression). The
first context receives every handshake; its SNI callback moves the handshake to the
context whose certificate serves the name (exact names first, then "*.domain"
wildcards of one label), and unknown or absent names stay on the first certificate,
as in HAProxy and nginx.

Contexts are built by the master before it forks a generation: every worker then
holds the same session-ticket key (OpenSSL makes one per context), so a client resumes
its session on whichever worker the kernel hands the next connection to. A reload
builds new contexts from the files, which is how certificates are re-read on SIGHUP.
It does no I/O on connections (l7/client.py drives handshakes) and holds no config
defaults (config/schema.py does).
"""

from __future__ import annotations

import socket
import ssl

from cryptography import x509
from cryptography.x509.oid import NameOID

from trilb.config.schema import BackendTls, Config, Tls, TlsCert
from trilb.errors import ConfigError

_VERSIONS = {"1.2": ssl.TLSVersion.TLSv1_2, "1.3": ssl.TLSVersion.TLSv1_3}


class ServerTls:
    """The contexts of one TLS frontend.

    Raises:
      ConfigError: a certificate or key cannot be loaded, they do not match, or the
        cipher list selects nothing; the error names the key path (``path``: the tls
        table's).
    """

    def __init__(self, config: Tls, path: str) -> None:
        self.config = config
        self.handshake_timeout = config.handshake_timeout
        contexts = [
            self._context(cert, f"{path}.certs[{i}]", path) for i, cert in enumerate(config.certs)
        ]
        self.default = contexts[0]
        # Name -> context; "*.example.com" is kept under "example.com" in ``wildcard``.
        self.exact: dict[str, ssl.SSLContext] = {}
        self.wildcard: dict[str, ssl.SSLContext] = {}
        for i, (cert, ctx) in enumerate(zip(config.certs, contexts, strict=True)):
            for name in cert.names or certificate_names(cert.cert, f"{path}.certs[{i}].cert"):
                if name.startswith("*."):
                    self.wildcard.setdefault(name[2:], ctx)  # the first certificate wins
                else:
                    self.exact.setdefault(name, ctx)
        if len(contexts) > 1:
            self.default.sni_callback = self._pick

    def _context(self, cert: TlsCert, path: str, tls_path: str) -> ssl.SSLContext:
        config = self.config
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.minimum_version = _VERSIONS[config.min_version]
        ctx.options |= ssl.OP_NO_RENEGOTIATION | ssl.OP_CIPHER_SERVER_PREFERENCE
        if not config.session_tickets:
            ctx.options |= ssl.OP_NO_TICKET
            ctx.num_tickets = 0
        try:
            ctx.set_ciphers(config.ciphers)
        except ssl.SSLError:
            raise ConfigError(
                f"{tls_path}.ciphers", f"no cipher suite matches {config.ciphers!r}"
            ) from None
        ctx.set_alpn_protocols(list(config.alpn))
        try:
            ctx.load_cert_chain(cert.cert, cert.key, password=_no_passphrase)
        except _EncryptedKey:
            raise ConfigError(f"{path}.key", f"{cert.key} is encrypted: trilb needs an "
                              "unencrypted key (it runs unattended)") from None  # fmt: skip
        except ssl.SSLError as exc:
            where = "key" if cert.key != cert.cert else "cert"
            raise ConfigError(f"{path}.{where}", _load_error(exc, cert)) from None
        except OSError as exc:
            raise ConfigError(f"{path}.cert", f"cannot read {cert.cert}: {exc.strerror}") from None
        return ctx

    def _pick(self, conn: ssl.SSLObject, name: str | None, initial: ssl.SSLContext) -> None:
        if name is None:
            return  # no SNI: the default certificate
        name = name.lower().rstrip(".")  # (RFC 6066 forbids the trailing dot; some send it)
        ctx = self.exact.get(name)
        if ctx is None:
            dot = name.find(".")
            if dot > 0:
                ctx = self.wildcard.get(name[dot + 1 :])
        if ctx is not None and ctx is not initial:
            conn.context = ctx

    def wrap(self, sock: socket.socket) -> ssl.SSLSocket:
        """``sock`` (accepted, non-blocking) as the server side of a TLS connection whose
        handshake the caller drives (``do_handshake`` until it no longer wants I/O)."""
        return self.default.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)


class _EncryptedKey(Exception):
    pass


def _no_passphrase() -> str:
    # Asked only for an encrypted key: never prompt on a terminal (a reload would hang).
    raise _EncryptedKey


def server_tls(config: Config) -> dict[str, ServerTls]:
    """The contexts of every TLS frontend, by frontend name (and a check of the
    backends' TLS settings, so that one call validates all of a config's TLS).

    Raises:
      ConfigError: see ServerTls and backend_tls.
    """
    backend_tls(config)
    return {
        name: ServerTls(fe.tls, f"frontends.{name}.tls")
        for name, fe in config.frontends.items()
        if fe.tls is not None
    }


def client_context(config: BackendTls, alpn: list[str] | None = None) -> ssl.SSLContext:
    """The context of TLS connections to a backend's servers: TLS 1.2 at least, the
    server's certificate verified against ``ca`` (or the system's CAs) and its name.

    Raises:
      ssl.SSLError, OSError: the CA file holds no usable certificate (``backend_tls``
        reports it as a ConfigError first).
    """
    ctx = ssl.create_default_context(cafile=config.ca)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    if not config.verify:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    if alpn:
        ctx.set_alpn_protocols(alpn)
    return ctx


def sni_name(config: BackendTls, spec: str) -> str:
    """The name a connection to the server ``spec`` ("host:port") checks and sends by
    SNI: ``config.sni``, else the host as the config gave it. (For an IP literal Python
    sends no SNI and checks the certificate's IP addresses, as RFC 6066 asks.)"""
    if config.sni is not None:
        return config.sni
    return spec.rsplit(":", 1)[0].strip("[]")


def backend_tls(config: Config) -> None:
    """Check that every backend's TLS settings make a context.

    Raises:
      ConfigError: at ``backends.NAME.tls.ca``, the CA file holds no certificate.
    """
    for name, backend in config.backends.items():
        if backend.tls is not None:
            try:
                client_context(backend.tls)
            except (ssl.SSLError, OSError) as exc:
                reason = getattr(exc, "reason", None) or str(exc)
                where = f"backends.{name}.tls.ca"
                raise ConfigError(
                    where, f"no CA certificate in {backend.tls.ca} ({reason})"
                ) from None


def certificate_names(file: str, path: str) -> list[str]:
    """The DNS names a PEM certificate (the first of a chain) is for: its subjectAltName
    DNS entries, else its common name, lowercased.

    Raises:
      ConfigError: at ``path``, the file holds no readable certificate.
    """
    try:
        with open(file, "rb") as f:
            cert = x509.load_pem_x509_certificate(f.read())
    except (OSError, ValueError) as exc:
        raise ConfigError(path, f"cannot read a PEM certificate from {file}: {exc}") from None
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
        names = san.value.get_values_for_type(x509.DNSName)
    except x509.ExtensionNotFound:
        names = [str(a.value) for a in cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)]
    return [n.lower() for n in names]


def _load_error(exc: ssl.SSLError, cert: TlsCert) -> str:
    reason = exc.reason or str(exc)
    if reason == "KEY_VALUES_MISMATCH":
        return f"the key in {cert.key} does not match the certificate in {cert.cert}"
    if cert.key == cert.cert:
        return f"{cert.cert} must hold a PEM certificate and its key ({reason.lower()})"
    return f"cannot load {cert.cert} with key {cert.key} ({reason.lower()})"
