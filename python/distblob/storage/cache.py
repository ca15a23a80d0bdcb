"""Blob descriptor caches: what a stat found, kept so the next stat need not ask storage.

distribution's ``registry/storage/cache``, chosen by ``storage.cache.blobdescriptor``:
``inmemory`` (:class:`InMemoryBlobDescriptorCache`, a bounded LRU in this process) or ``redis``
(:class:`RedisBlobDescriptorCache`, shared by every replica and by Go registries on the same
Redis). A cache has a global scope (blobs by digest) and one scope per repository (the blobs it
links, with their media types there); each scope has distribution's three verbs:

- ``stat(digest)``: the descriptor recorded, or :class:`~distblob.errors.BlobUnknownError` on a
  miss. A repository's entry counts only while the global entry for the same digest (and for
  its canonical digest, when it is an alias in another algorithm) is there too, so clearing a
  blob globally makes every repository miss it, as with distribution's Redis layout.
- ``set_descriptor(digest, descriptor)``: record it. The global scope keeps the first media type
  it was given; a repository's entry also records the global one, and an alias in another
  algorithm records the canonical digest as well.
- ``clear(digest)``: forget it (nothing to forget is not an error).

Any scope may raise :class:`CacheUnavailableError` (Redis down); the blob stores treat that as a
miss and go to storage (:func:`lookup`, :func:`remember`, :func:`forget`), so a cache can make
requests faster but never makes them fail. The cache is never the authority on whether a blob's
data exists: the write paths and blob GETs ask storage (:mod:`distblob.storage.blobs`).

A cache is ``shared`` when every process serving the storage sees its entries and its clears
(Redis): a delete made anywhere clears it, so a repository's entry may answer whether the
repository links the blob. An in-memory cache is not shared: other replicas' deletes never reach
it, so the repository store still reads the link on each hit and the cache only saves the blob
stat (size and media type, which no delete changes; see :mod:`distblob.storage.linked`).

Redis keys, as distribution 2.8 writes them::

    blobs::<digest>                        hash: digest, size, mediatype
    repository::<name>::blobs              set of the digests linked into <name>
    repository::<name>::blobs::<digest>    hash: mediatype (the repository's own)
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Final, Protocol, TypeVar, runtime_checkable

from distblob.descriptor import Descriptor
from distblob.digest import Digest
from distblob.errors import (
    BlobUnknownError,
    DigestInvalidError,
    DigestUnsupportedError,
    DistblobError,
)
from distblob.storage import paths

if TYPE_CHECKING:
    import redis

logger = logging.getLogger("distblob.cache")

#: Entries an in-memory cache keeps (global and per-repository together): distribution's
#: ``memory.DefaultSize``. At a few hundred bytes an entry, a few MiB.
DEFAULT_SIZE: Final = 10_000

#: Invalidations a Redis cache holds while Redis is unreachable, to apply once it is back.
MAX_PENDING: Final = 100_000

_T = TypeVar("_T")


class CacheUnavailableError(DistblobError):
    """The cache could not answer (Redis down, timed out or refusing): use storage."""


@runtime_checkable
class BlobDescriptorCacheScope(Protocol):
    """One scope of a cache: the global one, or one repository's (a ``BlobDescriptorService``)."""

    def stat(self, digest: Digest) -> Descriptor:
        """The recorded descriptor; ``BlobUnknownError`` on a miss."""
        ...

    def set_descriptor(self, digest: Digest, descriptor: Descriptor) -> None:
        """Record ``descriptor`` for ``digest``; ``ValueError`` if it is incomplete."""
        ...

    def clear(self, digest: Digest) -> None:
        """Forget what is recorded for ``digest``."""
        ...


