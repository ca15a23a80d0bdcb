"""The blob store conformance suite, part 4: bad input, for every engine and driver.

Whatever a client sends (a malformed digest, an algorithm nobody implements, a repository name or
an upload id built to climb out of its directory), the blob store answers with the typed error
distribution would, changes nothing it stores, and (on the filesystem) writes nothing outside its
root: each test compares the driver's whole tree, and the whole directory tree around the root,
before and after.
"""

from __future__ import annotations

import pathlib
import uuid
from collections.abc import Callable
from typing import Any

import pytest

from distblob import Descriptor, Registry, Repository
from distblob.errors import (
    BlobDigestUnsupportedError,
    BlobInvalidDigestError,
    BlobUnknownError,
    BlobUploadUnknownError,
    DigestInvalidError,
    DigestUnsupportedError,
    NameInvalidError,
)
from distblob.storage.driver import FilesystemDriver, StorageDriver
from support.blobstore import payload, sha256, unchanged

DATA = payload(3000, seed=6)
DIGEST = sha256(DATA)
HEX = DIGEST.encoded

MALFORMED_DIGESTS = [
    "",
    "sha256",
    "sha256:",
    ":" + HEX,
    "sha256:abc",
    "sha256:" + HEX.upper(),
    "sha256:" + "g" * 64,
    "sha256:" + HEX + "0",
    "SHA256:" + HEX,
    " sha256:" + HEX,
    "sha256:" + HEX + "\n",
    "sha256:../../../../../../etc/passwd",
    "../sha256:" + HEX,
    "sha256:" + HEX[:-2] + "/x",
    "sha256/../..:" + HEX,
    "sha512:" + HEX,  # a sha256-long hex for sha512
    "sha384:" + HEX,
    "blake3:" + HEX + HEX,
    "sha256:" + "é" * 64,
]

UNSUPPORTED_DIGESTS = [
    "md5:" + "0" * 32,
    "sha1:" + "0" * 40,
    "sha224:" + "0" * 56,
    "sha256+b64:" + HEX,  # would nest as blobs/sha256/b64/
    "sha256.tar:" + HEX,
    "x:y",
]

BAD_NAMES = [
    "",
    ".",
    "..",
    "../library",
    "library/..",
    "library/../other",
    "/library/test",
    "library/test/",
    "library//test",
    "Library",
    "library/Test",
    "ünicode",
    "caf\u00e9",
    "library/te st",
    "library\\test",
    "library/test\x00",
    "_uploads",
    "library/_layers",
    "-library",
    "library-",
    "library..test",
    "a" * 256,
    "a" * 300,
    "/".join(["ab"] * 100),
]

BAD_UPLOAD_IDS = ["../x", "a/b", "..", ".", "", "x" * 256, "x" * 300, "/abs", "id\x00", "ü", "a b"]


@pytest.fixture
def stored(registry: Registry, repo: Repository) -> Registry:
    """The registry with one blob in ``repo`` and one upload in progress."""
    repo.blobs.put(DATA)
    writer = repo.blobs.create()
    writer.write(b"in progress")
    writer.close()
    return registry


def blob_calls(registry: Registry, repo: Repository) -> list[Callable[[str], Any]]:
    """Every blob store method that takes a digest, with the other arguments filled in."""
    return [
        repo.blobs.stat,
        repo.blobs.get,
        repo.blobs.open,
        repo.blobs.exists,
        repo.blobs.serve_blob,
        repo.blobs.delete,
        repo.blobs.clear,
        lambda digest: repo.blobs.set_descriptor(digest, Descriptor(media_type="a/b")),
        lambda digest: repo.blobs.mount("library/other", digest),
        registry.blobs.stat,
        registry.blobs.get,
        registry.blobs.open,
        registry.blobs.exists,
        registry.blobs.serve_blob,
        registry.blobs.delete,
    ]


@pytest.mark.parametrize("digest", MALFORMED_DIGESTS)
def test_malformed_digests(
    make_registry: Callable[..., Registry],
    blob_driver: StorageDriver,
    tmp_path: pathlib.Path,
    digest: str,
) -> None:
    registry = make_registry(delete_enabled=True)
    repo = registry.repository("library/test")
    repo.blobs.put(DATA)
    registry.repository("library/other").blobs.put(b"other")
    with unchanged(blob_driver, tmp_path):
        for call in blob_calls(registry, repo):
            with pytest.raises(BlobInvalidDigestError) as caught:
                call(digest)
            assert isinstance(caught.value, DigestInvalidError)
            assert isinstance(caught.value, ValueError)
            assert caught.value.digest == digest


