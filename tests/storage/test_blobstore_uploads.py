"""The blob store conformance suite, part 2: uploads (distribution's ``BlobWriter``) and the rules
of commit, for every engine and driver.
"""

from __future__ import annotations

import array
import datetime as dt
import errno
import io
import itertools
import os
import pathlib
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from distblob import Descriptor, Digest, Registry, Repository
from distblob.descriptor import DEFAULT_MEDIA_TYPE
from distblob.errors import (
    BlobInvalidDigestError,
    BlobInvalidLengthError,
    BlobUploadInvalidError,
    BlobUploadUnknownError,
    DigestInvalidError,
    PathNotFoundError,
    UnsupportedError,
)
from distblob.storage import paths, uploadlock
from distblob.storage.driver import FilesystemDriver, StorageDriver
from support.blobstore import (
    EMPTY_SHA256,
    blob_tree,
    files_under,
    payload,
    sha256,
    upload_dir,
    uploads_left,
)

DATA = payload(70_000, seed=2)
DIGEST = sha256(DATA)


def assert_gone(driver: StorageDriver, repo: Repository, upload_id: str) -> None:
    """The upload's directory is removed and the upload cannot be resumed."""
    with pytest.raises(PathNotFoundError):
        driver.stat(upload_dir(repo, upload_id))
    with pytest.raises(BlobUploadUnknownError):
        repo.blobs.resume(upload_id)


# -- the life of an upload -------------------------------------------------------------------------


def test_create_write_close_resume_commit(repo: Repository, blob_driver: StorageDriver) -> None:
    before = dt.datetime.now(dt.UTC).replace(microsecond=0)
    writer = repo.blobs.create()
    assert uuid.UUID(writer.id).version == 4
    assert before <= writer.started_at <= dt.datetime.now(dt.UTC)
    assert writer.started_at.tzinfo is not None
    started = blob_driver.get_content(paths.upload_started_at_path(repo.name, writer.id))
    assert started == writer.started_at.strftime("%Y-%m-%dT%H:%M:%SZ").encode()
    assert (writer.size, writer.tell(), writer.algorithm, writer.repository) == (
        0,
        0,
        "sha256",
        repo.name,
    )

    parts: list[bytes] = []
    for buffer in (
        DATA[:1000],
        bytearray(DATA[1000:3000]),
        memoryview(DATA)[3000:10_000],
        array.array("H", DATA[10_000:20_000]),
    ):
        expected = bytes(buffer)
        assert writer.write(buffer) == len(expected)
        parts.append(expected)
        assert writer.size == writer.tell() == sum(map(len, parts))
    writer.close()
    assert writer.closed
    writer.close()  # idempotent
    with pytest.raises(ValueError):
        writer.write(b"after close")

    resumed = repo.blobs.resume(writer.id)
    assert resumed.id == writer.id
    assert resumed.started_at == writer.started_at
    assert resumed.size == resumed.tell() == 20_000
    assert resumed.write(DATA[20_000:]) == len(DATA) - 20_000
    descriptor = resumed.commit(Descriptor(size=len(DATA), digest=DIGEST))
    assert descriptor == Descriptor(media_type=DEFAULT_MEDIA_TYPE, size=len(DATA), digest=DIGEST)
    assert resumed.closed
    assert repo.blobs.get(DIGEST) == DATA
    assert repo.blobs.stat(DIGEST) == descriptor
    assert blob_driver.get_content(paths.layer_link_path(repo.name, DIGEST)) == DIGEST.encode()
    assert_gone(blob_driver, repo, writer.id)
    assert uploads_left(blob_driver, repo.name) == []
    with pytest.raises(ValueError):
        resumed.commit(Descriptor(digest=DIGEST))


def test_commit_keeps_the_media_type_and_takes_unknown_sizes(repo: Repository) -> None:
    layer = "application/vnd.oci.image.layer.v1.tar"
    for size in (0, -1):
        with repo.blobs.create() as writer:
            writer.write(DATA)
            descriptor = writer.commit(Descriptor(media_type=layer, size=size, digest=DIGEST))
        assert descriptor == Descriptor(media_type=layer, size=len(DATA), digest=DIGEST)
        assert repo.blobs.stat(DIGEST).media_type == layer


