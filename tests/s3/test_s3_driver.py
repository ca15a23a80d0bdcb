"""What only the S3 driver does: multipart writers that stay pending across processes, its
parameters, its keys under ``rootdirectory``, and its errors. (The driver also runs the whole
driver and blob store conformance suites, in test_driver.py and the blob store tests.)"""

from __future__ import annotations

import datetime as dt
import itertools
import os
from typing import Any

import pytest

from distblob import Descriptor, Registry
from distblob.errors import PathNotFoundError, StorageDriverError
from distblob.storage import paths
from distblob.storage.driver.s3 import (
    MIN_CHUNK_SIZE,
    PENDING_SUFFIX,
    S3Driver,
    S3ParameterError,
)
from distblob.storage.purge import purge_uploads, utc_now
from support.blobstore import sha256
from support.s3server import RcloneS3

MiB = 1 << 20


def replica(server: RcloneS3, bucket: str, **extra: Any) -> S3Driver:
    """Another driver on the same bucket: what a second registry process would have."""
    return S3Driver.from_parameters(server.parameters(bucket, chunksize=MIN_CHUNK_SIZE, **extra))


def keys(server: RcloneS3, bucket: str) -> list[str]:
    listed = server.client().list_objects_v2(Bucket=bucket)
    return sorted(entry["Key"] for entry in listed.get("Contents", []))


def assert_upload_gone(server: RcloneS3, bucket: str, key: str, upload_id: str) -> None:
    client = server.client()
    with pytest.raises(client.exceptions.ClientError, match="NoSuchUpload"):
        client.upload_part(Bucket=bucket, Key=key, UploadId=upload_id, PartNumber=9, Body=b"x")


@pytest.fixture
def bucket(s3_server: RcloneS3) -> str:
    return s3_server.new_bucket()


def test_a_writer_continues_on_another_replica(s3_server: RcloneS3, bucket: str) -> None:
    data = os.urandom(17 * MiB + 12345)
    cuts = [0, 3 * MiB, 3 * MiB + 1, 11 * MiB, 16 * MiB + 7, len(data)]
    for index, (start, end) in enumerate(itertools.pairwise(cuts)):
        driver = replica(s3_server, bucket)  # a different process each time
        with driver.writer("/up/data", append=index > 0) as writer:
            assert writer.size == start
            writer.write(data[start:end])
            assert writer.size == end
        # Pending: stat sees every byte, readers see nothing yet, and no key a driver path
        # could name was written.
        assert driver.stat("/up/data").size == end
        with pytest.raises(PathNotFoundError):
            driver.get_content("/up/data")
        assert driver.list("/up") == ["/up/data"]
        assert keys(s3_server, bucket) == [f"up/data{PENDING_SUFFIX}"]
    driver = replica(s3_server, bucket)
    with driver.writer("/up/data", append=True) as writer:
        writer.commit()
    assert driver.get_content("/up/data") == data
    assert keys(s3_server, bucket) == ["up/data"]  # the multipart state went with the commit


def test_parts_go_up_while_writing(s3_driver: S3Driver, s3_server: RcloneS3) -> None:
    with s3_driver.writer("/big") as writer:
        writer.write(os.urandom(3 * MIN_CHUNK_SIZE + 10))
        writer.close()
    raw = s3_server.client().get_object(Bucket=s3_driver.bucket, Key="big" + PENDING_SUFFIX)
    state = raw["Body"].read()
    header, _, tail = state.partition(b"\n")
    # Three whole parts were sent; the 10 bytes too few for a part wait in the state object.
    assert header.count(b'"') > 0 and len(tail) == 10
    assert s3_driver.stat("/big").size == 3 * MIN_CHUNK_SIZE + 10


def test_deleting_a_pending_file_aborts_its_multipart_upload(
    s3_driver: S3Driver, s3_server: RcloneS3
) -> None:
    with s3_driver.writer("/u/1/data") as writer:
        writer.write(os.urandom(MIN_CHUNK_SIZE + 1))
    state = (
        s3_server.client()
        .get_object(Bucket=s3_driver.bucket, Key="u/1/data" + PENDING_SUFFIX)["Body"]
        .read()
    )
    upload_id = state.split(b'"uploadid":"')[1].split(b'"')[0].decode()
    s3_driver.delete("/u")  # a directory above it
    assert_upload_gone(s3_server, s3_driver.bucket, "u/1/data", upload_id)
    assert keys(s3_server, s3_driver.bucket) == []


def test_upload_purging_aborts_interrupted_multipart_uploads(
    s3_server: RcloneS3, bucket: str
) -> None:
    registry = Registry(replica(s3_server, bucket), redirect=False)
    repo = registry.repository("purge/me")
    writer = repo.blobs.create()
    writer.write(os.urandom(MIN_CHUNK_SIZE + 100))
    writer.close()  # interrupted: the client never came back
    key = paths.upload_data_path(repo.name, writer.id)[1:]
    raw = s3_server.client().get_object(Bucket=bucket, Key=key + PENDING_SUFFIX)["Body"].read()
    upload_id = raw.split(b'"uploadid":"')[1].split(b'"')[0].decode()
    purged = purge_uploads(registry, utc_now() + dt.timedelta(seconds=1))
    assert purged == [(repo.name, writer.id)]
    assert_upload_gone(s3_server, bucket, key, upload_id)
    assert not [k for k in keys(s3_server, bucket) if "_uploads" in k]


