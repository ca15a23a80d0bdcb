"""An endpoint's queue of events on disk: delivered at least once, in order, across restarts
and crashes (distribution keeps it in memory and loses it on restart).

One directory per endpoint holds segment files named by the sequence number of their first
event (``00000000000000000042.log``) and a ``cursor`` file, the number of the next event to
deliver. A record is ``length`` and ``crc32`` (4 bytes each, big-endian) and the event's JSON.
An append is one ``write`` to the newest segment (opened ``O_APPEND``): once the request that
made the event is answered, the event survives the process being killed; :meth:`Journal.sync`
(``fdatasync``, called by the sender at least every second and at every segment's end) makes
it survive the machine too. A record cut short by a crash fails its length or checksum and is
cut off when the journal is opened: the events before it are kept, and nothing after it was
acknowledged to anyone.

Delivery moves the cursor (written to a temporary file and renamed over it); a crash between a
delivery and the cursor's rename sends that event again, the at-least-once in the name. Whole
segments behind the cursor are removed (compaction). The journal is bounded: past
``max_events`` waiting, the oldest are dropped, with a warning that says how many.

One process owns an endpoint's directory (``flock`` on ``lock``); another process on the same
root gets :class:`JournalBusyError` and keeps its events in memory instead.
"""

from __future__ import annotations

import fcntl
import logging
import os
import struct
import threading
import zlib
from collections import deque
from pathlib import Path
from typing import Final, Protocol

logger = logging.getLogger("distblob.notifications")

_HEADER: Final = struct.Struct(">II")
_SUFFIX: Final = ".log"
#: A segment is closed and a new one begun past this many bytes.
SEGMENT_BYTES: Final = 1 << 20
#: Events waiting for one endpoint before the oldest are dropped.
MAX_EVENTS: Final = 100_000
#: The largest record read back; anything longer is a torn or foreign record.
_MAX_RECORD: Final = 16 << 20


class JournalBusyError(OSError):
    """Another process holds the endpoint's journal."""


class Queue(Protocol):
    """What the sender needs of a queue: the journal, or :class:`MemoryQueue`."""

    def append(self, payload: bytes) -> None: ...
    def read(self, limit: int) -> list[tuple[int, bytes]]: ...
    def ack(self, seq: int) -> None: ...
    def sync(self) -> None: ...
    def close(self) -> None: ...
    @property
    def pending(self) -> int: ...


class _Drops:
    """Counts the events dropped past the bound, warning at the first and every 1000th, so
    an endpoint down for long does not flood the log."""

    def __init__(self, name: str, limit: int) -> None:
        self.name = name
        self.limit = limit
        self.total = 0

    def add(self, count: int) -> None:
        before, self.total = self.total, self.total + count
        if before == 0 or before // 1000 != self.total // 1000:
            logger.warning(
                "notifications: endpoint %s: more than %d events waiting: the oldest dropped, "
                "%d so far; they will never be delivered",
                self.name,
                self.limit,
                self.total,
            )


class MemoryQueue:
    """Events in memory (storage that is not a local filesystem, or a journal another process
    holds): lost on restart, as in distribution, and bounded like the journal."""

    def __init__(self, name: str, *, max_events: int = MAX_EVENTS) -> None:
        self.name = name
        self.max_events = max_events
        self._events: deque[tuple[int, bytes]] = deque()
        self._next = 0
        self._lock = threading.Lock()
        self.drops = _Drops(name, max_events)

    def append(self, payload: bytes) -> None:
        with self._lock:
            self._events.append((self._next, payload))
            self._next += 1
            excess = len(self._events) - self.max_events
            for _ in range(max(excess, 0)):
                self._events.popleft()
        if excess > 0:
            self.drops.add(excess)

    def read(self, limit: int) -> list[tuple[int, bytes]]:
        with self._lock:
            return [self._events[i] for i in range(min(limit, len(self._events)))]

    def ack(self, seq: int) -> None:
        with self._lock:
            while self._events and self._events[0][0] <= seq:
                self._events.popleft()

    def sync(self) -> None:
        pass

    def close(self) -> None:
        pass

    @property
    def pending(self) -> int:
        return len(self._events)


def _scan(path: Path) -> tuple[list[int], int]:
    """The offsets of the whole records of a segment, and where the last one ends."""
    data = path.read_bytes()
    offsets: list[int] = []
    at = 0
    while at + _HEADER.size <= len(data):
        length, crc = _HEADER.unpack_from(data, at)
        end = at + _HEADER.size + length
        if length > _MAX_RECORD or end > len(data):
            break
        if zlib.crc32(data[at + _HEADER.size : end]) != crc:
            break
        offsets.append(at)
        at = end
    return offsets, at


