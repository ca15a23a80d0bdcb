"""The pull-through cache's blobs: distribution's ``proxyBlobStore``, with shared cold fetches.

- A blob the repository links is served locally (Range, If-None-Match and all).
- A cold blob is fetched by one background task per ``(repository, digest)``: one upstream GET,
  whose body one worker thread reads into a reused buffer and writes into one local
  :class:`~distblob.storage.writer.BlobWriter` (no resumable states; the bytes go to disk and
  into the hash in one native call), then commits with its digest and size verified; the blob
  is then scheduled for expiry. The event loop only hears of the progress. Every client asking
  for it meanwhile (the first one included) is given a plan whose body is the :class:`Fetch`
  itself (a :class:`~distblob.interfaces.GrowingRegion`): its response streams the growing
  upload file as the bytes land, so ten concurrent cold GETs cost one upstream GET and one
  local write (distribution #1334).
- A client never receives the last byte before the commit verified the digest: if the upstream
  body is short, long or wrong, nothing is cached and every response is aborted mid-body (the
  connection is dropped), so no client takes bad bytes for a complete blob.
- A copy into the cache that takes longer than ``proxy.cachewritetimeout`` (distribution 3's,
  5 minutes by default; timed from the upload's creation) is abandoned: the upstream read is
  interrupted, the upload cancelled, nothing stored, and every client streaming it is cut as for
  an upstream failure. Once every byte is in and verified, the commit under way is let finish.
- HEAD on a cold blob asks upstream with HEAD only; a blob already stored for another
  repository is linked after an upstream HEAD confirms this repository has it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import threading
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Final

import anyio
import httpx
import urllib3

from distblob import _observe
from distblob._numbers import is_ascii_digits
from distblob.descriptor import DEFAULT_MEDIA_TYPE, Descriptor
from distblob.digest import Digest
from distblob.errors import BlobUnknownError, DistblobError, TransferError, UpstreamAuthError
from distblob.interfaces import GrowingRegion, ServePlan
from distblob.proxy.upstream import Upstream, in_own_thread, unexpected_status

if TYPE_CHECKING:
    from distblob.proxy.scheduler import TTLScheduler
    from distblob.registry import Registry, Repository
    from distblob.storage.writer import BlobWriter

#: Bytes per local write.
CHUNK: Final = 1 << 20
#: Seconds a shutdown waits for an interrupted fetch to remove its upload.
INTERRUPT_WAIT: Final = 5.0
#: ``proxy.cachewritetimeout``'s default (distribution 3's): seconds a cold blob's copy may take.
CACHE_WRITE_TIMEOUT: Final = 300.0

logger = logging.getLogger("distblob.proxy")


class Fetch:
    """One cold blob on its way from upstream: progress shared by every client waiting on it."""

    def __init__(self, name: str, digest: Digest) -> None:
        self.name = name
        self.digest = digest
        self.ready = asyncio.Event()  # headers known and upload file created, or failed
        self.done = asyncio.Event()  # committed (error is None) or failed
        self.size: int | None = None
        self.media_type = DEFAULT_MEDIA_TYPE
        self.upload_path: str | None = None  # the upload's local file while it grows
        self.blob_path: str | None = None  # the blob's local file once committed
        self.written = 0
        #: Every byte received and its digest checked: clients may have the last byte, while
        #: the commit (making the copy durable, moving and linking it) goes on.
        self.verified = False
        self.error: BaseException | None = None
        self._changed = asyncio.Event()
        #: Set (from the loop) to make the receiving thread stop; with the response, which
        #: ``shutdown()`` interrupts mid-read.
        self.stop = threading.Event()
        #: Why the receiving thread was told to stop (its error says so).
        self.stop_reason = "shutting down"
        self.response: urllib3.BaseHTTPResponse | None = None

    def notify(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    def progress(self, written: int, verified: bool = False) -> None:
        """``written`` bytes are in the upload file, their digest checked once ``verified``
        (called on the loop by the receiver)."""
        self.written = written
        self.verified = self.verified or verified
        self.notify()

    def interrupt(self, reason: str = "shutting down") -> None:
        """Make the receiving thread stop at once (the upload is cancelled)."""
        self.stop_reason = reason
        self.stop.set()
        response = self.response
        if response is not None:
            with contextlib.suppress(Exception):
                response.shutdown()

    # -- a GrowingRegion: what clients streaming the blob as it lands see ---------------------

    @property
    def length(self) -> int | None:
        return self.size

    async def open(self) -> int:
        """The upload file while it grows; once committed (moved), the blob's file."""
        if self.upload_path is not None and not self.done.is_set():
            with contextlib.suppress(FileNotFoundError):
                return await anyio.to_thread.run_sync(os.open, self.upload_path, os.O_RDONLY)
        await self.done.wait()  # committed (moved) or failed meanwhile
        if self.error is not None or self.blob_path is None:
            raise TransferError(f"upstream transfer of {self.digest} failed") from self.error
        return await anyio.to_thread.run_sync(os.open, self.blob_path, os.O_RDONLY)

    def available(self) -> tuple[int, bool]:
        """Everything written once the digest is verified; before, all but one byte of it (the
        last byte waits for the digest check). ``TransferError`` once the fetch failed."""
        if self.error is not None and self.done.is_set():
            raise TransferError(f"upstream transfer of {self.digest} failed") from self.error
        if self.verified and self.error is None:
            return self.written, True
        end = self.size if self.size is not None else self.written
        return max(min(self.written, end - 1), 0), False

    async def wait(self, sent: int) -> None:
        while True:
            changed = self._changed
            limit, complete = self.available()
            if limit > sent or complete:
                return
            await changed.wait()


