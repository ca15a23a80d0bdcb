"""One writer at a time per upload.

Two requests writing one upload at once (a client that retries a PATCH whose answer it did not
wait for, or a hostile one) would each resume at the same size and write over each other: the
data would then hold one body while the saved hash state describes the other, and a commit
that trusts the state (which is what resumable hashing is for) would store bytes under a digest
they do not have. distribution has no guard against this; distblob lets one
:class:`~distblob.storage.writer.BlobWriter` at a time hold an upload, from ``create`` or
``resume`` until it is closed, committed or cancelled. A second one waits for the first (up to
:data:`LOCK_WAIT` seconds) and then reads the size the first left, so a request carrying a stale
offset is refused instead of writing.

On a local filesystem the lock is ``flock`` on the upload's ``startedat`` file, which every
upload has (the Go registry's too), is never moved and goes with the upload's directory: it
holds across processes, so several ``distblob serve`` on one root take turns. Other drivers
(in memory, S3) lock within the process, and on an object store shared by replicas, with a
lease in Redis when one is configured (:mod:`~distblob.storage.leases`); without one, the
object store's own checks keep racing writers from poisoning an upload, but both may be
answered as if they had written (:mod:`~distblob.storage.driver.s3`).
"""

from __future__ import annotations

import fcntl
import logging
import os
import threading
import time
import weakref
from typing import Final

from distblob.errors import BlobUploadBusyError, PathNotFoundError
from distblob.storage.driver import StorageDriver
from distblob.storage.leases import Lease, LeaseUnavailableError, RedisUploadLeases

#: How long a writer waits for another one to let go of the upload before giving up.
LOCK_WAIT: Final = 10.0


class UploadLock:
    """A held lock on one upload; :meth:`release` is idempotent."""

    @property
    def lost(self) -> bool:
        """Whether the lock was taken from this holder (a lease that expired while it stalled):
        it must then keep nothing it wrote."""
        return False

    def release(self) -> None:
        raise NotImplementedError


class _Unlocked(UploadLock):
    def release(self) -> None:
        pass


_warned = False
logger = logging.getLogger("distblob.storage")


class _FileLock(UploadLock):
    def __init__(self, fd: int) -> None:
        self._fd: int | None = fd

    def release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)  # closing the last descriptor of the open file drops the flock

    def __del__(self) -> None:
        self.release()


class _Mutex:
    __slots__ = ("__weakref__", "lock")

    def __init__(self) -> None:
        self.lock = threading.Lock()


_mutexes: weakref.WeakValueDictionary[tuple[int, str], _Mutex] = weakref.WeakValueDictionary()
_mutexes_guard = threading.Lock()


class _ThreadLock(UploadLock):
    def __init__(self, mutex: _Mutex) -> None:
        self._mutex: _Mutex | None = mutex  # held strongly while locked

    def release(self) -> None:
        mutex, self._mutex = self._mutex, None
        if mutex is not None:
            mutex.lock.release()

    def __del__(self) -> None:
        self.release()


class _LeasedLock(UploadLock):
    """The in-process lock and a Redis lease, held together."""

    def __init__(self, inner: UploadLock, lease: Lease) -> None:
        self._inner = inner
        self._lease = lease

    @property
    def lost(self) -> bool:
        return self._lease.lost

    def release(self) -> None:
        try:
            self._lease.release()
        finally:
            self._inner.release()


def _lease(
    leases: RedisUploadLeases, path: str, upload_id: str, inner: UploadLock, deadline: float
) -> UploadLock:
    """Add the lease on the upload to ``inner`` (released with it), waiting until ``deadline``
    for another holder; without Redis, ``inner`` alone."""
    pause = 0.005
    try:
        while True:
            try:
                lease = leases.try_acquire(path)
            except LeaseUnavailableError:
                return inner
            if lease is not None:
                return _LeasedLock(inner, lease)
            if time.monotonic() >= deadline:
                raise _busy(upload_id)
            time.sleep(pause)
            pause = min(pause * 2, 0.1)
    except BaseException:
        inner.release()
        raise


def _busy(upload_id: str) -> BlobUploadBusyError:
    return BlobUploadBusyError(f"upload {upload_id}: another request is writing it")


def lock_upload(
    driver: StorageDriver,
    started_at_path: str,
    upload_id: str,
    *,
    wait: float | None = None,
    leases: RedisUploadLeases | None = None,
) -> UploadLock:
    """Take the upload whose ``startedat`` is at driver path ``started_at_path``.

    ``PathNotFoundError`` when the upload does not exist (locally), ``BlobUploadBusyError``
    (a ``BlobUploadInvalidError``) when another writer still holds it after ``wait`` seconds
    (:data:`LOCK_WAIT` by default; ``0`` does not wait). With ``leases``, a driver without
    local files also takes the upload's lease, so writers on other replicas wait too.
    """
    wait = LOCK_WAIT if wait is None else wait
    deadline = time.monotonic() + wait
    local = driver.local_path(started_at_path)
    if local is None:
        with _mutexes_guard:
            mutex = _mutexes.get((id(driver), started_at_path))
            if mutex is None:
                mutex = _mutexes[(id(driver), started_at_path)] = _Mutex()
        if not mutex.lock.acquire(timeout=max(wait, 0.0)):
            raise _busy(upload_id)
        if leases is None:
            return _ThreadLock(mutex)
        return _lease(leases, started_at_path, upload_id, _ThreadLock(mutex), deadline)
    try:
        fd = os.open(local, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        raise PathNotFoundError(started_at_path) from None
    pause = 0.002
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return _FileLock(fd)
        except BlockingIOError:
            if time.monotonic() >= deadline:
                os.close(fd)
                raise _busy(upload_id) from None
        except OSError as exc:
            # A filesystem without flock (some network mounts): go on unlocked, as distribution
            # always does, rather than fail every upload.
            os.close(fd)
            global _warned
            if not _warned:
                _warned = True
                logger.warning("uploads are not locked: flock failed on %s (%s)", local, exc)
            return _Unlocked()
        except BaseException:
            os.close(fd)
            raise
        time.sleep(pause)
        pause = min(pause * 2, 0.05)


__all__ = ["LOCK_WAIT", "UploadLock", "lock_upload"]
