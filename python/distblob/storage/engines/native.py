"""The native engine: the Rust core's fused write+hash path."""

from __future__ import annotations

import os
import uuid
from typing import TYPE_CHECKING, BinaryIO

from distblob import _native
from distblob.digest import Digest
from distblob.errors import PathNotFoundError
from distblob.hashing import Hasher, new_hasher, unmarshal
from distblob.storage import paths
from distblob.storage.driver import StorageDriver
from distblob.storage.driver.base import DirectIO
from distblob.storage.engines.base import Engine, PutFile, StreamUpload, UploadIO, copy_into

if TYPE_CHECKING:
    from _typeshed import ReadableBuffer


class NativeUpload:
    """An upload file on local disk, written and hashed by one native call per buffer."""

    def __init__(self, native: _native.UploadFile) -> None:
        self._native = native

    @property
    def algorithm(self) -> str:
        return self._native.algorithm

    @property
    def size(self) -> int:
        return self._native.size

    @property
    def hashed(self) -> int:
        return self._native.hashed

    def write(self, data: ReadableBuffer, /) -> int:
        return self._native.write(data)

    def read_from(self, source: BinaryIO | int) -> int:
        fd = source if isinstance(source, int) else _fileno(source)
        if fd is None:
            return copy_into(self, source)
        if not isinstance(source, int):
            # Python's file object may hold bytes it read ahead; start where it says it is.
            os.lseek(fd, source.tell(), os.SEEK_SET)
        copied = self._native.read_from_fd(fd)
        if not isinstance(source, int):
            source.seek(0, os.SEEK_END)
        return copied

    def catch_up(self) -> None:
        self._native.catch_up()

    def hexdigest(self) -> str:
        return self._native.hexdigest()

    def marshal_state(self) -> tuple[int, bytes] | None:
        return self._native.marshal_state()

    def flush(self) -> None:
        pass  # every write went straight to the file, with no buffer in between

    def sync(self) -> None:
        self._native.sync()

    def close(self) -> None:
        self._native.close()

    def abandon(self) -> None:
        self._native.close()  # a local file keeps its bytes: the next resume rehashes them


def _local_template(driver: StorageDriver, template: str) -> str | None:
    """The OS form of a path template: its fixed directory part resolved by the driver."""
    directory, _, rest = template.partition("/{")
    local = driver.local_path(directory)
    return None if local is None else f"{local}/{{{rest}"


def _fileno(source: BinaryIO) -> int | None:
    """The descriptor behind a real, seekable file object, or ``None`` (BytesIO, sockets)."""
    try:
        fd = source.fileno()
    except (OSError, AttributeError, ValueError):
        return None
    return fd if source.seekable() else None


class NativeEngine(Engine):
    """The Rust core (the default)."""

    name = "native"
    restores_states = True

    def new_hasher(self, algorithm: str) -> Hasher:
        return new_hasher(algorithm)

    def restore_hasher(self, algorithm: str, state: bytes) -> Hasher | None:
        return unmarshal(algorithm, state)

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
        local = driver.local_path(path)
        if local is None:
            restored = self.restore_hasher(algorithm, state) if state is not None else None
            return StreamUpload(
                driver,
                path,
                create=create,
                algorithm=algorithm,
                hasher=restored or self.new_hasher(algorithm),
                fresh=lambda: self.new_hasher(algorithm),
            )
        try:
            native = _native.UploadFile(
                local,
                create=create,
                algorithm=algorithm,
                state=state,
                writeback=durable,
                paced=paced,
                direct=direct,
            )
        except FileNotFoundError:
            raise PathNotFoundError(path) from None
        return NativeUpload(native)

    def hash_object(self, driver: StorageDriver, path: str, algorithm: str) -> str:
        local = driver.local_path(path)
        if local is None:
            return super().hash_object(driver, path, algorithm)
        try:
            return _native.hash_file(local, algorithm)
        except FileNotFoundError:
            raise PathNotFoundError(path) from None

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
        blob = _local_template(driver, paths.blob_data_path_template(algorithm))
        link = _local_template(driver, paths.layer_link_path_template(repository, algorithm))
        if blob is None or link is None:
            return None
        # Hash, existence check, unnamed write linked into place, and the repository link:
        # one GIL-free call instead of a dozen Python-level steps.
        hexdigest, stored = _native.put_blob(
            data,
            algorithm,
            blob,
            link,
            durable,
            expected=expected.encoded if expected is not None else None,
        )
        return Digest.from_parts(algorithm, hexdigest), stored

    def file_putter(
        self, driver: StorageDriver, repository: str, algorithm: str, *, durable: bool
    ) -> PutFile | None:
        """On a local filesystem, one GIL-free call per file (``_native.put_blob_fd``): the
        kernel copies the file into an unnamed ``O_TMPFILE`` beside the blobs, which is hashed
        as stored and only then linked into place, followed by the repository link. No upload
        directory, start time or hash state (a one-shot store has nothing to resume), and an
        interrupted call leaves nothing. ``None`` for other drivers; each call returns ``None``,
        having read nothing, on a filesystem without unnamed files."""
        blob = _local_template(driver, paths.blob_data_path_template(algorithm))
        link = _local_template(driver, paths.layer_link_path_template(repository, algorithm))
        if blob is None or link is None:
            return None

        def put(fd: int, expected_size: int | None) -> tuple[Digest, int] | None:
            stored = _native.put_blob_fd(
                fd, algorithm, blob, link, durable, expected_size=expected_size
            )
            if stored is None:
                return None
            hexdigest, size, _ = stored
            return Digest.from_parts(algorithm, hexdigest), size

        return put

    def write_object(
        self, driver: StorageDriver, path: str, data: ReadableBuffer, *, durable: bool
    ) -> None:
        local = driver.local_path(path)
        if local is None:
            super().write_object(driver, path, data, durable=durable)
            return
        # Write, sync, rename and sync the directories in one GIL-free call.
        _native.write_file_atomic(local, f"{local}.{uuid.uuid4()}.tmp", data, durable)
