"""The pull-through cache's TTL scheduler: distribution's ``registry/proxy/scheduler``.

Every blob and manifest the cache stores gets an entry ``"<name>@<digest>"`` that expires
``ttl`` after it was (last) fetched. Entries live in ``/scheduler-state.json`` at the driver
root, in distribution's format (so a Go registry on the same root reads them)::

    {"library/app@sha256:…": {"Key": "library/app@sha256:…",
                               "ExpiryData": "2026-11-28T02:46:45.123456789Z",
                               "EntryType": 0}}

(``EntryType`` 0 is a blob, 1 a manifest; ``ExpiryData`` is spelled so.) The file is written
when entries changed, at most every ``save_interval`` seconds and on stop, and read at start:
pending expiries resume, and an entry expiring later than ``now + ttl`` is brought forward to
it, so lowering ``ttl`` applies to what is already cached (distribution #4352).

On expiry the repository's link (blob) or revision (manifest, with the tags pointing to it)
goes, through the repository's delete verbs as storage primitives (``unlink``, ``remove``):
deletes need not be enabled (distribution #4249). The blob data goes only when no repository
links it any more (distribution #4191). ``ttl == 0``
schedules nothing and expires nothing.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

import anyio

from distblob.digest import Digest
from distblob.errors import (
    BlobUnknownError,
    DistblobError,
    ManifestUnknownError,
    PathNotFoundError,
)

if TYPE_CHECKING:
    from distblob.registry import Registry

#: The state file's driver path (outside ``/docker/registry/v2``, as in distribution).
STATE_PATH: Final = "/scheduler-state.json"
BLOB: Final = 0
MANIFEST: Final = 1

logger = logging.getLogger("distblob.proxy")

_RFC3339: Final = re.compile(
    r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d{1,9}))?(Z|[+-]\d\d:\d\d)", re.IGNORECASE
)


def format_expiry(when: float) -> str:
    """A POSIX time as Go's ``time.Time`` JSON (RFC 3339, nanoseconds, zeros trimmed, UTC)."""
    seconds = int(when // 1)
    nanos = round((when - seconds) * 1e6) * 1000  # a float time holds microseconds, not ns
    if nanos >= 1_000_000_000:
        seconds, nanos = seconds + 1, 0
    text = dt.datetime.fromtimestamp(seconds, dt.UTC).strftime("%Y-%m-%dT%H:%M:%S")
    if nanos:
        text += f".{nanos:09d}".rstrip("0")
    return text + "Z"


def parse_expiry(text: str) -> float:
    """Go's RFC 3339 (nanoseconds, any offset) as a POSIX time; ``ValueError`` if malformed."""
    match = _RFC3339.fullmatch(text.strip())
    if match is None:
        raise ValueError(f"not an RFC 3339 time: {text!r}")
    base, fraction, zone = match.groups()
    zone = "+00:00" if zone.upper() == "Z" else zone
    when = dt.datetime.fromisoformat(base + zone).timestamp()
    return when + (int(fraction.ljust(9, "0")) / 1e9 if fraction else 0.0)


@dataclass(slots=True)
class Entry:
    key: str
    expiry: float
    entry_type: int

    def to_json(self) -> dict[str, Any]:
        return {
            "Key": self.key,
            "ExpiryData": format_expiry(self.expiry),
            "EntryType": self.entry_type,
        }


class TTLScheduler:
    """Expiry of cached blobs and manifests, persisted in distribution's format."""

    def __init__(
        self,
        registry: Registry,
        ttl: float,
        *,
        clock: Callable[[], float] = time.time,
        save_interval: float = 5.0,
    ) -> None:
        self.registry = registry
        self.driver = registry.driver
        self.ttl = ttl
        self.clock = clock
        self.save_interval = save_interval
        self._lock = threading.Lock()
        self._entries: dict[str, Entry] = {}
        self._dirty = False
        self._last_save = clock()

    @property
    def enabled(self) -> bool:
        return self.ttl > 0

    def entries(self) -> dict[str, Entry]:
        with self._lock:
            return {key: Entry(e.key, e.expiry, e.entry_type) for key, e in self._entries.items()}

    # -- state file --------------------------------------------------------------------------

    def load(self) -> None:
        """Read the state file (a missing one is empty) and cap entries at ``now + ttl``."""
        try:
            raw = self.driver.get_content(STATE_PATH)
        except PathNotFoundError:
            return
        try:
            doc = json.loads(raw)
        except ValueError:
            logger.warning("%s is not JSON: starting with no schedule", STATE_PATH)
            return
        if not isinstance(doc, dict):
            return
        cap = self.clock() + self.ttl
        with self._lock:
            for key, value in doc.items():
                try:
                    expiry = parse_expiry(value["ExpiryData"])
                    entry_type = int(value["EntryType"])
                except (KeyError, TypeError, ValueError):
                    logger.warning("scheduler entry %r unreadable: dropped", key)
                    self._dirty = True
                    continue
                if self.enabled and expiry > cap:
                    expiry = cap
                    self._dirty = True
                self._entries[str(key)] = Entry(str(key), expiry, entry_type)

    def save(self, *, force: bool = True) -> bool:
        """Write the state file if entries changed (and, unless ``force``, the interval passed)."""
        with self._lock:
            now = self.clock()
            if not self._dirty or (not force and now - self._last_save < self.save_interval):
                return False
            doc = {key: entry.to_json() for key, entry in self._entries.items()}
            self._dirty = False
            self._last_save = now
        try:
            self.driver.put_content(STATE_PATH, json.dumps(doc).encode(), fsync=True)
        except BaseException:
            with self._lock:
                self._dirty = True
            raise
        return True

    # -- scheduling --------------------------------------------------------------------------

    def _add(self, name: str, digest: str, entry_type: int) -> None:
        if not self.enabled:
            return
        key = f"{name}@{digest}"
        with self._lock:
            self._entries[key] = Entry(key, self.clock() + self.ttl, entry_type)
            self._dirty = True

    def add_blob(self, name: str, digest: str) -> None:
        self._add(name, digest, BLOB)

    def add_manifest(self, name: str, digest: str) -> None:
        self._add(name, digest, MANIFEST)

    def next_expiry(self) -> float | None:
        with self._lock:
            return min((e.expiry for e in self._entries.values()), default=None)

    def expire_due(self) -> list[str]:
        """Expire every entry due by now; returns their keys."""
        if not self.enabled:
            return []
        now = self.clock()
        with self._lock:
            due = [e for e in self._entries.values() if e.expiry <= now]
        done = []
        for entry in sorted(due, key=lambda e: e.expiry):
            try:
                self._expire(entry)
            except Exception:
                logger.exception("expiring %s failed", entry.key)
            with self._lock:
                current = self._entries.get(entry.key)
                if current is not None and current.expiry <= now:
                    del self._entries[entry.key]
                    self._dirty = True
            done.append(entry.key)
        return done

    # -- expiry ------------------------------------------------------------------------------

    def _expire(self, entry: Entry) -> None:
        name, sep, digest_text = entry.key.rpartition("@")
        if not sep:
            return
        try:
            repository = self.registry.repository(name)
            digest = Digest(digest_text)
        except DistblobError:
            logger.warning("scheduler entry %r names nothing: dropped", entry.key)
            return
        # The repository's delete verbs as storage primitives: a cache expires whether deletes
        # are enabled or not. Already gone is expired too.
        if entry.entry_type == MANIFEST:
            with contextlib.suppress(ManifestUnknownError):
                repository.manifests.remove(str(digest))
        else:
            with contextlib.suppress(BlobUnknownError):
                repository.blobs.unlink(str(digest))
        logger.info(
            "expired %s %s", "manifest" if entry.entry_type == MANIFEST else "blob", entry.key
        )
        if not self.registry.is_linked(str(digest)):
            with contextlib.suppress(BlobUnknownError):
                self.registry.blobs.remove(str(digest))  # clears a shared (Redis) cache too

    # -- running -----------------------------------------------------------------------------

    async def run(self, tick: float = 1.0) -> None:
        """Expire and save forever (until cancelled), waking every ``tick`` seconds at most."""
        while True:
            try:
                await anyio.to_thread.run_sync(self.expire_due)
                await anyio.to_thread.run_sync(lambda: self.save(force=False))
            except Exception:
                logger.exception("scheduler round failed")
            wait = tick
            upcoming = self.next_expiry()
            if upcoming is not None:
                wait = min(tick, max(upcoming - self.clock(), 0.05))
            await anyio.sleep(wait)


__all__ = [
    "BLOB",
    "MANIFEST",
    "STATE_PATH",
    "Entry",
    "TTLScheduler",
    "format_expiry",
    "parse_expiry",
]
