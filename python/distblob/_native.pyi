"""Type stubs for the native extension ``distblob._native`` (built from ``rust/``)."""

from typing import ClassVar, Final, Literal, Self, final

from _typeshed import ReadableBuffer

__all__ = [
    "GIL_RELEASE_THRESHOLD",
    "Blake3",
    "Sha256",
    "Sha384",
    "Sha512",
    "UploadFile",
    "delete_files",
    "hash_file",
    "put_blob",
    "put_blob_fd",
    "read_references",
    "scan_blobs",
    "scan_repositories",
    "sync_filesystem",
    "write_file_atomic",
]

GIL_RELEASE_THRESHOLD: Final[int]

@final
class Sha256:
    """Streaming SHA-256 whose state can be saved in Go's ``crypto/sha256`` format."""

    name: ClassVar[str]
    digest_size: ClassVar[int]
    block_size: ClassVar[int]
    def __new__(cls, data: ReadableBuffer | None = None) -> Self: ...
    @property
    def size(self) -> int:
        """Bytes hashed so far."""
    def update(self, data: ReadableBuffer, /) -> None:
        """Hash a contiguous buffer, with no copy; the GIL is released from 2 KiB on."""
    def digest(self) -> bytes:
        """The digest of what was hashed so far; hashing may go on afterwards."""
    def hexdigest(self) -> str: ...
    def copy(self) -> Self: ...
    def marshal_binary(self) -> bytes:
        """The state in Go's ``MarshalBinary`` format (108 bytes)."""
    @classmethod
    def unmarshal_binary(cls, data: ReadableBuffer, /) -> Self:
        """Restore a state; raises ``distblob.errors.HashStateError`` if it is unusable."""

@final
class Sha384:
    """Streaming SHA-384 whose state can be saved in Go's ``crypto/sha512`` SHA-384 format."""

    name: ClassVar[str]
    digest_size: ClassVar[int]
    block_size: ClassVar[int]
    def __new__(cls, data: ReadableBuffer | None = None) -> Self: ...
    @property
    def size(self) -> int:
        """Bytes hashed so far."""
    def update(self, data: ReadableBuffer, /) -> None:
        """Hash a contiguous buffer, with no copy; the GIL is released from 2 KiB on."""
    def digest(self) -> bytes: ...
    def hexdigest(self) -> str: ...
    def copy(self) -> Self: ...
    def marshal_binary(self) -> bytes:
        """The state in Go's ``MarshalBinary`` format (204 bytes)."""
    @classmethod
    def unmarshal_binary(cls, data: ReadableBuffer, /) -> Self:
        """Restore a state; raises ``distblob.errors.HashStateError`` if it is unusable."""

@final
class Sha512:
    """Streaming SHA-512 whose state can be saved in Go's ``crypto/sha512`` format."""

    name: ClassVar[str]
    digest_size: ClassVar[int]
    block_size: ClassVar[int]
    def __new__(cls, data: ReadableBuffer | None = None) -> Self: ...
    @property
    def size(self) -> int:
        """Bytes hashed so far."""
    def update(self, data: ReadableBuffer, /) -> None:
        """Hash a contiguous buffer, with no copy; the GIL is released from 2 KiB on."""
    def digest(self) -> bytes: ...
    def hexdigest(self) -> str: ...
    def copy(self) -> Self: ...
    def marshal_binary(self) -> bytes:
        """The state in Go's ``MarshalBinary`` format (204 bytes)."""
    @classmethod
    def unmarshal_binary(cls, data: ReadableBuffer, /) -> Self:
        """Restore a state; raises ``distblob.errors.HashStateError`` if it is unusable."""

@final
class Blake3:
    """BLAKE3; ``max_threads`` above 1 (or ``AUTO``) spreads large updates over cores."""

    AUTO: ClassVar[int]
    name: ClassVar[str]
    digest_size: ClassVar[int]
    block_size: ClassVar[int]
    def __new__(cls, data: ReadableBuffer | None = None, *, max_threads: int = 1) -> Self: ...
    @property
    def size(self) -> int:
        """Bytes hashed so far."""
    @property
    def max_threads(self) -> int: ...
    def update(self, data: ReadableBuffer, /) -> None:
        """Hash a contiguous buffer, with no copy; the GIL is released from 2 KiB on."""
    def digest(self, length: int = 32) -> bytes:
        """The first ``length`` bytes of the output; 32 is the standard digest."""
    def hexdigest(self, length: int = 32) -> str: ...
    def copy(self) -> Self: ...
    def marshal_binary(self) -> bytes:
        """The state in distblob's format (BLAKE3 has no standard one): the completed subtrees'
        chaining values and the last 1 to 1024 bytes, at most about 2.9 KiB."""
    @classmethod
    def unmarshal_binary(cls, data: ReadableBuffer, /, *, max_threads: int = 1) -> Self:
        """Restore a state; raises ``distblob.errors.HashStateError`` if it is unusable."""

