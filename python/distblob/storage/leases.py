"""Upload leases in Redis: one writer per upload across replicas on an object store.

On a local filesystem an upload's writers take turns through ``flock``
(:mod:`~distblob.storage.uploadlock`), which holds across processes on one root. Replicas on
an object store share no file system; when they share a Redis (distribution's ``redis``
section), each writer of an upload holds a lease there first: ``SET NX PX`` of the key
``distblob::uploadlease::<path of the upload's startedat>`` with a random token, kept alive by one
background thread per process while the writer works, and deleted only by its holder (a
compare-and-delete script). A second writer on any replica waits for it and then finds where
the first left the upload, so of two racing PATCHes exactly one advances it and the other is
refused (its offset is stale).

A lease is for progress, not for safety: if it expires under a writer (a replica stalled past
:data:`LEASE_TTL`), or Redis cannot be reached (writers then go on without one, with one
warning), the object store's own checks still hold. A writer saves an upload's state only if
it is still the one it started from (its ETag is the fencing token, compared by the server
where it honours ``If-Match``), and a commit completes exactly the parts its state names, so
no interleaving of writers makes an upload store bytes under a digest they do not have
(:mod:`~distblob.storage.driver.s3`).
"""

from __future__ import annotations

import logging
import secrets
import threading
import time
import weakref
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Final

from distblob.errors import DistblobError

if TYPE_CHECKING:
    import redis

logger = logging.getLogger("distblob.storage")

#: How long a lease lives without being renewed (seconds): the longest a crashed replica's
#: upload stays busy. Holders renew every third of it.
LEASE_TTL: Final = 30.0
#: Redis answers slower than this (seconds) count as an outage: a hung Redis must not stall
#: uploads.
DEFAULT_TIMEOUT: Final = 1.0
#: After Redis failed, uploads go on without leases for this long (seconds) before it is asked
#: again.
RETRY_AFTER: Final = 1.0

#: Lua: extend a lease's expiry if this holder still owns it (1), else nothing (0).
RENEW_SCRIPT: Final = """
if redis.call('get', KEYS[1]) == ARGV[1] then
    return redis.call('pexpire', KEYS[1], ARGV[2])
end
return 0
"""
#: Lua: remove a lease if this holder still owns it (1), else nothing (0).
RELEASE_SCRIPT: Final = """
if redis.call('get', KEYS[1]) == ARGV[1] then
    return redis.call('del', KEYS[1])
end
return 0
"""


class LeaseUnavailableError(DistblobError):
    """Redis could not be asked: the writer goes on without a lease."""


class Lease:
    """A held lease; :meth:`release` is idempotent. :attr:`lost` turns true when a renewal
    finds the lease gone or taken (it expired under a stalled holder)."""

    def __init__(self, leases: RedisUploadLeases, key: str, token: str) -> None:
        self._leases = leases
        self.key = key
        self.token = token
        self.lost = False
        self._released = False

    def release(self) -> None:
        if self._released:
            return
        self._released = True
        self._leases._release(self)


class RedisUploadLeases:
    """Leases on uploads in one Redis (see the module's docs)."""

    def __init__(self, client: redis.Redis, *, ttl: float = LEASE_TTL) -> None:
        self._client = client
        self.ttl = ttl
        self._held: weakref.WeakSet[Lease] = weakref.WeakSet()
        self._guard = threading.Lock()
        self._wake = threading.Event()
        self._renewer: threading.Thread | None = None
        self._warned = False
        self._retry_at = 0.0  # after a failure, Redis is not asked again before this
        self._renew = client.register_script(RENEW_SCRIPT)
        self._release_script = client.register_script(RELEASE_SCRIPT)

    @classmethod
    def connect(
        cls,
        host: str,
        port: int,
        *,
        password: str | None = None,
        db: int = 0,
        timeout: float = DEFAULT_TIMEOUT,
        ttl: float = LEASE_TTL,
        client_options: Mapping[str, Any] | None = None,
    ) -> RedisUploadLeases:
        """Leases over a new client (no connection is made until the first lease)."""
        from distblob.storage.redisclient import redis_client

        # One retry replaces a pooled connection Redis closed (a lease is safe to ask again).
        client = redis_client(
            host,
            port,
            password=password,
            db=db,
            dial_timeout=timeout,
            timeout=timeout,
            retries=1,
            needed_by="upload leases",
            client_options=client_options,
        )
        return cls(client, ttl=ttl)

    @staticmethod
    def key(path: str) -> str:
        """The Redis key of the lease on the upload whose ``startedat`` is at driver ``path``."""
        return f"distblob::uploadlease::{path}"

    def try_acquire(self, path: str) -> Lease | None:
        """The lease on the upload whose ``startedat`` is at driver ``path``, or ``None`` if
        another writer holds it; ``LeaseUnavailableError`` when Redis cannot be asked."""
        import redis

        key = self.key(path)
        token = secrets.token_hex(16)
        if time.monotonic() < self._retry_at:
            raise LeaseUnavailableError("redis: unavailable (asked again soon)")
        try:
            taken = self._client.set(key, token, nx=True, px=int(self.ttl * 1000))
        except redis.RedisError as error:
            # A hung Redis costs one request the timeout, then none for RETRY_AFTER seconds.
            self._retry_at = time.monotonic() + RETRY_AFTER
            if not self._warned:
                self._warned = True
                logger.warning(
                    "upload leases unavailable (%s): writers rely on storage's checks alone",
                    error,
                )
            raise LeaseUnavailableError(str(error)) from error
        if self._warned:
            self._warned = False
            logger.info("upload leases available again")
        if not taken:
            return None
        lease = Lease(self, key, token)
        with self._guard:
            self._held.add(lease)
            if self._renewer is None or not self._renewer.is_alive():
                self._renewer = threading.Thread(
                    target=self._renew_loop, name="distblob-leases", daemon=True
                )
                self._renewer.start()
        return lease

    def _release(self, lease: Lease) -> None:
        import redis

        with self._guard:
            self._held.discard(lease)
        try:
            self._release_script(keys=[lease.key], args=[lease.token])
        except redis.RedisError as error:
            # It expires by itself within the TTL.
            logger.debug("could not release upload lease %s: %s", lease.key, error)

    def _renew_loop(self) -> None:
        import redis

        while True:
            self._wake.wait(self.ttl / 3)
            with self._guard:
                held = list(self._held)
                if not held:
                    self._renewer = None
                    return
            for lease in held:
                try:
                    kept = self._renew(keys=[lease.key], args=[lease.token, int(self.ttl * 1000)])
                except redis.RedisError:
                    continue  # unknown: try again at the next round, while the TTL lasts
                if not kept:
                    lease.lost = True
                    with self._guard:
                        self._held.discard(lease)

    def close(self) -> None:
        self._client.close()


__all__ = [
    "LEASE_TTL",
    "RELEASE_SCRIPT",
    "RENEW_SCRIPT",
    "Lease",
    "LeaseUnavailableError",
    "RedisUploadLeases",
]
