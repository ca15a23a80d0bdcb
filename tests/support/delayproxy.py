"""A loopback TCP proxy that slows or breaks the link to one server, for fault tests.

:class:`DelayProxy` listens on a free 127.0.0.1 port and forwards every connection to a target
on loopback. Each chunk going from the client to the server can be held back for a random delay
(a slow link). :meth:`DelayProxy.cut_after` resets every connection once a given number of
client bytes went through, and :meth:`DelayProxy.refuse` resets new connections as they come,
so a client's retries fail too (a dead link). Everything is bounded: each connection's threads
end when either side closes, and :meth:`DelayProxy.stop` closes every socket and joins every
thread with a timeout.
"""

from __future__ import annotations

import contextlib
import random
import socket
import struct
import threading
import time
from collections.abc import Callable
from types import TracebackType
from typing import Self

LOOPBACK = "127.0.0.1"
#: How much one read takes from a socket, and so the size of a delayed chunk.
CHUNK = 64 * 1024
#: How long :meth:`DelayProxy.stop` waits for each thread.
JOIN_TIMEOUT = 5.0


def _reset(sock: socket.socket) -> None:
    """Close ``sock`` with a TCP reset (SO_LINGER 0), so the peer sees the link die, and wake
    a thread blocked reading it."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RD)
    with contextlib.suppress(OSError):
        sock.close()


def _close(sock: socket.socket) -> None:
    """Close ``sock`` after waking any thread blocked on it."""
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    with contextlib.suppress(OSError):
        sock.close()


class _Link:
    """One proxied connection: its two sockets, closed when both directions are done."""

    def __init__(self, client: socket.socket, server: socket.socket) -> None:
        self.client = client
        self.server = server
        self._lock = threading.Lock()
        self._open_directions = 2

    def direction_done(self, *, failed: bool) -> bool:
        """One direction ended; returns whether the link is now closed."""
        with self._lock:
            self._open_directions -= 1
            last = self._open_directions == 0
        if failed or last:
            _close(self.client)
            _close(self.server)
            return True
        return False


class DelayProxy:
    """Forwards ``127.0.0.1:port`` to ``target_host:target_port`` (a context manager).

    ``delay`` is a ``(low, high)`` range in seconds: each client-to-server chunk (one read of at
    most ``chunk`` bytes) waits a uniform random time in it before it is sent (``(0, 0)``: no
    delay). Settings can change while the proxy runs; they apply from the next chunk or
    connection on.
    """

    def __init__(
        self,
        target_host: str,
        target_port: int,
        *,
        delay: tuple[float, float] = (0.0, 0.0),
        chunk: int = CHUNK,
        seed: int | None = None,
    ) -> None:
        if target_host not in {LOOPBACK, "localhost"}:
            raise ValueError(f"the proxy only forwards to loopback, not {target_host!r}")
        self.target = (target_host, target_port)
        self.delay = delay
        self.chunk = chunk
        self.port = 0
        self._random = random.Random(seed)
        self._lock = threading.Lock()
        self._listener: socket.socket | None = None
        self._sockets: set[socket.socket] = set()
        self._threads: list[threading.Thread] = []
        self._stopping = threading.Event()
        self._refusing = False
        self._cut_at: int | None = None  # reset everything once this many client bytes passed
        #: Client-to-server bytes forwarded since the proxy started.
        self.forwarded = 0
        #: Connections reset by :meth:`cut_now`, :meth:`cut_after` or :meth:`refuse`.
        self.resets = 0

    # -- life --------------------------------------------------------------------------------

    @property
    def endpoint(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    def start(self) -> Self:
        listener = socket.create_server((LOOPBACK, 0))
        listener.settimeout(0.2)
        self._listener = listener
        self.port = listener.getsockname()[1]
        self._spawn(self._accept_loop)
        return self

    def stop(self) -> None:
        """Close every socket and join every thread (each for at most :data:`JOIN_TIMEOUT`)."""
        self._stopping.set()
        listener, self._listener = self._listener, None
        if listener is not None:
            listener.close()
        with self._lock:
            sockets = list(self._sockets)
            self._sockets.clear()
        for sock in sockets:
            _close(sock)
        for thread in list(self._threads):
            thread.join(JOIN_TIMEOUT)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- faults ------------------------------------------------------------------------------

    def cut_now(self) -> int:
        """Reset every open connection; returns how many."""
        with self._lock:
            sockets = list(self._sockets)
            self._sockets.clear()
            self.resets += len(sockets)
        for sock in sockets:
            _reset(sock)
        return len(sockets)

    def cut_after(self, nbytes: int | None) -> None:
        """Reset every connection once ``nbytes`` more client bytes went through (``None``:
        disarm)."""
        with self._lock:
            self._cut_at = None if nbytes is None else self.forwarded + nbytes

    def refuse(self, refusing: bool = True) -> None:
        """While set, a new connection is reset as soon as it is accepted."""
        self._refusing = refusing

    def heal(self) -> None:
        """No delay, no refusal, no cut armed."""
        self.delay = (0.0, 0.0)
        self.refuse(False)
        self.cut_after(None)

    @property
    def armed(self) -> bool:
        """Whether a :meth:`cut_after` has yet to fire."""
        return self._cut_at is not None

    # -- forwarding --------------------------------------------------------------------------

    def _spawn(self, target: Callable[..., None], *args: object) -> None:
        thread = threading.Thread(target=target, args=args, daemon=True)
        with self._lock:
            self._threads = [t for t in self._threads if t.is_alive()]
            self._threads.append(thread)
        thread.start()

    def _accept_loop(self) -> None:
        while not self._stopping.is_set():
            listener = self._listener
            if listener is None:
                return
            try:
                client, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            if self._refusing:
                with self._lock:
                    self.resets += 1
                _reset(client)
                continue
            try:
                server = socket.create_connection(self.target, timeout=10)
            except OSError:
                _reset(client)
                continue
            server.settimeout(None)
            client.settimeout(None)
            with self._lock:
                self._sockets.update((client, server))
            link = _Link(client, server)
            self._spawn(self._pump, link, True)
            self._spawn(self._pump, link, False)

    def _pump(self, link: _Link, upstream: bool) -> None:
        source, sink = (link.client, link.server) if upstream else (link.server, link.client)
        failed = False
        try:
            while not self._stopping.is_set():
                data = source.recv(self.chunk)
                if not data:
                    with contextlib.suppress(OSError):
                        sink.shutdown(socket.SHUT_WR)  # pass the half-close on
                    return
                if upstream:
                    low, high = self.delay
                    if high > 0:
                        time.sleep(self._random.uniform(low, high))
                    with self._lock:
                        self.forwarded += len(data)
                        fire = self._cut_at is not None and self.forwarded >= self._cut_at
                        if fire:
                            self._cut_at = None
                    if fire:
                        failed = True
                        self.cut_now()
                        return
                sink.sendall(data)
            failed = True  # stopping
        except OSError:
            failed = True  # the other side (or a cut) closed the link: drop both ends
        finally:
            if link.direction_done(failed=failed):
                with self._lock:
                    self._sockets.discard(link.client)
                    self._sockets.discard(link.server)


__all__ = ["DelayProxy"]
