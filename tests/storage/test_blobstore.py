"""The blob store conformance suite, part 1: storing, reading, describing and serving blobs, and
what repositories see of them.

Every test runs once per engine and driver (the ``blob_combination`` fixture in conftest.py), the
way distribution runs one driver test suite against every backend. Uploads, resumable digests and
bad input have their own files (``test_blobstore_*.py``).
"""

from __future__ import annotations

import array
import io
import json
import os
from collections.abc import Callable

import pytest

from distblob import Descriptor, Digest, Registry, Repository, interfaces
from distblob.descriptor import DEFAULT_MEDIA_TYPE
from distblob.errors import (
    BlobInvalidDigestError,
    BlobUnknownError,
    BlobUploadUnknownError,
    DigestInvalidError,
    NameInvalidError,
    UnsupportedError,
)
from distblob.interfaces import ServePlan
from distblob.storage import paths
from distblob.storage.driver import StorageDriver
from distblob.storage.writer import BlobWriter
from support.blobstore import EMPTY_SHA256, payload, read_region, sha256

DATA = payload(10_000, seed=1)
DIGEST = sha256(DATA)
LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"


# -- put, stat, get, open, exists ------------------------------------------------------------------


def test_put_then_read_back(
    registry: Registry, repo: Repository, blob_driver: StorageDriver
) -> None:
    descriptor = repo.blobs.put(DATA)
    assert descriptor == Descriptor(media_type=DEFAULT_MEDIA_TYPE, size=len(DATA), digest=DIGEST)
    assert repo.blobs.stat(DIGEST) == descriptor
    assert registry.blobs.stat(DIGEST) == descriptor
    assert repo.blobs.get(DIGEST) == DATA
    assert registry.blobs.get(DIGEST) == DATA
    assert repo.blobs.exists(DIGEST)
    assert registry.blobs.exists(DIGEST)
    # distribution's layout: the data under blobs/, a link holding the digest (no newline).
    assert blob_driver.get_content(paths.blob_data_path(DIGEST)) == DATA
    link = blob_driver.get_content(paths.layer_link_path(repo.name, DIGEST))
    assert link == DIGEST.encode()


def test_open_gives_a_seekable_closable_reader(registry: Registry, repo: Repository) -> None:
    repo.blobs.put(DATA)
    for store in (repo.blobs, registry.blobs):
        with store.open(DIGEST) as reader:
            assert reader.seekable()
            assert reader.read(10) == DATA[:10]
            assert reader.tell() == 10
            assert reader.seek(-4, os.SEEK_END) == len(DATA) - 4
            assert reader.read() == DATA[-4:]
            reader.seek(5000)
            assert reader.read(3) == DATA[5000:5003]
            reader.seek(0)
            assert reader.read() == DATA
        assert reader.closed


@pytest.mark.parametrize(
    "buffer",
    [
        pytest.param(bytearray(DATA), id="bytearray"),
        pytest.param(memoryview(DATA)[100:9100], id="memoryview-slice"),
        pytest.param(array.array("I", range(1000)), id="array"),
    ],
)
def test_put_takes_any_buffer(
    repo: Repository, buffer: bytearray | memoryview | array.array[int]
) -> None:
    expected = bytes(buffer)
    descriptor = repo.blobs.put(buffer)
    assert descriptor.digest == sha256(expected)
    assert descriptor.size == len(expected)
    assert repo.blobs.get(sha256(expected)) == expected


@pytest.mark.parametrize("algorithm", ["sha512", "blake3"])
def test_put_with_another_algorithm(
    registry: Registry, repo: Repository, blob_driver: StorageDriver, algorithm: str
) -> None:
    digest = Digest.from_bytes(DATA, algorithm)
    descriptor = repo.blobs.put(DATA, algorithm=algorithm)
    assert descriptor.digest == digest
    stored_at = f"{paths.ROOT}/blobs/{algorithm}/{digest.encoded[:2]}/{digest.encoded}/data"
    assert blob_driver.get_content(stored_at) == DATA
    assert repo.blobs.get(digest) == DATA
    assert list(registry.blobs.enumerate()) == [digest]


def test_put_twice_stores_one_blob(registry: Registry, repo: Repository) -> None:
    first = repo.blobs.put(DATA)
    second = repo.blobs.put(bytes(DATA))
    assert first == second
    assert list(registry.blobs.enumerate()) == [DIGEST]


