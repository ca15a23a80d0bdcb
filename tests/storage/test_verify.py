"""Checking a store at the storage level (:mod:`distblob.storage.verify`): each kind of
finding from :func:`check_blobs` and :func:`check_repositories`, their progress reports, and
how a finding is located and written. ``distblob verify``'s output and exit codes are tested in
``test_commands.py``."""

from __future__ import annotations

import datetime as dt
import errno
import json
import pathlib
import threading

import pytest

from distblob import Digest, Registry
from distblob.storage import paths
from distblob.storage.driver import StorageDriver
from distblob.storage.engines import NativeEngine
from distblob.storage.verify import Finding, check_blobs, check_repositories

NOW = dt.datetime(2024, 6, 1, 12, 0, tzinfo=dt.UTC)


class Recorder:
    """A :class:`~distblob.storage.verify.RehashProgress` that remembers what it was told."""

    def __init__(self) -> None:
        self.started: list[tuple[int, int]] = []
        self.advanced: list[int] = []
        self._lock = threading.Lock()

    def start(self, total_bytes: int, total_files: int) -> None:
        self.started.append((total_bytes, total_files))

    def advance(self, nbytes: int) -> None:
        with self._lock:
            self.advanced.append(nbytes)


def kinds(findings: list[Finding]) -> set[tuple[str, str]]:
    return {(f.kind, f.path) for f in findings}


@pytest.mark.parametrize("engine", ["native", "python"])
def test_check_blobs_finds_corrupt_and_misplaced_blobs(engine: str) -> None:
    registry = Registry.in_memory(engine=engine)
    repo = registry.repository("v/app")
    good = repo.blobs.put(b"good content").digest
    bad = repo.blobs.put(b"will be damaged").digest
    assert good is not None and bad is not None
    driver = registry.driver
    driver.put_content(paths.blob_data_path(bad), b"damaged content")  # 15 bytes, as before
    wrong_dir = paths.blob_data_path(good).replace(f"/{good.encoded[:2]}/", "/zz/")
    driver.put_content(wrong_dir, b"good content")
    not_a_digest = paths.blobs_root("sha256") + "/ab/abcd/data"
    driver.put_content(not_a_digest, b"x")

    recorder = Recorder()
    findings = check_blobs(registry, 2, recorder)
    assert kinds(findings) == {
        ("corrupt", paths.blob_data_path(bad)),
        ("misplaced", wrong_dir),
        ("misplaced", not_a_digest),
    }
    corrupt = next(f for f in findings if f.kind == "corrupt")
    actual = Digest.from_bytes(b"damaged content")
    assert corrupt.detail == f"content hashes to {actual}, not {bad}"
    # Only the blobs at their right place are rehashed, and each is reported done.
    assert recorder.started == [(len(b"good content") + len(b"damaged content"), 2)]
    assert sorted(recorder.advanced) == sorted([len(b"good content"), len(b"damaged content")])


def test_check_blobs_of_a_clean_and_an_empty_store() -> None:
    registry = Registry.in_memory()
    assert check_blobs(registry, 1) == []  # no blobs/ at all
    registry.repository("v/app").blobs.put(b"fine")
    recorder = Recorder()
    assert check_blobs(registry, 4, recorder) == []
    assert recorder.started == [(4, 1)] and recorder.advanced == [4]


def test_check_blobs_reports_an_unreadable_blob() -> None:
    class FailingDisk(NativeEngine):
        """Reads of one blob fail, as on a bad sector."""

        def hash_object(self, driver: StorageDriver, path: str, algorithm: str) -> str:
            if path == paths.blob_data_path(bad):
                raise OSError(errno.EIO, "Input/output error")
            return super().hash_object(driver, path, algorithm)

    registry = Registry.in_memory(engine=FailingDisk())
    bad = Digest.from_bytes(b"on a bad sector")
    registry.blobs.write(bad, b"on a bad sector")
    registry.blobs.write(Digest.from_bytes(b"readable"), b"readable")
    recorder = Recorder()
    findings = check_blobs(registry, 2, recorder)
    assert kinds(findings) == {("unreadable", paths.blob_data_path(bad))}
    assert "Input/output error" in findings[0].detail
    assert sorted(recorder.advanced) == [len(b"readable"), len(b"on a bad sector")]


