"""A storage driver that fails on purpose: ENOSPC, EIO and the like at chosen points.

:class:`FaultyDriver` wraps any driver and delegates everything to it, except that an armed
fault makes one kind of operation raise the ``OSError`` a full or failing disk raises:

- ``"put_content"``: small files (hash states, links, ``startedat``) are not written;
- ``"write"``: an upload writer's ``write`` stores the first half of the buffer (as a disk that
  fills up mid-write does) and then raises;
- ``"move"``: a commit's move into ``blobs/`` fails before anything moves.

``arm(op, errno, after=n)`` lets ``n`` calls of ``op`` through, then fails every later one
until :meth:`FaultyDriver.clear`. The wrapper offers no local paths, so the native engine
writes through it too (its streaming path) and the faults reach both engines.
"""

from __future__ import annotations

import builtins
import errno as errno_module
import os
import threading
from collections.abc import Iterator
from typing import TYPE_CHECKING, BinaryIO

from distblob.storage.driver import FileInfo, FileWriter, StorageDriver

if TYPE_CHECKING:
    from _typeshed import ReadableBuffer

OPERATIONS = ("put_content", "write", "move")


class FaultyDriver(StorageDriver):
    """Delegates to ``inner``; armed operations raise ``OSError(errno)``."""

    def __init__(self, inner: StorageDriver) -> None:
        self.inner = inner
        self._lock = threading.Lock()
        self._armed: dict[str, tuple[int, int]] = {}  # op -> (errno, calls still let through)
        self.failures: dict[str, int] = dict.fromkeys(OPERATIONS, 0)

    def arm(self, op: str, err: int = errno_module.ENOSPC, *, after: int = 0) -> None:
        if op not in OPERATIONS:
            raise ValueError(op)
        with self._lock:
            self._armed[op] = (err, after)

    def clear(self) -> None:
        with self._lock:
            self._armed.clear()

    def _should_fail(self, op: str) -> int | None:
        with self._lock:
            if op not in self._armed:
                return None
            err, left = self._armed[op]
            if left > 0:
                self._armed[op] = (err, left - 1)
                return None
            self.failures[op] += 1
            return err

    def _maybe_fail(self, op: str, path: str) -> None:
        err = self._should_fail(op)
        if err is not None:
            raise OSError(err, os.strerror(err), path)

    # -- delegation ----------------------------------------------------------------------------

    def _get_content(self, path: str) -> bytes:
        return self.inner.get_content(path)

    def _put_content(self, path: str, data: ReadableBuffer, *, fsync: bool) -> None:
        self._maybe_fail("put_content", path)
        self.inner.put_content(path, data, fsync=fsync)

    def _reader(self, path: str, offset: int) -> BinaryIO:
        return self.inner.reader(path, offset)

    def _writer(self, path: str, *, append: bool) -> FileWriter:
        return _FaultyWriter(self, path, self.inner.writer(path, append=append))

    def _stat(self, path: str) -> FileInfo:
        return self.inner.stat(path)

    def _list(self, path: str) -> builtins.list[str]:
        return self.inner.list(path)

    def _move(self, src: str, dst: str, *, fsync: bool) -> None:
        self._maybe_fail("move", dst)
        self.inner.move(src, dst, fsync=fsync)

    def _delete(self, path: str) -> None:
        self.inner.delete(path)

    def _walk(self, path: str) -> Iterator[FileInfo]:
        return self.inner.walk(path)

    def _sync(self) -> None:
        self.inner.sync()


class _FaultyWriter(FileWriter):
    def __init__(self, driver: FaultyDriver, path: str, inner: FileWriter) -> None:
        self._driver = driver
        self._path = path
        self._inner = inner

    def write(self, data: ReadableBuffer) -> int:
        err = self._driver._should_fail("write")
        if err is None:
            return self._inner.write(data)
        view = memoryview(data).cast("B")
        self._inner.write(view[: view.nbytes // 2])
        self._inner.flush()
        raise OSError(err, os.strerror(err), self._path)

    @property
    def size(self) -> int:
        return self._inner.size

    def flush(self) -> None:
        self._inner.flush()

    def close(self) -> None:
        self._inner.close()

    def cancel(self) -> None:
        self._inner.cancel()

    def commit(self, *, fsync: bool = False) -> None:
        self._inner.commit(fsync=fsync)


__all__ = ["OPERATIONS", "FaultyDriver"]