def test_put_with_an_expected_digest(registry: Registry, repo: Repository) -> None:
    wrong = sha256(DATA + b"!")
    with pytest.raises(BlobInvalidDigestError):
        repo.blobs.put(DATA, expected=wrong)
    assert list(registry.blobs.enumerate()) == []
    assert not repo.blobs.exists(DIGEST) and not repo.blobs.exists(wrong)
    assert repo.blobs.put(DATA, expected=DIGEST).digest == DIGEST
    assert repo.blobs.get(DIGEST) == DATA
    with pytest.raises(ValueError):
        repo.blobs.put(DATA, algorithm="sha512", expected=DIGEST)


def test_empty_blob(registry: Registry, repo: Repository) -> None:
    descriptor = repo.blobs.put(b"")
    assert descriptor == Descriptor(media_type=DEFAULT_MEDIA_TYPE, size=0, digest=EMPTY_SHA256)
    assert repo.blobs.get(EMPTY_SHA256) == b""
    assert registry.blobs.stat(EMPTY_SHA256).size == 0
    with repo.blobs.open(EMPTY_SHA256) as reader:
        assert reader.read() == b""


def test_unknown_blob(registry: Registry, repo: Repository) -> None:
    for store in (repo.blobs, registry.blobs):
        assert not store.exists(DIGEST)
        for call in (store.stat, store.get, store.open, store.serve_blob):
            with pytest.raises(BlobUnknownError) as caught:
                call(DIGEST)
            assert caught.value.digest == DIGEST
            assert isinstance(caught.value, KeyError)


def test_a_second_registry_over_the_same_driver_sees_the_blobs(
    repo: Repository, make_registry: Callable[..., Registry]
) -> None:
    repo.blobs.put(DATA)
    again = make_registry().repository(repo.name)
    assert again.blobs.get(DIGEST) == DATA
    assert again.blobs.stat(DIGEST).media_type == DEFAULT_MEDIA_TYPE


# -- descriptors and media types -------------------------------------------------------------------


def test_descriptor_wire_format(repo: Repository) -> None:
    descriptor = repo.blobs.put(DATA, LAYER)
    assert json.loads(descriptor.to_json()) == {
        "mediaType": LAYER,
        "size": len(DATA),
        "digest": DIGEST,
    }
    assert descriptor.to_json() == (
        f'{{"mediaType":"{LAYER}","size":{len(DATA)},"digest":"{DIGEST}"}}'
    )
    assert Descriptor.from_json(descriptor.to_json()) == descriptor
    assert Descriptor.from_json(descriptor.to_json().encode()) == descriptor
    assert Descriptor.from_json(descriptor.to_dict()) == descriptor
    # Empty fields are omitted, and read back as empty.
    assert Descriptor().to_json() == "{}"
    assert Descriptor.from_json("{}") == Descriptor()
    assert Descriptor(digest=DIGEST).to_dict() == {"digest": DIGEST}
    full = descriptor.with_(urls=("https://example.com/blob",), annotations={"a": "b"})
    assert json.loads(full.to_json())["urls"] == ["https://example.com/blob"]
    assert json.loads(full.to_json())["annotations"] == {"a": "b"}
    assert Descriptor.from_json(full.to_json()) == full


@pytest.mark.parametrize(
    "text",
    [
        "[]",
        '{"size":"1"}',
        '{"size":true}',
        '{"mediaType":1}',
        '{"digest":5}',
        '{"urls":"x"}',
        '{"annotations":{"a":1}}',
        "{",
    ],
)
def test_descriptor_rejects_wrong_types(text: str) -> None:
    with pytest.raises(ValueError):
        Descriptor.from_json(text)


def test_descriptor_rejects_a_malformed_digest() -> None:
    with pytest.raises(DigestInvalidError):
        Descriptor.from_json('{"digest":"sha256:abc"}')


def test_media_types(repo: Repository, registry: Registry) -> None:
    assert repo.blobs.put(DATA, LAYER).media_type == LAYER
    assert repo.blobs.stat(DIGEST).media_type == LAYER
    assert repo.blobs.serve_blob(DIGEST).headers["Content-Type"] == LAYER
    # The global store knows bytes, not media types.
    assert registry.blobs.stat(DIGEST).media_type == DEFAULT_MEDIA_TYPE

    config = "application/vnd.oci.image.config.v1+json"
    repo.blobs.set_descriptor(DIGEST, Descriptor(config, len(DATA), DIGEST))
    assert repo.blobs.stat(DIGEST) == Descriptor(config, len(DATA), DIGEST)

    # Media types are per repository.
    other = registry.repository("other")
    other.blobs.mount(repo.name, DIGEST)
    assert other.blobs.stat(DIGEST).media_type == DEFAULT_MEDIA_TYPE

    repo.blobs.clear(DIGEST)
    assert repo.blobs.stat(DIGEST) == Descriptor(DEFAULT_MEDIA_TYPE, len(DATA), DIGEST)
    assert repo.blobs.serve_blob(DIGEST).headers["Content-Type"] == DEFAULT_MEDIA_TYPE
    with pytest.raises(BlobUnknownError):
        repo.blobs.clear(DIGEST)