def _descriptor_headers(digest: str, size: int | None, media_type: str) -> dict[str, str]:
    headers = {
        "ETag": f'"{digest}"',
        "Cache-Control": "max-age=31536000",
        "Docker-Content-Digest": digest,
        "Content-Type": media_type or DEFAULT_MEDIA_TYPE,
        "Accept-Ranges": "bytes",
    }
    if size is not None:
        headers["Content-Length"] = str(size)
    return headers


def _upstream_status(status: int, digest: Digest, headers: Mapping[str, str]) -> None:
    if status == 404:
        raise BlobUnknownError(digest)
    if status == 403:
        raise UpstreamAuthError("upstream denied access", 403)
    if status != 200:
        raise unexpected_status(status, headers)


def _planned_size(plan: ServePlan) -> int:
    """The bytes a plan's body holds (0 for a 304 or a redirect)."""
    if plan.body is None and not plan.parts:
        return 0
    return _content_length({k.lower(): v for k, v in plan.headers.items()}) or 0


def _content_length(headers: Mapping[str, str]) -> int | None:
    raw = headers.get("content-length")
    if raw is None or not is_ascii_digits(raw) or len(raw) > 19:
        return None
    return int(raw)


class ProxyBlobStore:
    """Serves a repository's blobs from the cache, fetching cold ones from upstream once."""

    def __init__(
        self,
        registry: Registry,
        upstream: Upstream,
        scheduler: TTLScheduler,
        *,
        cache_write_timeout: float = CACHE_WRITE_TIMEOUT,
    ) -> None:
        self.registry = registry
        #: ``proxy.cachewritetimeout``: seconds a cold blob's copy into the cache may take.
        self.cache_write_timeout = cache_write_timeout
        self.upstream = upstream
        self.scheduler = scheduler
        self._inflight: dict[tuple[str, str], Fetch] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        #: Upstream GETs of blob bodies started (for tests and metrics).
        self.upstream_fetches = 0

    async def aclose(self) -> None:
        """Cancel fetches still running (at shutdown): their uploads are cancelled."""
        for fetch in list(self._inflight.values()):
            fetch.interrupt()
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(BaseException):
                await task

    async def serve(
        self,
        repo: Repository,
        digest: Digest,
        *,
        method: str = "GET",
        range: str | None = None,
        if_none_match: str | None = None,
    ) -> ServePlan:
        """A local plan, or one whose body is the cold fetch (a :class:`Fetch`, growing)."""

        def local() -> ServePlan:
            return repo.blobs.serve_blob(
                digest, method=method, range=range, if_none_match=if_none_match
            )

        key = (repo.name, str(digest))
        if key not in self._inflight:
            try:
                plan = await anyio.to_thread.run_sync(local)
            except BlobUnknownError:
                pass
            else:
                if method == "GET" and (observer := _observe.observer) is not None:
                    observer.proxy_blob(_planned_size(plan), hit=True)
                return plan
            if method == "HEAD":
                return await self._head(repo, digest)
            if await anyio.to_thread.run_sync(self.registry.blobs.exists, digest):
                # Stored for another repository: link it once upstream confirms this one has it.
                response = await self.upstream.head(
                    f"/v2/{repo.name}/blobs/{digest}", name=repo.name
                )
                _upstream_status(response.status_code, digest, response.headers)
                await anyio.to_thread.run_sync(repo.blobs.link, digest)
                self.scheduler.add_blob(repo.name, digest)
                return await anyio.to_thread.run_sync(local)
        fetch = self._inflight.get(key)
        if fetch is None:
            fetch = self._start(repo, digest)
        await fetch.ready.wait()
        if fetch.done.is_set() and fetch.error is not None:
            raise fetch.error
        if method == "HEAD" or range or if_none_match or fetch.upload_path is None:
            await fetch.done.wait()
            if fetch.error is not None:
                raise fetch.error
            return await anyio.to_thread.run_sync(local)
        headers = _descriptor_headers(str(digest), fetch.size, fetch.media_type)
        return ServePlan(200, headers, body=fetch)

    async def _head(self, repo: Repository, digest: Digest) -> ServePlan:
        """Upstream's answer to a HEAD (no length when it named none)."""
        response = await self.upstream.head(f"/v2/{repo.name}/blobs/{digest}", name=repo.name)
        _upstream_status(response.status_code, digest, response.headers)
        media_type = response.headers.get("content-type", DEFAULT_MEDIA_TYPE)
        headers = _descriptor_headers(str(digest), _content_length(response.headers), media_type)
        return ServePlan(200, headers)

    def _start(self, repo: Repository, digest: Digest) -> Fetch:
        fetch = Fetch(repo.name, digest)
        key = (repo.name, str(digest))
        self._inflight[key] = fetch
        task = asyncio.create_task(self._run(repo, fetch))
        self._tasks.add(task)

        def finished(done: asyncio.Task[None]) -> None:
            self._tasks.discard(done)
            if self._inflight.get(key) is fetch:
                del self._inflight[key]

        task.add_done_callback(finished)
        return fetch

    async def _run(self, repo: Repository, fetch: Fetch) -> None:
        digest = fetch.digest
        try:
            self.upstream_fetches += 1
            response = await self.upstream.stream(f"/v2/{repo.name}/blobs/{digest}", name=repo.name)
            fetch.response = response
            try:
                _upstream_status(response.status, digest, response.headers)
                await self._receive(repo, fetch, response)
                if (observer := _observe.observer) is not None:
                    observer.proxy_blob(fetch.size or 0, hit=False)
            except BaseException:
                response.close()  # a connection left mid-body is never reused
                raise
            finally:
                fetch.response = None
                response.release_conn()  # read to the end: back to the pool
            self.scheduler.add_blob(repo.name, digest)
        except BaseException as exc:
            fetch.error = exc
            if isinstance(exc, asyncio.CancelledError):
                logger.info("fetching %s@%s cancelled: nothing kept", repo.name, digest)
                raise
            if not isinstance(exc, (DistblobError, httpx.HTTPError)):
                logger.exception("fetching %s@%s failed", repo.name, digest)
        finally:
            if self._inflight.get((repo.name, str(digest))) is fetch:
                del self._inflight[(repo.name, str(digest))]
            fetch.done.set()
            fetch.ready.set()
            fetch.notify()

    async def _receive(
        self, repo: Repository, fetch: Fetch, response: urllib3.BaseHTTPResponse
    ) -> None:
        digest = fetch.digest
        fetch.size = _content_length(response.headers)
        fetch.media_type = response.headers.get("content-type", DEFAULT_MEDIA_TYPE)
        # Clients stream the upload file as it grows: writeback is started as the data comes,
        # so the commit's fsync finds less left, but never waited for, which would hold the
        # clients to the disk's speed.
        writer = await anyio.to_thread.run_sync(
            lambda: repo.blobs.create(algorithm=digest.algorithm, writeback="unpaced")
        )
        fetch.upload_path = writer.local_path
        fetch.ready.set()
        fetch.notify()
        loop = asyncio.get_running_loop()

        def progress(written: int, verified: bool = False) -> None:
            loop.call_soon_threadsafe(fetch.progress, written, verified)

        # The thread owns the writer from here: it commits, or cancels on any failure.
        done = in_own_thread(
            _receive_and_commit, fetch, response, writer, progress, name="distblob-upstream"
        )
        try:
            try:
                await asyncio.wait_for(asyncio.shield(done), self.cache_write_timeout)
            except TimeoutError:
                await self._abandon(fetch, done)
        except asyncio.CancelledError:
            # Shutdown: stop the thread (its read is interrupted) and let it remove the upload.
            fetch.interrupt()
            with (
                anyio.CancelScope(shield=True),
                anyio.move_on_after(INTERRUPT_WAIT),
                contextlib.suppress(BaseException),
            ):
                await done
            raise
        fetch.blob_path = self.registry.blobs.local_path(str(digest))

    async def _abandon(self, fetch: Fetch, done: asyncio.Future[None]) -> None:
        """The copy took longer than ``proxy.cachewritetimeout``: stop the thread and wait for
        it to cancel the upload. A commit already under way (every byte in and verified)
        is let finish: then the blob is kept and served."""
        reason = f"proxy.cachewritetimeout ({self.cache_write_timeout:g}s) passed"
        fetch.interrupt(reason)
        try:
            await done
        except TransferError as exc:
            logger.warning("fetching %s@%s abandoned: %s", fetch.name, fetch.digest, reason)
            raise TransferError(
                f"copy of {fetch.digest} into the cache abandoned: {reason}"
            ) from exc


