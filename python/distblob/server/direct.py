"""Large request bodies read straight from the socket, and files sent with ``sendfile``.

uvicorn hands a request body to an ASGI app as ``http.request`` messages of about 250 KiB,
copying every byte four times on the event loop (read buffer, parser slice, body buffer,
message bytes): measured alone it drains a 1 GiB body at 0.7 to 0.9 GB/s and spends 1.2 to 1.6
CPU-seconds per GiB doing so, more than the native writer spends hashing and storing it. So for
a large upload the server takes the body from the socket itself.

:class:`DirectProtocol` is uvicorn's httptools protocol plus one ASGI extension,
``scope["extensions"]["distblob.direct_body"]`` (a :class:`BodyTap`), on requests that carry a
``Content-Length`` and no ``Transfer-Encoding``. :meth:`BodyTap.take` pauses the transport and
returns a :class:`DirectBody`: the bytes the parser already holds plus a duplicate of the socket
descriptor, which a thread of its own reads (``readv``) into one reused buffer that goes
to the native writer (hashed and written without the GIL). The body then costs one copy out of
the kernel and none on the event loop. When it has all been read, :meth:`BodyTap.release` gives
the connection back to uvicorn with a fresh parser, so keep-alive and pipelined requests go on
as before. A body the store fails on is read to its end and dropped (up to 64 MiB) so the
connection can carry the error; when the client went away, the server is stopping or more is
left, the connection is closed after the response.

Responses go the other way round: the protocol also takes ASGI's ``http.response.zerocopysend``
extension (which uvicorn lacks). A blob GET sends its file region in one such message, and the
pull-through cache sends each stretch of a cold blob as it lands; a thread of their own sends
it with ``sendfile``, so the bytes never enter Python.

The app works unchanged under any other ASGI server (or with a TLS transport, or a chunked
body): there are no extensions, so it reads ``http.request`` messages and sends body messages.
Both extensions use the socket itself, so they are offered only on a transport that carries
the HTTP bytes as they are: a TLS transport (:mod:`distblob.server.tls`) still reports its
socket, which carries TLS records, so the protocol asks the transport whether it is TLS
(``sslcontext``, ``ssl_object``) when the connection is made, not whether a socket is there.
uvicorn's protocol and request cycle are not a public API, so the protocol checks the
attributes it relies on once and turns both extensions off, logging why, if they are missing.

A TLS handshake sent to this plain-HTTP server (clients that try HTTPS first, as skopeo,
podman and buildah do with an insecure registry) gets Go's answer, a 400 that such a client
reports as "server gave HTTP response to HTTPS client", and is logged once, at debug level,
instead of as uvicorn's "Invalid HTTP request received" warning for each connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import mmap
import os
import select
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Final

import httptools
from starlette.requests import ClientDisconnect
from starlette.types import Scope
from uvicorn.protocols.http.flow_control import FlowControl
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from distblob._asgi import ZEROCOPY_SEND, zerocopy
from distblob._numbers import is_ascii_digits
from distblob._threads import in_own_thread
from distblob.server.sendfile import BodyStopped, FileSender, SocketThread, ZeroCopySend

#: The ASGI extension key under which a request offers its :class:`BodyTap`.
EXTENSION: Final = "distblob.direct_body"
#: Bytes read from the socket before each write into the store.
BUFFER: Final = 1 << 20
#: How much of a body the store failed on is read and dropped to keep the connection usable.
DISCARD_LIMIT: Final = 64 << 20

#: What Go's plain-HTTP server answers a request it cannot parse (a TLS handshake), byte for byte.
TLS_TO_PLAIN_ANSWER: Final = (
    b"HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain; charset=utf-8\r\n"
    b"Connection: close\r\n\r\n400 Bad Request"
)
#: A TLS record carrying a handshake message starts with this byte; no HTTP request does.
_TLS_HANDSHAKE: Final = 0x16

log = logging.getLogger("distblob.serve")


class _HeldFlow(FlowControl):
    """uvicorn's flow control, except that reading stays paused while a thread reads the
    socket: uvicorn resumes reading whenever the app calls ``receive``."""

    held = False

    def resume_reading(self) -> None:
        if not self.held:
            super().resume_reading()


class DirectBody(SocketThread):
    """The rest of one request body, read from the socket by a thread (:meth:`copy_into`)."""

    def __init__(self, prefix: bytes, remaining: int, fd: int) -> None:
        super().__init__(fd, select.POLLIN)
        self.prefix = prefix
        self.remaining = remaining
        self.read = 0  # body bytes read from the socket so far
        self.ended = False  # the client closed (or reset) the connection before the end

    def copy_into(self, write: Callable[[memoryview], object], start: int = 0) -> int:
        """Hand the body to ``write`` in pieces of up to :data:`BUFFER` bytes (blocking);
        ``start`` is where in the upload the body's first byte goes.

        Each piece sits in a page-aligned buffer at the same offset within a page as its place
        in the upload, so the 4 KiB blocks a direct write (``O_DIRECT``) sends past the page
        cache are already aligned in memory and need no copy; after the first piece, pieces
        start on a page.

        Returns the body's length. A body that ends early is written up to where it ended, then
        :class:`~starlette.requests.ClientDisconnect` is raised, as Starlette does; after
        :meth:`stop`, :class:`BodyStopped`.
        """
        try:
            total = 0
            if self.prefix:
                write(memoryview(self.prefix))
                total += len(self.prefix)
            at = start + total
            # Two page-aligned buffers (anonymous maps, unmapped when their last view goes):
            # the socket is read into one while the store writes the other, so a write that
            # waits for the device (O_DIRECT) overlaps the next read. One writer thread keeps
            # the writes in order, and the block waits for it, so nothing writes to the
            # upload once this returns or raises.
            size = min(BUFFER, self.remaining + mmap.PAGESIZE)
            buffers = [memoryview(mmap.mmap(-1, size)) for _ in range(2)]
            pending: Future[object] | None = None
            with ThreadPoolExecutor(1, thread_name_prefix="distblob-store") as store:
                while self.read < self.remaining:
                    buffer = buffers[0]
                    buffers.reverse()
                    skew = at % mmap.PAGESIZE
                    want = min(len(buffer) - skew, self.remaining - self.read)
                    filled = self._fill(buffer[skew : skew + want])
                    if pending is not None:
                        try:
                            pending.result()
                        except BaseException:
                            self._discard(buffer)
                            raise
                    pending = None
                    if filled:
                        pending = store.submit(write, buffer[skew : skew + filled])
                        total += filled
                        at += filled
                    if filled < want:
                        if pending is not None:
                            pending.result()
                        raise ClientDisconnect()
                if pending is not None:
                    pending.result()
            return total
        finally:
            self._finish()

    def _discard(self, buffer: memoryview) -> None:
        """Read and drop the rest of a body the store failed on, up to :data:`DISCARD_LIMIT`
        bytes, so the connection can carry the error answer and the next request (uvicorn
        does the same with a body an app leaves unread). Past the limit the connection is
        closed after the answer instead."""
        limit = self.read + DISCARD_LIMIT
        with contextlib.suppress(BodyStopped):
            while self.read < min(self.remaining, limit):
                want = min(len(buffer), self.remaining - self.read)
                if self._fill(buffer[:want]) < want:
                    return

    def _fill(self, view: memoryview) -> int:
        """Read into all of ``view`` unless the stream ends first; returns the bytes read."""
        filled = 0
        while filled < len(view):
            try:
                n = os.readv(self._fd, [view[filled:]])
            except (BlockingIOError, InterruptedError):
                self._wait()
                continue
            except OSError:  # reset by the peer: the body ends here
                self.ended = True
                break
            if n == 0:
                self.ended = True
                break
            filled += n
            self.read += n
        return filled


class BodyTap:
    """Offered to the app for one request: the rest of its body, straight from the socket."""

    def __init__(self, protocol: DirectProtocol, cycle: Any, length: int) -> None:
        self._protocol = protocol
        self._cycle = cycle
        self.length = length  # the declared Content-Length
        self._taken = False

    def take(self) -> DirectBody | None:
        """Pause the connection and take the body from it; ``None`` when it cannot be taken
        (some of it was already received as messages, the client left, …). On the loop."""
        protocol, cycle = self._protocol, self._cycle
        if (
            self._taken
            or protocol.cycle is not cycle
            or not cycle.more_body
            or cycle.disconnected
            or protocol.transport.is_closing()
            or protocol.body_seen >= self.length
        ):
            return None
        sock = protocol.transport.get_extra_info("socket")
        if sock is None:
            return None
        self._taken = True
        if cycle.waiting_for_100_continue:
            protocol.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            cycle.waiting_for_100_continue = False
        protocol.flow.held = True
        protocol.flow.pause_reading()
        prefix, cycle.body = bytes(cycle.body), bytearray()
        return DirectBody(prefix, self.length - protocol.body_seen, os.dup(sock.fileno()))

    def release(self, body: DirectBody) -> None:
        """Give the connection back to uvicorn once the thread is done with it. On the loop."""
        protocol, cycle = self._protocol, self._cycle
        protocol.flow.held = False  # reading resumes when the response is complete
        if body.read == body.remaining:
            # The parser never saw these bytes; a fresh one starts at the next request.
            protocol.parser = _parser(protocol)
            protocol.body_seen = self.length
            cycle.more_body = False
            return
        cycle.keep_alive = False  # the rest of the body, if any, is still in the socket
        if body.ended:
            # Nobody is left to answer: uvicorn, whose reading is paused, would not notice.
            cycle.disconnected = True
            protocol.transport.close()


def _parser(protocol: HttpToolsProtocol) -> httptools.HttpRequestParser:
    parser = httptools.HttpRequestParser(protocol)
    with contextlib.suppress(AttributeError):  # older httptools lack it
        parser.set_dangerous_leniencies(lenient_data_after_close=True)  # as uvicorn does
    return parser


_CYCLE_ATTRIBUTES: Final = (
    "scope",
    "body",
    "more_body",
    "disconnected",
    "keep_alive",
    "waiting_for_100_continue",
)
_checked: bool | None = None


def _compatible(cycle: object) -> bool:
    """Whether uvicorn's request cycle has what the tap relies on (checked once)."""
    global _checked
    if _checked is None:
        missing = [name for name in _CYCLE_ATTRIBUTES if not hasattr(cycle, name)]
        if missing:
            log.warning("direct request bodies are off: this uvicorn's cycle lacks %s", missing)
        _checked = not missing
    return _checked


