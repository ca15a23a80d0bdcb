"""The socket threads of :mod:`distblob.server.direct`, and the zero-copy send.

:class:`SocketThread` is a duplicate of a connection's socket descriptor used by one thread
until it is done, which the event loop can interrupt at once; :class:`~distblob.server.direct.
DirectBody` reads a request body with one, :class:`FileSender` sends a file region with
``sendfile``. :class:`ZeroCopySend` is the ``send`` of a request cycle that also takes ASGI's
``http.response.zerocopysend`` messages (which uvicorn lacks): a blob GET's region, or a cold
blob's stretch as it lands, goes from the file to the socket in a thread of its own, never
through the event loop.

A client on this host (loopback, the host's own address, a Unix socket) is sent copies
instead: the thread reads the file into one reused 1 MiB buffer and writes that to the socket.
``sendfile`` hands the page cache's pages to the socket, and a local connection passes them
on to the client's socket as they are, so the client's ``recv`` does the only copy, straight
from the page cache, and in segments less than half the usual size (``ss``: a median of 21 KB
against 54 KB for copies and 55 KB for the Go registry). A client that hashes and
decompresses what it reads (podman, skopeo, containerd) spends more CPU per byte that way,
and that CPU bounds its pull: a podman pull of a 200 MiB layer cost podman 2.65 CPU-seconds
from ``sendfile``, 2.32 from copies and 2.37 from the Go registry (medians of 12 alternating
rounds). The copies cost the server about 0.1 CPU-second per 200 MiB. Across a network the
client copies from its own NIC's buffers, so a remote client gets ``sendfile``.

With ``storage.filesystem.directio: on``, a region of 32 MiB or more that is mostly not in the
page cache is read past it instead (``O_DIRECT``, a few reads in flight) and written to the
socket from aligned buffers, local client or not, so that reading a blob once does not fill the
page cache either.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import errno
import ipaddress
import logging
import mmap
import os
import random
import select
import socket
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Final

import anyio

from distblob._asgi import DIRECT_READS, ZEROCOPY_SEND
from distblob._threads import in_own_thread

#: Bytes read per call when a region goes through the transport after all, and the buffer a
#: :class:`FileSender` copies through for a local client.
BUFFER: Final = 1 << 20
#: How long a stopped thread may take to finish its last write before the loop goes on.
STOP_WAIT: Final = 10.0
#: Regions at least this long are declared sequential to the kernel (``POSIX_FADV_SEQUENTIAL``).
SEQUENTIAL_FROM: Final = 4 << 20
#: With ``directio: on``, regions at least this long that are not in the page cache are read
#: past it.
DIRECT_READ_FROM: Final = 32 << 20
#: Each ``O_DIRECT`` read; the reads kept in flight at once.
DIRECT_READ_CHUNK: Final = 4 << 20
DIRECT_READ_DEPTH: Final = 3
#: ``O_DIRECT``'s alignment of offsets, lengths and memory (maps are page-aligned).
DIRECT_ALIGN: Final = 4096

log = logging.getLogger("distblob.serve")


class BodyStopped(Exception):
    """The server stopped reading a body (it is shutting down)."""


class SocketThread:
    """A duplicate of the connection's socket descriptor, used by one thread until it is done,
    which another thread can interrupt at once (:meth:`stop`) through a pipe it also polls."""

    def __init__(self, fd: int, events: int) -> None:
        self._fd = fd  # a duplicate: closing it leaves uvicorn's transport its own
        self._wake_r, self._wake_w = os.pipe()
        self._poller = select.poll()
        self._poller.register(fd, events)
        self._poller.register(self._wake_r, select.POLLIN)
        self._done = threading.Event()

    def _wait(self) -> None:
        """Wait until the socket is ready again; :class:`BodyStopped` after :meth:`stop`."""
        for fd, _ in self._poller.poll():
            if fd == self._wake_r:
                raise BodyStopped()

    def _finish(self) -> None:
        """Close the descriptors (the thread's last step)."""
        os.close(self._fd)
        os.close(self._wake_r)
        os.close(self._wake_w)
        self._done.set()

    def stop(self) -> None:
        """Make the thread stop at once (from any thread), then wait for it to finish."""
        if not self._done.is_set():
            with contextlib.suppress(OSError):  # it finished and closed its pipe meanwhile
                os.write(self._wake_w, b"x")
        if not self._done.wait(STOP_WAIT):
            log.warning("a %s did not finish within %.0f s", type(self).__name__, STOP_WAIT)


def local_peer(family: int, sockname: Any, peername: Any) -> bool:
    """Whether a connection's other end is on this host: a Unix socket, a loopback address
    (IPv4, IPv6, or IPv4 mapped into IPv6), or the very address the server side has."""
    if family == socket.AF_UNIX:
        return True
    if family not in (socket.AF_INET, socket.AF_INET6):
        return False
    try:
        host, own = str(peername[0]), str(sockname[0])
        address = ipaddress.ip_address(host.partition("%")[0])
    except (IndexError, TypeError, ValueError):
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_loopback or host == own


def is_local(sock: socket.socket) -> bool:
    """:func:`local_peer` for a connected socket (False when it cannot tell)."""
    try:
        return local_peer(sock.family, sock.getsockname(), sock.getpeername())
    except OSError:
        return False


class FileSender(SocketThread):
    """Sends a file region to the socket from a thread (:meth:`send`): with ``sendfile``, or
    with ``copy`` through a reused buffer (for a client on this host: see the module)."""

    def __init__(self, fd: int, *, copy: bool = False) -> None:
        super().__init__(fd, select.POLLOUT)
        self.copy = copy
        self.sent = 0

    def send(self, file_fd: int, offset: int, count: int, direct: bool = False) -> int:
        """Send ``count`` bytes of ``file_fd`` from ``offset`` (blocking); returns ``count``.

        With ``direct`` (``storage.filesystem.directio: on``), a region of at least
        :data:`DIRECT_READ_FROM` bytes that is not in the page cache is read past it
        (``_cold``, ``_send_direct``), as it was written.

        Raises :class:`ConnectionError` when the client is gone, :class:`EOFError` when the file
        holds fewer bytes, :class:`BodyStopped` after :meth:`stop`.
        """
        try:
            if direct and count >= DIRECT_READ_FROM and self._sent_direct(file_fd, offset, count):
                return count
            if count >= SEQUENTIAL_FROM:
                # A long region is read front to back: the kernel then reads ahead twice as
                # far. Only this open file's readahead is affected.
                with contextlib.suppress(OSError):
                    os.posix_fadvise(file_fd, offset, count, os.POSIX_FADV_SEQUENTIAL)
            if self.copy:
                self._copies(file_fd, offset, count)
            else:
                self._sendfile(file_fd, offset, count)
            return count
        finally:
            self._finish()

    def _sent_direct(self, file_fd: int, offset: int, count: int) -> bool:
        """Whether the region was cold and has been sent read past the page cache."""
        if not _cold(file_fd, offset, count):
            return False
        direct_fd = _open_direct(file_fd)
        if direct_fd is None:
            return False
        try:
            return self._send_direct(direct_fd, offset, count)
        finally:
            os.close(direct_fd)

    def _send_direct(self, direct_fd: int, offset: int, count: int) -> bool:
        """Send the region read with ``O_DIRECT``: :data:`DIRECT_READ_DEPTH` aligned reads of
        :data:`DIRECT_READ_CHUNK` bytes in flight while the one before is sent. False, having
        sent nothing, when the filesystem refuses the first read (the caller then uses
        ``sendfile``); the socket is this thread's to finish, as for :meth:`send`."""
        end = offset + count
        position = offset - offset % DIRECT_ALIGN
        buffers = [mmap.mmap(-1, DIRECT_READ_CHUNK) for _ in range(DIRECT_READ_DEPTH + 1)]
        pending: collections.deque[tuple[int, mmap.mmap, Future[int]]] = collections.deque()
        turn = 0
        with ThreadPoolExecutor(DIRECT_READ_DEPTH, thread_name_prefix="distblob-read") as pool:

            def submit() -> None:
                nonlocal position, turn
                if position < end:
                    buffer = buffers[turn % len(buffers)]
                    pending.append(
                        (position, buffer, pool.submit(os.preadv, direct_fd, [buffer], position))
                    )
                    position += DIRECT_READ_CHUNK
                    turn += 1

            try:
                for _ in range(DIRECT_READ_DEPTH):
                    submit()
                first = True
                while pending:
                    at, buffer, read = pending.popleft()
                    try:
                        n = read.result()
                    except OSError as error:
                        if first and error.errno == errno.EINVAL:
                            return False
                        raise
                    first = False
                    submit()
                    low, high = max(offset, at) - at, min(end, at + n) - at
                    if high < min(end - at, DIRECT_READ_CHUNK):
                        raise EOFError(f"the file ended before byte {end} of the region")
                    self._send_all(memoryview(buffer)[low:high])
            finally:
                for _, _, read in pending:
                    read.cancel()
        return True

    def _send_all(self, view: memoryview) -> None:
        """Write all of ``view`` to the socket, counting each write in :attr:`sent`."""
        while view:
            try:
                n = os.write(self._fd, view)
            except (BlockingIOError, InterruptedError):
                self._wait()
                continue
            view = view[n:]
            self.sent += n

    def _sendfile(self, file_fd: int, offset: int, count: int) -> None:
        while self.sent < count:
            try:
                n = os.sendfile(self._fd, file_fd, offset + self.sent, count - self.sent)
            except (BlockingIOError, InterruptedError):
                self._wait()
                continue
            if n == 0:
                raise EOFError(f"the file ended {count - self.sent} bytes early")
            self.sent += n

    def _copies(self, file_fd: int, offset: int, count: int) -> None:
        buffer = memoryview(bytearray(min(BUFFER, count)))
        while self.sent < count:
            got = os.preadv(file_fd, [buffer[: count - self.sent]], offset + self.sent)
            if got == 0:
                raise EOFError(f"the file ended {count - self.sent} bytes early")
            self._send_all(buffer[:got])


def _cold(fd: int, offset: int, count: int) -> bool:
    """Whether most of a region is not in the page cache: three pages at random places are
    read with ``RWF_NOWAIT``, which fails with ``EAGAIN`` rather than go to the disk (it reads
    that one page in, so the places differ from call to call)."""
    probe = bytearray(1)
    missing = 0
    for _ in range(3):
        at = offset + random.randrange(count)
        try:
            os.preadv(fd, [probe], at, os.RWF_NOWAIT)
        except BlockingIOError:
            missing += 1
        except OSError:
            return False
    return missing >= 2


def _open_direct(fd: int) -> int | None:
    """The same file opened again with ``O_DIRECT``, or None where that is refused."""
    try:
        return os.open(f"/proc/self/fd/{fd}", os.O_RDONLY | os.O_DIRECT)
    except OSError:
        return None


class ZeroCopySend:
    """The ``send`` of one request cycle, which also takes ASGI's ``http.response.zerocopysend``
    messages: the bytes go from the file to the socket with ``sendfile`` in a thread of their
    own, never through Python or the event loop."""

    def __init__(self, protocol: Any, cycle: Any, send: Callable[..., Any]) -> None:
        self._protocol = protocol
        self._cycle = cycle
        self._send = send

    async def __call__(self, message: Any) -> None:
        if message["type"] != ZEROCOPY_SEND:
            await self._send(message)
            return
        cycle, transport = self._cycle, self._protocol.transport
        if not cycle.response_started:
            raise RuntimeError(f"{ZEROCOPY_SEND} before http.response.start")
        file = message["file"]
        fd = file if isinstance(file, int) else file.fileno()
        offset = message.get("offset")
        if offset is None:
            offset = os.lseek(fd, 0, os.SEEK_CUR)
        count = message.get("count")
        if count is None:
            count = os.fstat(fd).st_size - offset
        more = bool(message.get("more_body", False))
        if cycle.disconnected:
            return
        sock = transport.get_extra_info("socket")
        if (
            count <= 0
            or sock is None
            or cycle.chunked_encoding
            or cycle.scope["method"] == "HEAD"
            or count > cycle.expected_content_length
            or transport.get_write_buffer_size()
            or transport.is_closing()
        ):
            await self._through_transport(fd, offset, count, more)
            return
        sender = FileSender(os.dup(sock.fileno()), copy=is_local(sock))
        direct = bool(message.get(DIRECT_READS, False))
        try:
            await in_own_thread(sender.send, fd, offset, count, direct, name="distblob-send")
        except asyncio.CancelledError:
            sender.stop()
            raise
        except ConnectionError:
            cycle.disconnected = True  # as uvicorn's send after a disconnect: nothing to say
            transport.close()
            return
        cycle.expected_content_length -= count
        if not more:
            await self._send({"type": "http.response.body", "body": b"", "more_body": False})

    async def _through_transport(self, fd: int, offset: int, count: int, more: bool) -> None:
        """The ordinary way: read in worker threads, send as body messages."""
        end = offset + max(count, 0)
        while offset < end:
            piece = await anyio.to_thread.run_sync(os.pread, fd, min(BUFFER, end - offset), offset)
            if not piece:
                raise EOFError(f"the file ended {end - offset} bytes early")
            offset += len(piece)
            await self._send({"type": "http.response.body", "body": piece, "more_body": True})
        await self._send({"type": "http.response.body", "body": b"", "more_body": more})


__all__ = [
    "BUFFER",
    "STOP_WAIT",
    "BodyStopped",
    "FileSender",
    "SocketThread",
    "ZeroCopySend",
    "is_local",
    "local_peer",
]
