"""A repository's blobs: the global blobs it links, and the uploads into it.

distribution's ``linkedBlobStore``: a blob belongs to a repository when
``_layers/<alg>/<hex>/link`` names it, so a digest stored for one repository is invisible to
another until it is uploaded or mounted there. Uploads live under ``_uploads/<id>``.

Stats go through the repository's scope of the registry's blob descriptor cache
(:mod:`distblob.storage.cache`), as distribution wraps its linked statter in a cached one. A miss
reads the link and stats the blob, fills the entry, then (with a shared cache) reads the link
again, so an unlink racing the stat (which clears after unlinking) never leaves an entry behind.
Commits, puts and mounts record the descriptor; unlinking clears it. What a hit saves depends on
whether the cache is shared by every process serving the storage:

- A shared cache (Redis) answers without reading anything: every replica's unlinks clear it
  (and clears that could not reach it are applied before it is trusted again, see
  :class:`~distblob.storage.cache.RedisBlobDescriptorCache`).
- A cache of this process alone (in memory) never learns of another replica's unlink, so it is
  never the answer to "does this repository link this blob": a hit still reads the link (one
  small read) and answers only if the link names the cached blob; it saves the blob stat.
  Whether the blob's data is still there is taken from the entry: blob data goes only with
  garbage collection, and ``distblob gc`` removes a layer link before the data it names (or
  keeps the data of every linked blob), so a link that is there names data that is there.
  distribution's ``garbage-collect`` does leave layer links behind; after it, a HEAD may answer
  from an entry until the replicas restart, as with distribution's own caches.

A GET still asks storage for the data before promising it (entries do not see data removed
behind the registry's back), and a blob whose data is gone answers ``BlobUnknownError``.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import functools
import os
import threading
import uuid
from collections import OrderedDict
from collections.abc import Iterator
from typing import TYPE_CHECKING, BinaryIO, Literal

from distblob import _observe
from distblob._numbers import is_ascii_digits
from distblob.descriptor import DEFAULT_MEDIA_TYPE, Descriptor
from distblob.digest import ALGORITHMS, CANONICAL, Digest
from distblob.errors import (
    BlobDigestUnsupportedError,
    BlobInvalidDigestError,
    BlobUnknownError,
    BlobUploadInvalidError,
    BlobUploadUnknownError,
    DigestInvalidError,
    DigestUnsupportedError,
    HashStateError,
    PathNotFoundError,
    UnsupportedError,
)
from distblob.interfaces import ServePlan
from distblob.storage import paths
from distblob.storage.blobs import Statter, parse_digest
from distblob.storage.cache import (
    DEFAULT_SIZE,
    BlobDescriptorCache,
    forget,
    lookup,
    remember,
)
from distblob.storage.collection import Need, State
from distblob.storage.engines import PutFile, UploadIO
from distblob.storage.uploadlock import UploadLock, lock_upload
from distblob.storage.writer import REPAIRS, BlobWriter, format_started_at, parse_started_at

if TYPE_CHECKING:
    from _typeshed import ReadableBuffer

    from distblob.registry import Registry

#: How an upload's data goes to disk while it arrives (see :meth:`LinkedBlobStore.create`).
Writeback = Literal["paced", "unpaced", "off"]


class DescriptorCache:
    """The media types manifests were pushed with, per repository, in memory (bounded).

    The manifest store's memory (:mod:`distblob.storage.manifests`): an OCI manifest body may
    lack its ``mediaType``. It survives no restart; without an entry the type is read from or
    sniffed in the body. Blobs are described by the blob descriptor cache instead; clearing an
    entry here clears that cache's entry for the repository too, so a link removed by a caller
    of :meth:`clear` (manifest deletes, the proxy's expiry) is forgotten by both.
    """

    def __init__(self, blobs: BlobDescriptorCache | None = None, size: int = DEFAULT_SIZE) -> None:
        self._lock = threading.Lock()
        self._entries: OrderedDict[tuple[str, str], Descriptor] = OrderedDict()
        self._blobs = blobs
        self.size = size

    def get(self, repository: str, digest: str) -> Descriptor | None:
        with self._lock:
            descriptor = self._entries.get((repository, digest))
            if descriptor is not None:
                self._entries.move_to_end((repository, digest))
            return descriptor

    def set(self, repository: str, digest: str, descriptor: Descriptor) -> None:
        with self._lock:
            self._entries[(repository, digest)] = descriptor
            self._entries.move_to_end((repository, digest))
            while len(self._entries) > self.size:
                self._entries.popitem(last=False)

    def clear(self, repository: str, digest: str) -> bool:
        """Forget the entry; whether there was one."""
        if self._blobs is not None:
            forget(self._blobs.repository_scoped(repository), Digest(digest))
        with self._lock:
            return self._entries.pop((repository, digest), None) is not None


class LinkedBlobStore(Statter):
    """The blobs of one repository (a :class:`~distblob.interfaces.BlobStore`)."""

    def __init__(self, registry: Registry, name: str) -> None:
        self.name = paths.validate_repository_name(name)
        self.registry = registry
        self.driver = registry.driver
        self.engine = registry.engine
        self.blobs = registry.blobs
        self.cache = registry.descriptor_cache.repository_scoped(self.name)
        #: Whether a cache hit may answer without reading the link (see the module docstring).
        self.shared_cache = registry.descriptor_cache.shared
        self.fsync = registry.fsync
        self.resumable_digests = registry.resumable_digests

    # -- reading -----------------------------------------------------------------------------

    def _target(self, digest: Digest) -> Digest:
        """The canonical digest the repository's link for ``digest`` names."""
        try:
            raw = self.driver.get_content(paths.layer_link_path(self.name, digest))
        except PathNotFoundError:
            raise BlobUnknownError(digest) from None
        try:
            return Digest(raw.decode("ascii").strip())
        except (UnicodeDecodeError, DigestInvalidError, DigestUnsupportedError):
            # A link we cannot read links nothing; the blob is unknown here.
            raise BlobUnknownError(digest) from None

    def stat(self, digest: str) -> Descriptor:
        """The linked blob's descriptor; ``BlobUnknownError`` if not linked or not stored."""
        digest = parse_digest(digest)
        cached = lookup(self.cache, digest)
        if cached is not None and self.shared_cache:
            return cached
        try:
            target = self._target(digest)
        except BlobUnknownError:
            if cached is not None:
                forget(self.cache, digest)  # unlinked by another process
            raise
        if cached is not None and cached.digest == target:
            return cached  # this process's entry, for a link that is still there
        descriptor = self.blobs.stat(target)
        if target != digest:
            # An alias in another algorithm: the blob it names may have a media type here.
            named = lookup(self.cache, target)
            if named is not None:
                descriptor = descriptor.with_(media_type=named.media_type)
        if remember(self.cache, digest, descriptor) and self.shared_cache:
            # An unlink clears the entry after removing the link: one that ran since the link
            # was read is seen here (see the module docstring). An unshared entry needs no such
            # check: every hit reads the link anyway.
            try:
                self._target(digest)
            except BlobUnknownError:
                forget(self.cache, digest)
                raise
        return descriptor

    def get(self, digest: str) -> bytes:
        return self.blobs.get(self._target(parse_digest(digest)))

    def open(self, digest: str) -> BinaryIO:
        return self.blobs.open(self._target(parse_digest(digest)))

    def serve_blob(
        self,
        digest: str,
        *,
        method: str = "GET",
        range: str | None = None,
        if_none_match: str | None = None,
    ) -> ServePlan:
        dgst = parse_digest(digest)
        descriptor = self.stat(dgst)
        if method.upper() != "HEAD":
            # A GET reads the data: make sure storage still has it (and its size), whatever
            # the repository's or the global entry said.
            assert descriptor.digest is not None
            try:
                stored = self.blobs.stat_stored(descriptor.digest)
            except BlobUnknownError:
                forget(self.cache, dgst)
                raise BlobUnknownError(dgst) from None
            descriptor = descriptor.with_(size=stored.size)
        return self.blobs.serve_descriptor(
            descriptor,
            method=method,
            range=range,
            if_none_match=if_none_match,
            requested=dgst if dgst != descriptor.digest else None,
        )

    def enumerate(self) -> Iterator[Digest]:
        """The digests linked into the repository."""
        try:
            entries = list(self.driver.walk(paths.layers_root(self.name)))
        except PathNotFoundError:
            return
        for info in entries:
            if info.is_dir or not info.path.endswith("/link"):
                continue
            parts = info.path.split("/")
            try:
                yield Digest.from_parts(parts[-3], parts[-2])
            except (DigestInvalidError, DigestUnsupportedError):
                continue

    # -- descriptors -------------------------------------------------------------------------

    def set_descriptor(self, digest: str, descriptor: Descriptor) -> None:
        """Record ``descriptor`` (its media type, above all) for a blob the repository links.

        Nothing is recorded for a blob it does not link. The size is taken from ``descriptor``
        when it names the linked blob (commit passes the verified one), else from the store.
        """
        dgst = parse_digest(digest)
        try:
            target = self._target(dgst)
            size = descriptor.size
            if descriptor.digest != target or size < 0:
                size = self.blobs.stat(target).size
        except BlobUnknownError:
            return
        media_type = descriptor.media_type or DEFAULT_MEDIA_TYPE
        remember(self.cache, dgst, Descriptor(media_type, size, target))

    def clear(self, digest: str) -> None:
        """Forget the repository's media type for ``digest``; ``BlobUnknownError`` if it had
        none of its own (every blob without one is ``application/octet-stream``)."""
        dgst = parse_digest(digest)
        previous = lookup(self.cache, dgst)
        forget(self.cache, dgst)
        if previous is None or previous.media_type == DEFAULT_MEDIA_TYPE:
            raise BlobUnknownError(dgst)

    # -- writing -----------------------------------------------------------------------------

    def link(self, digest: Digest, *, target: Digest | None = None) -> None:
        """Link the blob ``target`` (default: ``digest`` itself) into the repository."""
        path = paths.layer_link_path(self.name, digest)
        self.driver.put_content(path, str(target or digest).encode(), fsync=self.fsync)

    def put(
        self,
        data: ReadableBuffer,
        media_type: str = "",
        *,
        algorithm: str = CANONICAL,
        expected: Digest | None = None,
    ) -> Descriptor:
        """Store a whole blob given in memory, link it, and return its descriptor.

        The bytes are hashed once; if the blob is already stored only the link is written.
        With ``expected`` (a digest in ``algorithm``), content that does not hash to it raises
        :class:`BlobInvalidDigestError` and nothing is stored.
        """
        _check_algorithm(algorithm)
        if expected is not None and expected.algorithm != algorithm:
            raise ValueError(f"expected {expected} is not a {algorithm} digest")
        view = memoryview(data).cast("B")
        began = self.registry.fence.begin()
        put = self.engine.put_blob(
            self.driver, self.name, view, algorithm, durable=self.fsync, expected=expected
        )
        if put is None:
            hasher = self.engine.new_hasher(algorithm)
            hasher.update(view)
            digest, stored = Digest.from_hasher(hasher), False
            if expected is None or digest == expected:
                stored = self.blobs.write(digest, view)
                self.link(digest)
        else:
            digest, stored = put
        if expected is not None and digest != expected:
            raise BlobInvalidDigestError(str(expected), "content does not match digest")
        self._secure_put(began, digest, view, stored=stored)
        descriptor = Descriptor(
            media_type=media_type or DEFAULT_MEDIA_TYPE, size=view.nbytes, digest=digest
        )
        remember(self.cache, digest, descriptor)
        if (observer := _observe.observer) is not None:
            observer.blob_written(view.nbytes)
        return descriptor

    def _needs(self, digest: Digest, target: Digest | None = None) -> list[Need]:
        """What linking ``digest`` relies on: the blob's data and the repository's link."""
        data = paths.blob_data_path(target or digest)
        return [Need(target or digest, (data, paths.layer_link_path(self.name, digest)))]

    def _secure_put(self, began: State, digest: Digest, view: memoryview, *, stored: bool) -> None:
        """Make sure a blob just put is still there: an online garbage collection may have
        swept it if it was stored already (:mod:`distblob.storage.collection`); it is written
        again from ``view``. ``stored``: this put wrote the data itself."""
        fence = self.registry.fence
        for _ in range(REPAIRS):
            fresh = (digest,) if stored else ()
            if not fence.secure(began, lambda: self._needs(digest), fresh=fresh):
                return
            began = fence.begin()
            stored = self.blobs.write(digest, view)
            self.link(digest)
        raise BlobUploadInvalidError(f"{digest}: swept by garbage collection again")

    def file_putter(self, algorithm: str = CANONICAL) -> PutFile | None:
        """How to store whole open files as blobs of ``algorithm`` linked here, one engine call
        each (see :meth:`~distblob.storage.engines.Engine.file_putter`); ``None`` where the
        engine has no such call for the driver (then read the file and :meth:`put` it, or
        stream it through :meth:`create`).

        For batch jobs (``distblob ingest``): nothing is recorded in the descriptor cache, and
        a blob already stored is only linked.
        """
        _check_algorithm(algorithm)
        inner = self.engine.file_putter(self.driver, self.name, algorithm, durable=self.fsync)
        if inner is None:
            return None
        fence = self.registry.fence

        def put_file(fd: int, expected_size: int | None) -> tuple[Digest, int] | None:
            # As :meth:`put`: a blob an online garbage collection swept as it was linked is
            # stored again, from the file (read again from where it started).
            start = os.lseek(fd, 0, os.SEEK_CUR)
            for _ in range(REPAIRS):
                began = fence.begin()
                stored = inner(fd, expected_size)
                if stored is None:
                    return None
                digest = stored[0]
                if not fence.secure(began, functools.partial(self._needs, digest)):
                    return stored
                os.lseek(fd, start, os.SEEK_SET)
            raise BlobUploadInvalidError(f"{digest}: swept by garbage collection again")

        return put_file

    def create(self, *, algorithm: str = CANONICAL, writeback: Writeback = "paced") -> BlobWriter:
        """Start an upload hashed with ``algorithm`` (its canonical digest's algorithm).

        With ``fsync`` the native engine starts writing the data to disk as it arrives, so the
        commit's ``fsync`` finds little left to do. ``writeback`` says how:

        - ``"paced"``: each write also waits for the writeback started before, which keeps the
          upload's dirty pages bounded and the writer at the disk's speed;
        - ``"unpaced"``: started, never waited for, for a writer whose readers wait on its
          progress (the pull-through cache's clients): they are not held to the disk's speed;
        - ``"off"``: everything is left to the commit.
        """
        _check_algorithm(algorithm)
        if writeback not in ("paced", "unpaced", "off"):
            raise ValueError(f"writeback is 'paced', 'unpaced' or 'off', not {writeback!r}")
        upload_id = str(uuid.uuid4())
        started_at = dt.datetime.now(dt.UTC).replace(microsecond=0)
        started_at_path = paths.upload_started_at_path(self.name, upload_id)
        self.driver.put_content(started_at_path, format_started_at(started_at).encode())
        lock = lock_upload(
            self.driver, started_at_path, upload_id, leases=self.registry.upload_leases
        )
        try:
            if algorithm != CANONICAL:
                self.driver.put_content(
                    paths.upload_algorithm_path(self.name, upload_id), algorithm.encode()
                )
            upload = self.engine.open_upload(
                self.driver,
                paths.upload_data_path(self.name, upload_id),
                create=True,
                algorithm=algorithm,
                state=None,
                durable=self.fsync and writeback != "off",
                paced=writeback == "paced",
                # An unpaced writer's readers read what it just wrote (the cache's clients):
                # that stays in the page cache for them.
                direct=self.driver.directio if writeback == "paced" else "off",
            )
        except BaseException:
            lock.release()
            raise
        # Nothing to save at offset 0: a resume at size 0 (ours or the Go registry's) starts
        # the hash afresh, so the first close stores no state.
        return BlobWriter(self, upload_id, started_at, upload, saved_state_at=0, lock=lock)

    def resume(self, upload_id: str, *, wait: float | None = None) -> BlobWriter:
        """Continue an upload, from its newest usable hash state (or by rehashing the data).

        ``BlobUploadUnknownError`` if there is no such upload; ``BlobUploadInvalidError`` if
        its start time is unreadable; ``BlobUploadBusyError`` if another writer still holds it
        after ``wait`` seconds (10 by default; ``0`` does not wait).
        """
        upload_id = paths.validate_upload_id(upload_id)
        started_at_path = paths.upload_started_at_path(self.name, upload_id)
        try:
            # Held by the writer until it ends: nobody else writes meanwhile (uploadlock.py),
            # so the size and the states read below stay true.
            lock = lock_upload(
                self.driver,
                started_at_path,
                upload_id,
                wait=wait,
                leases=self.registry.upload_leases,
            )
        except PathNotFoundError:
            raise BlobUploadUnknownError(upload_id) from None
        try:
            return self._resume_locked(upload_id, started_at_path, lock)
        except BaseException:
            lock.release()
            raise

    def _resume_locked(self, upload_id: str, started_at_path: str, lock: UploadLock) -> BlobWriter:
        try:
            raw = self.driver.get_content(started_at_path)
            size = self.driver.stat(paths.upload_data_path(self.name, upload_id)).size
        except PathNotFoundError:
            raise BlobUploadUnknownError(upload_id) from None
        try:
            started_at = parse_started_at(raw.decode("ascii"))
        except (UnicodeDecodeError, ValueError):
            raise BlobUploadInvalidError(f"upload {upload_id}: unreadable startedat") from None
        algorithm = self._upload_algorithm(upload_id)

        def open_upload(state: bytes | None) -> UploadIO:
            try:
                return self.engine.open_upload(
                    self.driver,
                    paths.upload_data_path(self.name, upload_id),
                    create=False,
                    algorithm=algorithm,
                    state=state,
                    durable=self.fsync,
                    direct=self.driver.directio,
                )
            except PathNotFoundError:
                raise BlobUploadUnknownError(upload_id) from None

        for offset, state in self._states(upload_id, algorithm, size):
            try:
                upload = open_upload(state)
            except HashStateError:
                continue  # a corrupt state: try an older one, or rehash
            if upload.hashed == offset:
                return BlobWriter(
                    self, upload_id, started_at, upload, saved_state_at=offset, lock=lock
                )
            upload.close()  # the state's length disagrees with its file name
        # Without a state, an empty upload has nothing to save at 0 either (see create).
        return BlobWriter(
            self,
            upload_id,
            started_at,
            open_upload(None),
            saved_state_at=0 if size == 0 else None,
            lock=lock,
        )

    def _upload_algorithm(self, upload_id: str) -> str:
        try:
            raw = self.driver.get_content(paths.upload_algorithm_path(self.name, upload_id))
        except PathNotFoundError:
            return CANONICAL
        algorithm = raw.decode("ascii", "replace").strip()
        if algorithm not in ALGORITHMS:
            raise BlobUploadInvalidError(f"upload {upload_id}: unknown algorithm {algorithm!r}")
        return algorithm

    def _states(self, upload_id: str, algorithm: str, size: int) -> Iterator[tuple[int, bytes]]:
        """Saved states no longer than the data, newest first."""
        if not (self.resumable_digests and self.engine.restores_states):
            return
        root = paths.upload_hash_states_root(self.name, upload_id, algorithm)
        try:
            names = self.driver.list(root)
        except PathNotFoundError:
            return
        offsets = sorted(
            (int(tail) for tail in (n.rsplit("/", 1)[-1] for n in names) if is_ascii_digits(tail)),
            reverse=True,
        )
        for offset in offsets:
            if offset > size:
                continue
            try:
                yield offset, self.driver.get_content(f"{root}/{offset}")
            except PathNotFoundError:
                continue

    def mount(self, source: str, digest: str) -> Descriptor:
        """Link a blob of repository ``source`` into this one (cross-repository mount).

        ``BlobUnknownError`` if ``source`` does not have it; ``NameInvalidError`` for a bad name.
        """
        fence = self.registry.fence
        began = fence.begin()
        descriptor = self.registry.repository(source).blobs.stat(digest)
        assert descriptor.digest is not None
        # The source's entry may predate a delete made behind the registry's back: link only
        # data storage still holds.
        stored = self.blobs.stat_stored(descriptor.digest)
        self.link(descriptor.digest)
        requested = parse_digest(digest)
        if requested != descriptor.digest:
            self.link(requested, target=descriptor.digest)
        target = descriptor.digest
        needs = [*self._needs(target), *self._needs(requested, target)]
        if fence.secure(began, lambda: needs):
            # Swept by an online garbage collection meanwhile: the blob is not here to mount,
            # and the client uploads it instead.
            for linked in {target, requested}:
                with contextlib.suppress(BlobUnknownError):
                    self.unlink(linked)
            raise BlobUnknownError(requested)
        # Media types are per repository: the mounted blob has none here yet.
        remember(self.cache, requested, stored)
        return descriptor

    def delete(self, digest: str) -> None:
        """Unlink the blob from the repository (its data stays until garbage collection);
        ``UnsupportedError`` when deletes are disabled, ``BlobUnknownError`` unless the
        repository links a stored blob."""
        if not self.registry.delete_enabled:
            raise UnsupportedError("deletes are disabled")
        dgst = parse_digest(digest)
        self.stat(dgst)
        self.unlink(dgst)

    def unlink(self, digest: str) -> None:
        """Remove the repository's link to the blob, whether deletes are enabled or not and
        whether the blob is still stored or not (a storage primitive: a cache's expiry);
        ``BlobUnknownError`` if there is no link."""
        dgst = parse_digest(digest)
        link = paths.layer_link_path(self.name, dgst)
        try:
            self.driver.delete(link.rsplit("/", 1)[0])
        except PathNotFoundError:
            raise BlobUnknownError(dgst) from None
        finally:
            # After the link is gone, so a stat racing the unlink cannot put the entry back.
            forget(self.cache, dgst)


def _check_algorithm(algorithm: str) -> None:
    if algorithm not in ALGORITHMS:
        raise BlobDigestUnsupportedError(f"{algorithm}:", f"unsupported algorithm {algorithm!r}")


__all__ = ["DescriptorCache", "LinkedBlobStore"]