# -- serving ---------------------------------------------------------------------------------------


def expected_headers(digest: str, media_type: str, length: int) -> dict[str, str]:
    return {
        "ETag": f'"{digest}"',
        "Cache-Control": "max-age=31536000",
        "Docker-Content-Digest": digest,
        "Content-Type": media_type,
        "Content-Length": str(length),
        "Accept-Ranges": "bytes",
    }


def test_serve_whole_blob(repo: Repository, registry: Registry, blob_driver: StorageDriver) -> None:
    repo.blobs.put(DATA, LAYER)
    plan = repo.blobs.serve_blob(DIGEST)
    assert plan.status == 200
    assert plan.headers == expected_headers(DIGEST, LAYER, len(DATA))
    assert plan.redirect is None
    assert plan.descriptor == repo.blobs.stat(DIGEST)
    assert plan.body is not None
    assert (plan.body.path, plan.body.offset, plan.body.length) == (
        paths.blob_data_path(DIGEST),
        0,
        len(DATA),
    )
    assert plan.body.local_path == blob_driver.local_path(plan.body.path)
    assert read_region(blob_driver, plan.body) == DATA

    # The global store serves too, with the default media type.
    plan = registry.blobs.serve_blob(DIGEST)
    assert plan.headers == expected_headers(DIGEST, DEFAULT_MEDIA_TYPE, len(DATA))
    assert plan.body is not None
    assert read_region(blob_driver, plan.body) == DATA


def test_serve_head_has_no_body(repo: Repository) -> None:
    repo.blobs.put(DATA, LAYER)
    plan = repo.blobs.serve_blob(DIGEST, method="HEAD")
    assert plan.status == 200
    assert plan.headers == expected_headers(DIGEST, LAYER, len(DATA))
    assert plan.body is None
    ranged = repo.blobs.serve_blob(DIGEST, method="HEAD", range="bytes=0-9")
    assert (ranged.status, ranged.body) == (206, None)
    assert ranged.headers["Content-Range"] == f"bytes 0-9/{len(DATA)}"
    assert ranged.headers["Content-Length"] == "10"


SIZE = len(DATA)


@pytest.mark.parametrize(
    ("header", "first", "last"),
    [
        pytest.param("bytes=0-9", 0, 9, id="first-last"),
        pytest.param("bytes=1234-1234", 1234, 1234, id="one-byte"),
        pytest.param("bytes=9000-", 9000, SIZE - 1, id="open-ended"),
        pytest.param("bytes=-16", SIZE - 16, SIZE - 1, id="suffix"),
        pytest.param("bytes=-99999", 0, SIZE - 1, id="suffix-longer-than-blob"),
        pytest.param("bytes=5000-999999", 5000, SIZE - 1, id="clamped-end"),
        pytest.param(f"bytes={SIZE - 1}-", SIZE - 1, SIZE - 1, id="last-byte"),
        pytest.param(" bytes = 10 - 19 ", 10, 19, id="spaces"),
    ],
)
def test_serve_range(
    repo: Repository, blob_driver: StorageDriver, header: str, first: int, last: int
) -> None:
    repo.blobs.put(DATA)
    plan = repo.blobs.serve_blob(DIGEST, range=header)
    assert plan.status == 206
    length = last - first + 1
    assert plan.headers == {
        **expected_headers(DIGEST, DEFAULT_MEDIA_TYPE, length),
        "Content-Range": f"bytes {first}-{last}/{SIZE}",
    }
    assert plan.body is not None
    assert (plan.body.offset, plan.body.length) == (first, length)
    assert read_region(blob_driver, plan.body) == DATA[first : last + 1]


@pytest.mark.parametrize("header", [f"bytes={SIZE}-", "bytes=99999-100000", "bytes=-0"])
def test_serve_unsatisfiable_range(repo: Repository, header: str) -> None:
    repo.blobs.put(DATA)
    plan = repo.blobs.serve_blob(DIGEST, range=header)
    assert plan.status == 416
    assert plan.headers["Content-Range"] == f"bytes */{SIZE}"
    assert plan.body is None


