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
import weakref
from collections import OrderedDict
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Final, Protocol, TypeVar, runtime_checkable

from distblob import _observe
from distblob.descriptor import Descriptor
from distblob.digest import Digest
from distblob.errors import (
    BlobUnknownError,
    DigestInvalidError,
    DigestUnsupportedError,
    DistblobError,
)
from distblob.storage import paths
from distblob.storage.redisclient import redis_client

if TYPE_CHECKING:
    import redis

    from distblob.storage.clears import ClearJournal

logger = logging.getLogger("distblob.cache")

#: Entries an in-memory cache keeps (global and per-repository together): distribution's
#: ``memory.DefaultSize``. At a few hundred bytes an entry, a few MiB.
DEFAULT_SIZE: Final = 10_000

#: Invalidations a Redis cache holds while Redis is unreachable, to apply once it is back.
MAX_PENDING: Final = 100_000

#: Seconds a Redis cache waits to connect, when not told (distribution 2.8 has no default:
#: without ``redis.dialtimeout`` it waits as long as the kernel does).
DEFAULT_DIAL_TIMEOUT: Final = 1.0

#: Seconds a Redis cache waits for one call's reply (and to send it), when not told. A cache
#: call is one round trip on a few small keys, well under a millisecond on a healthy Redis and
#: rarely more than tens under load; a second still rules out false alarms, and bounds what a
#: hung Redis costs the requests already waiting on it when it hangs (the others go to storage
#: at once).
DEFAULT_TIMEOUT: Final = 1.0

#: Seconds between two reads of the journal (:mod:`distblob.storage.clears`) by a Redis cache
#: that trusts Redis: a replica that never saw an outage applies the clears others could not
#: within this long, even when the replica that wrote them is gone. One small listing of
#: storage each time.
SWEEP_INTERVAL: Final = 10.0

#: Seconds a call made while a new cache first applies its journal waits for that, at most
#: (the probe's own timeouts bound it first, unless storage hangs).
STARTUP_WAIT: Final = 10.0

#: The background probe of an unavailable Redis waits at least this long between attempts,
#: whatever ``retry_after`` says (tests use 0).
MIN_PROBE_INTERVAL: Final = 0.02

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
    observer = _observe.observer
    try:
        descriptor = scope.stat(digest)
    except BlobUnknownError:
        if observer is not None:
            observer.cache_lookup("Miss")
        return None
    except CacheUnavailableError:
        if observer is not None:
            observer.cache_lookup("Error")
        return None
    if observer is not None:
        observer.cache_lookup("Hit")
    return descriptor


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


class _Reconnects:
    """Counts the times a connection of the pool that had been open is opened again (Redis
    closed it: a restart, most often); the connect hook of a Redis client."""

    def __init__(self) -> None:
        self.count = 0

    def __call__(self, connection: Any) -> None:
        connection.on_connect()
        if getattr(connection, "_distblob_opened", False):
            self.count += 1
        connection._distblob_opened = True


