"""The pull-through cache as a registry: distribution's ``proxyingRegistry``.

:class:`ProxyRegistry` implements :class:`~distblob.interfaces.AsyncRegistry`, the contract the
HTTP layer serves, over a local :class:`~distblob.registry.Registry`: the server is given it
instead of the plain registry once, at start (``create_app``), and its handlers never learn it
is a cache. Reads are served from the local registry and filled from upstream
(:mod:`~distblob.proxy.blobs`, :mod:`~distblob.proxy.manifests`); every write verb raises
``UnsupportedError`` (405 UNSUPPORTED): a cache takes no pushes and no deletes.

:meth:`ProxyRegistry.running` is the cache's lifespan: the TTL schedule
(:mod:`~distblob.proxy.scheduler`) is loaded at start and run in the background, uploads a
killed process left are removed, and at stop fetches in flight are cancelled (nothing
half-written is kept) and the schedule is saved.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, NoReturn, TypeVar

import anyio
import httpx

from distblob.digest import Digest
from distblob.errors import UnsupportedError
from distblob.proxy.blobs import CACHE_WRITE_TIMEOUT, ProxyBlobStore
from distblob.proxy.manifests import ProxyManifestStore
from distblob.proxy.scheduler import TTLScheduler
from distblob.proxy.upstream import Upstream
from distblob.storage.blobs import parse_digest
from distblob.storage.purge import purge_abandoned_uploads

if TYPE_CHECKING:
    from distblob.descriptor import Descriptor
    from distblob.interfaces import (
        AsyncBlobStore,
        AsyncManifestService,
        AsyncRegistry,
        AsyncRepository,
        BlobWriter,
        ServePlan,
    )
    from distblob.registry import Registry, Repository

#: Seconds an unlocked upload's data must have been still before the cache removes it at
#: start (a writer that takes no lock, such as the Go registry, may be writing it).
ABANDONED_AFTER: Final = 60.0


T = TypeVar("T")


def _read_only() -> NoReturn:
    raise UnsupportedError("this registry is a pull-through cache")


class ProxyBlobs:
    """A repository's blobs through the cache (:class:`ProxyBlobStore`); read-only."""

    def __init__(self, store: ProxyBlobStore, repository: Repository) -> None:
        self.store = store
        self.repository = repository

    async def serve_blob(
        self,
        digest: str,
        *,
        method: str = "GET",
        range: str | None = None,
        if_none_match: str | None = None,
    ) -> ServePlan:
        return await self.store.serve(
            self.repository,
            parse_digest(digest),
            method=method,
            range=range,
            if_none_match=if_none_match,
        )

    async def delete(self, digest: str) -> None:
        _read_only()

    async def mount(self, source: str, digest: str) -> Descriptor:
        _read_only()

    async def put(self, data: bytes, *, algorithm: str, expected: Digest) -> Descriptor:
        _read_only()

    async def create(self, *, algorithm: str = "sha256") -> BlobWriter:
        _read_only()

    async def resume(self, upload_id: str, *, wait: float | None = None) -> BlobWriter:
        _read_only()

    async def start(self, *, algorithm: str = "sha256") -> BlobWriter:
        _read_only()

    async def resume_with(
        self,
        upload_id: str,
        work: Callable[[BlobWriter], T],
        *,
        wait: float | None = None,
        after: Callable[[T], object] | None = None,
    ) -> T:
        _read_only()


class ProxyManifests:
    """A repository's manifests and tags through the cache (:class:`ProxyManifestStore`);
    read-only."""

    def __init__(self, store: ProxyManifestStore, repository: Repository) -> None:
        self.store = store
        self.repository = repository

    async def get(self, reference: str) -> tuple[bytes, Descriptor]:
        return await self.store.get(self.repository, reference)

    async def stat(self, reference: str) -> Descriptor:
        return await self.store.stat(self.repository, reference)

    async def put(self, reference: str, body: bytes, media_type: str | None) -> Descriptor:
        _read_only()

    async def delete(self, reference: str) -> None:
        _read_only()

    async def tags(self) -> list[str]:
        return await self.store.tags(self.repository)

    async def referrers(self, digest: str, artifact_type: str | None = None) -> dict[str, Any]:
        return await self.store.referrers(self.repository, digest, artifact_type)


@dataclass(frozen=True, slots=True)
class ProxyRepository:
    """One repository of a :class:`ProxyRegistry`."""

    name: str
    blobs: ProxyBlobs
    manifests: ProxyManifests


class ProxyRegistry:
    """A pull-through cache of the registry at ``remoteurl``, stored in ``registry``.

    The local registry's resumable digests are turned off: the cache is the only writer of its
    uploads, which never resume, so no hash state is ever needed.
    """

    def __init__(
        self,
        registry: Registry,
        remoteurl: str,
        *,
        username: str | None = None,
        password: str | None = None,
        ttl: float = 168 * 3600.0,
        cache_write_timeout: float = CACHE_WRITE_TIMEOUT,
        clock: Callable[[], float] = time.time,
        transport: httpx.AsyncBaseTransport | None = None,
        tick: float = 1.0,
    ) -> None:
        registry.resumable_digests = False
        self.registry = registry
        self.upstream = Upstream(remoteurl, username, password, transport=transport)
        self.scheduler = TTLScheduler(registry, ttl, clock=clock)
        self.blobs = ProxyBlobStore(
            registry, self.upstream, self.scheduler, cache_write_timeout=cache_write_timeout
        )
        self.manifests = ProxyManifestStore(registry, self.upstream, self.scheduler)
        self.tick = tick

    #: A cache takes no pushes and no deletes: the server refuses them first (405), and the
    #: write verbs refuse them too.
    read_only = True

    def repository(self, name: str) -> ProxyRepository:
        repository = self.registry.repository(name)
        return ProxyRepository(
            repository.name,
            ProxyBlobs(self.blobs, repository),
            ProxyManifests(self.manifests, repository),
        )

    async def catalog(self, n: int | None = None, last: str | None = None) -> list[str]:
        """The repositories the cache holds (upstream's catalog is not asked, as in
        distribution)."""
        names: list[str] = await anyio.to_thread.run_sync(self.registry.catalog, n, last)
        return names

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        """Load the schedule, run it in the background, and clean up at the end."""
        await anyio.to_thread.run_sync(self.scheduler.load)
        # A fetch killed with its process (SIGKILL, a crash) left its upload: nothing resumes
        # a cache's uploads, so remove those now rather than after the upload purging age.
        await anyio.to_thread.run_sync(
            lambda: purge_abandoned_uploads(self.registry, idle=ABANDONED_AFTER)
        )
        try:
            async with anyio.create_task_group() as group:
                group.start_soon(self.scheduler.run, self.tick)
                try:
                    yield
                finally:
                    group.cancel_scope.cancel()
        finally:
            with anyio.CancelScope(shield=True):
                await self.blobs.aclose()
                await self.upstream.aclose()
                await anyio.to_thread.run_sync(self.scheduler.save)


if TYPE_CHECKING:
    # Each class satisfies its protocol, checked by mypy (as Go's
    # ``var _ distribution.Namespace = &proxyingRegistry{}``).
    def _implements(
        registry: ProxyRegistry,
        repository: ProxyRepository,
        blobs: ProxyBlobs,
        manifests: ProxyManifests,
    ) -> tuple[AsyncRegistry, AsyncRepository, AsyncBlobStore, AsyncManifestService]:
        return registry, repository, blobs, manifests


__all__ = ["ABANDONED_AFTER", "ProxyBlobs", "ProxyManifests", "ProxyRegistry", "ProxyRepository"]
