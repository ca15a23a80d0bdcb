"""Type stubs for the native extension ``distblob._native`` (built from ``rust/``)."""

from typing import ClassVar, Final, Self, final

from _typeshed import ReadableBuffer

__all__ = ["GIL_RELEASE_THRESHOLD", "Blake3", "Sha256", "Sha512"]

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
