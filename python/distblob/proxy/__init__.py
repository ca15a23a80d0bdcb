"""A pull-through cache of one upstream registry (distribution's ``registry/proxy``).

:class:`Proxy` bundles what ``create_app`` needs when ``proxy.remoteurl`` is configured: the
upstream client (:mod:`~distblob.proxy.upstream`), the blob and manifest stores
(:mod:`~distblob.proxy.blobs`, :mod:`~distblob.proxy.manifests`) and the TTL scheduler
(:mod:`~distblob.proxy.scheduler`). The app runs :meth:`Proxy.running` in its lifespan: the
schedule is loaded at start, expiries and saves run in the background, and at stop fetches in
flight are cancelled (nothing half-written is kept) and the schedule is saved.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator, Callable
from typing import Final

import anyio
import httpx

from distblob.proxy.blobs import ProxyBlobStore, TransferError
from distblob.proxy.manifests import ProxyManifestStore
from distblob.proxy.scheduler import TTLScheduler
from distblob.proxy.upstream import Upstream, UpstreamAuthError, UpstreamError
from distblob.registry import Registry
from distblob.storage.purge import purge_abandoned_uploads

#: Seconds an unlocked upload's data must have been still before the cache removes it at
#: start (a writer that takes no lock, such as the Go registry, may be writing it).
ABANDONED_AFTER: Final = 60.0


class Proxy:
    """The pull-through cache's parts over one registry."""

    def __init__(
        self,
        registry: Registry,
        remoteurl: str,
        *,
        username: str | None = None,
        password: str | None = None,
        ttl: float = 168 * 3600.0,
        clock: Callable[[], float] = time.time,
        transport: httpx.AsyncBaseTransport | None = None,
        tick: float = 1.0,
    ) -> None:
        registry.resumable_digests = False  # one writer per blob: no state is ever needed
        self.registry = registry
        self.upstream = Upstream(remoteurl, username, password, transport=transport)
        self.scheduler = TTLScheduler(registry, ttl, clock=clock)
        self.blobs = ProxyBlobStore(registry, self.upstream, self.scheduler)
        self.manifests = ProxyManifestStore(registry, self.upstream, self.scheduler)
        self.tick = tick

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


__all__ = [
    "Proxy",
    "ProxyBlobStore",
    "ProxyManifestStore",
    "TTLScheduler",
    "TransferError",
    "Upstream",
    "UpstreamAuthError",
    "UpstreamError",
]
