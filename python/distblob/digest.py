"""Content digests: ``algorithm:encoded`` strings, validated per the OCI image spec.

A :class:`Digest` is a ``str``, so it can be used wherever distribution's wire format or a
dictionary key wants the plain string, and it is always valid: constructing one checks the
grammar, the supported algorithm and the exact length and alphabet of its hex.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Final

from distblob.errors import DigestInvalidError, DigestUnsupportedError
from distblob.hashing import Hasher, new_hasher

if TYPE_CHECKING:
    from _typeshed import ReadableBuffer

# The OCI grammar: algorithm components [a-z0-9]+ joined by [+._-], then ":" and [a-zA-Z0-9=_-]+.
_GRAMMAR: Final = re.compile(r"[a-z0-9]+(?:[+._-][a-z0-9]+)*:[a-zA-Z0-9=_-]+")

#: Supported algorithms and the length of their lowercase-hex encoding: the OCI's registered
#: ``sha256``, ``sha512`` and ``blake3``, and ``sha384``, which distribution also accepts.
ALGORITHMS: Final[dict[str, int]] = {"sha256": 64, "sha384": 96, "sha512": 128, "blake3": 64}

#: The algorithm used when none is named (the only one every registry must support).
CANONICAL: Final = "sha256"

_HEX: Final = frozenset("0123456789abcdef")


class Digest(str):
    """A validated content digest such as ``sha256:e3b0c442...``.

    ``Digest(s)`` and :meth:`Digest.parse` raise :class:`~distblob.errors.DigestInvalidError` for
    a string that breaks the grammar or has the wrong length or characters for its algorithm
    (including uppercase hex), and :class:`~distblob.errors.DigestUnsupportedError` for a
    well-formed digest of an unsupported algorithm.
    """

    __slots__ = ()

    def __new__(cls, value: str) -> Digest:
        if isinstance(value, Digest):
            return value if type(value) is cls else str.__new__(cls, value)
        if not isinstance(value, str):
            raise TypeError(f"a digest is a str, not {type(value).__name__}")
        if not _GRAMMAR.fullmatch(value):
            raise DigestInvalidError(value, "not of the form algorithm:encoded")
        algorithm, _, encoded = value.partition(":")
        length = ALGORITHMS.get(algorithm)
        if length is None:
            raise DigestUnsupportedError(value, f"unsupported digest algorithm {algorithm!r}")
        if len(encoded) != length:
            raise DigestInvalidError(
                value, f"{algorithm} needs {length} hex characters, got {len(encoded)}"
            )
        if not _HEX.issuperset(encoded):
            raise DigestInvalidError(value, "the encoded part must be lowercase hex")
        return str.__new__(cls, value)

    @classmethod
    def parse(cls, value: str) -> Digest:
        """Validate ``value`` and return it as a :class:`Digest`."""
        return cls(value)

    @classmethod
    def from_parts(cls, algorithm: str, encoded: str) -> Digest:
        """Build and validate ``algorithm:encoded``."""
        return cls(f"{algorithm}:{encoded}")

    @classmethod
    def from_bytes(cls, data: ReadableBuffer, algorithm: str = CANONICAL) -> Digest:
        """Hash ``data`` (any contiguous buffer) with ``algorithm`` and return its digest."""
        hasher = digester(algorithm)
        hasher.update(data)
        return cls.from_hasher(hasher)

    @classmethod
    def from_hasher(cls, hasher: Hasher) -> Digest:
        """The digest of what ``hasher`` has hashed so far."""
        return str.__new__(cls, f"{hasher.name}:{hasher.hexdigest()}")

    @property
    def algorithm(self) -> str:
        """The algorithm, e.g. ``"sha256"``."""
        return self.partition(":")[0]

    @property
    def encoded(self) -> str:
        """The hex after the colon."""
        return self.partition(":")[2]

    def __repr__(self) -> str:
        return f"Digest({str.__repr__(self)})"


def digester(algorithm: str = CANONICAL) -> Hasher:
    """A fresh native hasher for a supported algorithm.

    Raises :class:`~distblob.errors.DigestUnsupportedError` for any other name.
    """
    if algorithm not in ALGORITHMS:
        raise DigestUnsupportedError(f"{algorithm}:", f"unsupported digest algorithm {algorithm!r}")
    return new_hasher(algorithm)


__all__ = ["ALGORITHMS", "CANONICAL", "Digest", "digester"]
