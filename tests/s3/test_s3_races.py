"""Writers of one upload on two replicas of an S3 store, interleaved step by step.

Each ``Registry`` here has its own ``S3Driver`` over one bucket (``rclone serve s3``), as two
``distblob serve`` processes would: their in-process locks do not see each other. The
interleavings are the ones racing requests produce (two PATCHes of one ``Location``, a failed
PATCH, a commit killed half-way, a retried commit), played in a fixed order so every outcome is
checked. Whatever the order, no blob may be stored under a digest its bytes do not have, and
the stored blobs are checked by reading the bucket back. With upload leases in Redis the
second writer does not even start.
"""

from __future__ import annotations

import datetime as dt
import io
import os
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from distblob import Descriptor, Registry, Repository
from distblob.digest import Digest
from distblob.errors import (
    BlobInvalidDigestError,
    BlobUploadBusyError,
    BlobUploadInvalidError,
    BlobUploadUnknownError,
    PathNotFoundError,
    StorageDriverError,
)
from distblob.storage import paths
from distblob.storage.driver.s3 import MIN_CHUNK_SIZE, PENDING_SUFFIX, S3Driver, composite_etag
from distblob.storage.leases import RedisUploadLeases
from distblob.storage.purge import purge_uploads, utc_now
from support.blobstore import sha256
from support.redisserver import RedisServer
from support.s3server import RcloneS3

MiB = 1 << 20
REPO = "races/app"
#: Around S3's part size (5 MiB here): in the pending state's tail only, one part and a tail,
#: two parts and a tail.
SIZES = [1024, 4 * MiB, 6 * MiB, 11 * MiB]


def replica(server: RcloneS3, bucket: str, **options: Any) -> Registry:
    """A registry with its own driver on ``bucket``: what another process would have."""
    driver = S3Driver.from_parameters(server.parameters(bucket, chunksize=MIN_CHUNK_SIZE))
    return Registry(driver, redirect=False, **options)


def body(size: int, fill: int) -> bytes:
    """``size`` bytes that differ from any other ``fill``'s everywhere, yet equally long."""
    return bytes([fill]) * 7 + os.urandom(size - 7)


def stored_blobs(registry: Registry) -> dict[Digest, bytes]:
    """Every blob stored under ``blobs/``, by the digest its path names."""
    driver = registry.driver
    found: dict[Digest, bytes] = {}
    try:
        entries = list(driver.walk(paths.blobs_root()))
    except StorageDriverError:
        return found
    for info in entries:
        if info.is_dir or not info.path.endswith("/data"):
            continue
        algorithm, hexdigest = info.path.split("/")[-4], info.path.split("/")[-2]
        found[Digest.from_parts(algorithm, hexdigest)] = driver.get_content(info.path)
    return found


def assert_no_poisoned_blob(registry: Registry) -> None:
    for digest, data in stored_blobs(registry).items():
        assert sha256(data) == digest, f"{digest} holds bytes of {sha256(data)}"


def multipart_uploads(server: RcloneS3, bucket: str) -> list[dict[str, Any]]:
    uploads: list[dict[str, Any]] = (
        server.client().list_multipart_uploads(Bucket=bucket).get("Uploads", [])
    )
    return uploads


def start(repo: Repository, prefix: bytes) -> str:
    """A new upload holding ``prefix``, closed (pending); its id."""
    with repo.blobs.create() as writer:
        if prefix:
            writer.write(prefix)
        return writer.id


def try_commit(repo: Repository, upload_id: str, digest: Digest) -> Descriptor | None:
    """Resume and commit; the descriptor, or ``None`` if the commit was refused."""
    try:
        writer = repo.blobs.resume(upload_id, wait=0)
    except (BlobUploadUnknownError, BlobUploadInvalidError):
        return None
    try:
        return writer.commit(Descriptor(digest=digest))
    except (BlobInvalidDigestError, BlobUploadInvalidError, BlobUploadUnknownError):
        return None
    finally:
        writer.close()


@pytest.fixture
def bucket(s3_server: RcloneS3) -> str:
    return s3_server.new_bucket("races")


@pytest.fixture
def pair(s3_server: RcloneS3, bucket: str) -> tuple[Registry, Registry]:
    return replica(s3_server, bucket), replica(s3_server, bucket)