@pytest.mark.parametrize("digest", UNSUPPORTED_DIGESTS)
def test_unsupported_algorithms(
    make_registry: Callable[..., Registry],
    blob_driver: StorageDriver,
    tmp_path: pathlib.Path,
    digest: str,
) -> None:
    registry = make_registry(delete_enabled=True)
    repo = registry.repository("library/test")
    repo.blobs.put(DATA)
    registry.repository("library/other").blobs.put(b"other")
    with unchanged(blob_driver, tmp_path):
        for call in blob_calls(registry, repo):
            with pytest.raises(BlobDigestUnsupportedError) as caught:
                call(digest)
            assert isinstance(caught.value, DigestUnsupportedError)
            assert caught.value.digest == digest


@pytest.mark.parametrize("name", BAD_NAMES)
def test_invalid_repository_names(
    stored: Registry,
    repo: Repository,
    blob_driver: StorageDriver,
    tmp_path: pathlib.Path,
    name: str,
) -> None:
    with unchanged(blob_driver, tmp_path):
        with pytest.raises(NameInvalidError) as caught:
            stored.repository(name)
        assert caught.value.name == name
        assert isinstance(caught.value, ValueError)
        with pytest.raises(NameInvalidError):
            repo.blobs.mount(name, DIGEST)


def test_longest_repository_name(registry: Registry) -> None:
    for name in ("a" * 255, "/".join(["abc"] * 63) + "/abc"[: 255 - 63 * 4 + 1]):
        assert len(name) <= 255
        repo = registry.repository(name)
        assert repo.blobs.put(DATA).digest == DIGEST
        assert repo.blobs.get(DIGEST) == DATA


@pytest.mark.parametrize("upload_id", BAD_UPLOAD_IDS)
def test_invalid_upload_ids(
    stored: Registry,
    repo: Repository,
    blob_driver: StorageDriver,
    tmp_path: pathlib.Path,
    upload_id: str,
) -> None:
    with unchanged(blob_driver, tmp_path), pytest.raises(BlobUploadUnknownError) as caught:
        repo.blobs.resume(upload_id)
    assert isinstance(caught.value, KeyError)


@pytest.mark.parametrize("upload_id", [str(uuid.uuid4()), "deadbeef", "x" * 255, "a=b_c.d-e"])
def test_unknown_upload_ids(
    stored: Registry,
    repo: Repository,
    blob_driver: StorageDriver,
    tmp_path: pathlib.Path,
    upload_id: str,
) -> None:
    with unchanged(blob_driver, tmp_path), pytest.raises(BlobUploadUnknownError) as caught:
        repo.blobs.resume(upload_id)
    assert caught.value.upload_id == upload_id


@pytest.mark.parametrize("algorithm", ["md5", "sha1", "", "SHA256", "sha-256", "../x", "sha256 "])
def test_unsupported_upload_algorithms(
    stored: Registry,
    repo: Repository,
    blob_driver: StorageDriver,
    tmp_path: pathlib.Path,
    algorithm: str,
) -> None:
    with unchanged(blob_driver, tmp_path):
        with pytest.raises(BlobDigestUnsupportedError):
            repo.blobs.create(algorithm=algorithm)
        with pytest.raises(BlobDigestUnsupportedError):
            repo.blobs.put(b"data", algorithm=algorithm)


def test_writing_what_is_no_buffer(repo: Repository) -> None:
    writer = repo.blobs.create()
    writer.write(b"ok")
    for bad in ("text", 42, None, [1, 2]):
        with pytest.raises(TypeError):
            writer.write(bad)  # type: ignore[arg-type]
    assert writer.size == writer.tell() == 2
    assert writer.commit(Descriptor(digest=sha256(b"ok"))).size == 2


def test_nothing_is_linked_from_a_repository_that_lacks_the_blob(
    stored: Registry, repo: Repository, blob_driver: StorageDriver, tmp_path: pathlib.Path
) -> None:
    target = stored.repository("library/target")
    with unchanged(blob_driver, tmp_path):
        with pytest.raises(BlobUnknownError):
            target.blobs.mount("library/nothing", DIGEST)
        with pytest.raises(BlobUnknownError):
            target.blobs.mount(repo.name, sha256(b"never stored"))
        with pytest.raises(BlobUnknownError):
            target.blobs.clear(DIGEST)


def test_the_surroundings_check_sees_writes_outside_the_root(tmp_path: pathlib.Path) -> None:
    """The check the tests above rely on would notice an escape from the root."""
    driver = FilesystemDriver(tmp_path / "root")
    for escape in (
        tmp_path / "escaped",
        tmp_path.parent / f"{tmp_path.name}-escaped",
        tmp_path / "root" / ".." / "up" / "deeper",
    ):
        with pytest.raises(AssertionError), unchanged(driver, tmp_path):
            escape.parent.mkdir(parents=True, exist_ok=True)
            escape.write_bytes(b"x")
        escape.unlink()
    with pytest.raises(AssertionError), unchanged(driver, tmp_path):
        driver.put_content("/inside", b"x")
