"""A bandwidth-limited TCP relay for benchmarks: a shaped link between a client and a server.

:class:`ShapedLink` listens on 127.0.0.1 and relays every connection it accepts to a target port
on loopback, as if client and server were at the two ends of one link of ``rate`` bytes/s: each
direction has one token bucket that all its connections share (two concurrent downloads get
half the rate each), with a small burst (128 KiB), so the bytes flow at the rate in 64 KiB
steps rather than in bursts followed by waits. ``delay`` adds a fixed one-way latency (half
the round-trip time) to every byte. The link counts the bytes it carried each way.

Each direction of a connection is a thread (two with a delay: one receives and takes tokens,
one sends when the bytes are due), moving bytes with ``recv_into``/``sendall`` on a reused
buffer. ``python -m benches.link`` checks that the relay is not the bottleneck: its unshaped
throughput on this machine, and the rates it keeps when shaped.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import queue
import socket
import tempfile
import threading
import time
from collections.abc import Callable
from types import TracebackType
from typing import Final, Self

LOOPBACK: Final = "127.0.0.1"
#: Bytes a relay thread moves per step.
CHUNK: Final = 64 << 10
#: Bytes a direction may send at once after being idle (about 1 ms at 1 Gbit/s).
BURST: Final = 128 << 10
#: Steps queued between a delayed direction's receiver and its sender (bounds the bytes the
#: relay holds; the sender's backpressure reaches the receiver through it).
QUEUED: Final = 64


class TokenBucket:
    """``take(n)`` returns once ``n`` more bytes keep to ``rate`` bytes/s (``None``: at once).

    Scheduled rather than polled (the generic cell rate algorithm): each call reserves the next
    slot under a lock and sleeps until it, so concurrent callers share the rate in turn. A link
    sends from its queue while the relay's thread is not running: a caller that stayed
    ``backlogged`` (its source had more bytes waiting at every step) may catch up on up to
    ``catch_up`` seconds it was late by (a sleep that overslept, a thread not scheduled), where
    a caller coming back from idle gets only ``burst`` bytes ahead."""

    def __init__(self, rate: float | None, burst: int = BURST, catch_up: float = 0.05) -> None:
        self.rate = rate
        self.burst = burst
        self.catch_up = catch_up
        self._lock = threading.Lock()
        self._free_at = time.perf_counter()  # when the link has sent what it was given

    def take(self, nbytes: int, backlogged: bool = False) -> None:
        if self.rate is None:
            return
        with self._lock:
            now = time.perf_counter()
            free_at = max(self._free_at, now - self.catch_up if backlogged else now)
            start = free_at - self.burst / self.rate
            self._free_at = free_at + nbytes / self.rate
        if start > now:
            time.sleep(start - now)


class _Counter:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.value = 0

    def add(self, nbytes: int) -> None:
        with self._lock:
            self.value += nbytes


class _Connection:
    """One accepted connection and its upstream one; closed once both directions are done."""

    def __init__(self, client: socket.socket, server: socket.socket) -> None:
        self.sockets = (client, server)
        self._lock = threading.Lock()
        self._open = 2

    def direction_done(self) -> None:
        with self._lock:
            self._open -= 1
            last = self._open == 0
        if last:
            for sock in self.sockets:
                sock.close()

    def abort(self) -> None:
        """Wake both directions (a reset on one side resets the other, as a broken link)."""
        for sock in self.sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)


class ShapedLink:
    """A relay on 127.0.0.1 to ``target_port``, shaped to ``rate`` bytes/s each way.

    ``down`` is the direction from the target to the client (a download), ``up`` the other;
    :attr:`down_bytes` and :attr:`up_bytes` count what crossed since the last :meth:`reset`."""

    def __init__(self, target_port: int, rate: float | None, *, delay: float = 0.0) -> None:
        self.target_port = target_port
        self.rate = rate
        self.delay = delay
        self._down = TokenBucket(rate)
        self._up = TokenBucket(rate)
        self._down_bytes = _Counter()
        self._up_bytes = _Counter()
        self._listener = socket.create_server((LOOPBACK, 0))
        self.port: int = self._listener.getsockname()[1]
        self.url = f"http://{LOOPBACK}:{self.port}"
        self._connections: list[_Connection] = []
        self._threads: list[threading.Thread] = []
        self._closed = False
        self._accepter = threading.Thread(target=self._accept, name="link-accept", daemon=True)
        self._accepter.start()

    @property
    def down_bytes(self) -> int:
        return self._down_bytes.value

    @property
    def up_bytes(self) -> int:
        return self._up_bytes.value

    def reset(self) -> None:
        """Count from zero again (the buckets keep their state)."""
        self._down_bytes = _Counter()
        self._up_bytes = _Counter()

    def wait_idle(self, quiet: float = 0.3, timeout: float = 60.0) -> None:
        """Return once nothing crossed for ``quiet`` seconds (or after ``timeout``)."""
        deadline = time.monotonic() + timeout
        last = (self.down_bytes, self.up_bytes)
        since = time.monotonic()
        while time.monotonic() < deadline:
            time.sleep(0.02)
            now = (self.down_bytes, self.up_bytes)
            if now != last:
                last, since = now, time.monotonic()
            elif time.monotonic() - since >= quiet:
                return

    def close(self) -> None:
        self._closed = True
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)
        self._listener.close()
        for connection in self._connections:
            connection.abort()
        self._accepter.join(5)
        for thread in self._threads:
            thread.join(5)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- relaying ---------------------------------------------------------------------------

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            try:
                server = socket.create_connection((LOOPBACK, self.target_port))
            except OSError:
                client.close()
                continue
            for sock in (client, server):
                # The relay forwards what it has at once; it adds no coalescing of its own.
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            connection = _Connection(client, server)
            self._connections.append(connection)
            if self._closed:
                connection.abort()
            for src, dst, bucket, name in (
                (server, client, self._down, "down"),
                (client, server, self._up, "up"),
            ):
                self._start(connection, src, dst, bucket, name)

    def _start(
        self,
        connection: _Connection,
        src: socket.socket,
        dst: socket.socket,
        bucket: TokenBucket,
        name: str,
    ) -> None:
        def counter() -> _Counter:
            return self._down_bytes if name == "down" else self._up_bytes

        if self.delay <= 0:
            threads = [
                threading.Thread(
                    target=_pump, args=(connection, src, dst, bucket, counter), daemon=True
                )
            ]
        else:
            steps: queue.Queue[tuple[float, bytes]] = queue.Queue(QUEUED)
            threads = [
                threading.Thread(
                    target=_receive_delayed,
                    args=(connection, src, bucket, steps, self.delay),
                    daemon=True,
                ),
                threading.Thread(
                    target=_send_delayed, args=(connection, dst, steps, counter), daemon=True
                ),
            ]
        for thread in threads:
            thread.name = f"link-{name}"
            thread.start()
        self._threads = [t for t in self._threads if t.is_alive()] + threads


def _pump(
    connection: _Connection,
    src: socket.socket,
    dst: socket.socket,
    bucket: TokenBucket,
    counter: Callable[[], _Counter],
) -> None:
    """Receive, take tokens, send; at the end of ``src`` the end of ``dst``'s stream. Bytes are
    counted once sent."""
    buffer = bytearray(CHUNK)
    view = memoryview(buffer)
    full = False  # the last receive filled the buffer: more was waiting
    try:
        while True:
            count = src.recv_into(buffer)
            if not count:
                with contextlib.suppress(OSError):
                    dst.shutdown(socket.SHUT_WR)
                break
            bucket.take(count, backlogged=full and count == CHUNK)
            full = count == CHUNK
            dst.sendall(view[:count])
            counter().add(count)
    except OSError:
        connection.abort()
    finally:
        connection.direction_done()


def _receive_delayed(
    connection: _Connection,
    src: socket.socket,
    bucket: TokenBucket,
    steps: queue.Queue[tuple[float, bytes]],
    delay: float,
) -> None:
    full = False
    try:
        while True:
            data = src.recv(CHUNK)
            if data:
                bucket.take(len(data), backlogged=full and len(data) == CHUNK)
                full = len(data) == CHUNK
            steps.put((time.perf_counter() + delay, data))
            if not data:
                return
    except OSError:
        connection.abort()
        steps.put((0.0, b""))


def _send_delayed(
    connection: _Connection,
    dst: socket.socket,
    steps: queue.Queue[tuple[float, bytes]],
    counter: Callable[[], _Counter],
) -> None:
    try:
        while True:
            due, data = steps.get()
            wait = due - time.perf_counter()
            if wait > 0:
                time.sleep(wait)
            if not data:
                with contextlib.suppress(OSError):
                    dst.shutdown(socket.SHUT_WR)
                return
            dst.sendall(data)
            counter().add(len(data))
    except OSError:
        connection.abort()
        # Let the receiver finish: it may be blocked on a full queue.
        with contextlib.suppress(queue.Empty):
            while True:
                steps.get_nowait()
    finally:
        connection.direction_done()


# -- the self-check: python -m benches.link ---------------------------------------------------


class _Source:
    """A server on loopback that sends ``nbytes`` of a file with ``sendfile`` to each client."""

    def __init__(self, path: str, nbytes: int) -> None:
        self.path = path
        self.nbytes = nbytes
        self._listener = socket.create_server((LOOPBACK, 0))
        self.port: int = self._listener.getsockname()[1]
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return
            with conn, open(self.path, "rb") as source, contextlib.suppress(OSError):
                conn.sendfile(source, 0, self.nbytes)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)
        self._listener.close()
        self._thread.join(5)


def _download(port: int) -> tuple[int, float, float]:
    """Bytes received from ``port`` until its end, the seconds it took and the CPU-seconds the
    rest of this process (the source, and the relay if there is one) spent meanwhile."""
    buffer = bytearray(4 << 20)
    total = 0
    start = time.perf_counter(), time.process_time(), time.thread_time()
    with socket.create_connection((LOOPBACK, port)) as sock:
        while count := sock.recv_into(buffer):
            total += count
    others = time.process_time() - start[1] - (time.thread_time() - start[2])
    return total, time.perf_counter() - start[0], others


def self_check(nbytes: int, rates: list[float | None], delay: float) -> list[str]:
    """One download of ``nbytes`` straight from a ``sendfile`` source, then one through a link
    at each rate (``None``: unshaped). The relay's CPU is what the source's grew by."""
    lines = []
    with tempfile.NamedTemporaryFile(prefix="distblob-link-") as blob:
        chunk = os.urandom(1 << 20)
        for _ in range(nbytes >> 20):
            blob.write(chunk)
        blob.flush()
        source = _Source(blob.name, nbytes)
        try:
            got, seconds, direct_cpu = _download(source.port)
            gb = nbytes / 1e9
            lines.append(
                f"direct: {got / seconds / 1e6:.0f} MB/s, source {direct_cpu / gb:.2f} CPU-s/GB"
            )
            for rate in rates:
                with ShapedLink(source.port, rate, delay=delay) as link:
                    got, seconds, cpu = _download(link.port)
                    if got != nbytes or link.down_bytes != nbytes:
                        raise RuntimeError(f"got {got}, counted {link.down_bytes} of {nbytes}")
                label = "unshaped" if rate is None else f"shaped to {rate / 1e6:.0f} MB/s"
                kept = "" if rate is None else f" ({nbytes / seconds / rate:.3f} of the rate)"
                lines.append(
                    f"{label}: {nbytes / seconds / 1e6:.0f} MB/s{kept}, "
                    f"relay about {(cpu - direct_cpu) / gb:.2f} CPU-s/GB"
                )
        finally:
            source.close()
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mib", type=int, default=1024, help="bytes per download, in MiB")
    parser.add_argument("--delay-ms", type=float, default=0.0, help="one-way latency, ms")
    args = parser.parse_args(argv)
    nbytes = args.mib << 20
    for line in self_check(nbytes, [None, 100e6, 125e6], args.delay_ms / 1000):
        print(line)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
