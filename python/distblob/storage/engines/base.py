"""What an engine provides, and the stream upload both engines use over non-local drivers."""

from __future__ import annotations

import hashlib
import os
from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import TYPE_CHECKING, BinaryIO, Protocol

from distblob.digest import Digest
from distblob.hashing import Hasher
from distblob.storage.driver import StorageDriver
from distblob.storage.driver.base import DirectIO

if TYPE_CHECKING:
    from _typeshed import ReadableBuffer

#: Buffer size for copying from files and reading objects back.
CHUNK = 1 << 20
#: Hash states a stream upload keeps proofs of (the newest): a damaged newest state falls back
#: to an older one, as on a local disk.
MAX_PROOFS = 8

#: Stores the rest of an open file (a descriptor, from its position) as a blob and links it, in
#: one call (see :meth:`Engine.file_putter`): the blob's digest and the bytes read, or ``None``
#: when it cannot (nothing was read then). The second argument is the size the caller saw when it
#: opened the file, or ``None``: a file found at another size raises ``OSError``, nothing stored.
PutFile = Callable[[int, int | None], tuple[Digest, int] | None]


class UploadIO(Protocol):
    """An open upload data file with its running hash. Writes always append."""

    @property
    def algorithm(self) -> str: ...
    @property
    def size(self) -> int:
        """Bytes in the file."""
        ...

    @property
    def hashed(self) -> int:
        """Bytes the running hash covers (a prefix of the data)."""
        ...

    def write(self, data: ReadableBuffer, /) -> int: ...
    def read_from(self, source: BinaryIO | int) -> int:
        """Append everything ``source`` (a binary file or a descriptor) holds until its end."""
        ...

    def catch_up(self) -> None:
        """Hash what the running hash does not cover yet, reading it back."""
        ...

    def hexdigest(self) -> str:
        """The digest of all the data."""
        ...

    def marshal_state(self) -> tuple[int, bytes] | None:
        """``(offset, state)`` of the running hash in Go's format, if it can be saved."""
        ...

    def flush(self) -> None:
        """Make every byte written so far visible to readers of the path (not durable)."""
        ...

    def sync(self) -> None:
        """Make the data durable."""
        ...

    def close(self) -> None: ...

    def abandon(self) -> None:
        """Close, keeping nothing written since the upload was opened where the driver can
        (an object store's writer saves no state); a local file keeps its bytes, which are
        rehashed when the upload is resumed. For writers that failed or lost their lock."""
        ...


class Engine(ABC):
    """An engine: how bytes are written, hashed and read back."""

    name: str
    #: Whether :meth:`restore_hasher` can restore saved states (else resuming rehashes).
    restores_states: bool = False

    @abstractmethod
    def new_hasher(self, algorithm: str) -> Hasher:
        """A fresh hasher (``KeyError`` for an algorithm the engine lacks)."""

    @abstractmethod
    def restore_hasher(self, algorithm: str, state: bytes) -> Hasher | None:
        """A hasher restored from a Go state, or ``None`` if this engine cannot restore one.

        Raises ``HashStateError`` for an unusable state.
        """

    @abstractmethod
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
        """Open the upload data at driver path ``path`` (``create``: a new, empty one).

        ``state`` resumes the hash; ``HashStateError`` if the engine finds it unusable.
        ``PathNotFoundError`` when resuming an upload whose data is gone. ``durable`` uploads
        will be committed with a sync: an engine may start writing them to disk early, and with
        ``paced`` hold the writer to the disk's speed. ``direct`` (the driver's ``directio``)
        says which writes an engine writing local files may send past the page cache; it
        changes nothing of what is stored (the python engine writes through the driver and
        leaves it aside).
        """

    def hash_object(self, driver: StorageDriver, path: str, algorithm: str) -> str:
        """The hex digest of the object at ``path``."""
        hasher = self.new_hasher(algorithm)
        with driver.reader(path) as source:
            feed(hasher, source)
        return hasher.hexdigest()

    def write_object(
        self, driver: StorageDriver, path: str, data: ReadableBuffer, *, durable: bool
    ) -> None:
        """Store ``data`` at ``path`` atomically; ``durable`` syncs it to disk."""
        driver.put_content(path, data, fsync=durable)

    def put_blob(
        self,
        driver: StorageDriver,
        repository: str,
        data: ReadableBuffer,
        algorithm: str,
        *,
        durable: bool,
        expected: Digest | None = None,
    ) -> tuple[Digest, bool] | None:
        """Hash and store a whole small blob and link it, in one step if the engine can.

        Returns the digest and whether the data was written (``False``: it was stored
        already), or ``None`` when the engine has no such shortcut for this driver (the blob
        store then does the same steps one by one). With ``expected``, nothing is stored unless
        the data hashes to it (the digest returned then tells).
        """
        return None

    def file_putter(
        self, driver: StorageDriver, repository: str, algorithm: str, *, durable: bool
    ) -> PutFile | None:
        """How to store whole open files as blobs linked into ``repository`` in one step each
        (:data:`PutFile`), or ``None`` when the engine has no such shortcut for this driver
        (the caller then reads the file and stores it through the blob store).

        Made once and called per file, so whatever it resolves (the layout's local
        directories) is resolved once for a whole batch (``distblob ingest``).
        """
        return None


