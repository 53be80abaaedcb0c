"""A demo backend server: says which backend it is, over HTTP or plain TCP.

Run by ``trilb demo`` as a child process on an inherited listening socket. An HTTP
request gets a one-line 200 response naming the backend; a client that stays silent
gets a greeting, then its lines echoed (for ``nc``). Threads, not trio: this is a
toy with no relation to the serving path, kept deliberately plain.
"""

from __future__ import annotations

import argparse
import socket
import threading

# How long a silent client is given before it is greeted as a plain TCP client.
GREETING_DELAY = 0.3
_METHODS = (b"GET ", b"HEAD ", b"POST ", b"PUT ", b"DELETE ", b"OPTIONS ", b"PATCH ")


def _handle(conn: socket.socket, name: str) -> None:
    with conn:
        conn.settimeout(GREETING_DELAY)
        try:
            first = conn.recv(65536)
        except TimeoutError:
            first = None
        except OSError:
            return
        conn.settimeout(300)
        try:
            if first is not None and first.startswith(_METHODS):
                _answer_http(conn, name, first)
            else:
                conn.sendall(f"hello from demo backend {name}: type a line, I echo it\n".encode())
                data = first or conn.recv(65536)
                while data:
                    conn.sendall(data)
                    data = conn.recv(65536)
        except OSError:
            pass


def _answer_http(conn: socket.socket, name: str, request: bytes) -> None:
    path = request.split(b" ", 2)[1].decode("latin-1") if request.count(b" ") >= 2 else "/"
    body = f"hello from demo backend {name}, you asked for {path}\n".encode()
    head = request.startswith(b"HEAD ")
    conn.sendall(
        b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\nconnection: close\r\n"
        + f"x-backend: {name}\r\ncontent-length: {len(body)}\r\n\r\n".encode()
        + (b"" if head else body)
    )


def serve(fd: int, name: str) -> None:
    listener = socket.socket(fileno=fd)
    listener.setblocking(True)
    while True:
        conn, _ = listener.accept()
        threading.Thread(target=_handle, args=(conn, name), daemon=True).start()


def main() -> None:
    p = argparse.ArgumentParser(description="trilb demo backend")
    p.add_argument("--fd", type=int, required=True)
    p.add_argument("--name", required=True)
    args = p.parse_args()
    try:
        serve(args.fd, args.name)
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