def test_odd_chunk_sizes_with_resumes(repo: Repository) -> None:
    sizes = [1, 2, 3, 63, 64, 65, 127, 4095, 4097, 5, 65_535, 65_537, 7]
    data = payload(300_000, seed=3)
    writer = repo.blobs.create()
    offset = 0
    step = 0
    while offset < len(data):
        chunk = data[offset : offset + sizes[step % len(sizes)]]
        assert writer.write(chunk) == len(chunk)
        offset += len(chunk)
        step += 1
        if step % 4 == 0:
            writer.close()
            writer = repo.blobs.resume(writer.id)
            assert writer.size == offset
    assert writer.commit(Descriptor(digest=sha256(data))).size == len(data)
    assert repo.blobs.get(sha256(data)) == data


def test_read_from_files_descriptors_and_bytesio(repo: Repository, tmp_path: pathlib.Path) -> None:
    big = payload(2_500_000, seed=4)  # more than the 1 MiB copy buffer
    source = tmp_path / "source"
    source.write_bytes(big)
    writer = repo.blobs.create()
    expected = b""

    with open(source, "rb") as file:
        assert writer.read_from(file) == len(big)
        assert file.read() == b""  # the file was read to its end
    expected += big

    with open(source, "rb") as file:
        file.read(100)  # a buffered file that read ahead: copying starts where it says it is
        assert writer.read_from(file) == len(big) - 100
        assert file.tell() == len(big)
    expected += big[100:]

    fd = os.open(source, os.O_RDONLY)
    try:
        assert writer.read_from(fd) == len(big)
        os.lseek(fd, 2_000_000, os.SEEK_SET)
        assert writer.read_from(fd) == len(big) - 2_000_000
        assert os.lseek(fd, 0, os.SEEK_CUR) == len(big)
    finally:
        os.close(fd)
    expected += big + big[2_000_000:]

    stream = io.BytesIO(b"in memory" * 1000)
    stream.seek(3)
    assert writer.read_from(stream) == 9000 - 3
    expected += stream.getvalue()[3:]
    assert writer.read_from(io.BytesIO()) == 0

    assert writer.size == writer.tell() == len(expected)
    writer.write(b"!")
    expected += b"!"
    writer.close()
    resumed = repo.blobs.resume(writer.id)
    with open(source, "rb") as file:
        resumed.read_from(file)
    expected += big
    assert resumed.commit(Descriptor(size=len(expected), digest=sha256(expected))).size == len(
        expected
    )
    assert repo.blobs.get(sha256(expected)) == expected


def test_seek_and_tell_but_append_only(repo: Repository) -> None:
    writer = repo.blobs.create()
    writer.write(DATA[:100])
    assert writer.tell() == 100
    assert writer.seek(10) == 10
    assert writer.tell() == 10
    with pytest.raises(UnsupportedError):
        writer.write(b"overwrite")
    with pytest.raises(UnsupportedError):
        writer.read_from(io.BytesIO(b"overwrite"))
    assert writer.size == 100
    assert writer.seek(5, os.SEEK_CUR) == 15
    assert writer.seek(-1, os.SEEK_END) == 99
    for bad in ((101, os.SEEK_SET), (-1, os.SEEK_SET), (1, os.SEEK_END), (0, 7)):
        with pytest.raises(ValueError):
            writer.seek(*bad)
    assert writer.tell() == 99
    assert writer.seek(0, os.SEEK_END) == 100
    writer.write(DATA[100:])
    assert writer.commit(Descriptor(digest=DIGEST)).size == len(DATA)
    assert repo.blobs.get(DIGEST) == DATA


