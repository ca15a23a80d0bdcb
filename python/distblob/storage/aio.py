"""The storage registry as the HTTP layer serves it: every blocking verb in a worker thread.

:class:`ThreadedRegistry` implements :class:`~distblob.interfaces.AsyncRegistry` over a
:class:`~distblob.registry.Registry`: each verb runs the storage layer's own in a worker thread
(``anyio.to_thread``), so the event loop never waits on a disk or an object store. One verb is
more than a thread call: :meth:`ThreadedBlobs.resume` waits for an upload another writer holds
on the event loop, never in a worker thread, so a slow writer and its waiters cannot take the
threads every other request needs.
"""

from __future__ import annotations

import contextlib
import functools
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

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
from distblob.storage.writer import BlobWriter

if TYPE_CHECKING:
    from distblob.registry import Registry
    from distblob.storage.linked import LinkedBlobStore
    from distblob.storage.manifests import ManifestStore

T = TypeVar("T")


async def _run(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    return await anyio.to_thread.run_sync(functools.partial(fn, *args, **kwargs))


class ThreadedBlobs:
    """A repository's blobs (:class:`~distblob.storage.linked.LinkedBlobStore`), async."""

    def __init__(self, blobs: LinkedBlobStore) -> None:
        self.store = blobs

    async def serve_blob(
        self,
        digest: str,
        *,
        method: str = "GET",
        range: str | None = None,
        if_none_match: str | None = None,
    ) -> ServePlan:
        return await _run(
            self.store.serve_blob, digest, method=method, range=range, if_none_match=if_none_match
        )

    async def delete(self, digest: str) -> None:
        await _run(self.store.delete, digest)

    async def mount(self, source: str, digest: str) -> Descriptor:
        return await _run(self.store.mount, source, digest)

    async def put(self, data: bytes, *, algorithm: str, expected: Digest) -> Descriptor:
        return await _run(self._put, data, algorithm, expected)

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
        return await _run(self.store.create, algorithm=algorithm)

    async def resume(self, upload_id: str, *, wait: float | None = None) -> BlobWriter:
        """Resume the upload; while another writer holds it, ask again (at growing intervals)
        until ``wait`` seconds (``LOCK_WAIT`` by default) have passed."""
        deadline = time.monotonic() + (LOCK_WAIT if wait is None else wait)
        pause = 0.005
        while True:
            try:
                return await _run(self.store.resume, upload_id, wait=0)
            except BlobUploadBusyError:
                if time.monotonic() >= deadline:
                    raise
            await anyio.sleep(pause)
            pause = min(pause * 2, 0.1)


class ThreadedManifests:
    """A repository's manifests and tags (:class:`~distblob.storage.manifests.ManifestStore`),
    async."""

    def __init__(self, manifests: ManifestStore) -> None:
        self.store = manifests

    async def get(self, reference: str) -> tuple[bytes, Descriptor]:
        return await _run(self.store.get, reference)

    async def stat(self, reference: str) -> Descriptor:
        return await _run(self.store.stat, reference)

    async def put(self, reference: str, body: bytes, media_type: str | None) -> Descriptor:
        return await _run(self.store.put, reference, body, media_type)

    async def delete(self, reference: str) -> None:
        await _run(self.store.delete, reference)

    async def tags(self) -> list[str]:
        return await _run(self.store.tags)

    async def referrers(self, digest: str, artifact_type: str | None = None) -> dict[str, Any]:
        return await _run(self.store.referrers, digest, artifact_type)


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

    def repository(self, name: str) -> ThreadedRepository:
        repository = self.registry.repository(name)
        return ThreadedRepository(
            repository.name,
            ThreadedBlobs(repository.blobs),
            ThreadedManifests(repository.manifests),
        )

    async def catalog(self, n: int | None = None, last: str | None = None) -> list[str]:
        return await _run(self.registry.catalog, n, last)

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        """Nothing runs in the background of a plain registry (the server runs purging)."""
        yield


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