@runtime_checkable
class BlobDescriptorCache(BlobDescriptorCacheScope, Protocol):
    """The global scope, and a scope per repository (a ``BlobDescriptorCacheProvider``)."""

    #: ``"inmemory"`` or ``"redis"``, as in ``storage.cache.blobdescriptor``.
    name: str

    #: Whether every process serving the storage sees this cache's entries and clears (so a
    #: delete made by any of them clears it): ``False`` for an in-memory cache.
    shared: bool

    def repository_scoped(self, name: str) -> BlobDescriptorCacheScope:
        """The scope of repository ``name``; ``NameInvalidError`` for an invalid name."""
        ...

    def close(self) -> None:
        """Release connections (nothing for an in-memory cache)."""
        ...


def validate_descriptor(descriptor: Descriptor) -> Digest:
    """Check that ``descriptor`` can be cached (distribution's ``ValidateDescriptor``): a
    digest, a size that is not negative and a media type. Returns the digest."""
    if descriptor.digest is None:
        raise ValueError(f"cache: descriptor without a digest: {descriptor}")
    if descriptor.size < 0:
        raise ValueError(f"cache: negative size in descriptor: {descriptor}")
    if not descriptor.media_type:
        raise ValueError(f"cache: descriptor without a media type: {descriptor}")
    return descriptor.digest


def _check_alias(digest: Digest, canonical: Digest) -> None:
    if digest != canonical and digest.algorithm == canonical.algorithm:
        raise ValueError(f"cache: {digest} and {canonical} differ but share their algorithm")


# -- what the blob stores call ---------------------------------------------------------------


def lookup(scope: BlobDescriptorCacheScope, digest: Digest) -> Descriptor | None:
    """The scope's entry for ``digest``; ``None`` on a miss or when the cache is unavailable."""
    try:
        return scope.stat(digest)
    except (BlobUnknownError, CacheUnavailableError):
        return None


def remember(scope: BlobDescriptorCacheScope, digest: Digest, descriptor: Descriptor) -> bool:
    """Record ``descriptor`` for ``digest`` if the cache is available; whether it was."""
    try:
        scope.set_descriptor(digest, descriptor)
    except CacheUnavailableError:
        return False
    return True


def forget(scope: BlobDescriptorCacheScope, digest: Digest) -> None:
    """Clear ``digest`` in the scope (a cache that is unavailable applies it when it is back)."""
    with contextlib.suppress(CacheUnavailableError):
        scope.clear(digest)


# -- in memory -------------------------------------------------------------------------------


class InMemoryBlobDescriptorCache:
    """``inmemory``: one LRU of at most ``size`` entries, global and per-repository together.

    Thread-safe. Reading a repository's entry also refreshes the global entry it depends on,
    so the global entries of blobs in use are not the ones evicted. Nothing survives a restart,
    and other processes never see it (it is not ``shared``): the repository stores read the
    link on each hit, so with several replicas a delete made by one is seen at once by the
    others, and Redis only saves them that read.
    """

    name = "inmemory"
    shared = False

    def __init__(self, size: int = DEFAULT_SIZE) -> None:
        if isinstance(size, bool) or not isinstance(size, int) or size < 1:
            raise ValueError(f"cache size must be a positive int, not {size!r}")
        self.size = size
        self._lock = threading.Lock()
        # Keyed by (repository, digest); the repository "" is the global scope.
        self._entries: OrderedDict[tuple[str, str], Descriptor] = OrderedDict()

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)

    def _get(self, key: tuple[str, str]) -> Descriptor | None:
        descriptor = self._entries.get(key)
        if descriptor is not None:
            self._entries.move_to_end(key)
        return descriptor

    def _put(self, key: tuple[str, str], descriptor: Descriptor) -> None:
        self._entries[key] = descriptor
        self._entries.move_to_end(key)
        while len(self._entries) > self.size:
            self._entries.popitem(last=False)

    def _set_global(self, digest: Digest, descriptor: Descriptor) -> None:
        canonical = validate_descriptor(descriptor)
        for key in {digest, canonical}:
            known = self._entries.get(("", key))
            # The first media type stays, as Redis's HSETNX keeps it for distribution.
            media_type = known.media_type if known is not None else descriptor.media_type
            self._put(("", key), Descriptor(media_type, descriptor.size, canonical))

    # -- global scope ------------------------------------------------------------------------

    def stat(self, digest: Digest) -> Descriptor:
        with self._lock:
            descriptor = self._get(("", digest))
        if descriptor is None:
            raise BlobUnknownError(digest)
        return descriptor

    def set_descriptor(self, digest: Digest, descriptor: Descriptor) -> None:
        with self._lock:
            self._set_global(digest, descriptor)

    def clear(self, digest: Digest) -> None:
        with self._lock:
            self._entries.pop(("", digest), None)

    def repository_scoped(self, name: str) -> BlobDescriptorCacheScope:
        return _InMemoryRepositoryScope(self, paths.validate_repository_name(name))

    def close(self) -> None:
        pass

    def __repr__(self) -> str:
        return f"<InMemoryBlobDescriptorCache size={self.size}>"