def test_reader_sees_what_was_uploaded(repo: Repository) -> None:
    writer = repo.blobs.create()
    with writer.reader() as reader:
        assert reader.read() == b""
    writer.write(DATA[:1000])
    with writer.reader() as reader:
        assert reader.read() == DATA[:1000]
    writer.write(DATA[1000:5000])
    with writer.reader() as reader:
        assert reader.seekable()
        reader.seek(4000)
        assert reader.read() == DATA[4000:5000]
    writer.close()
    resumed = repo.blobs.resume(writer.id)
    with resumed.reader() as reader:
        assert reader.read() == DATA[:5000]
    resumed.cancel()


def test_context_manager_closes_on_success(repo: Repository) -> None:
    with repo.blobs.create() as writer:
        writer.write(DATA[:500])
    assert writer.closed
    resumed = repo.blobs.resume(writer.id)
    assert resumed.size == 500
    with resumed:
        resumed.write(DATA[500:])
        resumed.commit(Descriptor(digest=DIGEST))
    assert repo.blobs.get(DIGEST) == DATA


def test_context_manager_cancels_on_exception(repo: Repository, blob_driver: StorageDriver) -> None:
    with pytest.raises(RuntimeError, match="client went away"), repo.blobs.create() as writer:
        writer.write(DATA)
        raise RuntimeError("client went away")
    assert writer.closed
    assert_gone(blob_driver, repo, writer.id)
    assert blob_tree(blob_driver) == {}


def test_cancel_is_idempotent(repo: Repository, blob_driver: StorageDriver) -> None:
    writer = repo.blobs.create()
    writer.write(DATA)
    writer.cancel()
    writer.cancel()
    assert_gone(blob_driver, repo, writer.id)
    with pytest.raises(ValueError):
        writer.write(b"x")
    with pytest.raises(ValueError):
        writer.commit(Descriptor(digest=DIGEST))
    assert blob_tree(blob_driver) == {}

    closed = repo.blobs.create()
    closed.write(DATA)
    closed.close()
    closed.cancel()  # a closed writer still removes its upload
    assert_gone(blob_driver, repo, closed.id)

    committed = repo.blobs.create()
    committed.write(DATA)
    committed.commit(Descriptor(digest=DIGEST))
    committed.cancel()
    committed.cancel()
    assert repo.blobs.get(DIGEST) == DATA
    assert blob_tree(blob_driver) != {}


# -- commit rules ----------------------------------------------------------------------------------


def _failed_commit_leaves_everything(
    repo: Repository,
    driver: StorageDriver,
    provisional: Descriptor,
    error: type[Exception],
) -> Exception:
    """Commit ``provisional`` (which must fail with ``error``) on an upload of DATA; check that
    nothing appeared under blobs/ or in the repository, and that the upload resumes and then
    commits correctly."""
    writer = repo.blobs.create()
    writer.write(DATA)
    blobs_before = blob_tree(driver)
    links_before = files_under(driver, paths.layers_root(repo.name))
    with pytest.raises(error) as caught:
        writer.commit(provisional)
    assert blob_tree(driver) == blobs_before
    assert files_under(driver, paths.layers_root(repo.name)) == links_before
    assert not writer.closed
    writer.close()
    resumed = repo.blobs.resume(writer.id)
    assert resumed.size == len(DATA)
    assert resumed.commit(Descriptor(digest=DIGEST)).digest == DIGEST
    return caught.value


def test_commit_without_digest(repo: Repository, blob_driver: StorageDriver) -> None:
    _failed_commit_leaves_everything(
        repo, blob_driver, Descriptor(size=len(DATA)), BlobInvalidDigestError
    )


@pytest.mark.parametrize("size", [len(DATA) - 1, len(DATA) + 1, 1])
def test_commit_with_the_wrong_size(
    repo: Repository, blob_driver: StorageDriver, size: int
) -> None:
    error = _failed_commit_leaves_everything(
        repo, blob_driver, Descriptor(size=size, digest=DIGEST), BlobInvalidLengthError
    )
    assert isinstance(error, BlobInvalidLengthError)
    assert (error.expected, error.actual) == (size, len(DATA))