def test_check_repositories_finds_bad_links() -> None:
    registry = Registry.in_memory()
    repo = registry.repository("v/app")
    linked = repo.blobs.put(b"linked and stored").digest
    assert linked is not None
    driver = registry.driver
    gone = Digest.from_bytes(b"never stored")
    driver.put_content(paths.layer_link_path("v/app", gone), str(gone).encode())
    invalid = paths.manifest_tag_current_path("v/app", "v1")
    driver.put_content(invalid, b"sha256:nope")
    revision = paths.manifest_revision_link_path("v/app", gone)
    driver.put_content(revision, str(gone).encode())

    findings = check_repositories(registry, now=NOW)
    assert kinds(findings) == {
        ("dangling-link", paths.layer_link_path("v/app", gone)),
        ("dangling-link", revision),
        ("invalid-link", invalid),
    }
    dangling = next(f for f in findings if f.kind == "dangling-link")
    assert dangling.detail == f"{gone} is not stored"


def test_check_repositories_finds_orphan_and_stale_uploads() -> None:
    registry = Registry.in_memory()
    driver = registry.driver

    def upload(upload_id: str, *, data: bool = True, started: str | None = None) -> str:
        if data:
            driver.put_content(paths.upload_data_path("v/app", upload_id), b"x")
        if started is not None:
            driver.put_content(paths.upload_started_at_path("v/app", upload_id), started.encode())
        return paths.upload_dir_path("v/app", upload_id)

    fresh = upload("fresh", started="2024-06-01T11:00:00Z")
    old = upload("old", started="2024-05-01T12:00:00Z")
    no_data = upload("no-data", data=False, started="2024-06-01T11:00:00Z")
    no_start = upload("no-start")
    garbled = upload("garbled", started="yesterday")

    findings = check_repositories(registry, upload_age=7 * 86400, now=NOW)
    assert kinds(findings) == {
        ("stale-upload", old),
        ("orphan-upload", no_data),
        ("orphan-upload", no_start),
        ("orphan-upload", garbled),
    }
    details = {f.path: f.detail for f in findings}
    assert details[old] == "started 2024-05-01T12:00:00Z, 744.0h ago (more than 168h)"
    assert details[no_data] == "no data"
    assert details[no_start] == "no startedat"
    assert details[garbled] == "unreadable startedat"
    # Age checks off (0), only the unusable ones are left; a short age makes the fresh one stale.
    assert old not in {f.path for f in check_repositories(registry, now=NOW)}
    short = check_repositories(registry, upload_age=60, now=NOW)
    assert {fresh, old} <= {f.path for f in short if f.kind == "stale-upload"}


def test_check_repositories_of_an_empty_store() -> None:
    assert check_repositories(Registry.in_memory(), upload_age=1, now=NOW) == []


def test_a_finding_located_written_as_text_and_json(tmp_path: pathlib.Path) -> None:
    finding = Finding("corrupt", "/docker/registry/v2/blobs/x", "wrong")
    assert str(finding) == "corrupt: /docker/registry/v2/blobs/x: wrong"
    assert json.loads(finding.to_json()) == {
        "kind": "corrupt",
        "path": "/docker/registry/v2/blobs/x",
        "detail": "wrong",
    }
    assert finding.located(Registry.in_memory().driver) == finding  # no OS path in memory

    on_disk = finding.located(Registry.filesystem(tmp_path).driver)
    file = str(tmp_path / "docker/registry/v2/blobs/x")
    assert on_disk.file == file
    assert str(on_disk) == f"corrupt: {file}: wrong"
    assert json.loads(on_disk.to_json())["file"] == file
    refused = Finding("invalid-link", "not/absolute", "bad")  # a path the driver refuses
    assert refused.located(Registry.filesystem(tmp_path).driver).file is None
