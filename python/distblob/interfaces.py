"""distribution's blob interfaces as Python protocols.

Each protocol is one Go interface of ``registry/distribution`` (``blobs.go``) under its Python
name: :class:`BlobStatter`, :class:`BlobDeleter`, :class:`BlobDescriptorService`,
:class:`BlobProvider`, :class:`BlobServer`, :class:`BlobIngester`, :class:`BlobWriter`, and the
compositions :class:`BlobService` and :class:`BlobStore`. They are ``runtime_checkable``, so
``isinstance(store, BlobStore)`` checks that an object offers the methods.

:meth:`BlobServer.serve_blob` is framework-free: it returns a :class:`ServePlan` (status,
headers and a file region to send, or a redirect) that any HTTP layer can execute.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from types import TracebackType
from typing import TYPE_CHECKING, BinaryIO, Protocol, Self, runtime_checkable

from distblob.descriptor import Descriptor

if TYPE_CHECKING:
    from _typeshed import ReadableBuffer


@dataclass(frozen=True, slots=True)
class FileRegion:
    """Bytes ``[offset, offset + length)`` of the object at driver path ``path``.

    ``local_path`` is the OS path when the driver is a local filesystem, so an HTTP layer can
    send the region with ``sendfile``; otherwise read it through ``open()``.
    """

    path: str
    offset: int
    length: int
    local_path: str | None = None


@dataclass(frozen=True, slots=True)
class ServePlan:
    """What an HTTP layer must answer to a blob GET or HEAD.

    ``body`` is the region to send (``None`` for HEAD, 304, 416 and redirects); ``redirect`` a
    URL to send the client to with 307, when the driver offers one. A response to several
    ranges has no ``body`` but ``parts``: a ``multipart/byteranges`` body as the pieces to send
    in order, its delimiters and part headers as bytes between the regions.
    """

    status: int
    headers: dict[str, str] = field(default_factory=dict)
    body: FileRegion | None = None
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

    def commit(self, provisional: Descriptor) -> Descriptor:
        """Verify size and digest, move the data into place, link it; the final descriptor."""
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

    def resume(self, upload_id: str) -> BlobWriter:
        """Continue an upload; ``BlobUploadUnknownError`` if there is none with that id."""
        ...


@runtime_checkable
class BlobService(BlobStatter, BlobProvider, BlobIngester, Protocol):
    """Stat, read and ingest blobs."""


@runtime_checkable
class BlobStore(BlobService, BlobServer, BlobDeleter, Protocol):
    """Everything a repository does with blobs."""


__all__ = [
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
    "ServePlan",
]