@pytest.mark.parametrize("algorithm", ["sha256", "sha384", "sha512", "blake3"])
def test_commit_with_the_wrong_digest(
    make_registry: Callable[..., Registry], blob_driver: StorageDriver, algorithm: str
) -> None:
    for fsync in (True, False):
        repo = make_registry(fsync=fsync).repository(f"wrong/{algorithm}")
        wrong = Digest.from_bytes(DATA + b"x", algorithm)
        error = _failed_commit_leaves_everything(
            repo, blob_driver, Descriptor(digest=wrong), BlobInvalidDigestError
        )
        assert isinstance(error, BlobInvalidDigestError)
        assert isinstance(error, DigestInvalidError)
        assert error.reason == "content does not match digest"
        assert error.digest == wrong


def test_failed_commit_lets_the_same_writer_continue(repo: Repository) -> None:
    writer = repo.blobs.create()
    writer.write(DATA[:-10])
    with pytest.raises(BlobInvalidDigestError):
        writer.commit(Descriptor(digest=DIGEST))
    writer.write(DATA[-10:])
    assert writer.commit(Descriptor(digest=DIGEST)).digest == DIGEST


@pytest.mark.parametrize("fsync", [True, False])
@pytest.mark.parametrize("algorithm", ["sha384", "sha512", "blake3"])
def test_commit_with_a_digest_of_another_algorithm(
    make_registry: Callable[..., Registry],
    blob_driver: StorageDriver,
    algorithm: str,
    fsync: bool,
) -> None:
    registry = make_registry(fsync=fsync)
    repo = registry.repository("library/test")
    client = Digest.from_bytes(DATA, algorithm)
    writer = repo.blobs.create()
    writer.write(DATA[:-100])
    writer.write(DATA[-100:])  # small enough to sit in a write buffer until commit flushes it
    descriptor = writer.commit(Descriptor(size=len(DATA), digest=client))
    # The blob is stored under its canonical (sha256) digest and linked under both.
    assert descriptor.digest == DIGEST
    assert list(registry.blobs.enumerate()) == [DIGEST]
    assert repo.blobs.stat(client).digest == DIGEST
    assert repo.blobs.get(client) == DATA
    assert repo.blobs.get(DIGEST) == DATA
    for linked in (client, DIGEST):
        link = blob_driver.get_content(paths.layer_link_path(repo.name, linked))
        assert link == DIGEST.encode()
    assert set(repo.blobs.enumerate()) == {client, DIGEST}


@pytest.mark.parametrize("algorithm", ["blake3", "sha384", "sha512"])
def test_create_with_another_algorithm(
    registry: Registry, repo: Repository, blob_driver: StorageDriver, algorithm: str
) -> None:
    expected = Digest.from_bytes(DATA, algorithm)
    writer = repo.blobs.create(algorithm=algorithm)
    assert writer.algorithm == algorithm
    writer.write(DATA[:30_000])
    writer.close()
    resumed = repo.blobs.resume(writer.id)
    assert resumed.algorithm == algorithm
    resumed.write(DATA[30_000:])
    descriptor = resumed.commit(Descriptor(digest=expected))
    assert descriptor == Descriptor(DEFAULT_MEDIA_TYPE, len(DATA), expected)
    data_path = f"{paths.ROOT}/blobs/{algorithm}/{expected.encoded[:2]}/{expected.encoded}/data"
    assert blob_driver.get_content(data_path) == DATA
    assert list(registry.blobs.enumerate()) == [expected]
    assert repo.blobs.get(expected) == DATA

    # A sha256 digest from the client is verified and linked to the canonical blob.
    other = repo.blobs.create(algorithm=algorithm)
    other.write(DATA)
    assert other.commit(Descriptor(digest=DIGEST)).digest == expected
    assert repo.blobs.stat(DIGEST).digest == expected
    assert list(registry.blobs.enumerate()) == [expected]