def test_serve_range_of_the_empty_blob_is_unsatisfiable(repo: Repository) -> None:
    repo.blobs.put(b"")
    plan = repo.blobs.serve_blob(EMPTY_SHA256, range="bytes=0-")
    assert plan.status == 416
    assert plan.headers["Content-Range"] == "bytes */0"
    whole = repo.blobs.serve_blob(EMPTY_SHA256)
    assert whole.status == 200
    assert whole.headers["Content-Length"] == "0"


@pytest.mark.parametrize("header", ["items=0-5", "bytes 0-5", "bytes=", "bytes= , "])
def test_serve_ignores_other_units_and_empty_ranges(
    repo: Repository, blob_driver: StorageDriver, header: str
) -> None:
    repo.blobs.put(DATA)
    plan = repo.blobs.serve_blob(DIGEST, range=header)
    assert plan.status == 200
    assert plan.headers == expected_headers(DIGEST, DEFAULT_MEDIA_TYPE, SIZE)
    assert plan.body is not None
    assert read_region(blob_driver, plan.body) == DATA


@pytest.mark.parametrize(
    "header",
    [
        "bytes=abc",
        "bytes=0-1,abc",
        "bytes=9-3",
        "bytes=500-0",
        "bytes=-",
        "bytes=0x10-",
        "bytes=1-2-3",
    ],
)
def test_serve_refuses_malformed_ranges(repo: Repository, header: str) -> None:
    """416, as Go's ServeContent answers and the OCI conformance suite expects."""
    repo.blobs.put(DATA)
    for method in ("GET", "HEAD"):
        plan = repo.blobs.serve_blob(DIGEST, method=method, range=header)
        assert plan.status == 416 and plan.body is None and not plan.parts
        assert plan.headers["Content-Range"] == f"bytes */{SIZE}"


def parse_multipart(plan: ServePlan, driver: StorageDriver) -> list[tuple[str, bytes]]:
    """The (Content-Range, data) of each part of a multipart plan, checking its framing."""
    boundary = plan.headers["Content-Type"].removeprefix("multipart/byteranges; boundary=")
    body = b"".join(
        piece if isinstance(piece, bytes) else read_region(driver, piece) for piece in plan.parts
    )
    assert len(body) == int(plan.headers["Content-Length"])
    assert body.startswith(f"--{boundary}\r\n".encode())
    assert body.endswith(f"\r\n--{boundary}--\r\n".encode())
    parts = []
    for raw in body[: -len(f"\r\n--{boundary}--\r\n")].split(f"--{boundary}\r\n".encode())[1:]:
        head, _, data = raw.partition(b"\r\n\r\n")
        fields = dict(line.split(": ", 1) for line in head.decode().split("\r\n"))
        assert fields["Content-Type"] == DEFAULT_MEDIA_TYPE
        parts.append((fields["Content-Range"], data.removesuffix(b"\r\n")))
    return parts


@pytest.mark.parametrize(
    ("header", "ranges"),
    [
        pytest.param("bytes=0-1,5-6", [(0, 1), (5, 6)], id="two"),
        pytest.param(
            "bytes=9000-,-16, 10-19",
            [(9000, SIZE - 1), (SIZE - 16, SIZE - 1), (10, 19)],
            id="kinds",
        ),
        pytest.param(f"bytes=0-0,{SIZE}-,5-5", [(0, 0), (5, 5)], id="one-past-the-end-dropped"),
        pytest.param("bytes=20-29,,0-9", [(20, 29), (0, 9)], id="empty-element"),
    ],
)
def test_serve_several_ranges_as_multipart(
    repo: Repository, blob_driver: StorageDriver, header: str, ranges: list[tuple[int, int]]
) -> None:
    repo.blobs.put(DATA)
    plan = repo.blobs.serve_blob(DIGEST, range=header)
    assert plan.status == 206 and plan.body is None
    assert plan.headers["Content-Type"].startswith("multipart/byteranges; boundary=")
    assert "Content-Range" not in plan.headers
    assert plan.headers["Docker-Content-Digest"] == DIGEST
    assert parse_multipart(plan, blob_driver) == [
        (f"bytes {first}-{last}/{SIZE}", DATA[first : last + 1]) for first, last in ranges
    ]
    head = repo.blobs.serve_blob(DIGEST, method="HEAD", range=header)
    assert head.status == 206 and not head.parts and head.body is None
    assert head.headers["Content-Length"] == plan.headers["Content-Length"]


