"""Upload purging: remove uploads started longer ago than a cut-off (distribution's
``PurgeUploads``, run by ``storage.maintenance.uploadpurging``).

An upload's age counts from its ``startedat`` file. As in distribution, an upload whose start
time is missing or unreadable is kept: a half-written upload directory is never taken for an
old one. Unlike distribution, an old upload a writer still holds (a slow push, see
:mod:`~distblob.storage.uploadlock`) is kept too.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

import anyio

from distblob.errors import BlobUploadBusyError, PathNotFoundError
from distblob.storage import paths
from distblob.storage.uploadlock import lock_upload
from distblob.storage.writer import parse_started_at

if TYPE_CHECKING:
    from distblob.registry import Registry

logger = logging.getLogger("distblob.purge")


def _uploads(registry: Registry) -> Iterator[tuple[str, str]]:
    """Every ``(repository, upload id)`` in the store (entries that are no upload id skipped)."""
    for name in registry.uploading_repositories():
        try:
            entries = registry.driver.list(paths.uploads_root(name))
        except PathNotFoundError:
            continue
        for entry in entries:
            upload_id = entry.rsplit("/", 1)[1]
            with contextlib.suppress(ValueError):
                yield name, paths.validate_upload_id(upload_id)


def _remove_unless_held(
    registry: Registry, name: str, upload_id: str, keep: Callable[[], bool] = lambda: False
) -> bool:
    """Remove an upload unless a writer holds it or ``keep()`` (asked under its lock) says to
    keep it; whether it was removed."""
    driver = registry.driver
    started_at = paths.upload_started_at_path(name, upload_id)
    try:
        lock = lock_upload(driver, started_at, upload_id, wait=0, leases=registry.upload_leases)
    except (PathNotFoundError, BlobUploadBusyError):
        return False  # gone already, or a writer holds it
    try:
        if keep():
            return False
        with contextlib.suppress(PathNotFoundError):
            driver.delete(paths.upload_dir_path(name, upload_id))
        return True
    finally:
        lock.release()


def purge_uploads(
    registry: Registry, older_than: dt.datetime, *, dry_run: bool = False
) -> list[tuple[str, str]]:
    """Remove every upload started before ``older_than``; the ``(repository, id)`` pairs
    removed (or, with ``dry_run``, that would be)."""
    driver = registry.driver
    purged: list[tuple[str, str]] = []
    for name, upload_id in _uploads(registry):
        try:
            raw = driver.get_content(paths.upload_started_at_path(name, upload_id))
            started = parse_started_at(raw.decode("ascii"))
        except (PathNotFoundError, UnicodeDecodeError, ValueError, LookupError):
            continue  # no readable start time: keep it, as distribution does
        if started >= older_than:
            continue
        if dry_run:
            purged.append((name, upload_id))
            logger.info("would purge upload %s of %s (started %s)", upload_id, name, started)
        elif _remove_unless_held(registry, name, upload_id):  # a slow push is left to its writer
            purged.append((name, upload_id))
            logger.info("purged upload %s of %s (started %s)", upload_id, name, started)
    if not dry_run:
        # Multipart uploads no upload names (writers that lost a race, or died unsaved).
        orphans = driver.abort_orphan_uploads("/", older_than.timestamp())
        if orphans:
            logger.info("aborted %d multipart uploads no upload names", orphans)
    return purged


def purge_abandoned_uploads(registry: Registry, *, idle: float) -> list[tuple[str, str]]:
    """Remove the uploads no writer holds and whose data has not changed for ``idle`` seconds;
    the ``(repository, id)`` pairs removed.

    For a pull-through cache at start: its uploads are its fetches, which nothing ever resumes,
    so one whose writer is gone (a process killed mid-fetch) is only wasted space, however
    young. An upload a live writer holds (another process on the root) is skipped by its lock,
    and ``idle`` spares writers that take no lock (the Go registry).
    """
    driver = registry.driver
    now = time.time()
    removed: list[tuple[str, str]] = []
    for name, upload_id in _uploads(registry):

        def recently_written(name: str = name, upload_id: str = upload_id) -> bool:
            try:
                changed = driver.stat(paths.upload_data_path(name, upload_id)).mod_time
            except PathNotFoundError:
                return False  # no data at all: nothing is writing it
            return now - changed < idle

        if _remove_unless_held(registry, name, upload_id, keep=recently_written):
            removed.append((name, upload_id))
            logger.info("removed abandoned upload %s of %s", upload_id, name)
    return removed


def utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class UploadPurger:
    """distribution's ``uploadpurging`` schedule: every ``interval`` seconds, remove uploads
    older than ``age`` seconds (only report them with ``dry_run``). ``clock`` gives the time
    (UTC, aware), so tests can drive the schedule with a fake one."""

    def __init__(
        self,
        registry: Registry,
        *,
        age: float,
        interval: float,
        dry_run: bool = False,
        clock: Callable[[], dt.datetime] = utc_now,
    ) -> None:
        self.registry = registry
        self.age = dt.timedelta(seconds=age)
        self.interval = dt.timedelta(seconds=interval)
        self.dry_run = dry_run
        self.clock = clock
        self.next_run: dt.datetime | None = None  # None: due now (the first run is at start)

    def run_if_due(self) -> list[tuple[str, str]] | None:
        """Purge if the interval has passed since the last run; what was purged, or ``None``
        when it was not due."""
        now = self.clock()
        if self.next_run is not None and now < self.next_run:
            return None
        self.next_run = now + self.interval
        return purge_uploads(self.registry, now - self.age, dry_run=self.dry_run)

    async def run(self) -> None:
        """Purge when due, forever (until cancelled), in a worker thread: a server's lifespan
        runs this. A failed round is logged and the next one comes at the next interval."""
        log = logging.getLogger("distblob.purge")
        while True:
            try:
                purged = await anyio.to_thread.run_sync(self.run_if_due) or []
            except Exception:
                log.exception("upload purging failed")
            else:
                if purged:
                    logging.getLogger("distblob.access").info(
                        "upload purging: %d uploads", len(purged)
                    )
            await anyio.sleep(max(self.interval.total_seconds(), 1.0))


__all__ = ["UploadPurger", "purge_abandoned_uploads", "purge_uploads", "utc_now"]
