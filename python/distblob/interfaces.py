"""distribution's interfaces as Python protocols: the blob store, and the contract the HTTP
layer serves.

**Blobs.** Each protocol is one Go interface of ``registry/distribution`` (``blobs.go``) under
its Python name: :class:`BlobStatter`, :class:`BlobDeleter`, :class:`BlobDescriptorService`,
:class:`BlobProvider`, :class:`BlobServer`, :class:`BlobIngester`, :class:`BlobWriter`, and the
compositions :class:`BlobService` and :class:`BlobStore`. They are ``runtime_checkable``, so
``isinstance(store, BlobStore)`` checks that an object offers the methods. The storage layer
(:class:`~distblob.storage.linked.LinkedBlobStore`) implements them; its methods block.

**What the HTTP layer serves** (distribution's ``Namespace`` and ``Repository``):
:class:`AsyncRegistry`, :class:`AsyncRepository`, :class:`AsyncBlobStore` and
:class:`AsyncManifestService`. Their verbs are coroutines, since one implementation waits on an
upstream registry. Two implement them, and the server cannot tell which it was given: the
storage registry, its blocking verbs run in worker threads
(:class:`~distblob.storage.aio.ThreadedRegistry`), and the pull-through cache
(:class:`~distblob.proxy.ProxyRegistry`), whose write verbs raise ``UnsupportedError``.

:meth:`BlobServer.serve_blob` is framework-free: it returns a :class:`ServePlan` (status,
headers and the regions to send, or a redirect) that any HTTP layer can execute. A region is
a :class:`FileRegion` (bytes stored) or a :class:`GrowingRegion` (bytes still arriving, as a
cache's cold fetch lands).
"""

from __future__ import annotations

import contextlib
import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass, field
from types import TracebackType
from typing import TYPE_CHECKING, Any, BinaryIO, Protocol, Self, TypeVar, runtime_checkable

from distblob.descriptor import Descriptor

if TYPE_CHECKING:
    from _typeshed import ReadableBuffer

    from distblob.digest import Digest

_T = TypeVar("_T")


@dataclass(frozen=True, slots=True)
class FileRegion:
    """Bytes ``[offset, offset + length)`` of the object at driver path ``path``.

    ``local_path`` is the OS path when the driver is a local filesystem, so an HTTP layer can
    send the region with ``sendfile``; otherwise ``reader(offset)`` opens the object from a
    byte offset (the driver's reader).
    """

    path: str
    offset: int
    length: int
    local_path: str | None = None
    reader: Callable[[int], BinaryIO] | None = field(default=None, compare=False, repr=False)
    #: Whether a large region not in the page cache may be read past it (``O_DIRECT``):
    #: ``storage.filesystem.directio: on``, for stores whose blobs are mostly read once.
    direct: bool = False


@runtime_checkable
class GrowingRegion(Protocol):
    """A whole blob whose bytes are still arriving in a local file (a pull-through cache's
    cold fetch), sent to clients as they land.

    The last byte is held back until the blob's digest is verified, so a client never takes a
    short or wrong body for a complete one: when the transfer fails, :meth:`available` raises
    :class:`~distblob.errors.TransferError` and the response must end without its end.
    """

    @property
    def length(self) -> int | None:
        """The blob's size when known in advance (a ``Content-Length``)."""
        ...

    async def open(self) -> int:
        """A read-only descriptor of the file the bytes land in (the caller closes it)."""
        ...

    def available(self) -> tuple[int, bool]:
        """How many bytes may be sent now, and whether they are the whole (verified) blob."""
        ...

    async def wait(self, sent: int) -> None:
        """Return once more than ``sent`` bytes may be sent, or the blob is complete or failed."""
        ...


@dataclass(frozen=True, slots=True)
class ServePlan:
    """What an HTTP layer must answer to a blob GET or HEAD.

    ``body`` is the region to send (``None`` for HEAD, 304, 416 and redirects); ``redirect`` a
    URL to send the client to with 307, when the driver offers one. A response to several
    ranges has no ``body`` but ``parts``: a ``multipart/byteranges`` body as the pieces to send
    in order, its delimiters and part headers as bytes between the regions. Without a
    ``Content-Length`` header (a cold blob whose upstream named none), none is sent.
    """

    status: int
    headers: dict[str, str] = field(default_factory=dict)
    body: FileRegion | GrowingRegion | None = None
    redirect: str | None = None
    descriptor: Descriptor | None = None
    parts: tuple[bytes | FileRegion, ...] = ()