@pytest.mark.parametrize("prefix_size", [0, 3 * MiB])
@pytest.mark.parametrize("size", SIZES, ids=[f"{s}B" for s in SIZES])
@pytest.mark.parametrize("first_to_close", ["x", "y"])
def test_two_patches_of_one_upload_never_poison_the_store(
    pair: tuple[Registry, Registry], size: int, prefix_size: int, first_to_close: str
) -> None:
    a, b = pair
    prefix = body(prefix_size, 1) if prefix_size else b""
    x, y = body(size, 2), body(size, 3)
    upload_id = start(a.repository(REPO), prefix)
    on_a = a.repository(REPO).blobs.resume(upload_id)
    on_b = b.repository(REPO).blobs.resume(upload_id)  # another process: not locked out
    half = size // 2
    on_a.write(x[:half])
    on_b.write(y[:half])
    on_a.write(x[half:])
    on_b.write(y[half:])
    first, second = (on_a, on_b) if first_to_close == "x" else (on_b, on_a)
    first.close()
    # The second writer started from the same state: it finds it changed, keeps nothing.
    with pytest.raises(BlobUploadBusyError):
        second.close()
    winner = prefix + (x if first_to_close == "x" else y)
    loser = prefix + (y if first_to_close == "x" else x)
    repo = b.repository(REPO)
    assert try_commit(repo, upload_id, sha256(loser)) is None
    committed = try_commit(repo, upload_id, sha256(winner))
    if committed is not None:
        assert committed.digest == sha256(winner)
    assert_no_poisoned_blob(a)
    assert sha256(loser) not in stored_blobs(a)


@pytest.mark.parametrize("size", [1024, 6 * MiB], ids=["1KiB", "6MiB"])
def test_a_state_saved_by_another_writer_is_not_trusted(
    pair: tuple[Registry, Registry], size: int
) -> None:
    """The race's worst order: the pending state of one writer and the hash state of the
    other (two writers of equal lengths save their hash states under one name)."""
    a, b = pair
    x, y = body(size, 2), body(size, 3)
    upload_id = start(a.repository(REPO), b"")
    with a.repository(REPO).blobs.resume(upload_id) as writer:
        writer.write(x)
    state_path = paths.upload_hash_state_path(REPO, upload_id, "sha256", size)
    x_state = a.driver.get_content(state_path)
    # Another writer's state for Y, of the same length, replaces X's.
    other = a.repository("races/other").blobs.create()
    other.write(y)
    other.close()
    y_state = a.driver.get_content(
        paths.upload_hash_state_path("races/other", other.id, "sha256", size)
    )
    assert y_state != x_state
    a.driver.put_content(state_path, y_state)
    resumed = b.repository(REPO).blobs.resume(upload_id)
    assert resumed.hashed == 0  # the state is not the one bound to the bytes: rehash
    resumed.close()
    repo = b.repository(REPO)
    assert try_commit(repo, upload_id, sha256(y)) is None
    assert try_commit(repo, upload_id, sha256(x)) is not None
    assert stored_blobs(a) == {sha256(x): x}


def test_the_bound_state_is_used_when_nothing_raced(pair: tuple[Registry, Registry]) -> None:
    a, b = pair
    data = body(7 * MiB, 4)
    upload_id = start(a.repository(REPO), data[: 6 * MiB])
    with b.repository(REPO).blobs.resume(upload_id) as writer:
        assert writer.hashed == 6 * MiB  # resumed from the state, no rehash
        writer.write(data[6 * MiB :])
    assert try_commit(a.repository(REPO), upload_id, sha256(data)) is not None
    assert stored_blobs(a) == {sha256(data): data}


class _Injected(StorageDriverError):
    """The object store failed a request (injected)."""


@pytest.mark.parametrize("size", [6 * MiB, 12 * MiB], ids=["6MiB", "12MiB"])
def test_a_failed_patch_leaves_the_upload_as_it_was(
    pair: tuple[Registry, Registry],
    s3_server: RcloneS3,
    bucket: str,
    monkeypatch: pytest.MonkeyPatch,
    size: int,
) -> None:
    a, b = pair
    prefix = body(2 * MiB, 1)
    upload_id = start(a.repository(REPO), prefix)
    driver = b.driver
    assert isinstance(driver, S3Driver)
    real = driver._upload_part
    sent = 0

    def failing(*args: Any) -> str:
        nonlocal sent
        sent += 1
        if sent == 2:
            raise _Injected("s3: injected failure")
        return real(*args)

    monkeypatch.setattr(driver, "_upload_part", failing)
    writer = b.repository(REPO).blobs.resume(upload_id)

    def patch() -> None:
        # Parts go up in the background: the failure shows in a write or in the close.
        try:
            writer.write(body(size, 5))
            writer.write(body(size, 6))
        finally:
            writer.close()

    with pytest.raises(_Injected):
        patch()
    monkeypatch.undo()
    # As it was: the size, the state and the parts of before the PATCH.
    resumed = a.repository(REPO).blobs.resume(upload_id)
    assert resumed.size == len(prefix)
    assert resumed.hashed == len(prefix)
    resumed.close()
    assert try_commit(a.repository(REPO), upload_id, sha256(prefix)) is not None
    assert stored_blobs(a) == {sha256(prefix): prefix}
    assert multipart_uploads(s3_server, bucket) == []  # the failed writer's upload was aborted