def _receive_body(
    fetch: Fetch,
    response: urllib3.BaseHTTPResponse,
    writer: BlobWriter,
    progress: Callable[[int, bool], None],
) -> None:
    """Read the upstream body into ``writer`` and commit it, verified.

    The digest of what arrived is checked as soon as the last byte is in (from the running
    hash, no second read): clients then have the whole blob while the commit makes the copy
    durable, which on a slow disk takes longer than the transfer did."""
    digest = fetch.digest
    view = memoryview(bytearray(CHUNK))
    written = 0
    while True:
        if fetch.stop.is_set():
            raise TransferError(f"upstream transfer of {digest} stopped ({fetch.stop_reason})")
        try:
            count = response.readinto(view)
        except (urllib3.exceptions.HTTPError, OSError, ValueError) as exc:
            if fetch.stop.is_set():
                raise TransferError(
                    f"upstream transfer of {digest} stopped ({fetch.stop_reason})"
                ) from None
            raise TransferError(
                f"upstream transfer of {digest} broke after {written} bytes: {type(exc).__name__}"
            ) from None
        if not count:
            break
        written += writer.write(view[:count])
        progress(written, False)
    if fetch.size is not None and written != fetch.size:
        raise TransferError(f"upstream sent {written} of {fetch.size} bytes of {digest}")
    actual = writer.digest()
    if actual != digest:
        raise TransferError(f"upstream sent bytes whose digest is {actual}, not {digest}")
    if fetch.stop.is_set():
        raise TransferError(f"upstream transfer of {digest} stopped ({fetch.stop_reason})")
    progress(written, True)
    writer.commit(Descriptor(media_type=fetch.media_type, size=written, digest=digest))


def _receive_and_commit(
    fetch: Fetch,
    response: urllib3.BaseHTTPResponse,
    writer: BlobWriter,
    progress: Callable[[int, bool], None],
) -> None:
    """Read the upstream body into ``writer`` and commit it, verified; on any failure the
    upload is cancelled (nothing half-written is kept). Runs in a thread of its own."""
    try:
        _receive_body(fetch, response, writer, progress)
    except BaseException:
        writer.cancel()
        raise


if TYPE_CHECKING:

    def _implements(fetch: Fetch) -> GrowingRegion:  # checked by mypy
        return fetch


__all__ = ["Fetch", "ProxyBlobStore", "TransferError"]
