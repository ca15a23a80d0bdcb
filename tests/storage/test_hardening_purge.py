"""Upload purging with a fake clock: age, interval and dry run (``UploadPurger``).

distribution's ``storage.maintenance.uploadpurging``: every ``interval``, uploads whose
``startedat`` is older than ``age`` are removed; with ``dryrun`` they are only reported. An
upload without a readable start time is kept.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from distblob import Registry
from distblob.storage import paths
from distblob.storage.purge import UploadPurger
from distblob.storage.writer import format_started_at

T0 = dt.datetime(2026, 3, 1, 12, 0, 0, tzinfo=dt.UTC)
HOUR = 3600.0


class FakeClock:
    def __init__(self, now: dt.datetime) -> None:
        self.now = now

    def __call__(self) -> dt.datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += dt.timedelta(seconds=seconds)


def upload(registry: Registry, repo: str, started: dt.datetime | str) -> str:
    writer = registry.repository(repo).blobs.create()
    writer.write(b"partial")
    writer.close()
    text = started if isinstance(started, str) else format_started_at(started)
    registry.driver.put_content(paths.upload_started_at_path(repo, writer.id), text.encode())
    return writer.id


def alive(registry: Registry, repo: str, upload_id: str) -> bool:
    return (
        registry.driver.list(paths.uploads_root(repo)).count(paths.upload_dir_path(repo, upload_id))
        == 1
    )


def test_age_interval_and_dry_run(tmp_path: Path) -> None:
    registry = Registry.filesystem(tmp_path)
    clock = FakeClock(T0)
    old = upload(registry, "purge/a", T0 - dt.timedelta(hours=10))
    edge = upload(registry, "purge/a", T0 - dt.timedelta(hours=2))  # exactly `age` old
    young = upload(registry, "purge/b", T0 - dt.timedelta(minutes=30))
    broken = upload(registry, "purge/b", "not a time")

    dry = UploadPurger(registry, age=2 * HOUR, interval=HOUR, dry_run=True, clock=clock)
    assert dry.run_if_due() == [("purge/a", old)]
    assert alive(registry, "purge/a", old)  # dry run: reported, kept

    purger = UploadPurger(registry, age=2 * HOUR, interval=HOUR, clock=clock)
    assert purger.run_if_due() == [("purge/a", old)]  # the first run is at once
    assert not alive(registry, "purge/a", old)
    assert alive(registry, "purge/a", edge)  # started exactly `age` ago: not older, kept

    clock.advance(HOUR - 1)
    assert purger.run_if_due() is None  # not due before the interval
    assert alive(registry, "purge/a", edge)
    clock.advance(1)
    assert purger.run_if_due() == [("purge/a", edge)]
    assert alive(registry, "purge/b", young)

    clock.advance(HOUR)
    assert purger.run_if_due() == [("purge/b", young)]  # 2h30 old now
    clock.advance(100 * HOUR)
    assert purger.run_if_due() == []
    assert alive(registry, "purge/b", broken)  # no readable start time: never purged
    assert dry.run_if_due() == []  # nothing left to report


def test_a_purged_upload_cannot_be_resumed_and_others_go_on(tmp_path: Path) -> None:
    registry = Registry.filesystem(tmp_path)
    clock = FakeClock(T0)
    repo = registry.repository("purge/c")
    old = upload(registry, "purge/c", T0 - dt.timedelta(days=8))
    fresh = upload(registry, "purge/c", T0)
    purger = UploadPurger(registry, age=168 * HOUR, interval=24 * HOUR, clock=clock)
    assert purger.run_if_due() == [("purge/c", old)]
    writer = repo.blobs.resume(fresh)
    assert writer.size == 7
    writer.close()
    clock.advance(24 * HOUR)
    assert purger.run_if_due() == []
    clock.advance(HOUR)
    assert purger.run_if_due() is None  # ran an hour ago
    clock.advance(144 * HOUR)  # 169 h after it started, 145 h after the last run
    assert purger.run_if_due() == [("purge/c", fresh)]


def test_an_old_upload_still_being_written_is_left_to_its_writer(tmp_path: Path) -> None:
    """A slow push older than the purging age: purging skips it while its writer holds it
    (distribution would delete it under the writer), and purges it once the writer is gone."""
    registry = Registry.filesystem(tmp_path)
    clock = FakeClock(T0)
    old = upload(registry, "purge/d", T0 - dt.timedelta(days=8))
    writer = registry.repository("purge/d").blobs.resume(old)
    purger = UploadPurger(registry, age=168 * HOUR, interval=HOUR, clock=clock)
    assert purger.run_if_due() == []
    writer.write(b" more")
    writer.close()
    assert alive(registry, "purge/d", old)
    clock.advance(HOUR)
    assert purger.run_if_due() == [("purge/d", old)]
    assert not alive(registry, "purge/d", old)
