"""Access logs: one line per HTTP request and per L4 connection, as JSON or as text in
HAProxy's shape, to stdout or a file that SIGUSR1 reopens (after logrotate moved it).

Lines are formatted when the exchange ends and written in batches: once per sweeper
tick (at most a second late), or sooner when a batch passes 64 KiB, and at the end of
the worker. A file is opened O_APPEND, so the workers' batches land whole and never
interleave inside a line. Formatting is pure (``http_line``, ``tcp_line``); the writer
only holds a descriptor.
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass

from trilb.config.schema import AccessLog as AccessLogConfig

log = logging.getLogger(__name__)

FLUSH_AT = 65536
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


@dataclass(slots=True)
class HttpRecord:
    """What one HTTP exchange leaves in the access log (times in seconds, -1: none)."""

    frontend: str
    client: str
    method: str
    target: str
    version: str
    status: int
    backend: str
    server: str
    connect: float  # to make a new server connection (0: a pooled one)
    first_byte: float  # request head received to response head received
    total: float  # request head received to the exchange's end
    size: int  # response body bytes (-1: not known, a streamed body)
    notes: str  # the plugins' decisions (a WAF's rule ids), "" for none


_second: list[object] = [-1, ""]  # the last second formatted, and its text


def _stamp(now: float) -> str:
    """HAProxy's date: 27/Nov/2026:20:05:01.123 (UTC); the part down to the second is
    formatted once a second (a busy worker logs thousands of lines in one)."""
    second = int(now)
    if second != _second[0]:
        t = time.gmtime(second)
        _second[0] = second
        _second[1] = (f"{t.tm_mday:02d}/{_MONTHS[t.tm_mon - 1]}/{t.tm_year}:{t.tm_hour:02d}:"
                      f"{t.tm_min:02d}:{t.tm_sec:02d}")  # fmt: skip
    return f"{_second[1]}.{int((now - second) * 1000):03d}"


def _ms(seconds: float) -> int:
    return -1 if seconds < 0 else int(seconds * 1000)


def _ms_exact(seconds: float) -> float:
    """Milliseconds to the microsecond (JSON: a proxy's times are often below 1 ms)."""
    return -1 if seconds < 0 else round(seconds * 1000, 3)


def http_line(r: HttpRecord, now: float, as_json: bool) -> str:
    """One line (no newline) for an HTTP exchange that ended at ``now`` (epoch)."""
    if as_json:
        return json.dumps({
            "time": round(now, 3), "type": "http", "frontend": r.frontend,
            "client": r.client, "method": r.method, "target": r.target,
            "version": r.version, "status": r.status, "backend": r.backend,
            "server": r.server or None, "connect_ms": _ms_exact(r.connect),
            "first_byte_ms": _ms_exact(r.first_byte), "total_ms": _ms_exact(r.total),
            "bytes": r.size if r.size >= 0 else None, "notes": r.notes or None,
        }, separators=(",", ":"))  # fmt: skip
    # HAProxy's httplog, abridged: client [date] frontend backend/server
    # Tc/Tr/Ta status bytes notes "request line".
    request = f"{r.method} {_printable(r.target)} HTTP/{r.version}"
    notes = _printable(r.notes) or "-"
    return (f"{r.client} [{_stamp(now)}] {r.frontend} {r.backend or '-'}/{r.server or '-'} "
            f"{_ms(r.connect)}/{_ms(r.first_byte)}/{_ms(r.total)} {r.status} "
            f"{r.size if r.size >= 0 else '-'} {notes} \"{request}\"")  # fmt: skip


def tcp_line(
    frontend: str, client: str, backend: str, server: str, up: int, down: int,
    duration: float, end: str, now: float, as_json: bool, kind: str = "tcp",
) -> str:  # fmt: skip
    """One line for an L4 connection (or a UDP flow, ``kind``): bytes from the client
    (``up``) and to it."""
    if as_json:
        return json.dumps({
            "time": round(now, 3), "type": kind, "frontend": frontend, "client": client,
            "backend": backend, "server": server, "bytes_up": up, "bytes_down": down,
            "total_ms": _ms_exact(duration), "end": end,
        }, separators=(",", ":"))  # fmt: skip
    return (f"{client} [{_stamp(now)}] {frontend} {backend}/{server} {_ms(duration)} "
            f"{up}/{down} {end}")  # fmt: skip


def _printable(target: str) -> str:
    """A target with quotes and control characters escaped (it is between quotes)."""
    if target.isprintable() and '"' not in target and "\\" not in target:
        return target
    return "".join(ch if ch.isprintable() and ch not in '"\\' else f"\\x{ord(ch):02x}"
                   for ch in target)  # fmt: skip


class AccessLog:
    """A worker's access log writer."""

    def __init__(self, config: AccessLogConfig) -> None:
        self.path = config.path
        self.json = config.format == "json"
        self.lines: list[str] = []
        self.size = 0
        self.fd = -1
        self.reopen()

    def reopen(self) -> None:
        """(Re)open the file: after logrotate renamed it, lines go to a new one."""
        if self.path == "stdout":
            self.fd = 1
            return
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o640)
        except OSError as exc:
            log.error("access log %s: cannot open: %s (lines are dropped until it opens)",
                      self.path, exc.strerror)  # fmt: skip
            return
        if self.fd > 2:
            os.close(self.fd)
        self.fd = fd

    def add(self, line: str) -> None:
        self.lines.append(line)
        self.size += len(line) + 1
        if self.size >= FLUSH_AT:
            self.flush()

    def flush(self, now: float = 0.0) -> None:
        """Write the batch (a sweeper chore: ``now`` is unused)."""
        if not self.lines:
            return
        data = ("\n".join(self.lines) + "\n").encode("utf-8", "backslashreplace")
        self.lines.clear()
        self.size = 0
        if self.fd < 0:
            return
        try:
            view = memoryview(data)
            while view:  # (a file takes it whole; a pipe on stdout may take part)
                view = view[os.write(self.fd, view) :]
        except BlockingIOError:
            pass  # (a non-blocking stdout that is full: the batch is dropped)
        except OSError as exc:
            log.error("access log %s: write failed: %s", self.path, exc.strerror)

    def close(self) -> None:
        self.flush()
        if self.fd > 2:
            os.close(self.fd)
        self.fd = -1
