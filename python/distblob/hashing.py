"""Native streaming hashers: :class:`Sha256`, :class:`Sha384`, :class:`Sha512` and :class:`Blake3`.

They have hashlib's shape (``update``, ``digest``, ``hexdigest``, ``copy``, ``name``,
``digest_size``, ``block_size``) plus ``size``, the number of bytes hashed so far. ``update``
takes any contiguous buffer without copying it and releases the GIL from 2 KiB on, so threads
hash in parallel. The SHA-2 states can be saved with ``marshal_binary()`` and restored with
``unmarshal_binary()`` in exactly the format Go's ``crypto/sha256`` and ``crypto/sha512`` use,
which is what the Go registry stores for resumable uploads.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol, Self

from distblob._native import Blake3, Sha256, Sha384, Sha512

if TYPE_CHECKING:
    from _typeshed import ReadableBuffer


class Hasher(Protocol):
    """What every distblob hasher offers (and hashlib's objects too, but for ``size``)."""

    @property
    def name(self) -> str: ...
    @property
    def digest_size(self) -> int: ...
    @property
    def block_size(self) -> int: ...
    @property
    def size(self) -> int: ...
    def update(self, data: ReadableBuffer, /) -> None: ...
    def digest(self) -> bytes: ...
    def hexdigest(self) -> str: ...
    def copy(self) -> Self: ...


class ResumableHasher(Hasher, Protocol):
    """A hasher whose state can be saved and restored (every native hasher)."""

    def marshal_binary(self) -> bytes: ...


_CLASSES: dict[str, type[Sha256] | type[Sha384] | type[Sha512] | type[Blake3]] = {
    "sha256": Sha256,
    "sha384": Sha384,
    "sha512": Sha512,
    "blake3": Blake3,
}

#: The algorithms whose state can be marshalled, mapped to their class (SHA-2 in Go's format,
#: BLAKE3 in distblob's).
RESUMABLE: dict[str, type[Sha256] | type[Sha384] | type[Sha512] | type[Blake3]] = {
    "sha256": Sha256,
    "sha384": Sha384,
    "sha512": Sha512,
    "blake3": Blake3,
}


def new_hasher(algorithm: str) -> Hasher:
    """A fresh hasher for ``algorithm`` (``KeyError`` for one not implemented here)."""
    return _CLASSES[algorithm]()


def unmarshal(algorithm: str, state: ReadableBuffer) -> ResumableHasher:
    """Restore a saved state of ``algorithm``; raises ``HashStateError`` if it is unusable."""
    return RESUMABLE[algorithm].unmarshal_binary(state)


__all__ = [
    "RESUMABLE",
    "Blake3",
    "Hasher",
    "ResumableHasher",
    "Sha256",
    "Sha384",
    "Sha512",
    "new_hasher",
    "unmarshal",
]
