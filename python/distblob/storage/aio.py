"""The storage registry as the HTTP layer serves it: every blocking verb in a worker thread.

:class:`ThreadedRegistry` implements :class:`~distblob.interfaces.AsyncRegistry` over a
:class:`~distblob.registry.Registry`: each verb runs the storage layer's own in a worker thread,
so the event loop never waits on a disk or an object store. One verb is more than a thread
call: :meth:`ThreadedBlobs.resume` waits for an upload another writer holds on the event loop,
never in a worker thread, so a slow writer and its waiters cannot take the threads every other
request needs.

On the filesystem driver the verbs run in a :class:`~distblob.storage.workers.WorkerPool` of the
driver's ``maxthreads`` (distribution's bound on the driver's concurrent blocking calls, which Go
applies around each driver call): at most that many storage verbs run at once, each in one
worker thread, apart from the threads the server gives everything else. The pool's hand-off is
a fraction of anyio's, which on a local disk costs as much as a small verb's work. On other
drivers the verbs use anyio's worker threads and default limiter, as before.

A verb may leave work for after its answer (:meth:`ThreadedBlobs.resume_with`'s ``after``):
the pool's thread does it once it has handed the result back; with anyio's threads it goes to
another thread in the background. The registry's :meth:`ThreadedRegistry.running` waits for
such work when the server stops.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, TypeVar

import anyio

from distblob.descriptor import Descriptor
from distblob.digest import Digest
from distblob.errors import BlobUploadBusyError
from distblob.interfaces import (
    AsyncBlobStore,
    AsyncManifestService,
    AsyncRegistry,
    AsyncRepository,
    BlobStore,
    ServePlan,
)
from distblob.interfaces import BlobWriter as BlobWriterProtocol
from distblob.storage.uploadlock import LOCK_WAIT
from distblob.storage.workers import WorkerPool
from distblob.storage.writer import BlobWriter

if TYPE_CHECKING:
    from distblob.registry import Registry
    from distblob.storage.linked import LinkedBlobStore
    from distblob.storage.manifests import ManifestStore

T = TypeVar("T")

logger = logging.getLogger("distblob.storage")


#: How long a stopping server waits for the work storage verbs left for after their answers.
SETTLE_TIMEOUT: Final = 30.0


class _Threads:
    """Runs storage verbs in the threads of ``pool`` when one is given, else in anyio's."""

    def __init__(self, pool: WorkerPool | None = None) -> None:
        self.pool = pool
        self._background: set[asyncio.Task[Any]] = set()

    async def __call__(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        call = functools.partial(fn, *args, **kwargs)
        if self.pool is not None:
            return await self.pool.run(call)
        return await anyio.to_thread.run_sync(call)

    async def then(self, fn: Callable[[], T], after: Callable[[T], object]) -> T:
        """``fn()`` in a worker thread, and ``after(fn())`` once the result is handed back: in
        the same thread with a pool (no second hand-off), else in another one."""
        if self.pool is not None:
            return await self.pool.run(fn, after)
        result = await anyio.to_thread.run_sync(fn)
        task = asyncio.get_running_loop().create_task(anyio.to_thread.run_sync(after, result))
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        return result

    async def settle(self, timeout: float) -> None:
        """Wait (up to ``timeout`` seconds) for the work left for after answers."""
        with anyio.move_on_after(timeout):
            if self.pool is not None:
                await self.pool.idle(timeout)
            while self._background:
                await asyncio.wait(set(self._background))


@dataclass(frozen=True, slots=True)
class _Busy:
    """Another writer holds the upload (the resume's ``BlobUploadBusyError``)."""

    error: BlobUploadBusyError


def _writer(writer: BlobWriter) -> BlobWriter:
    return writer


def _unless_busy(after: Callable[[T], object], outcome: T | _Busy) -> None:
    """``after`` for a result, none for a busy upload; its errors logged."""
    if isinstance(outcome, _Busy):
        return
    try:
        after(outcome)
    except Exception:
        logger.exception("work left for after an answer failed")


class ThreadedBlobs:
    """A repository's blobs (:class:`~distblob.storage.linked.LinkedBlobStore`), async."""

    def __init__(self, blobs: LinkedBlobStore, run: _Threads | None = None) -> None:
        self.store = blobs
        self._run = run or _Threads()

    async def serve_blob(
        self,
        digest: str,
        *,
        method: str = "GET",
        range: str | None = None,
        if_none_match: str | None = None,
    ) -> ServePlan:
        return await self._run(
            self.store.serve_blob, digest, method=method, range=range, if_none_match=if_none_match
        )

    async def delete(self, digest: str) -> None:
        await self._run(self.store.delete, digest)

    async def mount(self, source: str, digest: str) -> Descriptor:
        return await self._run(self.store.mount, source, digest)

    async def put(self, data: bytes, *, algorithm: str, expected: Digest) -> Descriptor:
        return await self._run(self._put, data, algorithm, expected)

    def _put(self, data: bytes, algorithm: str, expected: Digest) -> Descriptor:
        """Hashed once, straight into place, when ``expected`` is a digest of ``algorithm``;
        otherwise through an upload, whose commit links the other algorithm's digest."""
        if expected.algorithm == algorithm:
            return self.store.put(data, algorithm=algorithm, expected=expected)
        writer = self.store.create(algorithm=algorithm)
        try:
            writer.write(data)
            return writer.commit(Descriptor(digest=expected))
        except BaseException:
            writer.cancel()
            raise

    async def create(self, *, algorithm: str = "sha256") -> BlobWriter:
        return await self._run(self.store.create, algorithm=algorithm)

    async def resume(self, upload_id: str, *, wait: float | None = None) -> BlobWriter:
        """Resume the upload; while another writer holds it, ask again (at growing intervals)
        until ``wait`` seconds (``LOCK_WAIT`` by default) have passed."""
        return await self.resume_with(upload_id, _writer, wait=wait)

    async def start(self, *, algorithm: str = "sha256") -> BlobWriter:
        """Create the upload and close it, in one worker-thread call."""
        return await self._run(self._start, algorithm)

    def _start(self, algorithm: str) -> BlobWriter:
        writer = self.store.create(algorithm=algorithm)
        writer.close()
        return writer

    async def resume_with(
        self,
        upload_id: str,
        work: Callable[[BlobWriter], T],
        *,
        wait: float | None = None,
        after: Callable[[T], object] | None = None,
    ) -> T:
        """Resume the upload and run ``work`` with its writer, in one worker-thread call; while
        another writer holds the upload, ask again (at growing intervals, on the event loop)
        until ``wait`` seconds (``LOCK_WAIT`` by default) have passed. Only the resume is
        retried: a ``BlobUploadBusyError`` that ``work`` raises is its answer. ``after`` runs
        with ``work``'s result once it is handed back, the caller not waiting for it (errors
        are logged)."""
        deadline = time.monotonic() + (LOCK_WAIT if wait is None else wait)
        pause = 0.005
        while True:
            attempt = functools.partial(self._resume_with, upload_id, work)
            outcome: T | _Busy
            if after is None:
                outcome = await self._run(attempt)
            else:
                outcome = await self._run.then(attempt, functools.partial(_unless_busy, after))
            if not isinstance(outcome, _Busy):
                return outcome
            if time.monotonic() >= deadline:
                raise outcome.error
            await anyio.sleep(pause)
            pause = min(pause * 2, 0.1)

    def _resume_with(self, upload_id: str, work: Callable[[BlobWriter], T]) -> T | _Busy:
        try:
            writer = self.store.resume(upload_id, wait=0)
        except BlobUploadBusyError as error:
            return _Busy(error)
        return work(writer)


class ThreadedManifests:
    """A repository's manifests and tags (:class:`~distblob.storage.manifests.ManifestStore`),
    async."""

    def __init__(self, manifests: ManifestStore, run: _Threads | None = None) -> None:
        self.store = manifests
        self._run = run or _Threads()

    async def get(self, reference: str) -> tuple[bytes, Descriptor]:
        return await self._run(self.store.get, reference)

    async def stat(self, reference: str) -> Descriptor:
        return await self._run(self.store.stat, reference)

    async def put(self, reference: str, body: bytes, media_type: str | None) -> Descriptor:
        return await self._run(self.store.put, reference, body, media_type)

    async def delete(self, reference: str) -> None:
        await self._run(self.store.delete, reference)

    async def tags(self) -> list[str]:
        return await self._run(self.store.tags)

    async def referrers(self, digest: str, artifact_type: str | None = None) -> dict[str, Any]:
        return await self._run(self.store.referrers, digest, artifact_type)


@dataclass(frozen=True, slots=True)
class ThreadedRepository:
    """One repository of a :class:`ThreadedRegistry`."""

    name: str
    blobs: ThreadedBlobs
    manifests: ThreadedManifests


class ThreadedRegistry:
    """A storage :class:`~distblob.registry.Registry` as the HTTP layer serves it."""

    #: Writes are the storage's to refuse (deletes may be disabled), one by one.
    read_only = False

    def __init__(self, registry: Registry) -> None:
        self.registry = registry
        maxthreads = getattr(registry.driver, "maxthreads", None)
        #: The threads of the storage verbs, as many at once as the filesystem driver's
        #: ``maxthreads``; ``None`` (anyio's threads and default limiter) on other drivers.
        self.pool = WorkerPool(maxthreads) if isinstance(maxthreads, int) else None
        self._run = _Threads(self.pool)

    def repository(self, name: str) -> ThreadedRepository:
        repository = self.registry.repository(name)
        return ThreadedRepository(
            repository.name,
            ThreadedBlobs(repository.blobs, self._run),
            ThreadedManifests(repository.manifests, self._run),
        )

    async def catalog(self, n: int | None = None, last: str | None = None) -> list[str]:
        return await self._run(self.registry.catalog, n, last)

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        """Nothing runs in the background of a plain registry (the server runs purging); when
        it stops, the work verbs left for after their answers is waited for."""
        try:
            yield
        finally:
            await self._run.settle(SETTLE_TIMEOUT)


if TYPE_CHECKING:
    # Each implementation satisfies its protocol, checked by mypy (as Go's
    # ``var _ distribution.BlobStore = &linkedBlobStore{}``).
    def _implements(
        registry: ThreadedRegistry,
        repository: ThreadedRepository,
        blobs: ThreadedBlobs,
        manifests: ThreadedManifests,
        store: LinkedBlobStore,
        writer: BlobWriter,
    ) -> tuple[
        AsyncRegistry,
        AsyncRepository,
        AsyncBlobStore,
        AsyncManifestService,
        BlobStore,
        BlobWriterProtocol,
    ]:
        return registry, repository, blobs, manifests, store, writer


__all__ = ["ThreadedBlobs", "ThreadedManifests", "ThreadedRegistry", "ThreadedRepository"]