def test_serve_several_ranges_edge_cases(repo: Repository, blob_driver: StorageDriver) -> None:
    repo.blobs.put(DATA)
    # One satisfiable range among unsatisfiable ones: a plain 206.
    plan = repo.blobs.serve_blob(DIGEST, range=f"bytes={SIZE}-,100-109,-0")
    assert plan.status == 206 and plan.headers["Content-Range"] == f"bytes 100-109/{SIZE}"
    assert plan.body is not None and read_region(blob_driver, plan.body) == DATA[100:110]
    # A range starting past the end is unsatisfiable before it is malformed (Go's order).
    plan = repo.blobs.serve_blob(DIGEST, range=f"bytes={SIZE}-{SIZE - 3},55-60,8-50")
    assert plan.status == 206 and len(parse_multipart(plan, blob_driver)) == 2
    # None satisfiable: 416.
    plan = repo.blobs.serve_blob(DIGEST, range=f"bytes={SIZE}-,{SIZE + 5}-{SIZE + 9}")
    assert plan.status == 416 and plan.headers["Content-Range"] == f"bytes */{SIZE}"
    # Ranges adding up to more than the blob: the whole blob, as Go does.
    plan = repo.blobs.serve_blob(DIGEST, range=f"bytes=0-,0-{SIZE // 2}")
    assert plan.status == 200 and plan.body is not None and not plan.parts
    assert read_region(blob_driver, plan.body) == DATA
    # Any number of them otherwise, as Go (lazy pulls ask for hundreds).
    plan = repo.blobs.serve_blob(DIGEST, range="bytes=" + ",".join(f"{i}-{i}" for i in range(150)))
    assert plan.status == 206 and len(parse_multipart(plan, blob_driver)) == 150
    # If-None-Match still wins.
    assert repo.blobs.serve_blob(DIGEST, range="bytes=0-1,3-4", if_none_match="*").status == 304


@pytest.mark.parametrize(
    "header",
    [f'"{DIGEST}"', "*", f'W/"{DIGEST}"', f'"sha256:{"0" * 64}", "{DIGEST}"'],
)
def test_serve_if_none_match(repo: Repository, header: str) -> None:
    repo.blobs.put(DATA)
    plan = repo.blobs.serve_blob(DIGEST, if_none_match=header)
    assert plan.status == 304
    assert plan.body is None
    assert plan.headers["ETag"] == f'"{DIGEST}"'
    # If-None-Match wins over Range.
    assert repo.blobs.serve_blob(DIGEST, if_none_match=header, range="bytes=0-1").status == 304


def test_serve_if_none_match_other_etag(repo: Repository, blob_driver: StorageDriver) -> None:
    repo.blobs.put(DATA)
    plan = repo.blobs.serve_blob(DIGEST, if_none_match=f'"sha256:{"0" * 64}"')
    assert plan.status == 200
    assert plan.body is not None
    assert read_region(blob_driver, plan.body) == DATA


# -- repositories ----------------------------------------------------------------------------------


def test_mount_from_another_repository(
    registry: Registry, repo: Repository, blob_driver: StorageDriver
) -> None:
    repo.blobs.put(DATA, LAYER)
    target = registry.repository("team/app")
    descriptor = target.blobs.mount(repo.name, DIGEST)
    assert descriptor.digest == DIGEST
    assert descriptor.size == len(DATA)
    assert target.blobs.get(DIGEST) == DATA
    assert blob_driver.get_content(paths.layer_link_path("team/app", DIGEST)) == DIGEST.encode()
    assert list(registry.blobs.enumerate()) == [DIGEST]

    other = sha256(b"other")
    with pytest.raises(BlobUnknownError):
        target.blobs.mount(repo.name, other)
    with pytest.raises(BlobUnknownError):
        target.blobs.mount("nobody/here", DIGEST)
    with pytest.raises(NameInvalidError):
        target.blobs.mount("../library/test", DIGEST)
    assert not target.blobs.exists(other)


def test_repositories_are_isolated(registry: Registry, repo: Repository) -> None:
    repo.blobs.put(DATA)
    other = registry.repository("library/other")
    assert not other.blobs.exists(DIGEST)
    for call in (other.blobs.stat, other.blobs.get, other.blobs.open, other.blobs.serve_blob):
        with pytest.raises(BlobUnknownError):
            call(DIGEST)
    assert registry.blobs.stat(DIGEST).size == len(DATA)
    # A repository nested below another is a repository of its own.
    nested = registry.repository("library/test/sub")
    assert not nested.blobs.exists(DIGEST)