@pytest.mark.parametrize("algorithm", ["sha256", "sha512", "blake3"])
def test_commit_the_empty_blob(
    registry: Registry, repo: Repository, blob_driver: StorageDriver, algorithm: str
) -> None:
    expected = Digest.from_bytes(b"", algorithm)
    writer = repo.blobs.create(algorithm=algorithm)
    writer.close()
    resumed = repo.blobs.resume(writer.id)
    assert resumed.size == 0
    assert resumed.commit(Descriptor(digest=expected)) == Descriptor(
        DEFAULT_MEDIA_TYPE, 0, expected
    )
    assert repo.blobs.get(expected) == b""
    assert blob_driver.stat(paths.blob_data_path(expected)).size == 0
    assert list(registry.blobs.enumerate()) == [expected]
    assert_gone(blob_driver, repo, writer.id)
    if algorithm == "sha256":
        assert expected == EMPTY_SHA256


def test_committing_existing_content_keeps_the_blob(
    registry: Registry, repo: Repository, blob_driver: StorageDriver
) -> None:
    repo.blobs.put(DATA)
    path = paths.blob_data_path(DIGEST)
    local = blob_driver.local_path(path)
    if local is not None:
        os.utime(local, ns=(1_000_000_000, 1_000_000_000))  # far in the past
    before = blob_driver.stat(path)
    inode = os.stat(local).st_ino if local is not None else None

    other = registry.repository("library/other")
    with other.blobs.create() as writer:
        writer.write(DATA)
        assert writer.commit(Descriptor(digest=DIGEST)).digest == DIGEST
    assert_gone(blob_driver, other, writer.id)
    repo.blobs.put(DATA)  # a put of the same content does not rewrite it either

    assert blob_driver.stat(path) == before
    if local is not None:
        assert isinstance(blob_driver, FilesystemDriver)
        assert os.stat(local).st_ino == inode
        assert os.stat(local).st_mtime_ns == 1_000_000_000
    assert other.blobs.get(DIGEST) == DATA
    assert files_under(blob_driver, paths.blobs_root()) == {path}


@pytest.mark.parametrize("stored_before", [False, True])
def test_commit_without_cleanup_leaves_an_upload_that_cannot_resume(
    registry: Registry, repo: Repository, blob_driver: StorageDriver, stored_before: bool
) -> None:
    if stored_before:
        registry.repository("library/other").blobs.put(DATA)
    writer = repo.blobs.create()
    writer.write(DATA)
    writer.close()
    writer = repo.blobs.resume(writer.id)  # a state is saved: the directory holds more than data
    assert writer.commit(Descriptor(digest=DIGEST), cleanup=False).digest == DIGEST
    assert writer.closed
    assert repo.blobs.get(DIGEST) == DATA
    # The directory stays, without data, whether the data moved into place or was a duplicate.
    left = files_under(blob_driver, upload_dir(repo, writer.id))
    assert left and not any(name.endswith("/data") for name in left)
    with pytest.raises(BlobUploadUnknownError):
        repo.blobs.resume(writer.id)
    writer.cancel()
    assert_gone(blob_driver, repo, writer.id)
    assert repo.blobs.get(DIGEST) == DATA
    assert files_under(blob_driver, paths.blobs_root()) == {paths.blob_data_path(DIGEST)}


