"""What an online garbage collection announces in storage, and how servers honour it.

A collection that runs while replicas serve the same storage (:mod:`distblob.storage.online`)
and the servers that link blobs meanwhile share three kinds of objects, outside distribution's
tree (the Go registry never reads them)::

    /distblob/gc/state                      {"generation": 7, "active": true, "beat": 12, ...}
    /distblob/gc/<generation>/sweeping      {"batch": 3, "digests": ["sha256:...", ...]}
    /distblob/gc/<generation>/touched/<algorithm>-<hex>    (empty)

``state`` is never deleted: each collection raises its ``generation``, sets ``active`` while it
runs and renews ``beat`` every quarter of its ``lease``. ``sweeping`` names the digests of the
batch the collection is about to delete. ``touched`` holds the digests servers relied on while
the collection was active.

**The server's side** (:class:`Fence`). An operation that *relies on* stored blobs (an upload
committed onto a blob already there, a mount, a manifest put that names blobs and manifests)
takes the state it knew before it started relying (:meth:`Fence.begin`, a remembered read), does
its writes (links, revision), then reads the state afresh (:meth:`Fence.secure`):

- Same generation, inactive both times: no collection was active at any moment in between. A
  collection that starts later writes its state after this read, and lists links after that, so
  its mark sees this operation's links: nothing it relied on can be swept. One small read.
- Otherwise, if a collection is active now, the server writes a ``touched`` object for each
  digest it relies on, then reads ``sweeping``; while a digest of its own is in it, it waits for
  the batch to end. Then, whatever the state, it checks that each blob's data and each link it
  wrote are still there, and the caller repairs (writes the data again, which it still has) or
  refuses what is missing.

**The collection's side**: for each batch it writes ``sweeping``, then lists ``touched`` and
spares every digest found there, then deletes the rest. Writing first and reading second on both
sides means at least one side sees the other: if the collection's listing missed a server's
``touched``, the server's read of ``sweeping`` came after the batch was written, so the server
waits, and then finds the blob gone and does not answer as if it were there.

This needs storage that shows an acknowledged write to every later read and listing (a local
filesystem, NFS with close-to-open, Amazon S3 since 2020, MinIO, rclone). Clocks matter only for
the grace period (:mod:`distblob.storage.online`).

A collection that stops renewing its beat (its process died) is judged dead by a server after
``lease`` seconds of its own clock without a new beat, and then not waited for; the next
collection takes its generation over after watching for one lease.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import threading
import time
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field, replace
from typing import Final

from distblob.digest import Digest
from distblob.errors import DistblobError, PathNotFoundError
from distblob.storage.driver import StorageDriver

logger = logging.getLogger("distblob.gc")

#: Where collections keep their shared objects: beside ``/docker``, so the Go registry never
#: reads them.
GC_ROOT: Final = "/distblob/gc"
STATE_PATH: Final = f"{GC_ROOT}/state"
#: On a local filesystem, the file collections ``flock`` to exclude each other at once.
LOCK_PATH: Final = f"{GC_ROOT}/lock"
#: Seconds without a new beat after which a collection is judged dead (its holder renews every
#: quarter of it).
DEFAULT_LEASE: Final = 30.0
#: How often a server waiting on a batch looks again (seconds).
POLL: Final = 0.05


class CollectionStateError(DistblobError):
    """The collection state in storage is unreadable."""


@dataclass(frozen=True, slots=True)
class State:
    """The collection state: which collection, whether it runs, its liveness."""

    generation: int = 0
    active: bool = False
    owner: str = ""
    beat: int = 0
    lease: float = DEFAULT_LEASE

    def dumps(self) -> bytes:
        return json.dumps(
            {
                "generation": self.generation,
                "active": self.active,
                "owner": self.owner,
                "beat": self.beat,
                "lease": self.lease,
            }
        ).encode()

    @classmethod
    def loads(cls, raw: bytes) -> State:
        try:
            doc = json.loads(raw)
            state = cls(
                generation=int(doc["generation"]),
                active=bool(doc["active"]),
                owner=str(doc.get("owner", "")),
                beat=int(doc.get("beat", 0)),
                lease=float(doc.get("lease", DEFAULT_LEASE)),
            )
        except (ValueError, TypeError, KeyError) as exc:
            raise CollectionStateError(f"{STATE_PATH}: unreadable: {exc}") from None
        if state.generation < 0 or not state.lease > 0:
            raise CollectionStateError(f"{STATE_PATH}: out of range: {raw[:200]!r}")
        return state

    def beaten(self) -> State:
        return replace(self, beat=self.beat + 1)


def generation_root(generation: int) -> str:
    return f"{GC_ROOT}/{generation}"


def sweeping_path(generation: int) -> str:
    return f"{generation_root(generation)}/sweeping"


def touched_root(generation: int) -> str:
    return f"{generation_root(generation)}/touched"


def touched_path(generation: int, digest: Digest) -> str:
    return f"{touched_root(generation)}/{digest.algorithm}-{digest.encoded}"


def read_state(driver: StorageDriver) -> State:
    """The state in storage; the initial one (generation 0, inactive) if none was written.

    An unreadable state counts as an active collection of an unknown generation, so servers
    take the careful path rather than trust it.
    """
    try:
        return _parse_state(driver.get_content(STATE_PATH))
    except PathNotFoundError:
        return State()
    except CollectionStateError as exc:
        logger.warning("%s", exc)
        return State(generation=-1, active=True)


@functools.lru_cache(maxsize=8)
def _parse_state(raw: bytes) -> State:
    # Servers read the same few bytes on every push between collections: parse them once.
    return State.loads(raw)


def read_sweeping(driver: StorageDriver, generation: int) -> set[str]:
    """The digests (as strings) of the batch being swept; empty when none is."""
    try:
        doc = json.loads(driver.get_content(sweeping_path(generation)))
    except PathNotFoundError:
        return set()
    except ValueError:
        return set()  # being rewritten on a store that replaces objects non-atomically
    digests = doc.get("digests") if isinstance(doc, dict) else None
    return {d for d in digests if isinstance(d, str)} if isinstance(digests, list) else set()


def list_touched(driver: StorageDriver, generation: int) -> set[Digest]:
    """The digests servers relied on during the collection ``generation``."""
    try:
        names = driver.list(touched_root(generation))
    except PathNotFoundError:
        return set()
    touched: set[Digest] = set()
    for name in names:
        algorithm, _, encoded = name.rsplit("/", 1)[-1].partition("-")
        with contextlib.suppress(DistblobError):
            touched.add(Digest.from_parts(algorithm, encoded))
    return touched


@dataclass(frozen=True, slots=True)
class Need:
    """A digest an operation relies on, and the paths that must still be there for it."""

    digest: Digest
    paths: tuple[str, ...]

    def present(self, driver: StorageDriver) -> bool:
        for path in self.paths:
            try:
                driver.stat(path)
            except PathNotFoundError:
                return False
        return True


@dataclass
class _Liveness:
    """What a server saw of one collection's beat, by its own clock."""

    generation: int = -2
    beat: int = -1
    since: float = 0.0
    dead: bool = False