class _InMemoryRepositoryScope:
    """One repository's entries in an :class:`InMemoryBlobDescriptorCache`."""

    def __init__(self, parent: InMemoryBlobDescriptorCache, name: str) -> None:
        self._parent = parent
        self.name = name

    def stat(self, digest: Digest) -> Descriptor:
        parent = self._parent
        with parent._lock:
            own = parent._get((self.name, digest))
            known = parent._get(("", digest)) if own is not None else None
            if known is not None and known.digest != digest:
                assert known.digest is not None
                if parent._get(("", known.digest)) is None:
                    known = None
        if own is None or known is None:
            raise BlobUnknownError(digest)
        return Descriptor(own.media_type or known.media_type, known.size, known.digest)

    def set_descriptor(self, digest: Digest, descriptor: Descriptor) -> None:
        canonical = validate_descriptor(descriptor)
        _check_alias(digest, canonical)
        parent = self._parent
        with parent._lock:
            parent._set_global(digest, descriptor)
            for key in {digest, canonical}:
                parent._put((self.name, key), descriptor)

    def clear(self, digest: Digest) -> None:
        with self._parent._lock:
            self._parent._entries.pop((self.name, digest), None)


# -- Redis -----------------------------------------------------------------------------------


def _blob_key(digest: str) -> str:
    return f"blobs::{digest}"


def _repository_set_key(name: str) -> str:
    return f"repository::{name}::blobs"


def _repository_blob_key(name: str, digest: str) -> str:
    return f"repository::{name}::blobs::{digest}"


def _text(value: object) -> str | None:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return value if isinstance(value, str) else None


def _descriptor(fields: list[Any], digest: str) -> Descriptor | None:
    """A descriptor from ``HMGET blobs::<digest> digest size mediatype``; ``None`` if the hash
    is missing, incomplete (distribution treats a hash without ``size`` as a miss) or holds
    values that are not a digest and a size."""
    raw_digest, raw_size, raw_media_type = (_text(value) for value in fields)
    if raw_digest is None or raw_size is None:
        return None
    try:
        size = int(raw_size)
        canonical = Digest(raw_digest)
    except (ValueError, DigestInvalidError, DigestUnsupportedError):
        logger.warning("redis cache: unreadable entry %s: ignored", _blob_key(digest))
        return None
    if size < 0:
        return None
    return Descriptor(raw_media_type or "", size, canonical)


