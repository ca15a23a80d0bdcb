"""``BlobWriter``: one upload, shared by both engines (ids, states, resume, commit).

The rules are distribution's ``blobWriter``:

- every :meth:`BlobWriter.close` stores the running hash state at
  ``_uploads/<id>/hashstates/<algorithm>/<offset>`` (Go's format for SHA-2), so the next
  request (or, for SHA-256, the Go registry) resumes without rehashing;
- one writer at a time holds an upload (:mod:`~distblob.storage.uploadlock`);
- :meth:`BlobWriter.commit` checks the size and the digest (hashing with the client's algorithm
  when it differs from the upload's), syncs the data, moves it into ``blobs/`` (keeping
  a blob that is already there), links it into the repository and removes the upload. A failed
  check leaves the upload in place and nothing under ``blobs/``.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import os
from collections.abc import Iterator
from types import TracebackType
from typing import TYPE_CHECKING, BinaryIO, Self

from distblob import _observe
from distblob.descriptor import DEFAULT_MEDIA_TYPE, Descriptor
from distblob.digest import Digest
from distblob.errors import (
    BlobInvalidDigestError,
    BlobInvalidLengthError,
    BlobUploadBusyError,
    BlobUploadInvalidError,
    BlobUploadUnknownError,
    PathNotFoundError,
    StorageDriverError,
    UnsupportedError,
    WriteConflictError,
)
from distblob.storage import paths
from distblob.storage.collection import Need
from distblob.storage.engines import UploadIO

#: How many times a commit stores a blob again that a garbage collection swept meanwhile.
REPAIRS = 3

if TYPE_CHECKING:
    from _typeshed import ReadableBuffer

    from distblob.storage.linked import LinkedBlobStore
    from distblob.storage.uploadlock import UploadLock


logger = logging.getLogger("distblob.storage")


def format_started_at(when: dt.datetime) -> str:
    """RFC 3339 in UTC with whole seconds, as the Go registry writes ``startedat``."""
    return when.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_started_at(text: str) -> dt.datetime:
    """Parse a ``startedat`` file (RFC 3339, with or without fractional seconds)."""
    value = text.strip()
    if value.endswith("Z"):
        value = value[:-1] + "+00:00"
    parsed = dt.datetime.fromisoformat(value)
    if parsed.tzinfo is None:
        raise ValueError(f"startedat has no time zone: {text!r}")
    return parsed.astimezone(dt.UTC)


class BlobWriter:
    """An upload in progress. Writes append; :meth:`seek` and :meth:`tell` report positions.

    Use it as a context manager: it is closed (kept resumable) when the block ends normally and
    cancelled when it raises.
    """

    def __init__(
        self,
        store: LinkedBlobStore,
        upload_id: str,
        started_at: dt.datetime,
        upload: UploadIO,
        *,
        saved_state_at: int | None = None,
        lock: UploadLock | None = None,
    ) -> None:
        self._store = store
        self._lock = lock  # held until the writer ends (see uploadlock.py)
        self._id = upload_id
        self._started_at = started_at
        self._upload = upload
        self._position = upload.size
        self._saved_state_at = saved_state_at
        # The running hash starts from a saved state (of more than nothing), which nothing
        # proves right: commit rehashes the data before reporting a mismatch. The Go registry
        # 2.8.2 writes wrong states: resuming an upload with no state at its size, it saves one
        # named by the bytes of the request only and covering only those.
        self._from_state = bool(saved_state_at)
        self._hash_wrong = False  # the running hash proved not to be the data's
        self._failed = False  # a write failed: the bytes since the last close are not kept
        self._done = False  # committed, cancelled or closed
        if (observer := _observe.observer) is not None:
            observer.uploads_open(1)

    # -- identity ----------------------------------------------------------------------------

    @property
    def id(self) -> str:
        """The upload id (a UUID)."""
        return self._id

    @property
    def started_at(self) -> dt.datetime:
        return self._started_at

    @property
    def size(self) -> int:
        """Bytes uploaded so far."""
        return self._upload.size

    @property
    def hashed(self) -> int:
        """Bytes the running hash covers. Right after :meth:`LinkedBlobStore.resume` this is
        the offset of the state it resumed from (0 when it found none and will rehash)."""
        return self._upload.hashed

    @property
    def algorithm(self) -> str:
        """The algorithm the upload is hashed with (its canonical digest's)."""
        return self._upload.algorithm

    @property
    def repository(self) -> str:
        return self._store.name

    @property
    def closed(self) -> bool:
        return self._done

    def _data_path(self) -> str:
        return paths.upload_data_path(self._store.name, self._id)

    @property
    def local_path(self) -> str | None:
        """The OS path of the upload's data on a local filesystem (readers may follow it as it
        grows), else ``None``."""
        return self._store.driver.local_path(self._data_path())

    def _check_open(self) -> None:
        if self._done:
            raise ValueError(f"upload {self._id} is closed")

    # -- writing -----------------------------------------------------------------------------

    def write(self, data: ReadableBuffer, /) -> int:
        """Append ``data`` (any contiguous buffer); returns the bytes written."""
        self._check_open()
        if self._position != self._upload.size:
            raise UnsupportedError(
                f"uploads are append-only: write at {self._upload.size}, not {self._position}"
            )
        with self._upload_errors():
            n = self._upload.write(data)
        self._position += n
        if (observer := _observe.observer) is not None:
            observer.blob_written(n)
        return n

    def read_from(self, source: BinaryIO | int) -> int:
        """Append everything ``source`` (a binary file or a descriptor) holds until its end."""
        self._check_open()
        if self._position != self._upload.size:
            raise UnsupportedError("uploads are append-only: seek to the end first")
        with self._upload_errors():
            n = self._upload.read_from(source)
        self._position = self._upload.size
        if (observer := _observe.observer) is not None:
            observer.blob_written(n)
        return n

    @contextlib.contextmanager
    def _upload_errors(
        self, conflict: type[BlobUploadInvalidError] = BlobUploadBusyError
    ) -> Iterator[None]:
        """Writes that fail leave the upload as the last close left it (on an object store;
        a local file may keep some of the bytes, which the next resume finds and rehashes):
        nothing is saved for them. Another writer of the upload (on another replica) is a
        ``conflict``; an upload another writer completed meanwhile is unknown."""
        try:
            yield
        except WriteConflictError as error:
            self._failed = True
            raise conflict(f"upload {self._id}: {error.reason}") from None
        except PathNotFoundError:
            self._failed = True
            raise BlobUploadUnknownError(self._id) from None
        except BaseException:
            self._failed = True
            raise

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        """Move the position within ``0..size``; writing needs it at the end."""
        base = {os.SEEK_SET: 0, os.SEEK_CUR: self._position, os.SEEK_END: self._upload.size}
        if whence not in base:
            raise ValueError(f"invalid whence {whence}")
        target = base[whence] + offset
        if not 0 <= target <= self._upload.size:
            raise ValueError(f"cannot seek to {target}: the upload holds {self._upload.size}")
        self._position = target
        return target

    def tell(self) -> int:
        return self._position

    def reader(self) -> BinaryIO:
        """A reader of what was uploaded so far."""
        if not self._done:
            self._upload.flush()  # the bytes may still sit in a driver writer's buffer
        return self._store.driver.reader(self._data_path())

    def digest(self) -> Digest:
        """The canonical digest of everything uploaded so far.

        It comes from the running hash, so a caller that streams a file into a fresh upload
        learns the digest to commit with in the same pass as the write, with no second read. A
        hash resumed from a saved state is not trusted (nothing proves the state right, and
        commit would then compare it with itself): the data is rehashed instead.
        """
        self._check_open()
        self._upload.flush()
        if self._from_state:
            store = self._store
            encoded = store.engine.hash_object(store.driver, self._data_path(), self.algorithm)
            return Digest.from_parts(self.algorithm, encoded)
        return Digest.from_parts(self.algorithm, self._upload.hexdigest())

    # -- ending ------------------------------------------------------------------------------

    def _save_state(self) -> None:
        if not self._store.resumable_digests or self._upload.marshal_state() is None:
            return  # this engine or algorithm saves no states
        if self._hash_wrong or self._failed:
            return  # never pass on a state known to be wrong, or of bytes not kept
        self._upload.catch_up()
        state = self._upload.marshal_state()
        if state is None:
            return
        offset, blob = state
        if offset == self._saved_state_at:
            return
        path = paths.upload_hash_state_path(self._store.name, self._id, self.algorithm, offset)
        driver = self._store.driver
        try:
            driver.put_content(path, blob)
        except (StorageDriverError, ConnectionError) as error:
            if not driver.shared_by_replicas or isinstance(error, PathNotFoundError):
                raise
            # Another replica writing the same state at once (a racing request) can make the
            # object store fail this PUT. The state only saves a rehash, and is trusted only
            # where the pending file binds it: go on without it.
            logger.warning("upload %s: hash state not saved (%s)", self._id, error)
            return
        self._saved_state_at = offset

    def _end(self, *, remove: bool = False) -> None:
        """The writer is done: close the file (then, with ``remove``, delete the upload) and let
        another writer take the upload."""
        try:
            try:
                if self._failed or (self._lock is not None and self._lock.lost):
                    self._upload.abandon()  # keep nothing of this writer's
                else:
                    self._upload.close()  # first: closing may write the driver's upload state
            except WriteConflictError as error:
                if not remove:
                    raise BlobUploadBusyError(f"upload {self._id}: {error.reason}") from None
            except PathNotFoundError:
                # Closing sends what is left; another writer completed (or purged) the upload
                # meanwhile, so there is none to send it to: the upload is gone.
                if not remove:
                    raise BlobUploadUnknownError(self._id) from None
            if remove:
                with contextlib.suppress(PathNotFoundError):
                    self._store.driver.delete(paths.upload_dir_path(self._store.name, self._id))
        finally:
            if not self._done and (observer := _observe.observer) is not None:
                observer.uploads_open(-1)
            self._done = True
            if self._lock is not None:
                self._lock.release()

    def close(self) -> None:
        """Stop writing; the upload stays and can be resumed. Idempotent.

        ``BlobUploadBusyError`` when another writer (on another replica) changed the upload
        meanwhile, or took it over after this one's lease expired: what this writer wrote is
        then not kept, and the upload is as the other one left it.
        """
        if self._done:
            return
        lost = self._lock is not None and self._lock.lost
        try:
            if not lost:
                with self._upload_errors():  # saving may read the data back
                    self._save_state()
        finally:
            self._end()
        if lost:
            raise BlobUploadBusyError(f"upload {self._id}: the lease expired while writing")

    def cancel(self) -> None:
        """Remove the upload and its data. Idempotent, also after commit or close."""
        self._end(remove=True)

    def _check_digest(self, expected: Digest) -> tuple[Digest, Digest]:
        """The uploaded data's digest in ``expected``'s algorithm, and its canonical digest."""
        store = self._store
        canonical = Digest.from_parts(self.algorithm, self._upload.hexdigest())
        if self._from_state and expected != canonical:
            # A mismatch (or a digest of another algorithm, where ``canonical`` names the blob
            # unchecked) with a hash resumed from a state: the state may be wrong, the data not.
            rehashed = store.engine.hash_object(store.driver, self._data_path(), self.algorithm)
            if rehashed != canonical.encoded:
                canonical = Digest.from_parts(self.algorithm, rehashed)
                self._hash_wrong = True
        if expected.algorithm == canonical.algorithm:
            return canonical, canonical
        # The client named another algorithm: hash the stored data with that one.
        other = store.engine.hash_object(store.driver, self._data_path(), expected.algorithm)
        return Digest.from_parts(expected.algorithm, other), canonical

    def commit(
        self,
        provisional: Descriptor,
        *,
        tail: ReadableBuffer | None = None,
        cleanup: bool = True,
    ) -> Descriptor:
        """:meth:`write` ``tail`` (an upload's last chunk, sent with its final PUT), then verify
        and store the upload; returns the blob's canonical descriptor.

        Raises :class:`BlobInvalidDigestError` without a digest or when the content does not
        match it, and :class:`BlobInvalidLengthError` when ``provisional.size`` (if set) is not
        the uploaded size. Either way the upload is left as it was, for the caller to cancel or
        continue.

        An upload that holds nothing yet (a POST then one PUT with the whole blob), committed
        with a ``tail`` (empty or not) under a digest of its own algorithm, is stored as
        :meth:`LinkedBlobStore.put` stores a blob: hashed once and written straight into place,
        with no copy in the upload's file (a failed check leaves the upload still empty).

        ``cleanup=False`` leaves the upload's directory (its data moved out) for the caller to
        remove with :meth:`cancel` later: a server does that after answering, so the client
        does not wait for it. Until then the upload cannot be resumed (it has no data), and
        if the process dies first, upload purging removes the directory.
        """
        self._check_open()
        if tail is None:
            return self._commit(provisional, cleanup=cleanup)
        expected = provisional.digest
        view = memoryview(tail)
        if self._upload.size or expected is None or expected.algorithm != self.algorithm:
            if view.nbytes:
                self.write(view)
            return self._commit(provisional, cleanup=cleanup)
        return self._put_whole(view.cast("B"), provisional, cleanup=cleanup)

    def _commit(self, provisional: Descriptor, *, cleanup: bool) -> Descriptor:
        store = self._store
        expected = provisional.digest
        if expected is None:
            raise BlobInvalidDigestError("", "a commit needs the blob's digest")
        # Make every byte visible to the read-backs below. Syncing waits until the checks pass:
        # it ends a stream upload's driver writer, and a failed commit leaves the upload writable.
        # A conflict here: an object store holds other bytes than this upload recorded (two
        # writers raced on it), so it cannot be completed and the client must start again.
        with self._upload_errors(conflict=BlobUploadInvalidError):
            self._upload.flush()
        size = self._upload.size
        if provisional.size > 0 and provisional.size != size:
            raise BlobInvalidLengthError(provisional.size, size)
        with self._upload_errors(conflict=BlobUploadInvalidError):  # these read the data back
            actual, canonical = self._check_digest(expected)
        if actual != expected:
            self._save_state()
            raise BlobInvalidDigestError(str(expected), "content does not match digest")

        if store.fsync:
            self._upload.sync()  # the data is durable before any name makes it visible
        self._upload.close()
        # The renames and the links are made durable together, once all are done: a crash
        # before that can leave a link whose blob is not in place yet (an unknown blob, as
        # distribution reads it), never a reported commit that is lost.
        fence = store.registry.fence
        began = fence.begin()
        try:
            with store.driver.deferred_sync():
                moved = store.blobs.move_into_place(self._data_path(), canonical, size)
                self._link(canonical, expected)
                if not moved and not store.blobs.exists(canonical):
                    # The blob was there when checked but deleted before the link was written
                    # (a blob delete, garbage collection): the upload's verified data is still
                    # here, so put it in place rather than leave a link to nothing.
                    moved = store.blobs.move_into_place(self._data_path(), canonical)
            for _ in range(REPAIRS):
                # An online garbage collection may have swept a blob that was stored already
                # (distblob.storage.collection): the upload's verified data is still here
                # unless it was moved, so put it in place again rather than answer for a blob
                # that is gone.
                fresh = (canonical,) if moved else ()
                if not fence.secure(began, lambda: self._needs(canonical, expected), fresh=fresh):
                    break
                began = fence.begin()
                with store.driver.deferred_sync():
                    if not store.blobs.exists(canonical):
                        if moved:
                            raise BlobUploadInvalidError(
                                f"{canonical}: removed by a garbage collection as it was "
                                "stored; upload it again"
                            )
                        moved = store.blobs.move_into_place(self._data_path(), canonical)
                    self._link(canonical, expected)
            else:
                raise BlobUploadInvalidError(f"{canonical}: swept by garbage collection again")
        except PathNotFoundError:
            # The data went from under the writer (a program that takes no lock, such as the
            # Go registry, committed or purged the upload meanwhile): the upload is gone.
            self._end()
            raise BlobUploadUnknownError(self._id) from None
        except BaseException:
            self._end()  # the file is closed: the upload stays, for another writer to resume
            raise
        if cleanup:
            self.cancel()  # removes the upload directory and ends the writer
        else:
            try:
                if not moved:
                    # The blob was already stored: drop the upload's copy now, so the upload
                    # left for later has no data and cannot be resumed meanwhile.
                    with contextlib.suppress(PathNotFoundError):
                        store.driver.delete(self._data_path())
            finally:
                self._end()
        media_type = provisional.media_type or DEFAULT_MEDIA_TYPE
        descriptor = Descriptor(media_type=media_type, size=size, digest=canonical)
        store.set_descriptor(canonical, descriptor)
        return descriptor

    def _link(self, canonical: Digest, expected: Digest) -> None:
        self._store.link(canonical)
        if expected != canonical:
            self._store.link(expected, target=canonical)

    def _needs(self, canonical: Digest, expected: Digest) -> list[Need]:
        """What a commit relies on: the blob's data and the links it wrote."""
        name = self._store.name
        links = {paths.layer_link_path(name, d) for d in (canonical, expected)}
        return [Need(canonical, (paths.blob_data_path(canonical), *sorted(links)))]

    def _put_whole(
        self, whole: memoryview, provisional: Descriptor, *, cleanup: bool
    ) -> Descriptor:
        """Commit an empty upload with the whole blob given at once (see :meth:`commit`)."""
        expected = provisional.digest
        if provisional.size > 0 and provisional.size != whole.nbytes:
            raise BlobInvalidLengthError(provisional.size, whole.nbytes)
        descriptor = self._store.put(
            whole, provisional.media_type, algorithm=self.algorithm, expected=expected
        )
        if cleanup:
            self.cancel()
            return descriptor
        try:
            # As after a commit: the upload left for later has no data, so it cannot be resumed
            # (and written to for nothing) before its removal.
            self._upload.close()
            with contextlib.suppress(PathNotFoundError):
                self._store.driver.delete(self._data_path())
        finally:
            self._end()
        return descriptor

    # -- context manager ---------------------------------------------------------------------

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is None:
            self.close()
        else:
            self.cancel()

    def __repr__(self) -> str:
        return f"<BlobWriter {self._store.name} {self._id} position={self._position}>"
