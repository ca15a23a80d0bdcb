"""Clears a shared blob descriptor cache could not apply, kept in storage until one is applied.

A Redis cache (:class:`~distblob.storage.cache.RedisBlobDescriptorCache`) is the answer every
replica trusts, so a delete whose clear cannot reach Redis (down, hung) must not be forgotten:
the entry would come back to life with Redis. Memory is not enough (the deleting replica may be
restarted or die before Redis is back), so each clear that fails is also written to the storage
every replica shares, as one small object under :data:`~distblob.storage.paths.CACHE_CLEARS_ROOT`
(outside distribution's tree, so the Go registry never reads it)::

    /distblob/cache/clears/<20-digit nanoseconds>-<32 hex>
        {"clears": [["", "sha256:..."], ["library/ubuntu", "sha256:..."]]}

``""`` is the global scope, anything else a repository. Any process with the cache applies every
record it finds before it trusts Redis again (at startup and when it sees Redis come back), then
removes the record: clears are idempotent, and Redis is shared, so one process applying a record
is enough for all, and two applying it at once do no harm.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import time
import uuid
from collections.abc import Sequence
from typing import TYPE_CHECKING, Final

from distblob.digest import Digest
from distblob.errors import PathNotFoundError
from distblob.storage import paths

if TYPE_CHECKING:
    from distblob.storage.driver import StorageDriver

logger = logging.getLogger("distblob.cache")

#: A record's name: when it was written (so a listing is roughly in order) and a random part.
_RECORD: Final = re.compile(r"[0-9]{20}-[0-9a-f]{32}")

#: One clear: the scope (``""`` for the global one, else a repository name) and the digest.
Clear = tuple[str, Digest]


class ClearJournal:
    """The clears a shared cache could not apply, in ``driver``'s storage (thread-safe)."""

    def __init__(self, driver: StorageDriver) -> None:
        self.driver = driver

    def record(self, clears: Sequence[tuple[str, str]]) -> str:
        """Write one record of ``clears`` (durably) and return its path."""
        path = f"{paths.CACHE_CLEARS_ROOT}/{time.time_ns():020d}-{uuid.uuid4().hex}"
        body = json.dumps({"clears": [[name, str(digest)] for name, digest in clears]})
        self.driver.put_content(path, body.encode(), fsync=True)
        return path

    def load(self) -> list[tuple[str, list[Clear]]]:
        """Every record in storage, oldest first, as ``(path, clears)``. A record that cannot be
        read as one (not JSON, a bad digest or name) is logged and removed: applying part of it
        would be a guess, and it would block nothing but its own removal."""
        try:
            names = self.driver.list(paths.CACHE_CLEARS_ROOT)
        except PathNotFoundError:
            return []
        records: list[tuple[str, list[Clear]]] = []
        for path in sorted(names):
            if not _RECORD.fullmatch(path.rsplit("/", 1)[-1]):
                continue  # a write in progress (its temporary name), or not ours
            try:
                raw = self.driver.get_content(path)
            except PathNotFoundError:
                continue  # applied and removed by another process meanwhile
            clears = _parse(raw)
            if clears is None:
                logger.warning("redis cache: unreadable clear record %s: removed", path)
                self.remove(path)
                continue
            records.append((path, clears))
        return records

    def remove(self, path: str) -> None:
        """Remove a record (one already gone is fine)."""
        with contextlib.suppress(PathNotFoundError):
            self.driver.delete(path)

    def __repr__(self) -> str:
        return f"<ClearJournal {self.driver!r}>"


def _parse(raw: bytes) -> list[Clear] | None:
    try:
        doc = json.loads(raw)
        entries = doc["clears"]
        if not isinstance(entries, list):
            return None
        clears: list[Clear] = []
        for entry in entries:
            name, digest = entry
            if not isinstance(name, str) or not isinstance(digest, str):
                return None
            if name:
                paths.validate_repository_name(name)
            clears.append((name, Digest(digest)))
    except (ValueError, TypeError, KeyError):  # the digest and name errors are ValueErrors
        return None
    return clears


__all__ = ["Clear", "ClearJournal"]