def _declared_length(headers: list[tuple[bytes, bytes]]) -> int | None:
    """The body length of a request with exactly one ``Content-Length`` and no
    ``Transfer-Encoding``; ``None`` otherwise."""
    length = None
    for name, value in headers:
        if name == b"transfer-encoding":
            return None
        if name == b"content-length":
            text = value.decode("latin-1").strip()
            if length is not None or not is_ascii_digits(text) or len(text) > 18:
                return None
            length = int(text)
    return length


_tls_probe_logged = False


def _log_tls_probe(client: object) -> None:
    """Say once, at debug level, that TLS handshakes reach this plain-HTTP server."""
    global _tls_probe_logged
    if not _tls_probe_logged:
        _tls_probe_logged = True
        log.debug(
            "a TLS handshake from %s reached this plain-HTTP server (a client trying HTTPS "
            "first): answered 400 as Go does; further ones are not logged",
            client,
        )


def is_plain(transport: asyncio.BaseTransport) -> bool:
    """Whether ``transport`` carries the bytes of HTTP as they are (no TLS): only then may the
    socket be read or written past it."""
    return (
        transport.get_extra_info("sslcontext") is None
        and transport.get_extra_info("ssl_object") is None
    )


#: Seconds an idle TLS connection has, once the server stops, to get its close_notify out
#: before it is closed without waiting for the client's.
TLS_CLOSE_GRACE: Final = 0.1


class DirectProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol, offering each plain-HTTP request with a declared body
    length a :class:`BodyTap` under ``scope["extensions"]["distblob.direct_body"]``."""

    body_seen = 0  # body bytes the parser has passed on for the current request
    flow: _HeldFlow
    #: The transport is not TLS (:func:`is_plain`): the extensions may be offered.
    plain = False
    _fresh = False  # no byte has come on this connection yet
    _lost = False  # the connection is closed

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self.flow = _HeldFlow(self.transport)
        self.plain = is_plain(transport)
        self._fresh = True

    def data_received(self, data: bytes) -> None:
        if self._fresh:
            self._fresh = False
            if self.plain and data[:1] == bytes((_TLS_HANDSHAKE,)):
                _log_tls_probe(self.client)
                self.transport.write(TLS_TO_PLAIN_ANSWER)
                self.transport.close()
                return
        super().data_received(data)

    def on_headers_complete(self) -> None:
        self.body_seen = 0
        super().on_headers_complete()
        cycle = self.cycle
        if cycle is None or cycle.scope is not self.scope or not self.plain:
            return  # an upgrade, or TLS (the socket carries records, not the body)
        if not _compatible(cycle):
            return
        extensions: dict[str, object] = self.scope.setdefault("extensions", {})  # type: ignore[assignment]
        extensions[ZEROCOPY_SEND] = {}
        cycle.send = ZeroCopySend(self, cycle, cycle.send)  # type: ignore[method-assign]
        length = _declared_length(self.headers)
        if length:
            extensions[EXTENSION] = BodyTap(self, cycle, length)

    def on_body(self, body: bytes) -> None:
        self.body_seen += len(body)
        super().on_body(body)

    def shutdown(self) -> None:
        """uvicorn's call when the server stops: an idle connection is closed, a busy one
        closes after its response. Closing TLS, asyncio's transport sends its close_notify and
        then waits for the client's (up to 30 s), which an idle keep-alive client sends only
        when it next reads: the stop would wait out ``http.draintimeout``. Go sends its
        close_notify and closes the socket; so does this, :data:`TLS_CLOSE_GRACE` later."""
        idle = self.cycle is None or self.cycle.response_complete
        super().shutdown()
        if idle and not self.plain:
            self.loop.call_later(TLS_CLOSE_GRACE, self._abort_unless_closed)

    def connection_lost(self, exc: Exception | None) -> None:
        self._lost = True
        super().connection_lost(exc)

    def _abort_unless_closed(self) -> None:
        if not self._lost:
            self.transport.abort()


def tap(scope: Scope) -> BodyTap | None:
    """The request's :class:`BodyTap`, if its server offers one."""
    extension = scope.get("extensions", {}).get(EXTENSION)
    return extension if isinstance(extension, BodyTap) else None


async def receive_into(
    tap: BodyTap, body: DirectBody, write: Callable[[memoryview], object], start: int = 0
) -> int:
    """Copy ``body`` into ``write`` in a thread of its own; the body's length. ``start`` is
    where the body's first byte goes in the upload (see :meth:`DirectBody.copy_into`).

    Raises :class:`~starlette.requests.ClientDisconnect` when the body ends early. If the
    awaiting task is cancelled (the server stopping after its drain timeout), the thread is
    stopped and waited for, so that nothing writes to the upload once the handler goes on to
    close it.
    """
    future = in_own_thread(body.copy_into, write, start, name="distblob-body")
    try:
        return await future
    except asyncio.CancelledError:
        body.stop()
        raise
    finally:
        tap.release(body)


__all__ = [
    "EXTENSION",
    "TLS_CLOSE_GRACE",
    "TLS_TO_PLAIN_ANSWER",
    "ZEROCOPY_SEND",
    "BodyStopped",
    "BodyTap",
    "DirectBody",
    "DirectProtocol",
    "FileSender",
    "is_plain",
    "receive_into",
    "tap",
    "zerocopy",
]