@runtime_checkable
class BlobStatter(Protocol):
    def stat(self, digest: str) -> Descriptor:
        """The blob's descriptor; ``BlobUnknownError`` if it is not there."""
        ...


@runtime_checkable
class BlobDeleter(Protocol):
    def delete(self, digest: str) -> None:
        """Remove the blob; ``UnsupportedError`` when deletes are disabled."""
        ...


@runtime_checkable
class BlobDescriptorService(BlobStatter, Protocol):
    def set_descriptor(self, digest: str, descriptor: Descriptor) -> None:
        """Record ``descriptor`` for ``digest`` (for example a media type)."""
        ...

    def clear(self, digest: str) -> None:
        """Forget what is recorded for ``digest``; ``BlobUnknownError`` if nothing is."""
        ...


@runtime_checkable
class BlobProvider(Protocol):
    def get(self, digest: str) -> bytes:
        """The whole blob in memory (for small blobs such as manifests)."""
        ...

    def open(self, digest: str) -> BinaryIO:
        """A seekable, closable binary reader of the blob."""
        ...


@runtime_checkable
class BlobServer(Protocol):
    def serve_blob(
        self,
        digest: str,
        *,
        method: str = "GET",
        range: str | None = None,
        if_none_match: str | None = None,
    ) -> ServePlan:
        """How to answer a GET or HEAD of the blob (see :class:`ServePlan`)."""
        ...


@runtime_checkable
class BlobWriter(Protocol):
    """An upload in progress (distribution's ``BlobWriter``)."""

    @property
    def id(self) -> str: ...
    @property
    def started_at(self) -> dt.datetime: ...
    @property
    def size(self) -> int: ...
    def write(self, data: ReadableBuffer, /) -> int: ...
    def seek(self, offset: int, whence: int = 0) -> int: ...
    def tell(self) -> int: ...
    def read_from(self, source: BinaryIO | int) -> int:
        """Copy from a file object or descriptor to its end; returns the bytes copied."""
        ...

    def commit(
        self, provisional: Descriptor, *, tail: ReadableBuffer = b"", cleanup: bool = True
    ) -> Descriptor:
        """Append ``tail`` (an upload's last chunk), verify size and digest, move the data into
        place and link it; the final descriptor. ``cleanup=False`` leaves the emptied upload
        for :meth:`cancel` to remove later (after a server answered)."""
        ...

    def cancel(self) -> None:
        """Remove the upload; idempotent, also after commit."""
        ...

    def close(self) -> None:
        """Stop writing but keep the upload resumable."""
        ...

    def reader(self) -> BinaryIO:
        """A reader of what was uploaded so far."""
        ...

    def __enter__(self) -> Self: ...
    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...


@runtime_checkable
class BlobIngester(Protocol):
    def put(self, data: ReadableBuffer, media_type: str = "") -> Descriptor:
        """Store a whole blob given in memory."""
        ...

    def create(self, *, algorithm: str = "sha256") -> BlobWriter:
        """Start an upload hashed with ``algorithm``."""
        ...

    def resume(self, upload_id: str, *, wait: float | None = None) -> BlobWriter:
        """Continue an upload; ``BlobUploadUnknownError`` if there is none with that id,
        ``BlobUploadBusyError`` if another writer still holds it after ``wait`` seconds."""
        ...


@runtime_checkable
class BlobService(BlobStatter, BlobProvider, BlobIngester, Protocol):
    """Stat, read and ingest blobs."""


@runtime_checkable
class BlobStore(BlobService, BlobServer, BlobDeleter, Protocol):
    """Everything a repository does with blobs."""


# -- what the HTTP layer serves ------------------------------------------------------------------


