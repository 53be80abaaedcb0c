"""Access logs: one line per HTTP request and per L4 connection, as JSON or as text in
HAProxy's shape, to stdout or a file that SIGUSR1 reopens (after logrotate moved it).

Lines are formatted when the exchange ends and written in batches: once per sweeper
tick (at most a second late), or sooner when a batch passes 64 KiB, and at the end of
the worker. A file is opened O_APPEND, so the workers' batches land whole and never
interleave inside a line. A log never stalls traffic: stdout that is a pipe (a log
collector) is written through a non-blocking description of its own, in chunks of at
most PIPE_BUF bytes cut at line ends (each lands whole, never split by another
worker's; a longer line goes alone and may be); a socket (systemd's journal) is
written with MSG_DONTWAIT, per call. What the reader does not take waits for the next
flush, up to MAX_PENDING; lines beyond that are dropped and counted in a warning (at
most every WARN_EVERY seconds), as HAProxy drops log lines rather than block.
Formatting is pure (``http_line``, ``tcp_line``); the writer only holds a descriptor.
"""

from __future__ import annotations

import json
import logging
import os
import select
import socket
import stat
import time
from collections.abc import Callable
from dataclasses import dataclass

from trilb.config.schema import AccessLog as AccessLogConfig

log = logging.getLogger(__name__)

FLUSH_AT = 65536
# What a pipe that does not read may hold back before lines are dropped.
MAX_PENDING = 1 << 20
# The dropped lines' warning, at most this often while a reader stays behind.
WARN_EVERY = 10.0
# How long a worker's last lines may wait for a slow reader at its exit.
EXIT_DRAIN = 1.0
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
        # A pipe or socket on stdout: chunked writes that never block (``send``).
        self.pipe = False
        self.send: Callable[[bytes], int] = self._write
        self.pending: list[bytes] = []  # chunks a pipe did not take yet
        self.pending_size = 0
        self.dropped = 0  # lines dropped since the last warning
        self.warned = 0.0  # (monotonic)
        self.sock: socket.socket | None = None  # stdout, when it is a socket
        self.reopen()

    def reopen(self) -> None:
        """(Re)open the file: after logrotate renamed it, lines go to a new one."""
        if self.path == "stdout":
            if self.fd < 0:
                self.fd, sock = _stdout()
                if sock is not None:
                    self.pipe = True
                    self.sock = sock
                    self.send = self._send_dontwait
                else:
                    self.pipe = self.fd != 1
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
        if self.pipe:
            self._flush_pipe()
            return
        if not self.lines:
            return
        data = ("\n".join(self.lines) + "\n").encode("utf-8", "backslashreplace")
        self.lines.clear()
        self.size = 0
        if self.fd < 0:
            return
        try:
            view = memoryview(data)
            while view:  # (a file takes it whole)
                view = view[os.write(self.fd, view) :]
        except BlockingIOError:
            pass  # (a stdout someone made non-blocking, full: the batch is dropped)
        except OSError as exc:
            log.error("access log %s: write failed: %s", self.path, exc.strerror)

    def _write(self, data: bytes) -> int:
        return os.write(self.fd, data)

    def _send_dontwait(self, data: bytes) -> int:
        assert self.sock is not None
        return self.sock.send(data, socket.MSG_DONTWAIT)

    def _flush_pipe(self) -> None:
        """Chunks of whole lines, each at most PIPE_BUF (a line longer goes alone), what
        waited first; what the pipe does not take waits, within MAX_PENDING."""
        lines = self.lines
        if lines:
            self.lines = []
            self.size = 0
            chunk: list[bytes] = []
            size = 0
            for line in lines:
                encoded = line.encode("utf-8", "backslashreplace") + b"\n"
                if chunk and size + len(encoded) > select.PIPE_BUF:
                    self._queue(chunk)
                    chunk, size = [], 0
                chunk.append(encoded)
                size += len(encoded)
            self._queue(chunk)
        pending = self.pending
        try:
            while pending:
                sent = self.send(pending[0])
                if sent < len(pending[0]):  # (only a chunk over PIPE_BUF can be cut)
                    pending[0] = pending[0][sent:]
                else:
                    self.pending_size -= len(pending.pop(0))
        except BlockingIOError:
            pass  # the reader is behind: the rest waits
        except OSError as exc:
            log.error("access log stdout: write failed: %s", exc.strerror)
            pending.clear()
            self.pending_size = 0
        if self.dropped and (not pending or time.monotonic() - self.warned >= WARN_EVERY):
            log.warning("access log stdout: %d line(s) dropped: its reader fell behind",
                        self.dropped)  # fmt: skip
            self.dropped = 0
            self.warned = time.monotonic()

    def _queue(self, chunk: list[bytes]) -> None:
        data = b"".join(chunk)
        if self.pending_size + len(data) > MAX_PENDING:
            self.dropped += len(chunk)
            return
        self.pending.append(data)
        self.pending_size += len(data)

    def close(self) -> None:
        self.flush()
        if self.pending:  # a slow reader: a last moment for it (bounded)
            poller = select.poll()
            poller.register(self.fd, select.POLLOUT)
            deadline = time.monotonic() + EXIT_DRAIN
            while self.pending and (left := deadline - time.monotonic()) > 0:
                if poller.poll(left * 1000):
                    self.flush()
        if self.dropped or self.pending:
            log.warning("access log stdout: %d line(s) dropped, %d bytes not taken at exit",
                        self.dropped, self.pending_size)  # fmt: skip
        if self.sock is not None:
            self.sock.close()
        elif self.fd > 2:
            os.close(self.fd)
        self.fd = -1


def _stdout() -> tuple[int, socket.socket | None]:
    """A descriptor for stdout, and the socket to send on when it is one.

    A pipe is opened again through /proc: a file description of this worker's own,
    non-blocking, where setting O_NONBLOCK on fd 1 would change the one the master and
    the other workers share. A socket cannot be reopened so; it is sent on with
    MSG_DONTWAIT, which asks per call. Anything else (a file, a terminal) is fd 1 as it
    is (fd 1 itself: written as a file, and it may block).
    """
    try:
        mode = os.fstat(1).st_mode
        if stat.S_ISSOCK(mode):
            sock = socket.socket(fileno=os.dup(1))
            return sock.fileno(), sock
        if stat.S_ISFIFO(mode):
            return os.open("/proc/self/fd/1", os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC), None
    except OSError:
        pass
    return 1, None