def test_a_chunked_blob_upload_alternates_between_replicas(
    s3_server: RcloneS3, bucket: str
) -> None:
    data = os.urandom(13 * MiB + 5)
    a = Registry(replica(s3_server, bucket), redirect=False).repository("alt/repo")
    b = Registry(replica(s3_server, bucket), redirect=False).repository("alt/repo")
    writer = a.blobs.create()
    upload_id = writer.id
    writer.write(data[: 4 * MiB])
    writer.close()
    for index, (start, end) in enumerate([(4 * MiB, 9 * MiB), (9 * MiB, len(data))]):
        store = (b, a)[index % 2]
        resumed = store.blobs.resume(upload_id)
        assert resumed.size == start
        assert resumed.hashed == start  # resumed from the saved hash state, not rehashed
        resumed.write(data[start:end])
        resumed.close()
    last = b.blobs.resume(upload_id)
    descriptor = last.commit(Descriptor(size=len(data), digest=sha256(data)))
    assert descriptor.digest == sha256(data)
    assert a.blobs.get(sha256(data)) == data


def test_append_to_a_committed_object(s3_driver: S3Driver) -> None:
    first = os.urandom(MIN_CHUNK_SIZE + 3)
    s3_driver.put_content("/f", first)
    with s3_driver.writer("/f", append=True) as writer:
        assert writer.size == len(first)
        writer.write(b"more")
        writer.commit()
    assert s3_driver.get_content("/f") == first + b"more"


def test_flush_shows_the_bytes_and_writing_goes_on(s3_driver: S3Driver) -> None:
    with s3_driver.writer("/f") as writer:
        writer.write(b"a" * (MIN_CHUNK_SIZE + 1))
        writer.flush()
        assert s3_driver.get_content("/f") == b"a" * (MIN_CHUNK_SIZE + 1)
        writer.write(b"b")
        writer.commit()
    assert s3_driver.get_content("/f") == b"a" * (MIN_CHUNK_SIZE + 1) + b"b"


def test_reader_seeks_within_the_object(s3_driver: S3Driver) -> None:
    data = os.urandom(3 * MiB + 17)
    s3_driver.put_content("/r", data)
    with s3_driver.reader("/r", 5) as reader:
        assert reader.read(10) == data[5:15]
        reader.seek(2 * MiB)
        assert reader.read() == data[2 * MiB :]
        reader.seek(1)
        assert reader.read(3) == data[1:4]
    with s3_driver.reader("/r", len(data)) as reader:
        assert reader.read() == b""


def test_rootdirectory_keeps_registries_apart(s3_server: RcloneS3, bucket: str) -> None:
    one = replica(s3_server, bucket, rootdirectory="/one")
    two = replica(s3_server, bucket, rootdirectory="two/")
    one.put_content("/docker/f", b"1")
    two.put_content("/docker/f", b"2")
    assert keys(s3_server, bucket) == ["one/docker/f", "two/docker/f"]
    assert [info.path for info in one.walk("/")] == ["/docker", "/docker/f"]
    assert two.get_content("/docker/f") == b"2"


def test_a_corrupt_multipart_state_is_a_clear_error(
    s3_driver: S3Driver, s3_server: RcloneS3
) -> None:
    s3_server.client().put_object(
        Bucket=s3_driver.bucket, Key="f" + PENDING_SUFFIX, Body=b"{not json\n"
    )
    with pytest.raises(StorageDriverError, match="unreadable multipart state"):
        s3_driver.writer("/f", append=True)


def test_parameters_are_checked_by_name(s3_server: RcloneS3) -> None:
    good = s3_server.parameters("some-bucket")
    cases: list[tuple[dict[str, Any], str]] = [
        ({**good, "chunksize": 1024}, "chunksize"),
        ({**good, "chunksize": "lots"}, "chunksize"),
        ({**good, "secure": "maybe"}, "secure"),
        ({**good, "v4auth": False}, "v4auth"),
        ({**good, "regoin": "x"}, "regoin"),
        ({k: v for k, v in good.items() if k != "bucket"}, "bucket"),
        ({**good, "bucket": ["a"]}, "bucket"),
    ]
    for parameters, key in cases:
        with pytest.raises(S3ParameterError) as raised:
            S3Driver.from_parameters(parameters)
        assert raised.value.key == key
    driver = S3Driver.from_parameters({**good, "chunksize": "6291456", "secure": "false"})
    assert driver.chunk_size == 6 * MiB


def test_wrong_credentials_and_a_dead_server_are_errors(s3_server: RcloneS3, bucket: str) -> None:
    wrong = S3Driver.from_parameters({**s3_server.parameters(bucket), "secretkey": "nope"})
    with pytest.raises(StorageDriverError):
        wrong.put_content("/f", b"x")
    with RcloneS3() as other:
        dead = S3Driver.from_parameters(other.parameters("gone-bucket"))
    with pytest.raises(OSError):
        dead.get_content("/f")


def test_the_python_engine_resumes_by_reading_the_upload_back(
    s3_server: RcloneS3, bucket: str
) -> None:
    # hashlib's state cannot be saved, so each resume completes the multipart upload, rehashes
    # the object and goes on writing into a new upload that starts with those bytes.
    data = os.urandom(12 * MiB + 9)
    repo = Registry(replica(s3_server, bucket), engine="python", redirect=False).repository("py/r")
    writer = repo.blobs.create()
    writer.write(data[: 6 * MiB])
    writer.close()
    for start, end in [(6 * MiB, 6 * MiB + 1), (6 * MiB + 1, len(data))]:
        resumed = repo.blobs.resume(writer.id)
        assert resumed.size == start
        resumed.write(data[start:end])
        resumed.close()
    final = repo.blobs.resume(writer.id)
    assert final.commit(Descriptor(size=len(data), digest=sha256(data))).digest == sha256(data)
    assert repo.blobs.get(sha256(data)) == data
