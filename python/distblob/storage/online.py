"""Garbage collection while replicas serve the storage: a grace period, a claim, checked batches.

The marking is :func:`distblob.storage.garbagecollect.plan`'s; what makes it safe to run
while any number of servers push to the same storage is how it starts and how it deletes:

1. **Claim.** The collection raises the generation in ``/distblob/gc/state`` and marks it
   active (:mod:`distblob.storage.collection`); a collection already active whose beat moves
   is left alone (:class:`CollectionBusyError`), one whose beat stands still for a lease is
   taken over. Two that claim at once both read the state back after a settling wait and
   see which won; on a local filesystem an ``flock`` on ``/distblob/gc/lock`` decides at
   once. The state is renewed every quarter of the lease; a collection that could not renew
   for half a lease stops before its next delete (:class:`CollectionLostError`), before
   servers stop waiting for it.
2. **Grace.** The start time is read from storage (the state object's own modification time),
   so the clock of the host that runs the collection does not matter. Whatever was written
   less than ``grace`` seconds before it (revision links, layer links, blob data) is young:
   kept, and what young links and revisions reference is marked. This covers pushes under way
   when the collection starts: their layers are linked before their manifest is put.
3. **Mark** from tagged revisions (every revision without ``delete_untagged``), young ones and,
   unless ``manifests_only``, from every layer link.
4. **Sweep in batches.** For each batch the collection writes the batch's digests to
   ``sweeping``, then lists ``touched``: a digest a server relied on since the collection
   started is spared. Each remaining digest is looked at again just before its delete (its
   links and data must still be older than the grace period), then its untagged revisions,
   its layer links and its data are removed, in that order, so no link outlives the data it
   names.

What happens to writes during the collection: a server that links a blob or puts a manifest
re-reads the state after its writes; while a collection is active it records what it relies on
in ``touched`` and waits while it is in the batch being swept, then checks it is still there,
and repairs (stores again the data it holds) or refuses (a mount falls back to an upload, a
manifest naming a swept blob is answered ``MANIFEST_BLOB_UNKNOWN``): nothing answered 201 names
what a collection deleted.

Assumptions, written down in ``docs/guide/garbage-collection.md``: the storage shows every
acknowledged write to later reads and listings; the clocks that stamp storage objects (the
storage's own for S3, the writing hosts' for a filesystem) differ by much less than ``grace``;
no push takes longer than ``grace`` from its first blob to its manifest (a longer one is
refused at its manifest, not broken); a collection process is not paused for longer than half a
lease between its check and its deletes.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import random
import secrets
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Final, TypeVar

import anyio
import anyio.to_thread

from distblob.digest import Digest
from distblob.errors import DistblobError, PathNotFoundError
from distblob.storage import paths
from distblob.storage.collection import (
    DEFAULT_LEASE,
    GC_ROOT,
    LOCK_PATH,
    STATE_PATH,
    State,
    generation_root,
    list_touched,
    read_state,
    sweeping_path,
)
from distblob.storage.garbagecollect import GCError, Plan, Removed, plan, remove, sweep
from distblob.storage.gcscan import local_file

if TYPE_CHECKING:
    from distblob.registry import Registry
    from distblob.storage.driver import StorageDriver

logger = logging.getLogger("distblob.gc")

#: Default grace period (seconds): what was written less than this before a collection started
#: is kept. It must exceed the longest push, from its first blob to its manifest.
DEFAULT_GRACE: Final = 3600.0
#: Digests deleted per batch: a server relying on one of them waits at most for one batch.
DEFAULT_BATCH: Final = 256
#: Threads reading manifests and deleting.
DEFAULT_WORKERS: Final = 8
#: How long a new claim is left to settle before it is read back (seconds): two collections
#: that wrote their claims at once both see the one that won.
SETTLE: Final = 0.5

Progress = Callable[[str], None]
_T = TypeVar("_T")


class CollectionBusyError(DistblobError):
    """Another collection is running (its beat moves)."""


class CollectionLostError(DistblobError):
    """This collection could not renew its claim in time; it stopped before deleting more."""


class CollectionStoppedError(DistblobError):
    """This collection was asked to stop (its server is stopping) and did, between batches."""


@dataclass
class Options:
    """How a collection runs (``distblob gc`` options, ``storage.maintenance.gc``)."""

    online: bool = True
    grace: float = DEFAULT_GRACE
    delete_untagged: bool = False
    manifests_only: bool = False
    dry_run: bool = False
    workers: int = DEFAULT_WORKERS
    batch: int = DEFAULT_BATCH
    lease: float = DEFAULT_LEASE
    settle: float = SETTLE
    #: Whether an online collection runs its work only on CPUs nothing else wants
    #: (:func:`yield_cpu`); the thread that calls :func:`collect` keeps it afterwards.
    yield_cpu: bool = True


@dataclass
class Summary:
    """What a collection did (what it would do, for a dry run), as ``--json`` prints it."""

    online: bool
    dry_run: bool
    generation: int | None = None
    started: float | None = None  # the storage's time, with ``online``
    cutoff: float | None = None
    stored: int = 0
    manifests_read: int = 0
    marked: int = 0
    young: int = 0
    spared: int = 0
    blobs: int = 0
    bytes: int = 0
    manifests: int = 0
    layer_links: int = 0
    unapplied_cache_clears: int = 0
    seconds: dict[str, float] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        doc = asdict(self)
        doc["seconds"] = {k: round(v, 3) for k, v in self.seconds.items()}
        return doc


class Claim:
    """A collection's hold on ``/distblob/gc/state``, renewed by a background thread."""

    def __init__(self, driver: StorageDriver, *, lease: float, settle: float) -> None:
        self.driver = driver
        self.lease = lease
        self.settle = settle
        self.token = secrets.token_hex(8)
        self.state = State()
        self.started = 0.0  # the storage's time of the claim
        self._renewed = 0.0  # monotonic
        self._lost = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock_fd: int | None = None

    def acquire(self) -> State:
        locked = self._lock_locally()
        try:
            return self._acquire(locked)
        except BaseException:
            self._unlock()
            raise

    def _acquire(self, locked: bool) -> State:
        current = read_state(self.driver)
        if current.active and current.generation >= 0:
            self._wait_out(current)
        claimed = State(
            generation=max(current.generation, 0) + 1,
            active=True,
            owner=self.token,
            lease=self.lease,
        )
        self.driver.put_content(STATE_PATH, claimed.dumps())
        if not locked:
            time.sleep(self.settle)
        now = read_state(self.driver)
        if now.owner != self.token or now.generation != claimed.generation:
            raise CollectionBusyError(f"collection {now.generation} claimed the storage first")
        self.state = claimed
        self.started = self.driver.stat(STATE_PATH).mod_time
        self._renewed = time.monotonic()
        self._thread = threading.Thread(target=self._renew_loop, name="gc-claim", daemon=True)
        self._thread.start()
        self._clear_old(claimed.generation)
        return claimed

    def _lock_locally(self) -> bool:
        """On a local filesystem, an exclusive ``flock`` on ``/distblob/gc/lock`` (the kernel
        releases it if the process dies): two collections on one host, or on NFS, exclude each
        other at once, without the settling wait. ``False`` where there is no local file."""
        local = self.driver.local_path(LOCK_PATH)
        if local is None:
            return False
        os.makedirs(os.path.dirname(local), exist_ok=True)
        fd = os.open(local, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            running = read_state(self.driver).generation
            raise CollectionBusyError(
                f"collection {running} is running (it holds the storage's lock)"
            ) from None
        self._lock_fd = fd
        return True

    def _unlock(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # releases the flock
            self._lock_fd = None

    def _wait_out(self, current: State) -> None:
        """Return once ``current`` has not renewed for a lease; raise if it renews."""
        deadline = time.monotonic() + current.lease
        while time.monotonic() < deadline:
            time.sleep(min(1.0, current.lease / 10))
            now = read_state(self.driver)
            if not now.active:
                return
            if now != current:
                raise CollectionBusyError(f"collection {now.generation} is running")
        logger.warning(
            "collection %d renewed nothing for %.0f s: taking over",
            current.generation,
            current.lease,
        )

    def _clear_old(self, generation: int) -> None:
        """Remove what earlier collections left (a crashed one's batch, late touches)."""
        try:
            names = self.driver.list(GC_ROOT)
        except PathNotFoundError:
            return
        for name in names:
            tail = name.rsplit("/", 1)[-1]
            if tail.isdigit() and int(tail) < generation:
                with contextlib.suppress(PathNotFoundError):
                    self.driver.delete(name)

    def _renew_loop(self) -> None:
        while not self._stop.wait(self.lease / 4):
            try:
                now = read_state(self.driver)
                if now.owner != self.token or now.generation != self.state.generation:
                    self._lost = True
                    return
                self.state = self.state.beaten()
                self.driver.put_content(STATE_PATH, self.state.dumps())
                self._renewed = time.monotonic()
            except (OSError, DistblobError) as exc:
                logger.warning("collection %d: renewing failed: %s", self.state.generation, exc)

    def check(self) -> None:
        """Raise :class:`CollectionLostError` unless the claim is safely held."""
        if self._lost or time.monotonic() - self._renewed > self.lease / 2:
            raise CollectionLostError(
                f"collection {self.state.generation} could not renew its claim; stopped"
            )

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        with contextlib.suppress(PathNotFoundError):
            self.driver.delete(sweeping_path(self.state.generation))
        if not self._lost and read_state(self.driver).owner == self.token:
            done = State(generation=self.state.generation, beat=self.state.beat + 1)
            self.driver.put_content(STATE_PATH, done.dumps())
        with contextlib.suppress(PathNotFoundError):
            self.driver.delete(generation_root(self.state.generation))
        self._unlock()


def collect(
    registry: Registry,
    options: Options,
    *,
    progress: Progress | None = None,
    before_sweep: Callable[[Plan], None] | None = None,
    stop: threading.Event | None = None,
) -> tuple[Plan, Summary]:
    """Run one collection; the plan (what was, or would be, deleted) and its summary.

    ``progress`` gets a line per phase; ``before_sweep`` the plan, once marking is done. Once
    ``stop`` is set, the sweep ends before its next batch (:class:`CollectionStoppedError`)
    and the claim is released.

    Raises :class:`~distblob.storage.garbagecollect.GCError` (a manifest cannot be read:
    nothing deleted), :class:`CollectionBusyError`, :class:`CollectionLostError`.
    """
    say = progress or (lambda _line: None)
    summary = Summary(online=options.online, dry_run=options.dry_run)
    driver = registry.driver
    started = time.monotonic()
    claim: Claim | None = None
    cutoff: float | None = None
    if options.online:
        if options.dry_run:
            # Reads only: the storage's time from a listing of something written recently is
            # not at hand, so this host's clock stands in for it.
            summary.started = time.time()
        else:
            claim = Claim(driver, lease=options.lease, settle=options.settle)
            summary.generation = claim.acquire().generation
            summary.started = claim.started
            say(f"collection {summary.generation} claimed the storage")
        cutoff = summary.started - options.grace
        summary.cutoff = cutoff
    summary.seconds["claim"] = time.monotonic() - started

    def work() -> tuple[Plan, Summary]:
        return _mark_and_sweep(registry, options, summary, claim, cutoff, say, before_sweep, stop)

    try:
        if claim is not None and options.yield_cpu:
            # In a thread of its own that yields the CPU; the claim's renewing thread, and
            # the caller's, keep their priority.
            return _yielding(work)
        return work()
    finally:
        if claim is not None:
            claim.release()
        summary.seconds["total"] = time.monotonic() - started


def _yielding(work: Callable[[], _T]) -> _T:
    """``work()`` in a new thread that first calls :func:`yield_cpu`; its result or error."""
    outcome: list[_T] = []
    failure: list[BaseException] = []

    def run() -> None:
        yield_cpu()
        try:
            outcome.append(work())
        except BaseException as exc:
            failure.append(exc)

    thread = threading.Thread(target=run, name="gc-work")
    thread.start()
    thread.join()
    if failure:
        raise failure[0]
    return outcome[0]


def _mark_and_sweep(
    registry: Registry,
    options: Options,
    summary: Summary,
    claim: Claim | None,
    cutoff: float | None,
    say: Progress,
    before_sweep: Callable[[Plan], None] | None,
    stop: threading.Event | None,
) -> tuple[Plan, Summary]:
    result = plan(
        registry,
        delete_untagged=options.delete_untagged,
        manifests_only=options.manifests_only,
        cutoff=cutoff,
        workers=options.workers,
    )
    summary.seconds.update(result.times)
    _fill(summary, result)
    say(
        f"marked {summary.marked} digests from {summary.manifests_read} manifests; "
        f"{summary.stored} blobs stored; {summary.blobs} blobs ({summary.bytes} bytes), "
        f"{summary.manifests} manifests and {summary.layer_links} layer links to delete"
        + (f"; {summary.young} kept as younger than the grace period" if cutoff else "")
    )
    if before_sweep is not None:
        before_sweep(result)
    if options.dry_run:
        return result, summary
    swept = time.monotonic()
    if claim is None:
        summary.unapplied_cache_clears = sweep(registry, result)
    else:
        _sweep_online(registry, result, summary, claim, options, say, stop)
    summary.seconds["sweep"] = time.monotonic() - swept
    return result, summary


def _fill(summary: Summary, result: Plan) -> None:
    summary.stored = result.stored
    summary.manifests_read = result.manifests_read
    summary.marked = len(result.marked)
    summary.young = result.young
    summary.blobs = len(result.blobs)
    summary.bytes = result.bytes
    summary.manifests = len(result.manifests)
    summary.layer_links = len(result.layer_links)


@dataclass
class _Doomed:
    """What the sweep removes for one digest."""

    revisions: list[str] = field(default_factory=list)  # repositories
    layer_links: list[str] = field(default_factory=list)  # repositories
    blob: bool = False


def _doomed(result: Plan) -> dict[Digest, _Doomed]:
    doomed: dict[Digest, _Doomed] = {}
    for name, digest in result.manifests:
        doomed.setdefault(digest, _Doomed()).revisions.append(name)
    for name, digest in result.layer_links:
        doomed.setdefault(digest, _Doomed()).layer_links.append(name)
    for digest in result.blobs:
        doomed.setdefault(digest, _Doomed()).blob = True
    return doomed


def _batches(items: Sequence[Digest], size: int) -> Iterator[Sequence[Digest]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _sweep_online(
    registry: Registry,
    result: Plan,
    summary: Summary,
    claim: Claim,
    options: Options,
    say: Progress,
    stop: threading.Event | None,
) -> None:
    """Delete the plan batch by batch, sparing what servers touched or wrote anew."""
    driver = registry.driver
    generation = claim.state.generation
    cutoff = summary.cutoff
    assert cutoff is not None
    doomed = _doomed(result)
    batches = list(_batches(sorted(doomed), max(1, options.batch)))
    local = driver.local_path(paths.ROOT)
    removed, spared = Removed(), 0
    with ThreadPoolExecutor(max(1, options.workers), thread_name_prefix="gc-sweep") as pool:
        for number, batch in enumerate(batches):
            if stop is not None and stop.is_set():
                raise CollectionStoppedError(
                    f"collection {generation} stopped after {removed.blobs} blobs"
                )
            claim.check()
            driver.put_content(
                sweeping_path(generation),
                json.dumps({"batch": number, "digests": [str(d) for d in batch]}).encode(),
            )
            touched = list_touched(driver, generation)
            todo = [d for d in batch if d not in touched]

            # Looked at again: anything written since the listing spares its digest.
            def look(d: Digest) -> bool:
                return _still_old(registry, local, d, doomed[d], cutoff)

            # Stats over the network overlap; local ones are cheap enough in turn.
            old = [look(d) for d in todo] if local is not None else pool.map(look, todo)
            removable = [d for d, ok in zip(todo, old, strict=True) if ok]
            spared += len(batch) - len(removable)
            claim.check()
            removed.add(remove(registry, result, removable))
            if (number + 1) % 20 == 0:
                say(f"batch {number + 1}/{len(batches)}: {removed.blobs} blobs deleted")
    summary.spared = spared
    summary.blobs = removed.blobs
    summary.bytes = removed.bytes
    summary.manifests = removed.manifests
    summary.layer_links = removed.layer_links
    summary.unapplied_cache_clears = int(getattr(registry.descriptor_cache, "pending", 0))
    say(
        f"deleted {removed.blobs} blobs ({removed.bytes} bytes), {removed.manifests} manifests, "
        f"{removed.layer_links} layer links; spared {spared} digests in use meanwhile"
    )


def _mod_time(driver: StorageDriver, local: str | None, path: str) -> float | None:
    """``path``'s time; through ``local`` (the OS path of the layout's root) when there is
    one."""
    try:
        if local is not None:  # the layout's own path below the driver's checked root
            return os.stat(local_file(local, path)).st_mtime
        return driver.stat(path).mod_time
    except (PathNotFoundError, FileNotFoundError, NotADirectoryError):
        return None


def _still_old(
    registry: Registry, local: str | None, digest: Digest, doomed: _Doomed, cutoff: float
) -> bool:
    """Whether every path the sweep removes for ``digest`` is still older than the cutoff:
    a link or blob written again since the listing spares the digest."""
    driver = registry.driver
    looks = [paths.manifest_revision_link_path(name, digest) for name in doomed.revisions]
    looks += [paths.layer_link_path(name, digest) for name in doomed.layer_links]
    if doomed.blob:
        looks.append(paths.blob_data_path(digest))
    for path in looks:
        when = _mod_time(driver, local, path)
        if when is not None and when >= cutoff:
            return False
    return True


def yield_cpu() -> None:
    """Run the calling thread, and the threads it starts from now on, only on a CPU nothing
    else wants (Linux ``SCHED_IDLE``; elsewhere the lowest ``nice``): an online collection must
    not take the CPU, or the wake-ups, from the pushes it runs beside.

    :func:`collect` calls it once its claim is held: the claim's renewing thread, started
    before, keeps its priority, so a starved collection still renews and servers do not judge
    it dead; it stays slow, and servers waiting on one of its batches give it the CPU.
    """
    try:
        os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
    except (AttributeError, OSError):
        with contextlib.suppress(OSError):
            os.nice(19)


class ScheduledCollection:
    """``storage.maintenance.garbagecollect``: an online collection every ``interval`` seconds
    inside ``distblob serve``. The first comes one interval after the start (a fleet restarted
    at once does not collect at once), each a random tenth of the interval early or late; a
    collection another replica is running is not waited for, this round is skipped."""

    def __init__(self, registry: Registry, options: Options, interval: float) -> None:
        self.registry = registry
        self.options = options
        self.interval = interval
        self.log = logging.getLogger("distblob.gc")
        self.stopping = threading.Event()

    def run_once(self) -> Summary | None:
        """One collection; its summary, or ``None`` when it did not run to the end."""
        try:
            _, summary = collect(
                self.registry, self.options, progress=self.log.debug, stop=self.stopping
            )
        except CollectionBusyError as exc:
            self.log.info("scheduled garbage collection skipped: %s", exc)
            return None
        except (GCError, CollectionLostError) as exc:
            self.log.error("scheduled garbage collection stopped: %s", exc)
            return None
        except CollectionStoppedError as exc:
            self.log.info("%s: the server is stopping", exc)
            return None
        self.log.info(
            "garbage collection%s: %d blobs (%d bytes), %d manifests, %d layer links %s; "
            "%d spared in use; %.1f s",
            " (dry run)" if self.options.dry_run else f" {summary.generation}",
            summary.blobs,
            summary.bytes,
            summary.manifests,
            summary.layer_links,
            "eligible" if self.options.dry_run else "deleted",
            summary.spared,
            summary.seconds.get("total", 0.0),
        )
        return summary

    def delay(self) -> float:
        return self.interval * random.uniform(0.9, 1.1)

    def _run_apart(self) -> None:
        # This thread is the collection's own: the server's threads keep their priority.
        try:
            self.run_once()
        except Exception:
            self.log.exception("scheduled garbage collection failed")

    async def run(self) -> None:
        """Collect when due, forever (until cancelled), in a thread of its own that runs only
        that yields the CPU to the server's (:func:`yield_cpu`)."""
        while True:
            await anyio.sleep(self.delay())
            thread = threading.Thread(target=self._run_apart, name="gc-scheduled", daemon=True)
            thread.start()
            try:
                while thread.is_alive():
                    await anyio.sleep(0.2)
            finally:
                # Stopping: the collection ends after its batch and releases its claim, so
                # the servers do not wait a lease for it.
                self.stopping.set()
                with anyio.CancelScope(shield=True):
                    await anyio.to_thread.run_sync(thread.join, 10.0)


__all__ = [
    "DEFAULT_BATCH",
    "DEFAULT_GRACE",
    "DEFAULT_WORKERS",
    "Claim",
    "CollectionBusyError",
    "CollectionLostError",
    "CollectionStoppedError",
    "Options",
    "ScheduledCollection",
    "Summary",
    "collect",
    "yield_cpu",
]