class RedisBlobDescriptorCache:
    """``redis``: distribution's Redis layout, so replicas and Go registries share entries.

    Entries never expire (as in distribution); a blob deleted through any registry sharing the
    Redis is cleared there. When Redis cannot be reached, every call raises
    :class:`CacheUnavailableError` at once for ``retry_after`` seconds instead of waiting on a
    dead connection each time; one warning is logged when it goes away and one line when it is
    back. Clears that fail meanwhile are kept (up to :data:`MAX_PENDING`) and applied before
    anything else once Redis answers again, so an entry for a blob deleted during the outage
    does not come back to life (a process that exits during the outage loses them).
    """

    name = "redis"
    shared = True

    def __init__(self, client: redis.Redis, *, retry_after: float = 1.0) -> None:
        self._client = client
        self.retry_after = retry_after
        self._lock = threading.Lock()
        self._retry_at = 0.0
        self._available = True
        # (repository or "" for global, digest) -> when it was queued, so a clear queued again
        # while an older queue is being applied stays queued.
        self._pending: OrderedDict[tuple[str, str], int] = OrderedDict()
        self._queued = 0

    @classmethod
    def connect(
        cls,
        host: str,
        port: int,
        *,
        password: str | None = None,
        db: int = 0,
        dial_timeout: float | None = None,
        timeout: float | None = None,
        max_connections: int | None = None,
        health_check_interval: int = 0,
        retry_after: float = 1.0,
    ) -> RedisBlobDescriptorCache:
        """A cache over a new client pool (no connection is made until the first call).

        ``dial_timeout`` and ``timeout`` (reads and writes) in seconds, ``None`` for none;
        ``max_connections`` bounds the pool, and a call finding it exhausted goes to storage
        (distribution's ``Wait: false``). Connections idle longer than
        ``health_check_interval`` seconds are checked before use.
        """
        try:
            import redis
            from redis.backoff import NoBackoff
            from redis.retry import Retry
        except ImportError:
            raise ImportError(
                "the redis descriptor cache needs the redis package: pip install 'distblob[redis]'"
            ) from None
        client = redis.Redis(
            host=host,
            port=port,
            db=db,
            password=password,
            socket_connect_timeout=dial_timeout,
            socket_timeout=timeout,
            max_connections=max_connections,
            health_check_interval=health_check_interval,
            decode_responses=True,
            # One immediate retry replaces a pooled connection Redis closed (a restart); more
            # would only delay the fallback to storage.
            retry=Retry(NoBackoff(), 1),
        )
        return cls(client, retry_after=retry_after)

    @property
    def client(self) -> redis.Redis:
        return self._client

    @property
    def pending(self) -> int:
        """Clears waiting for Redis to come back."""
        with self._lock:
            return len(self._pending)

    # -- calls, with the outage handling ------------------------------------------------------

    def _call(self, operation: Callable[[redis.Redis], _T]) -> _T:
        import redis

        with self._lock:
            if time.monotonic() < self._retry_at:
                raise CacheUnavailableError("redis cache: unavailable (retrying soon)")
            pending = list(self._pending.items())
        try:
            if pending:
                self._apply_clears([key for key, _ in pending])
            result = operation(self._client)
        except redis.RedisError as error:
            with self._lock:
                self._retry_at = time.monotonic() + self.retry_after
                was_available, self._available = self._available, False
            if was_available:
                logger.warning(
                    "redis cache unavailable (%s): using storage until it is back", error
                )
            raise CacheUnavailableError(f"redis cache: {error}") from error
        with self._lock:
            for key, queued in pending:
                if self._pending.get(key) == queued:
                    del self._pending[key]
            was_available, self._available = self._available, True
        if not was_available:
            logger.info("redis cache available again (%d waiting clears applied)", len(pending))
        return result

    def _apply_clears(self, keys: list[tuple[str, str]]) -> None:
        pipe = self._client.pipeline()
        for name, digest in keys:
            _queue_clear(pipe, name, digest)
        pipe.execute()

    def _clear(self, name: str, digest: Digest) -> None:
        def run(client: redis.Redis) -> None:
            pipe = client.pipeline()
            _queue_clear(pipe, name, digest)
            pipe.execute()

        try:
            self._call(run)
        except CacheUnavailableError:
            with self._lock:
                self._queued += 1
                self._pending[(name, digest)] = self._queued
                self._pending.move_to_end((name, digest))
                if len(self._pending) > MAX_PENDING:
                    dropped = self._pending.popitem(last=False)[0]
                    logger.error(
                        "redis cache: more than %d clears waiting; %s may stay stale",
                        MAX_PENDING,
                        _blob_key(dropped[1]),
                    )
            raise

    def _stat_global(self, client: redis.Redis, digest: str) -> Descriptor | None:
        fields = client.hmget(_blob_key(digest), ["digest", "size", "mediatype"])
        return _descriptor(list(fields), digest)

    # -- global scope ------------------------------------------------------------------------

    def stat(self, digest: Digest) -> Descriptor:
        descriptor = self._call(lambda client: self._stat_global(client, digest))
        if descriptor is None:
            raise BlobUnknownError(digest)
        return descriptor

    def set_descriptor(self, digest: Digest, descriptor: Descriptor) -> None:
        canonical = validate_descriptor(descriptor)

        def run(client: redis.Redis) -> None:
            pipe = client.pipeline()
            for key in dict.fromkeys((digest, canonical)):
                _queue_set_global(pipe, key, descriptor)
            pipe.execute()

        self._call(run)

    def clear(self, digest: Digest) -> None:
        self._clear("", digest)

    def repository_scoped(self, name: str) -> BlobDescriptorCacheScope:
        return _RedisRepositoryScope(self, paths.validate_repository_name(name))

    def close(self) -> None:
        self._client.close()

    def __repr__(self) -> str:
        return f"<RedisBlobDescriptorCache {self._client!r}>"


