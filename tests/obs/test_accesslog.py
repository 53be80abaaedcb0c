"""Access log lines (obs/accesslog.py): the text and JSON shapes, escaping, batching
and reopening, on a real file but without a running trilb."""

from __future__ import annotations

import json
import os
import re
import select
import socket
from pathlib import Path

import pytest

from trilb.config.schema import AccessLog as Config
from trilb.obs.accesslog import (
    FLUSH_AT,
    MAX_PENDING,
    WARN_EVERY,
    AccessLog,
    HttpRecord,
    http_line,
    tcp_line,
)

NOW = 1795723501.25  # 2026-11-26T20:05:01.250 UTC


def record(**changes: object) -> HttpRecord:
    fields: dict[str, object] = dict(
        frontend="web", client="10.0.0.7", method="GET", target="/a?b=1", version="1.1",
        status=200, backend="app", server="web1", connect=0.0021, first_byte=0.0153,
        total=0.0209, size=512, notes="",
    )  # fmt: skip
    fields.update(changes)
    return HttpRecord(**fields)  # type: ignore[arg-type]


def test_the_text_line_has_haproxys_shape() -> None:
    line = http_line(record(), NOW, as_json=False)
    assert line == ('10.0.0.7 [26/Nov/2026:20:05:01.250] web app/web1 2/15/20 200 512 - '
                    '"GET /a?b=1 HTTP/1.1"')  # fmt: skip
    # No server, no response head, a streamed body, a plugin's note, an odd target.
    line = http_line(record(server="", first_byte=-1, size=-1, notes="waf=block:942100",
                            target='/x"y\n', status=403), NOW, as_json=False)  # fmt: skip
    assert ' app/- 2/-1/20 403 - waf=block:942100 "GET /x\\x22y\\x0a HTTP/1.1"' in line


def test_the_json_line_is_one_object() -> None:
    data = json.loads(http_line(record(size=-1, server=""), NOW, as_json=True))
    assert data == {
        "time": NOW, "type": "http", "frontend": "web", "client": "10.0.0.7",
        "method": "GET", "target": "/a?b=1", "version": "1.1", "status": 200,
        "backend": "app", "server": None, "connect_ms": 2.1, "first_byte_ms": 15.3,
        "total_ms": 20.9, "bytes": None, "notes": None,
    }  # fmt: skip
    tcp = json.loads(tcp_line("db", "10.0.0.8:4000", "pg", "pg1", 10, 20, 1.5, "closed",
                              NOW, as_json=True))  # fmt: skip
    assert (tcp["bytes_up"], tcp["bytes_down"], tcp["total_ms"]) == (10, 20, 1500)
    assert tcp["end"] == "closed"
    assert tcp_line("db", "c:1", "pg", "pg1", 1, 2, 0.25, "idle", NOW, as_json=False) == (
        "c:1 [26/Nov/2026:20:05:01.250] db pg/pg1 250 1/2 idle"
    )


def test_lines_are_batched_and_a_reopen_follows_a_rename(tmp_path: Path) -> None:
    path = tmp_path / "access.log"
    writer = AccessLog(Config(path=str(path)))
    writer.add("one")
    assert path.read_text() == ""  # (batched until the tick's flush)
    writer.flush()
    assert path.read_text() == "one\n"
    os.rename(path, tmp_path / "access.log.1")  # logrotate
    writer.add("two")
    writer.flush()  # still the old file, as with any daemon before its signal
    writer.reopen()
    writer.add("three")
    writer.add("x" * FLUSH_AT)  # a full batch goes out at once
    assert (tmp_path / "access.log.1").read_text() == "one\ntwo\n"
    assert path.read_text().startswith("three\nxxx")
    writer.close()


def test_a_pipe_that_stops_reading_never_blocks_and_its_lines_stay_whole(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    read, write = os.pipe()
    os.set_blocking(write, False)
    os.set_blocking(read, False)
    writer = AccessLog(Config(path=str(tmp_path / "unused.log")))
    writer.fd, writer.pipe = write, True  # (what _stdout gives a worker whose stdout is a pipe)
    total = 8000  # ~1.7 MB: over the pipe (64 KiB) and MAX_PENDING (1 MiB)
    for i in range(total):
        writer.add(f"{i:06d} " + "x" * 200)
        if i % 500 == 499:
            writer.flush()  # never blocks: nobody reads
    writer.flush()
    assert writer.pending_size <= MAX_PENDING
    buffered = b""
    for _ in range(100):  # the reader catches up
        while True:
            try:
                buffered += os.read(read, 1 << 16)
            except BlockingIOError:
                break
        if not writer.pending:
            break
        writer.flush()
    *whole, rest = buffered.split(b"\n")
    assert rest == b"" and all(len(line) == 207 for line in whole)  # none cut, none mixed
    numbers = [int(line[:6]) for line in whole]
    warned = re.findall(r"(\d+) line\(s\) dropped: its reader fell behind", caplog.text)
    assert numbers == sorted(numbers) and len(numbers) + sum(map(int, warned)) == total
    writer.close()
    os.close(read)


def test_pipe_chunks_are_counted_in_bytes_and_a_socket_is_sent_on_without_waiting(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    writer = AccessLog(Config(path=str(tmp_path / "unused.log")))
    sizes: list[int] = []

    def taken(data: bytes) -> int:
        sizes.append(len(data))
        return len(data)

    writer.pipe, writer.send = True, taken
    for _ in range(10):
        writer.add("é" * 1000)  # 1,001 characters, 2,001 bytes as UTF-8
    writer.flush()
    assert sizes and max(sizes) <= select.PIPE_BUF and sum(sizes) == 10 * 2001
    # A socket (systemd's journal) that stops reading: sends never wait, lines stay whole.
    ours, theirs = socket.socketpair()
    writer = AccessLog(Config(path=str(tmp_path / "unused.log")))
    writer.pipe, writer.sock, writer.send = True, theirs, writer._send_dontwait
    for i in range(20000):  # ~2 MB: over the socket's buffers and MAX_PENDING
        writer.add(f"{i:06d} " + "y" * 93)
        if i % 1000 == 999:
            writer.flush()
    assert writer.pending_size <= MAX_PENDING
    assert caplog.text.count("line(s) dropped") == 1  # (then at most every WARN_EVERY)
    writer.warned -= WARN_EVERY
    writer.add("z")
    writer.flush()
    assert caplog.text.count("line(s) dropped") == 2
    ours.setblocking(False)
    data = ours.recv(1 << 16)
    *whole, _ = data.split(b"\n")
    assert whole and all(len(line) == 100 for line in whole)
    writer.close()
    assert theirs.fileno() == -1  # (closed with the writer)
    ours.close()
