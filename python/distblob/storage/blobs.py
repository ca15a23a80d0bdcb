"""The global blob store: every blob under ``blobs/``, whatever repository links it.

distribution's ``blobStore``: it stats, reads and serves blobs by digest, moves committed
uploads into place, and deletes blob data (garbage collection's job). Repositories see blobs only
through their links (:mod:`distblob.storage.linked`).

:meth:`BlobStore.stat` answers from the registry's blob descriptor cache
(:mod:`distblob.storage.cache`) when the cache is shared by every process serving the storage
(Redis, which ``distblob gc`` clears), as distribution's cached statter does. A cache of this
process alone (in memory) never answers whether a blob is stored, since garbage collection run
elsewhere cannot clear it: this stat asks storage, and the entry serves the repository stores
only after they have read a link (:mod:`distblob.storage.linked`). What decides on data, never:
:meth:`BlobStore.exists` and :meth:`BlobStore.stat_stored` ask storage, so a commit never skips
storing a blob a stale entry claims is there, and a GET never promises bytes that are gone.
"""

from __future__ import annotations

import contextlib
import functools
import os
import posixpath
import time
import urllib.parse
from collections.abc import Iterator
from typing import TYPE_CHECKING, BinaryIO, Final

from distblob.descriptor import DEFAULT_MEDIA_TYPE, Descriptor
from distblob.digest import Digest
from distblob.errors import (
    BlobDigestUnsupportedError,
    BlobInvalidDigestError,
    BlobUnknownError,
    BlobUploadInvalidError,
    DigestInvalidError,
    DigestUnsupportedError,
    PathNotFoundError,
    UnsupportedError,
)
from distblob.interfaces import ServePlan
from distblob.storage import paths, serve
from distblob.storage.cache import forget, lookup, remember

if TYPE_CHECKING:
    from distblob.registry import Registry


def parse_digest(value: str) -> Digest:
    """``value`` as a :class:`Digest`, with the blob store's error types."""
    try:
        return Digest(value)
    except DigestUnsupportedError as exc:
        raise BlobDigestUnsupportedError(exc.digest, exc.reason) from None
    except DigestInvalidError as exc:
        raise BlobInvalidDigestError(exc.digest, exc.reason) from None


#: Looks at a blob just copied into place on an object store (see ``move_into_place``).
COPY_CHECKS: Final = 5


class Statter:
    """``exists`` for any store with distribution's ``stat``."""

    def stat(self, digest: str) -> Descriptor:
        raise NotImplementedError

    def exists(self, digest: str) -> bool:
        """Whether :meth:`stat` finds the blob (malformed digests still raise)."""
        try:
            self.stat(digest)
        except BlobUnknownError:
            return False
        return True