class RedisBlobDescriptorCache:
    """``redis``: distribution's Redis layout, so replicas and Go registries share entries.

    Entries never expire (as in distribution); a blob deleted through any registry sharing the
    Redis is cleared there, and the repository stores answer from a hit without reading storage
    (the cache is ``shared``). Redis going away must therefore neither stall requests nor let
    an entry outlive a delete:

    - Every call has a timeout (:data:`DEFAULT_DIAL_TIMEOUT`, :data:`DEFAULT_TIMEOUT` unless
      told otherwise; a timeout is not retried), so a hung Redis fails like a down one. The
      first failure makes the cache unavailable: every call then raises
      :class:`CacheUnavailableError` at once (the stores use storage), one warning is logged,
      and a background thread probes Redis every ``retry_after`` seconds.
      Requests never wait on a Redis known to be bad; only the probe does.
    - A clear that fails is kept in memory (up to :data:`MAX_PENDING`) and, with a ``journal``
      (:class:`~distblob.storage.clears.ClearJournal`), written to storage, where every replica
      and a restart of this one find it.
    - The probe makes the cache available again only after applying, in Redis, every clear in
      the journal (removing each record applied) and every clear held in memory: no replica
      that saw the outage trusts Redis before the deletes made during it are there. With a
      journal, a new cache starts unavailable and probes at once (calls wait for that first
      attempt, so a healthy Redis is used from the first call), so a replica started (or
      restarted) during or after an outage applies what it finds before anything else.
    - While Redis is trusted, the same thread reads the journal every ``sweep_every`` seconds
      (:data:`SWEEP_INTERVAL`) and applies what it finds: the records of an outage this replica
      never saw, whose writer is gone.

    What remains: a replica that never touched Redis during an outage does not know it missed
    one and trusts Redis as soon as it is back, until the deleting replica's probe (at most
    ``retry_after`` later) or, if that replica is gone for good, until the first sweep or the
    probe of any replica (at most ``sweep_every`` later) applies its records. A clear that
    fails while storage is unreachable too stays in this process's memory only.
    """

    name = "redis"
    shared = True

    def __init__(
        self,
        client: redis.Redis,
        *,
        retry_after: float = 1.0,
        journal: ClearJournal | None = None,
        sweep_every: float | None = SWEEP_INTERVAL,
    ) -> None:
        self._client = client
        self.retry_after = retry_after
        self.journal = journal
        self.sweep_every = sweep_every
        self._lock = threading.Lock()
        # Trusted only once a journal's records are applied (see the class docstring).
        self._available = journal is None
        self._outage = False  # whether an outage was seen (for the log line when it ends)
        # (repository or "" for global, digest) -> when it was queued, so a clear queued again
        # while an older queue is being applied stays queued.
        self._pending: OrderedDict[tuple[str, str], int] = OrderedDict()
        self._queued = 0
        self._closed = threading.Event()
        self._reconnects: _Reconnects | None = None  # set by connect()
        self._wake = threading.Event()  # an outage began: the thread's next turn is a probe
        self._prober: threading.Thread | None = None
        # Set once the journal was first looked at (at once without a journal): until then
        # calls wait for it rather than go to storage, so a process that starts while Redis is
        # fine (a gc run, say) never sends its clears around it.
        self._started = threading.Event()
        if self._available:
            self._started.set()
        else:
            self._start_prober(first_wait=0.0)

    @classmethod
    def connect(
        cls,
        host: str,
        port: int,
        *,
        password: str | None = None,
        db: int = 0,
        dial_timeout: float | None = DEFAULT_DIAL_TIMEOUT,
        timeout: float | None = DEFAULT_TIMEOUT,
        max_connections: int | None = None,
        health_check_interval: int = 0,
        retry_after: float = 1.0,
        journal: ClearJournal | None = None,
        sweep_every: float | None = SWEEP_INTERVAL,
        client_options: Mapping[str, Any] | None = None,
    ) -> RedisBlobDescriptorCache:
        """A cache over a new client pool (no connection is made until the first call).

        ``dial_timeout`` and ``timeout`` (reads and writes) in seconds, ``None`` for none (which
        lets a hung Redis hold a request for as long as it hangs); ``max_connections`` bounds
        the pool, and a call finding it exhausted goes to storage (distribution's ``Wait:
        false``). Connections idle longer than ``health_check_interval`` seconds are checked
        before use. ``journal``: where clears that fail are kept, and ``sweep_every``: how
        often (seconds, ``None`` for never) it is read while Redis is trusted (see the class
        docstring).
        """
        reconnects = _Reconnects()
        client = redis_client(
            host,
            port,
            db=db,
            password=password,
            dial_timeout=dial_timeout,
            timeout=timeout,
            max_connections=max_connections,
            health_check_interval=health_check_interval,
            client_options=client_options,
            # No retry, not even on a pooled connection Redis closed: a closed connection means
            # Redis restarted, and deletes may have been made meanwhile that it never heard of.
            # The call goes to storage and the probe applies the stored clears before Redis is
            # trusted again (a retry would answer from the stale entry at once). redis-py also
            # reconnects a pooled connection found closed before using it, with no error: that
            # is counted, so the call made on it is not trusted either (see _call).
            retries=0,
            on_connect=reconnects,
            needed_by="the redis descriptor cache",
        )
        cache = cls(client, retry_after=retry_after, journal=journal, sweep_every=sweep_every)
        cache._reconnects = reconnects
        return cache

    @property
    def client(self) -> redis.Redis:
        return self._client

    @property
    def pending(self) -> int:
        """Clears held in memory, waiting for Redis to come back."""
        with self._lock:
            return len(self._pending)

    @property
    def available(self) -> bool:
        """Whether calls go to Redis (``False`` during an outage, and until a journal's records
        are applied)."""
        with self._lock:
            return self._available

    def wait_available(self, timeout: float | None = None) -> bool:
        """Wait until the cache is available (or ``timeout`` seconds); whether it is."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self.available:
            if self._closed.is_set():
                return False
            if deadline is not None and time.monotonic() >= deadline:
                return False
            time.sleep(0.01)
        return True

    # -- calls, with the outage handling ------------------------------------------------------

    def _call(self, operation: Callable[[redis.Redis], _T]) -> _T:
        import redis

        if not self._started.is_set():
            self._started.wait(STARTUP_WAIT)
        with self._lock:
            if not self._available:
                raise CacheUnavailableError("redis cache: unavailable (probing in the background)")
        reconnects = self._reconnects
        before = reconnects.count if reconnects is not None else 0
        try:
            result = operation(self._client)
        except redis.RedisError as error:
            self._went_away(error)
            raise CacheUnavailableError(f"redis cache: {error}") from error
        if reconnects is not None and reconnects.count != before:
            # A connection Redis had closed was opened again meanwhile: Redis may have
            # restarted, and missed clears made while it was away. Not trusted until the
            # probe has applied the stored ones.
            reconnected = redis.ConnectionError("redis reconnected (it may have restarted)")
            self._went_away(reconnected)
            raise CacheUnavailableError(f"redis cache: {reconnected}")
        return result

    def _went_away(self, error: Exception) -> None:
        with self._lock:
            was_available, self._available = self._available, False
            self._outage = True
            if not self._closed.is_set():
                self._start_prober(first_wait=self.retry_after)
                self._wake.set()
        if was_available:
            logger.warning("redis cache unavailable (%s): using storage until it is back", error)

    def _start_prober(self, *, first_wait: float) -> None:
        """Start the background probe unless it runs (called with the lock held)."""
        if self._prober is not None:
            return
        self._prober = threading.Thread(
            target=_watch,
            args=(weakref.ref(self), self._closed, self._wake, first_wait),
            name="distblob-redis-probe",
            daemon=True,
        )
        self._prober.start()

    def probe(self) -> bool:
        """Try Redis now, as the background probe does: apply the journal's records and the
        clears held in memory, then trust Redis again; whether it worked (``False``: Redis or
        storage still failing, or a clear failed meanwhile). Idempotent."""
        import redis

        with self._lock:
            pending = list(self._pending.items())
        try:
            records = self.journal.load() if self.journal is not None else []
            keys = [key for key, _ in pending]
            keys += [(name, str(digest)) for _, clears in records for name, digest in clears]
            pipe = self._client.pipeline()
            for name, digest in dict.fromkeys(keys):
                _queue_clear(pipe, name, digest)
            pipe.ping()  # an answer even when there is nothing to clear
            pipe.execute()
            for path, _ in records:
                assert self.journal is not None
                self.journal.remove(path)
        except (redis.RedisError, DistblobError, OSError) as error:
            with self._lock:
                first, self._outage = not self._outage, True
            if first:  # a cache that started during an outage
                logger.warning(
                    "redis cache unavailable (%s): using storage until it is back", error
                )
            return False
        applied = len(pending) + sum(len(clears) for _, clears in records)
        with self._lock:
            for key, queued in pending:
                if self._pending.get(key) == queued:
                    del self._pending[key]
            if self._pending:
                return False  # a clear failed meanwhile: apply it too before trusting Redis
            # Logged before the cache is available, so whoever sees it available sees the line.
            if self._outage:
                logger.info("redis cache available again (%d waiting clears applied)", applied)
            elif applied:
                logger.info("redis cache: %d clears left by an outage applied", applied)
            self._available, self._outage = True, False
        return True

    def sweep(self) -> int:
        """Apply and remove the journal's records while Redis is trusted: the clears of an
        outage this process never saw (its replica missed it, and the one that wrote them is
        gone). The number of clears applied; a Redis failure starts an outage."""
        import redis

        if self.journal is None or not self.available:
            return 0
        records = self.journal.load()
        if not records:
            return 0
        try:
            pipe = self._client.pipeline()
            for _, clears in records:
                for name, digest in clears:
                    _queue_clear(pipe, name, digest)
            pipe.execute()
        except redis.RedisError as error:
            self._went_away(error)
            return 0
        applied = sum(len(clears) for _, clears in records)
        logger.info("redis cache: %d clears found in storage applied", applied)
        for path, _ in records:
            self.journal.remove(path)
        return applied

    def _watch_step(self) -> float | None:
        """One turn of the background thread: probe an unavailable Redis, else sweep the
        journal. The seconds until the next turn, or ``None`` when the thread is done (the
        cache is available and has nothing to sweep, or no longer counts on this thread)."""
        try:
            if not self.available:
                self.probe()
            elif self.sweep_every is not None:
                self.sweep()
        finally:
            self._started.set()
        with self._lock:
            if self._prober is not threading.current_thread():
                return None  # replaced: the cache was closed, or this thread is a stray
            if not self._available:
                return max(self.retry_after, MIN_PROBE_INTERVAL)
            if self.journal is not None and self.sweep_every is not None:
                return max(self.sweep_every, MIN_PROBE_INTERVAL)
            self._prober = None
            return None

    def _clear(self, name: str, digest: Digest) -> None:
        def run(client: redis.Redis) -> None:
            pipe = client.pipeline()
            _queue_clear(pipe, name, digest)
            pipe.execute()

        try:
            self._call(run)
        except CacheUnavailableError:
            self._keep(name, digest)
            raise

    def _keep(self, name: str, digest: Digest) -> None:
        """Hold a clear that failed until the probe applies it, in memory and in the journal."""
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
        if self.journal is not None:
            try:
                self.journal.record([(name, digest)])
            except (DistblobError, OSError) as error:
                logger.error(
                    "redis cache: clear of %s kept in memory only (storage: %s)",
                    _blob_key(digest),
                    error,
                )

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
        """Stop the background probe (if any) and release the connections."""
        self._closed.set()
        self._wake.set()
        self._started.set()
        self._client.close()

    def __repr__(self) -> str:
        return f"<RedisBlobDescriptorCache {self._client!r}>"


def _watch(
    ref: weakref.ref[RedisBlobDescriptorCache],
    closed: threading.Event,
    wake: threading.Event,
    first_wait: float,
) -> None:
    """The background thread (the first turn after ``first_wait``): probes an unavailable
    Redis every ``retry_after`` seconds and, with a journal, sweeps it every ``sweep_every``
    seconds while Redis is trusted; ``wake`` (an outage began) makes the next turn a probe,
    ``retry_after`` later. Until the cache is closed or gone (it holds no reference to the
    cache between turns, so a cache nobody uses is not kept alive)."""
    wait: float | None = first_wait
    while wait is not None:
        woken = wake.wait(wait)
        if closed.is_set():
            return
        cache = ref()
        if cache is None:
            return
        if woken:
            wake.clear()
            wait = max(cache.retry_after, MIN_PROBE_INTERVAL)
            del cache
            continue
        try:
            wait = cache._watch_step()
        except Exception:  # never let the thread die: the cache would stay unavailable
            logger.exception("redis cache: probe failed")
            wait = max(cache.retry_after, MIN_PROBE_INTERVAL)
        del cache


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
    "DEFAULT_DIAL_TIMEOUT",
    "DEFAULT_SIZE",
    "DEFAULT_TIMEOUT",
    "MAX_PENDING",
    "SWEEP_INTERVAL",
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
