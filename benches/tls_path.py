"""The bare data path under the TLS scenario of :mod:`benches.auth`: how fast this machine's
OpenSSL moves bytes through Python's ``ssl`` over loopback, against a plain socket.

One client (a Python socket, 1 MiB ``sendall`` writes) sends into a null sink: a Python socket
in a thread (``recv_into`` a 1 MiB buffer), or a uvloop transport, the kind ``distblob serve``
reads bodies from under TLS. TLS uses the server's own context
(:func:`distblob.server.tls.server_context`, so the suite negotiated is the server's) and the
test PKI's client context. Each run returns the seconds, the client's CPU seconds and the
cipher suite.
"""

from __future__ import annotations

import asyncio
import os
import socket
import ssl
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import uvloop

from distblob.config import TLS
from distblob.server.tls import server_context

if TYPE_CHECKING:
    from support.tls import PKI

MIB = 1 << 20
LOOPBACK = "127.0.0.1"


def _drain(sock: socket.socket, total: int) -> None:
    buffer = memoryview(bytearray(MIB))
    got = 0
    while got < total:
        n = sock.recv_into(buffer)
        if not n:
            raise RuntimeError("the sender closed early")
        got += n
    sock.sendall(b"k")


def _feed(sock: socket.socket, total: int) -> float:
    """Send ``total`` bytes in 1 MiB writes, wait for the sink's ack; client CPU seconds."""
    chunk = memoryview(os.urandom(MIB))
    cpu = time.thread_time()
    sent = 0
    while sent < total:
        n = min(MIB, total - sent)
        sock.sendall(chunk[:n])
        sent += n
    if sock.recv(1) != b"k":
        raise RuntimeError("no ack from the sink")
    return time.thread_time() - cpu


def bare_sockets(total: int, pki: PKI | None) -> tuple[float, float, str]:
    """``total`` bytes from a Python socket to a Python socket in a thread, TLS with the
    server's context when ``pki`` is given: seconds, client CPU seconds, the cipher."""
    listener = socket.create_server((LOOPBACK, 0))
    port = listener.getsockname()[1]
    server_context = _server_context(pki) if pki is not None else None

    def serve() -> None:
        conn, _ = listener.accept()
        with conn:
            sock = server_context.wrap_socket(conn, server_side=True) if server_context else conn
            _drain(sock, total)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        with socket.create_connection((LOOPBACK, port)) as raw:
            sock = pki.client_context().wrap_socket(raw, server_hostname=LOOPBACK) if pki else raw
            cipher = sock.cipher()[0] if isinstance(sock, ssl.SSLSocket) else "none"  # type: ignore[index]
            start = time.perf_counter()
            cpu = _feed(sock, total)
            seconds = time.perf_counter() - start
    finally:
        thread.join(60)
        listener.close()
    return seconds, cpu, cipher


class _NullProtocol(asyncio.Protocol):
    def __init__(self, total: int) -> None:
        self.total = total
        self.got = 0
        self.transport: Any = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # uvloop's transports are not asyncio.Transport subclasses

    def data_received(self, data: bytes) -> None:
        self.got += len(data)
        if self.got >= self.total and self.transport is not None:
            self.transport.write(b"k")


def bare_uvloop(total: int, pki: PKI | None) -> tuple[float, float, str]:
    """``total`` bytes from a Python socket into a uvloop transport (TLS with the server's
    context when ``pki`` is given), the one ``distblob serve`` reads bodies from under TLS."""
    ready = threading.Event()
    port: list[int] = []
    stop: list[Callable[[], None]] = []

    def serve() -> None:
        loop = uvloop.new_event_loop()
        context = _server_context(pki) if pki is not None else None
        server = loop.run_until_complete(
            loop.create_server(lambda: _NullProtocol(total), LOOPBACK, 0, ssl=context)
        )
        port.append(server.sockets[0].getsockname()[1])
        stop.append(lambda: loop.call_soon_threadsafe(loop.stop))
        ready.set()
        loop.run_forever()
        server.close()
        loop.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    ready.wait(30)
    try:
        with socket.create_connection((LOOPBACK, port[0])) as raw:
            sock = pki.client_context().wrap_socket(raw, server_hostname=LOOPBACK) if pki else raw
            cipher = sock.cipher()[0] if isinstance(sock, ssl.SSLSocket) else "none"  # type: ignore[index]
            start = time.perf_counter()
            cpu = _feed(sock, total)
            seconds = time.perf_counter() - start
    finally:
        stop[0]()
        thread.join(60)
    return seconds, cpu, cipher


def _server_context(pki: PKI) -> ssl.SSLContext:
    return server_context(TLS(certificate=str(pki.server_cert), key=str(pki.server_key)))


__all__ = ["bare_sockets", "bare_uvloop"]