@runtime_checkable
class AsyncBlobStore(Protocol):
    """A repository's blobs as the HTTP layer uses them.

    Uploads are :class:`BlobWriter`\\ s, whose blocking methods the caller runs in a worker
    thread. A pull-through cache raises ``UnsupportedError`` from every write verb.
    """

    async def serve_blob(
        self,
        digest: str,
        *,
        method: str = "GET",
        range: str | None = None,
        if_none_match: str | None = None,
    ) -> ServePlan:
        """How to answer a GET or HEAD of the blob; ``BlobUnknownError`` if there is none."""
        ...

    async def delete(self, digest: str) -> None:
        """Unlink the blob from the repository."""
        ...

    async def mount(self, source: str, digest: str) -> Descriptor:
        """Link a blob of repository ``source`` (cross-repository mount)."""
        ...

    async def put(self, data: bytes, *, algorithm: str, expected: Digest) -> Descriptor:
        """Store a whole blob given in memory (a monolithic upload), hashed with
        ``algorithm``; ``BlobInvalidDigestError`` unless it matches ``expected``."""
        ...

    async def create(self, *, algorithm: str = "sha256") -> BlobWriter:
        """Start an upload."""
        ...

    async def resume(self, upload_id: str, *, wait: float | None = None) -> BlobWriter:
        """Continue an upload, waiting up to ``wait`` seconds (a default when ``None``; ``0``
        not at all) while another writer holds it, without holding a worker thread."""
        ...

    async def start(self, *, algorithm: str = "sha256") -> BlobWriter:
        """Start an upload and close it at once, in one blocking call (a new upload session):
        the writer returned is closed and says the upload's id and start time."""
        ...

    async def resume_with(
        self,
        upload_id: str,
        work: Callable[[BlobWriter], _T],
        *,
        wait: float | None = None,
        after: Callable[[_T], object] | None = None,
    ) -> _T:
        """Continue an upload as :meth:`resume` does (waiting without holding a worker thread)
        and run ``work`` (blocking; it ends the writer) with its writer in the same call:
        what a request does with an upload, in one worker-thread call instead of several.
        ``after`` (blocking) runs with ``work``'s result once it is returned, without the
        caller waiting for it: what can wait until the client has its answer."""
        ...


@runtime_checkable
class AsyncManifestService(Protocol):
    """A repository's manifests and tags as the HTTP layer uses them."""

    async def get(self, reference: str) -> tuple[bytes, Descriptor]:
        """The manifest a tag or digest names, and its descriptor."""
        ...

    async def stat(self, reference: str) -> Descriptor:
        """The manifest's descriptor (a HEAD)."""
        ...

    async def put(self, reference: str, body: bytes, media_type: str | None) -> Descriptor:
        """Store a manifest under a tag or its digest."""
        ...

    async def delete(self, reference: str) -> None:
        """Delete a manifest by digest (with its tags), or one tag."""
        ...

    async def tags(self) -> list[str]:
        """Every tag, sorted; ``NameUnknownError`` if the repository was never tagged."""
        ...

    async def referrers(self, digest: str, artifact_type: str | None = None) -> dict[str, Any]:
        """The OCI 1.1 referrers of ``digest`` as an image index."""
        ...


@runtime_checkable
class AsyncRepository(Protocol):
    """One repository: its validated name, blobs and manifests."""

    @property
    def name(self) -> str: ...
    @property
    def blobs(self) -> AsyncBlobStore: ...
    @property
    def manifests(self) -> AsyncManifestService: ...


@runtime_checkable
class AsyncRegistry(Protocol):
    """What the HTTP layer serves (distribution's ``Namespace``)."""

    @property
    def read_only(self) -> bool:
        """Whether every write (push, mount, delete) is refused, before anything else about
        the request is looked at (405 UNSUPPORTED): a pull-through cache is."""
        ...

    def repository(self, name: str) -> AsyncRepository:
        """The repository ``name``; ``NameInvalidError`` unless it is a valid OCI name."""
        ...

    async def catalog(self, n: int | None = None, last: str | None = None) -> list[str]:
        """Repository names after ``last``, at most ``n`` (distribution's catalog order)."""
        ...

    def running(self) -> contextlib.AbstractAsyncContextManager[None]:
        """The registry's background work while it is served (the server's lifespan)."""
        ...


__all__ = [
    "AsyncBlobStore",
    "AsyncManifestService",
    "AsyncRegistry",
    "AsyncRepository",
    "BlobDeleter",
    "BlobDescriptorService",
    "BlobIngester",
    "BlobProvider",
    "BlobServer",
    "BlobService",
    "BlobStatter",
    "BlobStore",
    "BlobWriter",
    "FileRegion",
    "GrowingRegion",
    "ServePlan",
]