@final
class UploadFile:
    """An upload's data file: each write goes to disk and into the running hash in one call.

    Every method releases the GIL. Raises ``OSError`` subclasses for I/O errors,
    ``HashStateError`` for an unusable ``state`` and ``ValueError`` once closed.
    """

    def __new__(
        cls,
        path: str,
        *,
        create: bool,
        algorithm: str = "sha256",
        state: bytes | None = None,
        writeback: bool = False,
        paced: bool = True,
        direct: Literal["auto", "on", "off"] = "off",
    ) -> Self:
        """Open (``create``: create, which must not exist yet) and resume from ``state``.

        ``writeback`` starts writing the page cache to disk as each 8 MiB window completes;
        ``paced`` also makes each write wait for the window before (dirty pages stay bounded, the
        writer goes at the disk's speed). ``direct`` lets the 4 KiB-aligned middle of writes go
        past the page cache (``O_DIRECT``): ``on`` for every write, ``auto`` for writes of at
        least 256 KiB past the upload's first 32 MiB, where the filesystem takes ``O_DIRECT``;
        elsewhere everything goes through the page cache. Raises ``ValueError`` for another
        ``direct``."""
    @property
    def size(self) -> int:
        """Bytes in the file."""
    @property
    def position(self) -> int:
        """Where the next write goes."""
    @property
    def hashed(self) -> int:
        """Bytes the running hash covers."""
    @property
    def algorithm(self) -> str: ...
    @property
    def direct(self) -> bool:
        """Whether writes may go past the page cache (asked for, and taken by the filesystem)."""
    @property
    def direct_written(self) -> int:
        """Bytes written past the page cache so far."""
    @property
    def closed(self) -> bool: ...
    def seek(self, position: int) -> None:
        """Move the write position within ``0..size``."""
    def write(self, data: ReadableBuffer, /) -> int:
        """Write all of ``data`` at the position and hash it; all or nothing."""
    def read_from_fd(self, fd: int, limit: int | None = None) -> int:
        """Copy from a descriptor's position to its end (or ``limit`` bytes); returns the count.

        The kernel copies (``copy_file_range``; ``sendfile`` or ``read``/``pwrite`` where it
        cannot) and the running hash reads the bytes back from the upload file, so it covers
        what was stored even if the source changes meanwhile.
        """
    def catch_up(self) -> None:
        """Hash whatever part of the file the running hash does not cover yet."""
    def hexdigest(self) -> str:
        """The digest of the whole file."""
    def marshal_state(self) -> tuple[int, bytes] | None:
        """``(offset, state)`` (Go's format for SHA-2), or ``None`` after out-of-order writes."""
    def sync(self) -> None:
        """``fdatasync`` the data."""
    def close(self) -> None:
        """Close the file; idempotent."""

def hash_file(path: str, algorithm: str = "sha256", offset: int = 0) -> str:
    """The hex digest of ``path`` from ``offset`` to its end."""

def write_file_atomic(path: str, tmp: str, data: ReadableBuffer, durable: bool) -> None:
    """Write through ``tmp`` and a rename; ``durable`` syncs the file and its directories."""

def sync_filesystem(path: str) -> None:
    """``syncfs`` the filesystem holding ``path``."""

def put_blob(
    data: ReadableBuffer,
    algorithm: str,
    blob_template: str,
    link_template: str,
    durable: bool,
    *,
    expected: str | None = None,
) -> tuple[str, bool]:
    """Hash ``data``, store it at ``blob_template`` unless there, write the link; ``(hex, stored)``.

    Templates are OS paths with ``{hex}`` and ``{hex2}`` (its first two characters). With
    ``expected`` (a hex digest) nothing is written unless ``data`` hashes to it.
    """

def put_blob_fd(
    fd: int,
    algorithm: str,
    blob_template: str,
    link_template: str,
    durable: bool,
    *,
    expected_size: int | None = None,
) -> tuple[str, int, bool] | None:
    """Store the rest of file ``fd`` (from its position) as a blob and link it, like ``put_blob``.

    The kernel copies the file into an unnamed file beside the blobs, which is hashed as stored
    and then linked into place: an interrupted call leaves nothing. Returns ``(hex, size,
    stored)``, or ``None``, having read nothing, when the filesystem has no ``O_TMPFILE``.
    With ``expected_size``, a source whose size changed while it was read raises ``OSError``
    and nothing is stored.
    """

def scan_repositories(
    root: str, algorithms: list[tuple[str, int]], canonical: str, times: bool
) -> list[
    tuple[
        str,
        list[tuple[str, float | None, str | None]],
        list[tuple[str, float | None, str | None]],
        list[tuple[str, str | None, list[str]]],
    ]
]:
    """Every repository under the local ``repositories`` directory ``root``, read in parallel
    by directory reads (no stat per entry), for garbage collection.

    Each is ``(name, layers, revisions, tags)``: links as ``(digest, time, content)`` (the time
    only with ``times``; the content only for links under an algorithm other than
    ``canonical``), tags as ``(name, current link content, index digests)``. Names that are no
    digest of ``algorithms`` (``(name, hex length)``) are skipped.
    """

def scan_blobs(root: str, algorithms: list[tuple[str, int]]) -> list[tuple[str, str]]:
    """Every blob under the local ``blobs`` directory ``root`` as ``(algorithm, hex)``, read in
    parallel by directory reads."""

def read_references(
    paths: list[str], algorithms: list[tuple[str, int]]
) -> list[tuple[list[str] | None, str | None]]:
    """What each manifest file references, read and parsed in parallel: the digests of its
    ``config``, ``layers``, ``manifests`` and ``blobs`` that are digests of ``algorithms``, or
    ``None`` and why the file cannot be read or parsed."""

def delete_files(paths: list[str]) -> int:
    """Remove each file (OS paths) and then its directory if that is left empty, in parallel;
    missing files are skipped. How many files were removed."""
