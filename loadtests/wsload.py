"""WebSocket load tools for bench_ws.py: an echo server and a load generator (asyncio).

Both speak just enough RFC 6455 by hand (a handshake, whole frames) to spend as little
CPU as possible per message: they share two cores with the proxy being measured.

    python loadtests/wsload.py serve PORT              # echo server (SO_REUSEPORT: run several)
    python loadtests/wsload.py echo PORT CONNS SECONDS SIZE   # ping-pong, JSON result
    python loadtests/wsload.py hold PORT CONNS          # open CONNS, print READY n, hold
                                                        #   until stdin closes

A process opens at most ~19,000 sockets here (the hard `ulimit -n` is 20,000), so the
benchmark runs several of each.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import os
import socket
import sys
import time

try:
    import uvloop
except ImportError:  # (plain asyncio is slower, but the same for every proxy)
    uvloop = None

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
# Opening many connections at once overflows listen backlogs; this many at a time.
OPEN_BATCH = 200
OPEN_TIMEOUT = 10.0


# --- the echo server ---------------------------------------------------------------------

SWITCHING = (b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
             b"Sec-WebSocket-Accept: %s\r\n\r\n")  # fmt: skip


class Echo(asyncio.Protocol):
    """Answers the handshake, then echoes every data frame (unmasked) and the Close."""

    def __init__(self) -> None:
        self.buf = bytearray()
        self.open = False
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        buf = self.buf
        buf += data
        transport = self.transport
        assert transport is not None
        if not self.open:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                return
            key = b""
            for line in bytes(buf[:end]).split(b"\r\n"):
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"sec-websocket-key":
                    key = value.strip()
            accept = base64.b64encode(hashlib.sha1(key + GUID).digest())
            transport.write(SWITCHING % accept)
            del buf[: end + 4]
            self.open = True
        out = []
        pos = 0
        n = len(buf)
        while n - pos >= 2:
            b0, b1 = buf[pos], buf[pos + 1]
            length = b1 & 0x7F
            head = 2
            if length == 126:
                if n - pos < 4:
                    break
                length = int.from_bytes(buf[pos + 2 : pos + 4], "big")
                head = 4
            elif length == 127:
                if n - pos < 10:
                    break
                length = int.from_bytes(buf[pos + 2 : pos + 10], "big")
                head = 10
            mask = b""
            if b1 & 0x80:
                mask = bytes(buf[pos + head : pos + head + 4])
                head += 4
            if n - pos < head + length:
                break
            payload = bytes(buf[pos + head : pos + head + length])
            if mask:
                payload = unmask(payload, mask)
            pos += head + length
            opcode = b0 & 0x0F
            if opcode == 0x8:
                transport.write(frame_header(0x88, len(payload)) + payload)
                transport.close()
                return
            if opcode == 0x9:
                out.append(frame_header(0x8A, len(payload)) + payload)
            elif opcode != 0xA:
                out.append(frame_header(b0, length) + payload)
        del buf[:pos]
        if out:
            transport.write(b"".join(out))


def unmask(payload: bytes, mask: bytes) -> bytes:
    n = len(payload)
    key = (mask * (n // 4 + 1))[:n]
    return (int.from_bytes(payload, "big") ^ int.from_bytes(key, "big")).to_bytes(n, "big")


def frame_header(b0: int, length: int, masked: bool = False) -> bytes:
    bit = 0x80 if masked else 0
    if length < 126:
        return bytes((b0, bit | length))
    if length < 65536:
        return bytes((b0, bit | 126)) + length.to_bytes(2, "big")
    return bytes((b0, bit | 127)) + length.to_bytes(8, "big")


async def serve(port: int) -> None:
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind(("127.0.0.1", port))
    sock.listen(4096)
    server = await asyncio.get_running_loop().create_server(Echo, sock=sock)
    print("READY", flush=True)
    await server.serve_forever()


# --- the client side ---------------------------------------------------------------------


def handshake_request(port: int) -> bytes:
    key = base64.b64encode(os.urandom(16))
    return (b"GET /ws HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nUpgrade: websocket\r\n"
            b"Connection: Upgrade\r\nSec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n"
            b"\r\n" % (port, key))  # fmt: skip


class Client(asyncio.Protocol):
    """One WebSocket: the handshake, then (in echo mode) one message at a time."""

    def __init__(self, port: int, message: bytes, echo_len: int, stats: Stats | None) -> None:
        self.port = port
        self.message = message  # a whole masked frame
        self.echo_len = echo_len  # the bytes of its echo (unmasked frame)
        self.stats = stats
        self.opened: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self.head = b""
        self.got = 0
        self.sent_at = 0.0
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.transport.write(handshake_request(self.port))

    def data_received(self, data: bytes) -> None:
        if not self.opened.done():
            self.head += data
            end = self.head.find(b"\r\n\r\n")
            if end < 0:
                return
            ok = self.head.startswith(b"HTTP/1.1 101")
            data = self.head[end + 4 :]
            self.opened.set_result(ok)
            if self.stats is not None and ok:
                self.send()
        if self.stats is None:
            return
        self.got += len(data)
        while self.got >= self.echo_len:
            self.got -= self.echo_len
            now = time.perf_counter()
            self.stats.record(now - self.sent_at)
            if self.stats.running:
                self.send()

    def send(self) -> None:
        assert self.transport is not None
        self.sent_at = time.perf_counter()
        self.transport.write(self.message)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.opened.done():
            self.opened.set_result(False)
        elif self.stats is not None and self.stats.running:
            self.stats.lost += 1


class Stats:
    def __init__(self) -> None:
        self.running = True
        self.count = 0
        self.lost = 0
        self.samples: list[float] = []

    def record(self, rtt: float) -> None:
        self.count += 1
        if self.count % 8 == 0:  # a sample is enough for percentiles
            self.samples.append(rtt)


def masked_frame(size: int) -> bytes:
    mask = os.urandom(4)
    payload = os.urandom(size)
    return frame_header(0x82, size, masked=True) + mask + unmask(payload, mask)


async def open_all(
    port: int, conns: int, message: bytes, echo_len: int, stats: Stats | None
) -> list[Client]:
    loop = asyncio.get_running_loop()
    clients: list[Client] = []

    async def one() -> None:
        try:
            _, client = await asyncio.wait_for(
                loop.create_connection(
                    lambda: Client(port, message, echo_len, stats), "127.0.0.1", port
                ),
                OPEN_TIMEOUT,
            )
            if await asyncio.wait_for(client.opened, OPEN_TIMEOUT):
                clients.append(client)
        except (TimeoutError, OSError):
            pass

    for start in range(0, conns, OPEN_BATCH):
        await asyncio.gather(*(one() for _ in range(min(OPEN_BATCH, conns - start))))
    return clients


async def echo(port: int, conns: int, seconds: float, size: int) -> None:
    stats = Stats()
    message = masked_frame(size)
    echo_len = len(frame_header(0x82, size)) + size
    clients = await open_all(port, conns, message, echo_len, stats)
    start = time.perf_counter()
    base = stats.count
    await asyncio.sleep(seconds)
    stats.running = False
    elapsed = time.perf_counter() - start
    samples = sorted(stats.samples)

    def pct(p: float) -> float | None:
        return samples[int(p * (len(samples) - 1))] * 1e3 if samples else None

    print(json.dumps({"connections": len(clients), "messages": stats.count - base,
                      "seconds": elapsed, "p50_ms": pct(0.5), "p99_ms": pct(0.99),
                      "lost": stats.lost}), flush=True)  # fmt: skip
    for client in clients:
        if client.transport is not None:
            client.transport.close()


async def hold(port: int, conns: int) -> None:
    clients = await open_all(port, conns, b"", 0, None)
    print(f"READY {len(clients)}", flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
    for client in clients:
        if client.transport is not None:
            client.transport.close()


def main() -> None:
    mode, port = sys.argv[1], int(sys.argv[2])
    if mode == "serve":
        run = serve(port)
    elif mode == "echo":
        run = echo(port, int(sys.argv[3]), float(sys.argv[4]), int(sys.argv[5]))
    else:
        run = hold(port, int(sys.argv[3]))
    if uvloop is not None:
        uvloop.run(run)
    else:
        asyncio.run(run)


if __name__ == "__main__":
    main()