def feed(hasher: Hasher, source: BinaryIO, limit: int | None = None) -> int:
    """Hash ``source`` from its position to its end (or ``limit`` bytes); returns the count."""
    buffer = bytearray(CHUNK)
    view = memoryview(buffer)
    done = 0
    while limit is None or done < limit:
        want = CHUNK if limit is None else min(CHUNK, limit - done)
        n = source.readinto(view[:want])  # type: ignore[attr-defined]
        if not n:
            break
        hasher.update(view[:n])
        done += n
    return done


def copy_into(upload: UploadIO, source: BinaryIO | int) -> int:
    """Append ``source`` to ``upload`` in 1 MiB buffers (the portable ``read_from``)."""
    buffer = bytearray(CHUNK)
    view = memoryview(buffer)
    total = 0
    while True:
        # A descriptor is read directly; a file object through its own buffering.
        n = os.readv(source, [buffer]) if isinstance(source, int) else source.readinto(view)  # type: ignore[attr-defined]
        if not n:
            return total
        upload.write(view[:n])
        total += n


class StreamUpload:
    """An upload written through the driver's append-only writer, hashed in Python order.

    Used by both engines on drivers without local files, and by the python engine everywhere:
    the hasher is whatever the engine provides, so this class holds only the ordering rule (bytes
    not covered by a restored state are hashed before new ones).

    Where the driver's writer :attr:`~distblob.storage.driver.FileWriter.binds` (an object
    store several replicas write), the hash state is trusted only for the bytes it was saved
    with: closing binds the state's proof (:func:`state_proof`) to the bytes, and a restored
    hasher whose proof is not the one bound is dropped for a fresh one, which rehashes what is
    stored. So a state another writer saved (two requests racing on one upload) never describes
    bytes it was not computed over. Likewise, when the writer cannot prove that what it stored
    is what it was given (:attr:`~distblob.storage.driver.FileWriter.verified`), the stored
    bytes are hashed again.
    """

    def __init__(
        self,
        driver: StorageDriver,
        path: str,
        *,
        create: bool,
        algorithm: str,
        hasher: Hasher,
        fresh: Callable[[], Hasher],
    ) -> None:
        self._driver = driver
        self._path = path
        self._algorithm = algorithm
        self._fresh = fresh
        self._writer = driver.writer(path, append=not create)
        self._size = self._writer.size
        # The proofs of the states saved for these bytes, oldest first: each covers a prefix.
        self._proofs = (self._writer.bound or "").split()
        usable = hasher.size <= self._size
        if usable and hasher.size and self._writer.binds:
            usable = state_proof(algorithm, hasher) in self._proofs
        self._hasher = hasher if usable else fresh()

    @property
    def algorithm(self) -> str:
        return self._algorithm

    @property
    def size(self) -> int:
        return self._size

    @property
    def hashed(self) -> int:
        return self._hasher.size

    def write(self, data: ReadableBuffer, /) -> int:
        if self._hasher.size < self._size:
            self.catch_up()
        view = memoryview(data).cast("B")
        n = self._writer.write(view)
        self._hasher.update(view)
        self._size += n
        return n

    def read_from(self, source: BinaryIO | int) -> int:
        return copy_into(self, source)

    def catch_up(self) -> None:
        if self._hasher.size >= self._size:
            return
        self.flush()  # may find the stored bytes unproven, and start the hash afresh
        with self._driver.reader(self._path, self._hasher.size) as source:
            feed(self._hasher, source, self._size - self._hasher.size)

    def hexdigest(self) -> str:
        self.catch_up()
        return self._hasher.hexdigest()

    def marshal_state(self) -> tuple[int, bytes] | None:
        marshal = getattr(self._hasher, "marshal_binary", None)
        if marshal is None:
            return None
        state: bytes = marshal()
        return self._hasher.size, state

    def flush(self) -> None:
        self._writer.flush()
        if not self._writer.verified:
            # The stored bytes may not be the ones hashed: hash what is stored, from the start.
            self._hasher = self._fresh()
            self._writer.verified = True

    def sync(self) -> None:
        self._writer.commit(fsync=True)

    def close(self) -> None:
        if self._writer.binds:
            proof = state_proof(self._algorithm, self._hasher)
            covers_all = self._hasher.size == self._size and self._size > 0
            if proof is not None and covers_all and proof not in self._proofs:
                self._proofs = [*self._proofs, proof][-MAX_PROOFS:]
            self._writer.bind(" ".join(self._proofs) or None)
        self._writer.close()

    def abandon(self) -> None:
        self._writer.abandon()


def state_proof(algorithm: str, hasher: Hasher) -> str | None:
    """What binds a hash state to the bytes it covers: its algorithm, length and SHA-256 (of
    the state in Go's format); ``None`` for a hasher whose state cannot be saved."""
    marshal = getattr(hasher, "marshal_binary", None)
    if marshal is None:
        return None
    state: bytes = marshal()
    return f"{algorithm}:{hasher.size}:{hashlib.sha256(state).hexdigest()}"