def test_writeback_modes_reach_the_native_file_and_store_the_same_blob(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from distblob import _native
    from distblob.storage.engines import native

    opened: list[tuple[bool, bool]] = []
    real = _native.UploadFile

    def recording(
        *args: object, writeback: bool = False, paced: bool = True, **kw: object
    ) -> object:
        opened.append((writeback, paced))
        return real(*args, writeback=writeback, paced=paced, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(native._native, "UploadFile", recording)
    big = payload(20 << 20, seed=9)
    digest = sha256(big)
    for fsync, mode, expected in (
        (True, "paced", (True, True)),
        (True, "unpaced", (True, False)),
        (True, "off", (False, False)),
        (False, "paced", (False, True)),  # nothing is synced: nothing to write back early
    ):
        registry = Registry(FilesystemDriver(str(tmp_path / f"{fsync}-{mode}")), fsync=fsync)
        writer = registry.repository("lib/wb").blobs.create(writeback=mode)  # type: ignore[arg-type]
        assert opened[-1] == expected
        for start in range(0, len(big), 3 << 20):
            writer.write(big[start : start + (3 << 20)])
        assert writer.commit(Descriptor(digest=digest)).digest == digest
        assert registry.repository("lib/wb").blobs.get(digest) == big
    with pytest.raises(ValueError, match="writeback"):
        registry.repository("lib/wb").blobs.create(writeback="eager")  # type: ignore[arg-type]


@pytest.mark.parametrize("cleanup", [True, False])
@pytest.mark.parametrize("algorithm", ["sha256", "blake3"])
def test_commit_with_the_whole_blob_on_an_empty_upload(
    registry: Registry,
    repo: Repository,
    blob_driver: StorageDriver,
    algorithm: str,
    cleanup: bool,
) -> None:
    expected = Digest.from_bytes(DATA, algorithm)
    writer = repo.blobs.create(algorithm=algorithm)
    writer.close()
    writer = repo.blobs.resume(writer.id)
    # A wrong digest or size stores nothing and leaves the upload, still empty, to cancel.
    for provisional, error in (
        (Descriptor(digest=Digest.from_bytes(DATA + b"x", algorithm)), BlobInvalidDigestError),
        (Descriptor(size=len(DATA) + 1, digest=expected), BlobInvalidLengthError),
    ):
        with pytest.raises(error):
            writer.commit(provisional, tail=DATA)
        assert writer.size == 0 and not writer.closed
        assert list(registry.blobs.enumerate()) == []
    descriptor = writer.commit(Descriptor(digest=expected), tail=bytearray(DATA), cleanup=cleanup)
    assert descriptor == Descriptor(DEFAULT_MEDIA_TYPE, len(DATA), expected)
    assert writer.closed
    assert repo.blobs.get(expected) == DATA
    assert repo.blobs.stat(expected) == descriptor
    assert list(registry.blobs.enumerate()) == [expected]
    assert blob_driver.get_content(paths.blob_data_path(expected)) == DATA
    if cleanup:
        assert_gone(blob_driver, repo, writer.id)
    else:
        # As after commit(cleanup=False): no data left, so nobody can resume it meanwhile.
        left = files_under(blob_driver, upload_dir(repo, writer.id))
        assert not any(name.endswith("/data") for name in left)
        with pytest.raises(BlobUploadUnknownError):
            repo.blobs.resume(writer.id)
        writer.cancel()
        assert_gone(blob_driver, repo, writer.id)


@pytest.mark.parametrize("first", [b"", DATA[:1000]])
def test_commit_with_appends_to_an_upload_that_holds_data(
    repo: Repository, blob_driver: StorageDriver, first: bytes
) -> None:
    # Data already there, or a digest of another algorithm: write, then commit as usual.
    writer = repo.blobs.create()
    writer.write(first)
    rest = DATA[len(first) :]
    other = Digest.from_bytes(DATA, "sha512")
    descriptor = writer.commit(Descriptor(digest=other if not first else DIGEST), tail=rest)
    assert descriptor.digest == DIGEST
    assert repo.blobs.get(DIGEST) == DATA
    assert_gone(blob_driver, repo, writer.id)
    if not first:
        assert repo.blobs.stat(other).digest == DIGEST


@pytest.mark.parametrize("engine", ["native", "python"])
def test_commit_syncs_the_blob_and_its_links(
    tmp_path: pathlib.Path, engine: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Everything a commit makes (the blob's directories, the link, its directories) is
    synced before it returns."""
    repo = Registry.filesystem(tmp_path, engine=engine).repository("sync/me")
    other = sha256(b"other")
    repo.blobs.put(b"other")  # blobs/ and the repository exist: only the new parts need syncs
    synced: list[str] = []
    real_fsync = os.fsync

    def record(fd: int) -> None:
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        real_fsync(fd)

    writer = repo.blobs.create()
    writer.write(DATA)
    monkeypatch.setattr(os, "fsync", record)
    writer.commit(Descriptor(digest=DIGEST))
    v2 = tmp_path.resolve() / "docker/registry/v2"
    blob_dir = v2 / "blobs/sha256" / DIGEST.encoded[:2] / DIGEST.encoded
    link_dir = v2 / "repositories/sync/me/_layers/sha256" / DIGEST.encoded
    expected = {
        str(blob_dir),
        str(blob_dir.parent),
        str(link_dir / "link"),
        str(link_dir),
        str(link_dir.parent),
    }
    if DIGEST.encoded[:2] != other.encoded[:2]:
        expected.add(str(blob_dir.parent.parent))  # a new prefix directory
    assert expected <= set(synced)
    assert repo.blobs.get(DIGEST) == DATA


def test_concurrent_commits_of_the_same_content(
    registry: Registry, blob_driver: StorageDriver
) -> None:
    threads = 32
    repos = [registry.repository(f"team{i % 4}/app") for i in range(threads)]
    writers = [repo.blobs.create() for repo in repos]
    for writer in writers:
        writer.write(DATA)
    barrier = threading.Barrier(threads)
    results: list[Descriptor | BaseException] = [RuntimeError("not run")] * threads

    def commit(index: int) -> None:
        barrier.wait()
        try:
            results[index] = writers[index].commit(Descriptor(digest=DIGEST))
        except BaseException as error:  # reported below, with the others
            results[index] = error

    workers = [threading.Thread(target=commit, args=(i,)) for i in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()

    expected = Descriptor(DEFAULT_MEDIA_TYPE, len(DATA), DIGEST)
    assert results == [expected] * threads
    assert files_under(blob_driver, paths.blobs_root()) == {paths.blob_data_path(DIGEST)}
    assert registry.blobs.get(DIGEST) == DATA
    for repo in repos[:4]:
        assert repo.blobs.get(DIGEST) == DATA
        assert uploads_left(blob_driver, repo.name) == []


# -- any split, any resume point -------------------------------------------------------------------

WRITE_KINDS = ("bytes", "memoryview", "bytearray", "read_from")


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    size=st.integers(0, 200 * 1024),
    seed=st.integers(0, 2**32),
    cuts=st.lists(st.floats(0, 1), max_size=12),
    steps=st.lists(st.tuples(st.sampled_from(WRITE_KINDS), st.booleans()), min_size=13),
)
def test_any_chunking_and_resume_points_give_hashlibs_digest(
    repo: Repository,
    size: int,
    seed: int,
    cuts: list[float],
    steps: list[tuple[str, bool]],
) -> None:
    """Cut random data anywhere, write each piece its own way, close and resume after any of
    them: the commit gives hashlib's digest."""
    data = payload(size, seed)
    bounds = [0, *sorted(int(cut * size) for cut in cuts), size]
    writer = repo.blobs.create()
    try:
        for (start, end), (kind, resume) in zip(itertools.pairwise(bounds), steps, strict=False):
            piece = memoryview(data)[start:end]
            if kind == "bytes":
                writer.write(bytes(piece))
            elif kind == "memoryview":
                writer.write(piece)
            elif kind == "bytearray":
                writer.write(bytearray(piece))
            else:
                writer.read_from(io.BytesIO(piece))
            if resume:
                writer.close()
                writer = repo.blobs.resume(writer.id)
            assert writer.size == end
        descriptor = writer.commit(Descriptor(size=size, digest=sha256(data)))
    finally:
        writer.cancel()  # idempotent after commit; frees the upload if the example failed
    assert descriptor.digest == sha256(data)
    assert repo.blobs.get(sha256(data)) == data


# -- one writer at a time ------------------------------------------------------------------------


def test_a_second_writer_waits_for_the_first_and_sees_what_it_wrote(
    repo: Repository, blob_driver: StorageDriver
) -> None:
    """Two writers never hold one upload at once: the second resume waits until the first
    writer ends, then starts from the size it left (never over the first one's bytes)."""
    first = repo.blobs.create()
    first.write(DATA[:1000])
    first.close()
    holder = repo.blobs.resume(first.id)
    holder.write(DATA[1000:3000])
    got: list[int] = []
    second = threading.Thread(target=lambda: got.append(_resume_and_close(repo, first.id)))
    second.start()
    second.join(0.5)
    assert second.is_alive() and not got  # waiting while the holder writes
    holder.write(DATA[3000:5000])
    holder.close()
    second.join(10)
    assert got == [5000]
    writer = repo.blobs.resume(first.id)
    writer.write(DATA[5000:])
    assert writer.commit(Descriptor(digest=DIGEST)).digest == DIGEST
    assert repo.blobs.get(DIGEST) == DATA


def _resume_and_close(repo: Repository, upload_id: str) -> int:
    writer = repo.blobs.resume(upload_id)
    size = writer.size
    writer.close()
    return size


def test_a_writer_held_too_long_is_refused_and_ending_lets_go(
    repo: Repository, blob_driver: StorageDriver, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(uploadlock, "LOCK_WAIT", 0.3)
    writer = repo.blobs.create()
    writer.write(DATA[:100])
    with pytest.raises(BlobUploadInvalidError, match="another request is writing it"):
        repo.blobs.resume(writer.id)
    assert writer.size == 100  # the holder is untouched and goes on
    writer.write(DATA[100:])
    # Every way a writer ends lets the next one in: commit (here), close and cancel (above).
    assert writer.commit(Descriptor(digest=DIGEST), cleanup=False).digest == DIGEST
    with pytest.raises(BlobUploadUnknownError):
        repo.blobs.resume(writer.id)  # no data left: unknown, not busy
    cancelled = repo.blobs.create()
    cancelled.cancel()
    failed = repo.blobs.create()
    failed.write(b"not the blob")
    with pytest.raises(BlobInvalidDigestError):
        failed.commit(Descriptor(digest=DIGEST))
    failed.close()
    again = repo.blobs.resume(failed.id)
    assert again.size == len(b"not the blob")
    again.cancel()


def test_the_lock_holds_across_processes(tmp_path: pathlib.Path) -> None:
    """On a filesystem the lock is flock on the upload's startedat: another process (a second
    server on the same root) waits for it too."""
    repo = Registry.filesystem(tmp_path / "root").repository("lock/app")
    writer = repo.blobs.create()
    writer.write(b"abc")
    writer.close()
    started_at = tmp_path / "root" / paths.upload_started_at_path(repo.name, writer.id).lstrip("/")
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import fcntl, sys, time\n"
            "f = open(sys.argv[1])\n"
            "fcntl.flock(f, fcntl.LOCK_EX)\n"
            "print('held', flush=True)\n"
            "time.sleep(1.5)\n",
            str(started_at),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "held\n"
        started = time.monotonic()
        resumed = repo.blobs.resume(writer.id)
        waited = time.monotonic() - started
        # The holder keeps the lock 1.5 s after saying so, and lets it go only as it exits
        # (whether it is reaped yet is the scheduler's business, not the lock's).
        assert waited > 1.2, "resumed while the other process held the upload"
        assert holder.wait(timeout=10) == 0
        assert resumed.size == 3
        resumed.close()
    finally:
        holder.kill()
        holder.wait()
        if holder.stdout is not None:
            holder.stdout.close()


def test_a_filesystem_without_flock_goes_on_unlocked(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Some network mounts refuse flock: uploads then work unlocked (as in distribution), with
    one warning, instead of failing."""

    def no_flock(fd: int, operation: int) -> None:
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(uploadlock.fcntl, "flock", no_flock)
    monkeypatch.setattr(uploadlock, "_warned", False)
    repo = Registry.filesystem(tmp_path / "root").repository("nolock/app")
    writer = repo.blobs.create()
    writer.write(DATA[:10])
    writer.close()
    resumed = repo.blobs.resume(writer.id)
    resumed.write(DATA[10:])
    assert resumed.commit(Descriptor(digest=DIGEST)).digest == DIGEST
    warnings = [r for r in caplog.records if "uploads are not locked" in r.getMessage()]
    assert len(warnings) == 1