def _queue_set_global(pipe: Any, digest: str, descriptor: Descriptor) -> None:
    key = _blob_key(digest)
    pipe.hset(key, mapping={"digest": str(descriptor.digest), "size": str(descriptor.size)})
    pipe.hsetnx(key, "mediatype", descriptor.media_type)


def _queue_clear(pipe: Any, name: str, digest: str) -> None:
    if name:
        pipe.srem(_repository_set_key(name), digest)
        pipe.delete(_repository_blob_key(name, digest))
    else:
        pipe.delete(_blob_key(digest))


class _RedisRepositoryScope:
    """One repository's entries in a :class:`RedisBlobDescriptorCache`."""

    def __init__(self, parent: RedisBlobDescriptorCache, name: str) -> None:
        self._parent = parent
        self.name = name

    def stat(self, digest: Digest) -> Descriptor:
        def run(client: redis.Redis) -> Descriptor | None:
            pipe = client.pipeline()
            pipe.sismember(_repository_set_key(self.name), digest)
            pipe.hmget(_blob_key(digest), ["digest", "size", "mediatype"])
            pipe.hget(_repository_blob_key(self.name, digest), "mediatype")
            member, fields, own = pipe.execute()
            known = _descriptor(list(fields), digest) if member else None
            if known is None:
                return None
            assert known.digest is not None
            if known.digest != digest and self._parent._stat_global(client, known.digest) is None:
                return None  # the alias outlived the blob it names
            return known.with_(media_type=_text(own) or known.media_type)

        descriptor = self._parent._call(run)
        if descriptor is None or not descriptor.media_type:
            raise BlobUnknownError(digest)
        return descriptor

    def set_descriptor(self, digest: Digest, descriptor: Descriptor) -> None:
        canonical = validate_descriptor(descriptor)
        _check_alias(digest, canonical)

        def run(client: redis.Redis) -> None:
            pipe = client.pipeline()
            for key in dict.fromkeys((digest, canonical)):
                pipe.sadd(_repository_set_key(self.name), key)
                _queue_set_global(pipe, key, descriptor)
                pipe.hset(_repository_blob_key(self.name, key), "mediatype", descriptor.media_type)
            pipe.execute()

        self._parent._call(run)

    def clear(self, digest: Digest) -> None:
        self._parent._clear(self.name, digest)


__all__ = [
    "DEFAULT_SIZE",
    "MAX_PENDING",
    "BlobDescriptorCache",
    "BlobDescriptorCacheScope",
    "CacheUnavailableError",
    "InMemoryBlobDescriptorCache",
    "RedisBlobDescriptorCache",
    "forget",
    "lookup",
    "remember",
    "validate_descriptor",
]
