"""Faults: writes that fail with ENOSPC or EIO, and a real filesystem that fills up.

With :class:`support.faults.FaultyDriver` a fault is armed at one point (an upload write, a
small file such as a hash state, the commit's move): the operation raises the ``OSError`` the
disk raised, the upload stays resumable once the fault is cleared, the finished blob has the
right digest and nothing under ``blobs/`` is ever wrong or partial.

On an 8 MiB tmpfs (mounted for the test; skipped where mounting is not permitted) the native
engine's writes fail with ``ENOSPC`` (errno 28) and the upload resumes and commits once space is
freed.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from distblob import Descriptor, Digest, Registry
from distblob.errors import BlobUploadUnknownError
from distblob.storage import paths
from distblob.storage.driver import FilesystemDriver, InMemoryDriver, StorageDriver
from support.blobstore import files_under, payload, uploads_left
from support.faults import FaultyDriver

pytestmark = pytest.mark.timeout(120)

DATA = payload(3_000_000, seed=5)
DIGEST = Digest("sha256:" + hashlib.sha256(DATA).hexdigest())
REPO = "faults/repo"
CHUNK = 400_000


@pytest.fixture(params=["native-filesystem", "python-filesystem", "native-inmemory"])
def setup(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[Registry, FaultyDriver]:
    engine, kind = request.param.split("-")
    inner: StorageDriver = (
        FilesystemDriver(tmp_path / "root") if kind == "filesystem" else (InMemoryDriver())
    )
    driver = FaultyDriver(inner)
    return Registry(driver, engine=engine), driver


def finish(registry: Registry, upload_id: str) -> None:
    """Resume the upload, send what it lacks, commit; check the blob."""
    repo = registry.repository(REPO)
    writer = repo.blobs.resume(upload_id)
    held = writer.size
    with writer.reader() as reader:
        assert reader.read() == DATA[:held]  # only ever a prefix of what was sent
    writer.write(DATA[held:])
    assert writer.commit(Descriptor(digest=DIGEST)).digest == DIGEST
    assert repo.blobs.get(DIGEST) == DATA
    assert files_under(registry.driver, paths.blobs_root()) == {paths.blob_data_path(DIGEST)}
    assert uploads_left(registry.driver, REPO) == []


def no_blobs(registry: Registry) -> None:
    assert files_under(registry.driver, paths.blobs_root()) == set()


@pytest.mark.parametrize("err", [errno.ENOSPC, errno.EIO])
def test_write_fault(setup: tuple[Registry, FaultyDriver], err: int) -> None:
    registry, driver = setup
    writer = registry.repository(REPO).blobs.create()
    writer.write(DATA[:CHUNK])
    driver.arm("write", err, after=1)
    writer.write(DATA[CHUNK : 2 * CHUNK])
    with pytest.raises(OSError) as info:
        writer.write(DATA[2 * CHUNK : 3 * CHUNK])
    assert info.value.errno == err
    assert driver.failures["write"] == 1
    with contextlib.suppress(OSError):
        writer.close()
    no_blobs(registry)
    driver.clear()
    finish(registry, writer.id)


@pytest.mark.parametrize("err", [errno.ENOSPC, errno.EIO])
def test_state_fault(setup: tuple[Registry, FaultyDriver], err: int) -> None:
    registry, driver = setup
    writer = registry.repository(REPO).blobs.create()
    writer.write(DATA[:CHUNK])
    writer.close()
    writer = registry.repository(REPO).blobs.resume(writer.id)
    writer.write(DATA[CHUNK : 2 * CHUNK])
    driver.arm("put_content", err)
    with contextlib.suppress(OSError):
        writer.close()  # the hash state cannot be stored (engines that save states)
    assert writer.closed
    # Nothing else may be created meanwhile: a new upload fails cleanly.
    with pytest.raises(OSError) as info:
        registry.repository(REPO).blobs.create()
    assert info.value.errno == err
    no_blobs(registry)
    driver.clear()
    finish(registry, writer.id)


@pytest.mark.parametrize("err", [errno.ENOSPC, errno.EIO])
def test_move_fault(setup: tuple[Registry, FaultyDriver], err: int) -> None:
    registry, driver = setup
    repo = registry.repository(REPO)
    writer = repo.blobs.create()
    writer.write(DATA)
    driver.arm("move", err)
    with pytest.raises(OSError) as info:
        writer.commit(Descriptor(digest=DIGEST))
    assert info.value.errno == err
    no_blobs(registry)
    assert not repo.blobs.exists(DIGEST)
    driver.clear()
    finish(registry, writer.id)


def test_link_fault_after_the_move(setup: tuple[Registry, FaultyDriver]) -> None:
    """The data is in place but the link cannot be written: the blob is right, the upload is
    gone, and the client's retry (a new upload of the same content) links it."""
    registry, driver = setup
    repo = registry.repository(REPO)
    writer = repo.blobs.create()
    writer.write(DATA)
    driver.arm("put_content", errno.ENOSPC)
    with pytest.raises(OSError):
        writer.commit(Descriptor(digest=DIGEST))
    driver.clear()
    assert registry.blobs.get(DIGEST) == DATA  # the moved data is whole and right
    assert not repo.blobs.exists(DIGEST)
    with pytest.raises(BlobUploadUnknownError):
        repo.blobs.resume(writer.id)  # its data went into blobs/
    retry = repo.blobs.create()
    retry.write(DATA)
    assert retry.commit(Descriptor(digest=DIGEST)).digest == DIGEST
    assert repo.blobs.get(DIGEST) == DATA


# -- a real filesystem that fills up ------------------------------------------------------------


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    mount = tmp_path / "small"
    mount.mkdir()
    proc = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(mount)],
        capture_output=True,
        check=False,
        timeout=30,
    )
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {proc.stderr.decode(errors='replace').strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False, timeout=30)


@pytest.mark.parametrize("engine", ["native", "python"])
def test_a_filesystem_that_fills_up(small_fs: Path, engine: str) -> None:
    data = payload(6 << 20, seed=9)
    digest = Digest("sha256:" + hashlib.sha256(data).hexdigest())
    filler = small_fs / "filler"
    filler.write_bytes(b"\0" * (4 << 20))
    registry = Registry.filesystem(small_fs / "root", engine=engine)
    repo = registry.repository(REPO)
    writer = repo.blobs.create()
    failure: OSError | None = None
    try:
        for offset in range(0, len(data), 1 << 20):
            writer.write(data[offset : offset + (1 << 20)])
    except OSError as error:
        failure = error
    with contextlib.suppress(OSError):
        writer.close()  # the data or the hash state may not fit either
    if failure is None:  # the python engine's buffered writer meets the full disk on close
        with pytest.raises(OSError) as info:
            writer = repo.blobs.resume(writer.id)
            writer.write(data[writer.size :])
            writer.close()
        failure = info.value
    assert failure.errno == errno.ENOSPC, failure
    assert files_under(registry.driver, paths.blobs_root()) == set()

    filler.unlink()  # space returns
    writer = repo.blobs.resume(writer.id)
    held = writer.size
    assert held < len(data)
    with open(registry.driver.local_path(paths.upload_data_path(REPO, writer.id)) or "", "rb") as f:
        assert f.read() == data[:held]
    writer.write(data[held:])
    assert writer.commit(Descriptor(digest=digest)).digest == digest
    assert hashlib.sha256(repo.blobs.get(digest)).hexdigest() == digest.encoded
    assert uploads_left(registry.driver, REPO) == []
    os.sync()