@dataclass
class Fence:
    """A server's side of the protocol (see the module docstring); one per registry."""

    driver: StorageDriver
    poll: float = POLL
    _known: State | None = None
    _liveness: _Liveness = field(default_factory=_Liveness)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def begin(self) -> State:
        """The state as last read (read now if never): take it before relying on blobs."""
        known = self._known
        return known if known is not None else self.refresh()

    def refresh(self) -> State:
        state = read_state(self.driver)
        self._known = state
        return state

    def secure(
        self,
        began: State,
        needs: Callable[[], Sequence[Need]],
        *,
        fresh: Collection[Digest] = (),
    ) -> list[Need]:
        """After the writes of an operation that relies on what ``needs()`` names: those no
        longer there. Empty when everything is safe; the caller repairs or refuses the rest.
        ``needs`` is called only when a collection ran meanwhile.

        ``fresh``: digests whose data the operation wrote itself (it was not stored). Those
        need no ``touched`` unless they are in the batch being swept: the collection looks at
        each digest's data again after writing its batch, and spares data younger than it.
        """
        now = self.refresh()
        if now.generation == began.generation and not now.active and not began.active:
            return []
        wanted = needs()
        if now.active and wanted and not self._is_dead(now):
            digests = {need.digest for need in wanted}
            if fresh:
                sweeping = read_sweeping(self.driver, now.generation)
                digests = {d for d in digests if d not in fresh or str(d) in sweeping}
            for digest in digests:
                self.driver.put_content(touched_path(now.generation, digest), b"")
            self._await_batch(now, {str(d) for d in digests})
        return [need for need in wanted if not need.present(self.driver)]

    def _await_batch(self, state: State, digests: set[str]) -> None:
        """Wait while a digest of ``digests`` is in the batch being swept."""
        while digests & read_sweeping(self.driver, state.generation):
            time.sleep(self.poll)
            current = self.refresh()
            if current.generation != state.generation or not current.active:
                return
            if self._is_dead(current):
                logger.warning(
                    "garbage collection %d renewed nothing for %.0f s: judged dead, not waited for",
                    current.generation,
                    current.lease,
                )
                return

    def _is_dead(self, state: State) -> bool:
        """Whether ``state``'s beat has not moved for a lease, by this process's clock."""
        with self._lock:
            seen, now = self._liveness, time.monotonic()
            if seen.generation != state.generation or seen.beat != state.beat:
                self._liveness = _Liveness(state.generation, state.beat, now)
                return False
            if not seen.dead and now - seen.since > state.lease:
                seen.dead = True
            return seen.dead


__all__ = [
    "DEFAULT_LEASE",
    "GC_ROOT",
    "LOCK_PATH",
    "STATE_PATH",
    "CollectionStateError",
    "Fence",
    "Need",
    "State",
    "generation_root",
    "list_touched",
    "read_state",
    "read_sweeping",
    "sweeping_path",
    "touched_path",
    "touched_root",
]