class BlobStore(Statter):
    """All blobs of a registry, by digest."""

    def __init__(self, registry: Registry) -> None:
        self._registry = registry
        self.driver = registry.driver
        self.cache = registry.descriptor_cache

    def stat(self, digest: str) -> Descriptor:
        """The blob's size and digest, from a shared cache or storage; ``BlobUnknownError`` if
        it is not stored. The media type is always the default: the global store knows bytes."""
        dgst = parse_digest(digest)
        if not self.cache.shared:
            return self.stat_stored(dgst)
        cached = lookup(self.cache, dgst)
        # An alias entry (another algorithm's digest naming this blob) is a repository's
        # business: blobs/ holds each blob under its own digest only.
        if cached is not None and cached.digest == dgst:
            return Descriptor(media_type=DEFAULT_MEDIA_TYPE, size=cached.size, digest=dgst)
        descriptor = self.stat_stored(dgst)
        if remember(self.cache, dgst, descriptor):
            # A delete clears the entry after removing the data; one that ran between the stat
            # above and the entry being written is seen here, so no entry outlives its blob.
            self.stat_stored(dgst)
        return descriptor

    def stat_stored(self, digest: str) -> Descriptor:
        """The blob's descriptor from storage itself, never from the cache; a blob found
        missing is also cleared from the cache."""
        dgst = parse_digest(digest)
        try:
            info = self.driver.stat(paths.blob_data_path(dgst))
        except PathNotFoundError:
            info = None
        if info is None or info.is_dir:
            forget(self.cache, dgst)
            raise BlobUnknownError(dgst)
        return Descriptor(media_type=DEFAULT_MEDIA_TYPE, size=info.size, digest=dgst)

    def exists(self, digest: str) -> bool:
        """Whether storage holds the blob (never answered from the cache: commits, puts and
        mounts decide on it; malformed digests still raise)."""
        try:
            self.stat_stored(digest)
        except BlobUnknownError:
            return False
        return True

    def get(self, digest: str) -> bytes:
        dgst = parse_digest(digest)
        try:
            return self.driver.get_content(paths.blob_data_path(dgst))
        except PathNotFoundError:
            raise BlobUnknownError(dgst) from None

    def open(self, digest: str) -> BinaryIO:
        dgst = parse_digest(digest)
        try:
            return self.driver.reader(paths.blob_data_path(dgst))
        except PathNotFoundError:
            raise BlobUnknownError(dgst) from None

    def serve_blob(
        self,
        digest: str,
        *,
        method: str = "GET",
        range: str | None = None,
        if_none_match: str | None = None,
    ) -> ServePlan:
        # A GET reads the data, so it asks storage; a HEAD may answer from the cache.
        stat = self.stat if method.upper() == "HEAD" else self.stat_stored
        return self.serve_descriptor(
            stat(digest), method=method, range=range, if_none_match=if_none_match
        )

    def serve_descriptor(
        self,
        descriptor: Descriptor,
        *,
        method: str = "GET",
        range: str | None = None,
        if_none_match: str | None = None,
        requested: Digest | None = None,
    ) -> ServePlan:
        """The plan for a blob already stat'ed (its media type may come from a repository);
        ``requested``: the digest the client named, if another algorithm's (see
        :func:`serve.plan`)."""
        assert descriptor.digest is not None
        path = paths.blob_data_path(descriptor.digest)
        redirect = self._redirect(path, method)
        return serve.plan(
            descriptor,
            path,
            local_path=self.driver.local_path(path),
            reader=functools.partial(self.driver.reader, path),
            method=method,
            range=range,
            if_none_match=if_none_match,
            redirect=redirect,
            requested=requested,
            direct=self.driver.directio == "on",
        )

    def _redirect(self, path: str, method: str) -> str | None:
        """Where a blob GET is redirected: the ``redirect`` middleware's base URL joined with
        the storage path (as distribution 3.x's middleware), else the driver's URL."""
        if not self._registry.redirect:
            return None
        base = self._registry.redirect_base
        if base is not None:
            parts = urllib.parse.urlsplit(base)
            joined = posixpath.join(parts.path or "/", path.lstrip("/"))
            return urllib.parse.urlunsplit((parts.scheme, parts.netloc, joined, "", ""))
        return self.driver.redirect_url(path, method)

    def local_path(self, digest: str) -> str | None:
        """The OS path of the blob's data on a local filesystem, else ``None``."""
        return self.driver.local_path(paths.blob_data_path(parse_digest(digest)))

    def delete(self, digest: str) -> None:
        """Remove the blob's data (not the repositories' links: garbage collection's job);
        ``UnsupportedError`` when deletes are disabled."""
        if not self._registry.delete_enabled:
            raise UnsupportedError("deletes are disabled")
        self.remove(digest)

    def remove(self, digest: str) -> None:
        """:meth:`delete` as a storage primitive, whether deletes are enabled or not (a cache's
        expiry, garbage collection); ``BlobUnknownError`` if the blob is not stored."""
        dgst = parse_digest(digest)
        try:
            self.driver.delete(paths.blob_dir_path(dgst))
        except PathNotFoundError:
            raise BlobUnknownError(dgst) from None
        finally:
            # After the data is gone, so a stat racing the delete cannot put the entry back
            # (see stat). Every repository's entry for the blob misses from now on.
            forget(self.cache, dgst)

    def enumerate(self) -> Iterator[Digest]:
        """Every stored blob's digest."""
        try:
            entries = list(self.driver.walk(paths.blobs_root()))
        except PathNotFoundError:
            return
        for info in entries:
            if info.is_dir or not info.path.endswith("/data"):
                continue
            parts = info.path.split("/")
            algorithm, encoded = parts[-4], parts[-2]
            try:
                yield Digest.from_parts(algorithm, encoded)
            except (DigestInvalidError, DigestUnsupportedError):
                continue

    def stored_sizes(self, algorithm: str) -> set[int]:
        """The sizes of every stored blob of ``algorithm``, from one walk of its directory:
        a file of a size not in it is not stored, whatever its content, and need not be hashed
        to be looked up (``distblob ingest`` copies such files without reading them first)."""
        try:
            entries = self.driver.walk(paths.blobs_root(algorithm))
            return {e.size for e in entries if not e.is_dir and e.path.endswith("/data")}
        except PathNotFoundError:
            return set()

    # -- used by commit and put --------------------------------------------------------------

    def move_into_place(self, source: str, digest: Digest, size: int | None = None) -> bool:
        """Make the file at ``source`` the blob ``digest``, unless that blob is already there;
        whether ``source`` was moved (``False``: it is still there).

        Content addressing makes an existing blob with this digest the same bytes, so it is kept
        and never rewritten; two commits of the same content racing here both succeed, since the
        rename is atomic and either result is the same blob.

        On an object store a move is a copy, and nothing stops another replica from replacing
        ``source`` between the commit's checks and the copy (a writer appending to the upload
        at that moment): with ``size`` (the checked size), a copy of another size is removed
        again and ``BlobUploadInvalidError`` raised, so the blob never holds those bytes.
        """
        if self.exists(digest):
            return False
        target = paths.blob_data_path(digest)
        local = self.driver.local_path(source)
        if local is not None:
            # Stored now, whenever its bytes were written: the blob's time says so (an online
            # garbage collection keeps blobs younger than its grace period). A copy on an
            # object store is new anyway.
            with contextlib.suppress(FileNotFoundError):
                os.utime(local)
        self.driver.move(source, target, fsync=self._registry.fsync)
        if size is not None and self.driver.local_path(target) is None:
            self._check_copied(target, digest, size)
        return True

    def _check_copied(self, target: str, digest: Digest, size: int) -> None:
        """Remove ``target`` and raise ``BlobUploadInvalidError`` unless it holds ``size`` bytes.

        Looked at a few times over a tenth of a second first: an S3-compatible server that
        replaces objects non-atomically (rclone) shows a copy of the same blob racing this one
        as missing or empty for a moment, and a right blob must not be removed for that.
        """
        stored: int | None = None
        for attempt in range(COPY_CHECKS):
            if attempt:
                time.sleep(0.02)
            try:
                stored = self.driver.stat(target).size
            except PathNotFoundError:
                stored = None
            if stored == size:
                return
        if stored is None:
            raise PathNotFoundError(target)
        with contextlib.suppress(PathNotFoundError):
            self.driver.delete(target)
        raise BlobUploadInvalidError(
            f"{digest}: the upload changed while it was stored ({stored} bytes, not {size})"
        )

    def write(self, digest: Digest, data: bytes | bytearray | memoryview) -> bool:
        """Store ``data`` as the blob ``digest`` (already verified), unless it is there;
        whether it was written."""
        if self.exists(digest):
            return False
        self._registry.engine.write_object(
            self.driver, paths.blob_data_path(digest), data, durable=self._registry.fsync
        )
        return True


__all__ = ["BlobStore", "Statter", "parse_digest"]
