"""Upload purging: remove uploads started longer ago than a cut-off (distribution's
``PurgeUploads``, run by ``storage.maintenance.uploadpurging``).

An upload's age counts from its ``startedat`` file. As in distribution, an upload whose start
time is missing or unreadable is kept: a half-written upload directory is never taken for an
old one.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

from distblob.errors import PathNotFoundError
from distblob.storage import paths
from distblob.storage.writer import parse_started_at

if TYPE_CHECKING:
    from distblob.registry import Registry

logger = logging.getLogger("distblob.purge")


def purge_uploads(
    registry: Registry, older_than: dt.datetime, *, dry_run: bool = False
) -> list[tuple[str, str]]:
    """Remove every upload started before ``older_than``; the ``(repository, id)`` pairs
    removed (or, with ``dry_run``, that would be)."""
    driver = registry.driver
    purged: list[tuple[str, str]] = []
    for name in registry.uploading_repositories():
        try:
            entries = driver.list(paths.uploads_root(name))
        except PathNotFoundError:
            continue
        for entry in entries:
            upload_id = entry.rsplit("/", 1)[1]
            try:
                paths.validate_upload_id(upload_id)
                raw = driver.get_content(paths.upload_started_at_path(name, upload_id))
                started = parse_started_at(raw.decode("ascii"))
            except (PathNotFoundError, UnicodeDecodeError, ValueError, LookupError):
                continue  # no readable start time: keep it, as distribution does
            if started >= older_than:
                continue
            purged.append((name, upload_id))
            if dry_run:
                logger.info("would purge upload %s of %s (started %s)", upload_id, name, started)
                continue
            with contextlib.suppress(PathNotFoundError):
                driver.delete(paths.upload_dir_path(name, upload_id))
            logger.info("purged upload %s of %s (started %s)", upload_id, name, started)
    return purged


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


__all__ = ["UploadPurger", "purge_uploads", "utc_now"]