def test_uploads_are_isolated(registry: Registry, repo: Repository) -> None:
    writer = repo.blobs.create()
    writer.close()
    with pytest.raises(BlobUploadUnknownError):
        registry.repository("library/other").blobs.resume(writer.id)
    repo.blobs.resume(writer.id).cancel()


def test_delete_disabled(registry: Registry, repo: Repository) -> None:
    repo.blobs.put(DATA)
    with pytest.raises(UnsupportedError):
        repo.blobs.delete(DIGEST)
    with pytest.raises(UnsupportedError):
        registry.blobs.delete(DIGEST)
    assert repo.blobs.get(DIGEST) == DATA


def test_delete_enabled(make_registry: Callable[..., Registry]) -> None:
    registry = make_registry(delete_enabled=True)
    first, second = registry.repository("first"), registry.repository("second")
    first.blobs.put(DATA, LAYER)
    second.blobs.put(DATA)

    first.blobs.delete(DIGEST)
    with pytest.raises(BlobUnknownError):
        first.blobs.stat(DIGEST)
    with pytest.raises(BlobUnknownError):
        first.blobs.delete(DIGEST)
    assert list(first.blobs.enumerate()) == []
    # The blob itself stays, for the other repository and for garbage collection.
    assert second.blobs.get(DIGEST) == DATA
    assert registry.blobs.stat(DIGEST).size == len(DATA)
    # Linking it again does not resurrect the old media type.
    first.blobs.mount("second", DIGEST)
    assert first.blobs.stat(DIGEST).media_type == DEFAULT_MEDIA_TYPE

    registry.blobs.delete(DIGEST)
    assert not registry.blobs.exists(DIGEST)
    assert list(registry.blobs.enumerate()) == []
    with pytest.raises(BlobUnknownError):
        second.blobs.get(DIGEST)
    with pytest.raises(BlobUnknownError):
        registry.blobs.delete(DIGEST)


def test_enumerate(registry: Registry, repo: Repository) -> None:
    assert list(registry.blobs.enumerate()) == []
    assert list(repo.blobs.enumerate()) == []
    blobs = [payload(100, seed) for seed in range(3)]
    digests = {repo.blobs.put(data).digest for data in blobs}
    blake = repo.blobs.put(b"blake", algorithm="blake3").digest
    other = registry.repository("other")
    lone = other.blobs.put(b"lone").digest
    pending = repo.blobs.create()
    pending.write(b"not committed")
    pending.close()

    assert set(registry.blobs.enumerate()) == {*digests, blake, lone}
    assert set(repo.blobs.enumerate()) == {*digests, blake}
    assert list(other.blobs.enumerate()) == [lone]
    assert all(isinstance(digest, Digest) for digest in registry.blobs.enumerate())


def test_sync_with_fsync_off(make_registry: Callable[..., Registry]) -> None:
    registry = make_registry(fsync=False)
    repo = registry.repository("batch")
    repo.blobs.put(DATA)
    with repo.blobs.create() as writer:
        writer.write(b"uploaded")
        writer.commit(Descriptor(digest=sha256(b"uploaded")))
    registry.sync()
    again = make_registry().repository("batch")
    assert again.blobs.get(DIGEST) == DATA
    assert again.blobs.get(sha256(b"uploaded")) == b"uploaded"


# -- interfaces ------------------------------------------------------------------------------------


def test_protocols(registry: Registry, repo: Repository) -> None:
    for protocol in (
        interfaces.BlobStore,
        interfaces.BlobService,
        interfaces.BlobStatter,
        interfaces.BlobProvider,
        interfaces.BlobServer,
        interfaces.BlobIngester,
        interfaces.BlobDeleter,
        interfaces.BlobDescriptorService,
    ):
        assert isinstance(repo.blobs, protocol), protocol.__name__
    for protocol in (interfaces.BlobStatter, interfaces.BlobProvider, interfaces.BlobServer):
        assert isinstance(registry.blobs, protocol), protocol.__name__
    with repo.blobs.create() as writer:
        assert isinstance(writer, interfaces.BlobWriter)
        assert isinstance(writer, BlobWriter)
        writer.cancel()
    assert not isinstance(io.BytesIO(), interfaces.BlobWriter)
