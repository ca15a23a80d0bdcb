"""The python engine: hashlib over plain file I/O, the reference and the benchmark baseline."""

from __future__ import annotations

import hashlib
from typing import Any

from distblob.errors import BlobDigestUnsupportedError
from distblob.hashing import Hasher
from distblob.storage.driver import StorageDriver
from distblob.storage.driver.base import DirectIO
from distblob.storage.engines.base import Engine, StreamUpload, UploadIO


class _HashlibHasher:
    """A hashlib object with the ``size`` every distblob hasher reports."""

    def __init__(self, name: str, inner: Any) -> None:
        self.name = name
        self._inner = inner
        self.size = 0
        self.digest_size: int = inner.digest_size
        self.block_size: int = getattr(inner, "block_size", 64)

    def update(self, data: Any, /) -> None:
        self._inner.update(data)
        self.size += memoryview(data).nbytes

    def digest(self) -> bytes:
        out: bytes = self._inner.digest()
        return out

    def hexdigest(self) -> str:
        out: str = self._inner.hexdigest()
        return out

    def copy(self) -> _HashlibHasher:
        twin = _HashlibHasher(self.name, self._inner.copy())
        twin.size = self.size
        return twin


def _blake3() -> Any:
    # BLAKE3 is not in hashlib; a Python user would reach for the blake3 package.
    try:
        import blake3
    except ImportError:  # pragma: no cover - the test requirements install it
        raise BlobDigestUnsupportedError(
            "blake3:", "the python engine needs the blake3 package (pip install blake3)"
        ) from None
    return blake3.blake3()


class PythonEngine(Engine):
    """hashlib and plain file I/O; cannot restore saved hash states."""

    name = "python"

    def new_hasher(self, algorithm: str) -> Hasher:
        if algorithm == "blake3":
            return _HashlibHasher(algorithm, _blake3())
        if algorithm not in ("sha256", "sha384", "sha512"):
            raise KeyError(algorithm)
        return _HashlibHasher(algorithm, hashlib.new(algorithm))

    def restore_hasher(self, algorithm: str, state: bytes) -> Hasher | None:
        return None

    def open_upload(
        self,
        driver: StorageDriver,
        path: str,
        *,
        create: bool,
        algorithm: str,
        state: bytes | None,
        durable: bool,
        paced: bool = True,
        direct: DirectIO = "off",
    ) -> UploadIO:
        return StreamUpload(
            driver,
            path,
            create=create,
            algorithm=algorithm,
            hasher=self.new_hasher(algorithm),
            fresh=lambda: self.new_hasher(algorithm),
        )