class Journal:
    """An endpoint's events on disk in ``directory`` (see the module's docstring).

    Thread-safe: handlers append on the event loop, the sender reads and acknowledges from
    worker threads.
    """

    def __init__(
        self,
        directory: str | os.PathLike[str],
        name: str = "",
        *,
        max_events: int = MAX_EVENTS,
        segment_bytes: int = SEGMENT_BYTES,
    ) -> None:
        self.directory = Path(directory)
        self.name = name or self.directory.name
        self.max_events = max_events
        self.segment_bytes = segment_bytes
        self._lock = threading.Lock()
        self.drops = _Drops(self.name, max_events)
        self.directory.mkdir(parents=True, exist_ok=True)
        self._lockfd = os.open(self.directory / "lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(self._lockfd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self._lockfd)
            raise JournalBusyError(f"{self.directory} is in use by another process") from None
        #: Each segment's first sequence number and the offsets of its records.
        self._segments: dict[int, list[int]] = {}
        self._cursor = self._read_cursor()
        self._open_segments()
        first = max(self._segments)
        self._next = first + len(self._segments[first])
        self._cursor = min(max(self._cursor, min(self._segments)), self._next)
        self._fd = os.open(self._path(first), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        self._size = os.fstat(self._fd).st_size
        self._dirty = False
        self._compact()

    # -- opening ------------------------------------------------------------------------------

    def _path(self, first: int) -> Path:
        return self.directory / f"{first:020d}{_SUFFIX}"

    def _read_cursor(self) -> int:
        try:
            text = (self.directory / "cursor").read_text().strip()
        except FileNotFoundError:
            return 0
        return int(text) if text.isdigit() else 0

    def _open_segments(self) -> None:
        """Index every segment; a torn record ends its segment (the newest one is cut there,
        so appends go on after the last whole record)."""
        names = sorted(p for p in self.directory.glob(f"*{_SUFFIX}") if p.stem.isdigit())
        for index, path in enumerate(names):
            offsets, end = _scan(path)
            size = path.stat().st_size
            if end < size:
                logger.warning(
                    "notifications: endpoint %s: %s ends in %d bytes of a record cut short "
                    "(a crash while it was written): skipped",
                    self.name,
                    path.name,
                    size - end,
                )
                if index == len(names) - 1:
                    os.truncate(path, end)
            self._segments[int(path.stem)] = offsets
        if not self._segments:
            self._segments[self._cursor] = []
            self._path(self._cursor).touch()

    # -- the queue ----------------------------------------------------------------------------

    def append(self, payload: bytes) -> None:
        """Add an event at the end: one ``write``, so a kill leaves it whole or cut short."""
        record = _HEADER.pack(len(payload), zlib.crc32(payload)) + payload
        with self._lock:
            if self._size >= self.segment_bytes:
                self._rotate()
            os.write(self._fd, record)
            self._segments[max(self._segments)].append(self._size)
            self._size += len(record)
            self._next += 1
            self._dirty = True
            excess = self._next - self._cursor - self.max_events
            if excess > 0:
                self._cursor += excess
                self._write_cursor()
                self._compact()
        if excess > 0:
            self.drops.add(excess)

    def _rotate(self) -> None:
        os.fdatasync(self._fd)
        os.close(self._fd)
        self._segments[self._next] = []
        self._fd = os.open(self._path(self._next), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        self._size = 0
        self._sync_directory()

    def read(self, limit: int) -> list[tuple[int, bytes]]:
        """Up to ``limit`` events from the cursor on, each with its sequence number."""
        with self._lock:
            seq = self._cursor
            found: list[tuple[int, int, int]] = []  # (seq, segment, offset)
            for first in sorted(self._segments):
                offsets = self._segments[first]
                while len(found) < limit and first <= seq < first + len(offsets):
                    found.append((seq, first, offsets[seq - first]))
                    seq += 1
        events: list[tuple[int, bytes]] = []
        handles: dict[int, int] = {}
        try:
            for seq, first, offset in found:
                if first not in handles:
                    handles[first] = os.open(self._path(first), os.O_RDONLY)
                header = os.pread(handles[first], _HEADER.size, offset)
                length, _ = _HEADER.unpack(header)
                events.append((seq, os.pread(handles[first], length, offset + _HEADER.size)))
        except FileNotFoundError:
            pass  # compacted meanwhile (dropped past the bound): the next read starts later
        finally:
            for fd in handles.values():
                os.close(fd)
        return events

    def ack(self, seq: int) -> None:
        """Event ``seq`` (and every one before it) was delivered."""
        with self._lock:
            if seq < self._cursor:
                return
            self._cursor = seq + 1
            self._write_cursor()
            self._compact()

    def _write_cursor(self) -> None:
        temporary = self.directory / "cursor.tmp"
        temporary.write_text(f"{self._cursor}\n")
        os.replace(temporary, self.directory / "cursor")

    def _compact(self) -> None:
        """Remove the segments every event of which is behind the cursor (not the newest)."""
        newest = max(self._segments)
        for first in sorted(self._segments):
            if first == newest or first + len(self._segments[first]) > self._cursor:
                break
            del self._segments[first]
            self._path(first).unlink(missing_ok=True)

    def sync(self) -> None:
        """``fdatasync`` the newest segment if anything was appended since the last sync."""
        with self._lock:
            if not self._dirty:
                return
            self._dirty = False
            fd = os.dup(self._fd)  # synced outside the lock: appends on the event loop go on
        try:
            os.fdatasync(fd)
        finally:
            os.close(fd)

    def _sync_directory(self) -> None:
        fd = os.open(self.directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def close(self) -> None:
        with self._lock:
            os.fdatasync(self._fd)
            os.close(self._fd)
            os.close(self._lockfd)

    @property
    def pending(self) -> int:
        """Events not yet delivered."""
        return self._next - self._cursor


__all__ = ["MAX_EVENTS", "SEGMENT_BYTES", "Journal", "JournalBusyError", "MemoryQueue", "Queue"]