def test_an_upload_completed_elsewhere_while_parts_go_up_is_unknown(
    pair: tuple[Registry, Registry], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Seen under load with three replicas: a part sent while another replica completed the
    # upload finds no multipart upload (NoSuchUpload). The PATCH is 404 BLOB_UPLOAD_UNKNOWN,
    # whether it shows in a write or in the close that sends the rest; never a 500.
    a, b = pair
    upload_id = start(a.repository(REPO), body(2 * MiB, 1))
    driver = b.driver
    assert isinstance(driver, S3Driver)
    real = driver._upload_part
    sent = 0

    def gone(path: str, *args: Any) -> str:
        nonlocal sent
        sent += 1
        if sent >= 2:
            raise PathNotFoundError(path)
        return real(path, *args)

    monkeypatch.setattr(driver, "_upload_part", gone)
    writer = b.repository(REPO).blobs.resume(upload_id)
    with pytest.raises(BlobUploadUnknownError):
        try:
            writer.write(body(6 * MiB, 5))  # with the 2 MiB before: two parts, then a tail
            writer.write(body(6 * MiB, 6))
        finally:
            writer.close()
    assert sent >= 2


class _Killed(BaseException):
    """The process died here (injected)."""


@pytest.mark.parametrize("last_chunk", [0, 2 * MiB], ids=["empty-put", "put-with-chunk"])
def test_a_commit_killed_after_s3_assembled_the_upload_is_finished_elsewhere(
    pair: tuple[Registry, Registry], monkeypatch: pytest.MonkeyPatch, last_chunk: int
) -> None:
    a, b = pair
    data = body(8 * MiB, 7)
    before = len(data) - last_chunk
    upload_id = start(a.repository(REPO), data[:before])
    driver = a.driver
    assert isinstance(driver, S3Driver)
    real = driver._call

    def dying(path: str, operation: Callable[..., Any], **kwargs: Any) -> Any:
        if (
            str(kwargs.get("Key", "")).endswith(PENDING_SUFFIX)
            and getattr(operation, "__name__", "") == "delete_object"
        ):
            raise _Killed  # after CompleteMultipartUpload, before the state is removed
        return real(path, operation, **kwargs)

    monkeypatch.setattr(driver, "_call", dying)
    writer = a.repository(REPO).blobs.resume(upload_id)
    with pytest.raises(_Killed):
        writer.commit(Descriptor(digest=sha256(data)), tail=data[before:])
    monkeypatch.undo()
    # The upload still stands where the client left it before its PUT, and the PUT retried
    # on another replica finishes it.
    retry = b.repository(REPO).blobs.resume(upload_id)
    assert retry.size == before
    committed = retry.commit(Descriptor(digest=sha256(data)), tail=data[before:])
    assert committed.digest == sha256(data)
    assert stored_blobs(a) == {sha256(data): data}
    with pytest.raises(BlobUploadUnknownError):
        b.repository(REPO).blobs.resume(upload_id)


def test_a_dead_upload_is_unknown_not_an_error(
    pair: tuple[Registry, Registry], s3_server: RcloneS3, bucket: str
) -> None:
    """A pending state whose multipart upload is gone and no object of its size stands: the
    upload is over (404 BLOB_UPLOAD_UNKNOWN), and its state goes with it."""
    a, b = pair
    upload_id = start(a.repository(REPO), body(6 * MiB, 7))
    for upload in multipart_uploads(s3_server, bucket):
        s3_server.client().abort_multipart_upload(
            Bucket=bucket, Key=upload["Key"], UploadId=upload["UploadId"]
        )
    assert try_commit(b.repository(REPO), upload_id, sha256(b"whatever")) is None
    with pytest.raises(BlobUploadUnknownError):
        b.repository(REPO).blobs.resume(upload_id)


@pytest.mark.parametrize("size", [1024, 8 * MiB], ids=["1KiB", "8MiB"])
def test_two_final_commits_of_one_upload(pair: tuple[Registry, Registry], size: int) -> None:
    """A client retrying its PUT on another replica while the first still runs: each commit
    stores the blob or is refused as unknown, never an error of another kind."""
    a, b = pair
    data = body(size, 8)
    upload_id = start(a.repository(REPO), data)
    on_a = a.repository(REPO).blobs.resume(upload_id)
    on_b = b.repository(REPO).blobs.resume(upload_id)
    outcomes: list[str] = []
    for writer in (on_a, on_b):
        try:
            writer.commit(Descriptor(digest=sha256(data)))
            outcomes.append("stored")
        except (BlobUploadUnknownError, BlobUploadBusyError) as error:
            outcomes.append(type(error).__name__)
        finally:
            writer.close()
    assert outcomes[0] == "stored"
    assert outcomes[1] in {"stored", "BlobUploadUnknownError"}
    assert stored_blobs(a) == {sha256(data): data}


def test_losing_writers_leave_no_multipart_upload(
    pair: tuple[Registry, Registry], s3_server: RcloneS3, bucket: str
) -> None:
    a, b = pair
    x, y = body(6 * MiB, 2), body(6 * MiB, 3)
    upload_id = start(a.repository(REPO), b"")  # no multipart upload yet: each writer starts one
    on_a = a.repository(REPO).blobs.resume(upload_id)
    on_b = b.repository(REPO).blobs.resume(upload_id)
    on_a.write(x)
    on_b.write(y)
    on_a.close()
    with pytest.raises(BlobUploadBusyError):
        on_b.close()
    assert len(multipart_uploads(s3_server, bucket)) == 1  # the loser aborted its own
    assert try_commit(a.repository(REPO), upload_id, sha256(x)) is not None
    assert multipart_uploads(s3_server, bucket) == []


def test_purging_aborts_multipart_uploads_nothing_names(
    pair: tuple[Registry, Registry], s3_server: RcloneS3, bucket: str
) -> None:
    a, _ = pair
    client = s3_server.client()
    key = f"docker/registry/v2/repositories/{REPO}/_uploads/lost/data"
    orphan = client.create_multipart_upload(Bucket=bucket, Key=key)["UploadId"]
    kept_id = start(a.repository(REPO), body(6 * MiB, 9))  # a pending upload's: kept
    assert len(multipart_uploads(s3_server, bucket)) == 2
    time.sleep(1.1)  # S3 reports start times in whole seconds
    purge_uploads(a, utc_now() - dt.timedelta(days=1))
    assert len(multipart_uploads(s3_server, bucket)) == 2  # younger than the purge age
    purge_uploads(a, utc_now())  # removes the pending upload too (it is older)
    assert multipart_uploads(s3_server, bucket) == []
    del orphan, kept_id


def test_composite_etag_is_s3s() -> None:
    # Two parts of one byte each: S3's ETag is the MD5 of their binary MD5s, then "-2".
    import hashlib

    parts = [hashlib.md5(b"a").hexdigest(), hashlib.md5(b"b").hexdigest()]
    joined = hashlib.md5(bytes.fromhex(parts[0]) + bytes.fromhex(parts[1])).hexdigest()
    assert composite_etag([f'"{p}"' for p in parts]) == f"{joined}-2"
    assert composite_etag(['"not-an-md5"']) is None


# -- with upload leases in Redis --------------------------------------------------------------


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    with RedisServer(tmp_path_factory.mktemp("redis")) as server:
        yield server


@pytest.fixture
def leased_pair(
    s3_server: RcloneS3, bucket: str, redis_server: RedisServer
) -> Iterator[tuple[Registry, Registry]]:
    leases = [RedisUploadLeases.connect("127.0.0.1", redis_server.port, ttl=3.0) for _ in range(2)]
    yield (
        replica(s3_server, bucket, upload_leases=leases[0]),
        replica(s3_server, bucket, upload_leases=leases[1]),
    )
    for lease in leases:
        lease.close()


def test_with_leases_a_second_writer_waits_and_is_refused(
    leased_pair: tuple[Registry, Registry],
) -> None:
    a, b = leased_pair
    upload_id = start(a.repository(REPO), b"")
    on_a = a.repository(REPO).blobs.resume(upload_id)
    with pytest.raises(BlobUploadBusyError):
        b.repository(REPO).blobs.resume(upload_id, wait=0.3)
    on_a.write(b"x" * 100)
    on_a.close()
    on_b = b.repository(REPO).blobs.resume(upload_id, wait=0)  # free again
    assert on_b.size == 100  # where the first writer left it
    on_b.close()


def test_a_lease_is_renewed_while_held_and_lost_when_taken(
    leased_pair: tuple[Registry, Registry], redis_server: RedisServer
) -> None:
    a, b = leased_pair
    upload_id = start(a.repository(REPO), b"")
    on_a = a.repository(REPO).blobs.resume(upload_id)
    time.sleep(4.0)  # past the 3 s TTL: renewed meanwhile, so still held
    with pytest.raises(BlobUploadBusyError):
        b.repository(REPO).blobs.resume(upload_id, wait=0)
    # A replica that stalls past its lease: another one takes the upload and writes.
    key = RedisUploadLeases.key(paths.upload_started_at_path(REPO, upload_id))
    redis_server.client().delete(key)
    on_b = b.repository(REPO).blobs.resume(upload_id, wait=0)
    on_b.write(b"b" * 10)
    on_b.close()
    time.sleep(1.5)  # the stalled holder's next renewal finds its lease gone
    on_a.write(b"a" * 10)
    with pytest.raises(BlobUploadBusyError):
        on_a.close()
    assert try_commit(a.repository(REPO), upload_id, sha256(b"b" * 10)) is not None


def test_without_redis_leases_writers_go_on(s3_server: RcloneS3, bucket: str) -> None:
    # Nothing listens on this port: each writer takes no lease (one warning) and works.
    from support.goregistry import free_port

    leases = RedisUploadLeases.connect("127.0.0.1", free_port(), timeout=0.5)
    registry = replica(s3_server, bucket, upload_leases=leases)
    repo = registry.repository(REPO)
    with repo.blobs.create() as writer:
        writer.write(b"data")
        upload_id = writer.id
    assert try_commit(repo, upload_id, sha256(b"data")) is not None
    leases.close()


def test_purging_a_bucket_that_never_had_a_multipart_upload(
    s3_server: RcloneS3, bucket: str
) -> None:
    # rclone answers ListMultipartUploads there with NoSuchUpload, not an empty list.
    registry = replica(s3_server, bucket)
    with registry.repository(REPO).blobs.create() as writer:
        writer.write(b"small")  # pending in its state object only: no multipart upload
    assert purge_uploads(registry, utc_now() + dt.timedelta(days=1)) != []


def test_a_read_that_ends_early_is_read_again(
    s3_server: RcloneS3, bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # rclone lets a GET racing a PUT of the same key end early without an error; a pending
    # state read so would be taken for a corrupt one (a 500) or, worse, a shorter file.
    driver = replica(s3_server, bucket).driver
    assert isinstance(driver, S3Driver)
    driver.put_content("/f", b"0123456789")
    real = driver._get
    calls = 0

    def ends_early(path: str, key: str, **kwargs: Any) -> Any:
        nonlocal calls
        calls += 1
        response = real(path, key, **kwargs)
        if calls == 1:
            response["Body"] = io.BytesIO(b"01234")  # ends early, no error
        elif calls == 2:
            response["Body"] = _Broken()  # ends early with the connection
        return response

    monkeypatch.setattr(driver, "_get", ends_early)
    assert driver.get_content("/f") == b"0123456789"
    assert calls == 3


def test_a_pending_state_seen_empty_while_replaced_is_read_again(
    s3_server: RcloneS3, bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # rclone replaces an object non-atomically: a replica reading the pending state while
    # another replica replaces it may see it empty for a moment (a 500 under load, before).
    registry = replica(s3_server, bucket)
    driver = registry.driver
    assert isinstance(driver, S3Driver)
    writer = registry.repository(REPO).blobs.create()
    writer.write(body(MIN_CHUNK_SIZE + 10, 1))
    writer.close()
    path = paths.upload_data_path(REPO, writer.id)
    expected = driver._pending(path)
    assert expected is not None
    real = driver._read_whole
    reads = 0

    def seen_empty(path: str, key: str) -> tuple[bytes, str | None]:
        nonlocal reads
        reads += 1
        data, etag = real(path, key)
        return (b"", etag) if reads <= 2 else (data, etag)

    monkeypatch.setattr(driver, "_read_whole", seen_empty)
    assert driver._pending(path) == expected
    assert reads == 3
    # A state that stays unreadable is one: the error says so.
    reads = -100
    with pytest.raises(StorageDriverError, match="unreadable multipart state"):
        driver._pending(path)


class _Broken(io.RawIOBase):
    def read(self, size: int = -1) -> bytes:
        from botocore.exceptions import ResponseStreamingError

        raise ResponseStreamingError(error="IncompleteRead(5 bytes read, 5 more expected)")


def test_a_commit_never_copies_bytes_another_replica_put_after_its_checks(
    pair: tuple[Registry, Registry], monkeypatch: pytest.MonkeyPatch
) -> None:
    """On S3 a move is a copy: a replica appending to the upload between a commit's checks
    and its copy (a hostile client's well-timed request) would have the copy take its bytes."""
    a, b = pair
    data = body(2 * MiB, 7)
    upload_id = start(a.repository(REPO), data)
    source = paths.upload_data_path(REPO, upload_id)
    driver = a.driver
    real = driver._move

    def raced(src: str, dst: str, *, fsync: bool) -> None:
        # Another replica replaced the upload's data just now, with the bytes appended.
        b.driver.put_content(src, data + b"appended elsewhere")
        real(src, dst, fsync=fsync)

    monkeypatch.setattr(driver, "_move", raced)
    writer = a.repository(REPO).blobs.resume(upload_id)
    with pytest.raises(BlobUploadInvalidError):
        writer.commit(Descriptor(digest=sha256(data)))
    assert stored_blobs(a) == {}
    assert source  # the upload's data is not a blob


def test_a_read_broken_off_goes_on_and_a_replaced_object_is_a_conflict(
    s3_server: RcloneS3, bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from distblob.errors import WriteConflictError

    driver = replica(s3_server, bucket).driver
    assert isinstance(driver, S3Driver)
    data = os.urandom(3 * MiB)
    driver.put_content("/obj", data)
    real = driver._get
    calls = 0

    def breaks_once(path: str, key: str, **kwargs: Any) -> Any:
        nonlocal calls
        calls += 1
        response = real(path, key, **kwargs)
        if calls == 1:
            response["Body"] = _Broken()
        return response

    monkeypatch.setattr(driver, "_get", breaks_once)
    with driver.reader("/obj") as reader:
        assert reader.read() == data  # the second GET went on where the first broke off
    monkeypatch.undo()
    # Another replica replaces the object between two GETs of one reader: never a mix.
    with driver.reader("/obj") as reader:
        first = reader.read(1 << 20)
        assert first == data[: 1 << 20]
        replica(s3_server, bucket).driver.put_content("/obj", os.urandom(3 * MiB))
        reader.seek(2 << 20)  # a new ranged GET
        with pytest.raises(WriteConflictError):
            reader.read()


def test_after_a_failure_redis_is_not_asked_for_a_lease_at_once() -> None:
    """A hung Redis costs one upload request the timeout, not every one."""
    import redis

    from distblob.storage.leases import LeaseUnavailableError

    asked = 0

    class Down:
        def register_script(self, script: str) -> Callable[..., int]:
            return lambda **_: 0

        def set(self, *args: Any, **kwargs: Any) -> bool:
            nonlocal asked
            asked += 1
            raise redis.TimeoutError("Timeout reading from socket")

    leases = RedisUploadLeases(Down())  # type: ignore[arg-type]
    for _ in range(3):
        with pytest.raises(LeaseUnavailableError):
            leases.try_acquire("/docker/registry/v2/repositories/a/_uploads/u/startedat")
    assert asked == 1


def test_a_hash_state_the_store_refuses_is_skipped_on_a_shared_store(
    pair: tuple[Registry, Registry], monkeypatch: pytest.MonkeyPatch
) -> None:
    """rclone can fail one of two racing PUTs of one key: a hash state that cannot be saved
    only costs the next request a rehash, never the request itself."""
    a, b = pair
    data = body(6 * MiB, 4)
    upload_id = start(a.repository(REPO), b"")
    driver = a.driver
    real = driver.put_content

    def refusing(path: str, content: Any, *, fsync: bool = False) -> None:
        if "/hashstates/" in path:
            raise StorageDriverError(f"s3: {path}: InternalError")
        real(path, content, fsync=fsync)

    monkeypatch.setattr(driver, "put_content", refusing)
    with a.repository(REPO).blobs.resume(upload_id) as writer:
        writer.write(data)  # closing saves no state, and says nothing to the client
    monkeypatch.undo()
    resumed = b.repository(REPO).blobs.resume(upload_id)
    assert resumed.hashed == 0
    resumed.close()
    assert try_commit(b.repository(REPO), upload_id, sha256(data)) is not None
    assert stored_blobs(a) == {sha256(data): data}
