"""distblob's S3 driver and the real Go registry (Debian's docker-registry, distribution 2.8.2)
on one bucket of ``rclone serve s3``: each side reads what the other wrote.

- Go pushes (skopeo, a multi-layer image with a 24 MiB layer sent as S3 multipart uploads) and
  distblob's ``Registry(S3Driver)`` finds the repository in its catalog, the tag, the manifest
  and every blob, byte for byte: the layout under the bucket is the same.
- Go's chunked uploads on rclone work while every PATCH but the last carries 5 MiB or more
  (or the upload stays under 5 MiB); otherwise 2.8 needs ``UploadPartCopy``, which rclone lacks.
- distblob writes blobs (one large enough for a multipart upload) and a tagged manifest, and Go
  serves them to skopeo with the same digests, both through itself and by redirecting blob GETs
  to presigned rclone URLs; its catalog lists the repository.

Go 2.8.2 cannot take uploads from rclone as it is: rclone leaves ``<IsTruncated>`` out of
``ListParts`` answers and 2.8's s3 driver dereferences it, so every resumed upload panics (the
first test pins that down). The pushes go through :class:`~support.goregistry.ListPartsShim`,
which adds the element and changes nothing else; Go's reads need no shim.

Everything runs on 127.0.0.1; rclone comes from the ``s3_server`` fixture, every test takes a
fresh bucket and starts and stops its own registries.
"""

from __future__ import annotations

import gzip
import json
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from distblob import Descriptor, Digest, Registry
from distblob.storage.driver.s3 import MIN_CHUNK_SIZE, S3Driver
from support.goregistry import (
    OCI_CONFIG,
    OCI_LAYER_GZIP,
    OCI_MANIFEST,
    ListPartsShim,
    OciImage,
    RegistryHTTPError,
    S3GoRegistry,
    SkopeoError,
    check_pulled_dir,
    make_oci_image_layout,
    sha256_digest,
    skopeo_pull,
    skopeo_push,
)
from support.s3server import RcloneS3

MIB = 1 << 20
ROOT_DIRECTORY = "/registry-root"
REPO = "s3/app"


def _gzip_layer(size: int, seed: int) -> bytes:
    # Stored (level 0) gzip of seeded bytes: a real gzip layer, so skopeo keeps it as it is
    # with --preserve-digests, and cheap to make at tens of MiB.
    return gzip.compress(random.Random(seed).randbytes(size), compresslevel=0, mtime=0)


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory) -> OciImage:
    """Three layers: one past 20 MiB (several 5 MiB parts), one of a few bytes, one of 1 MiB."""
    layers = [_gzip_layer(24 * MIB + 12_345, 1), _gzip_layer(10, 2), _gzip_layer(MIB, 3)]
    return make_oci_image_layout(tmp_path_factory.mktemp("layout"), layers, tag="v1")


@pytest.fixture
def bucket(s3_server: RcloneS3) -> str:
    return s3_server.new_bucket("go")


@pytest.fixture
def parameters(s3_server: RcloneS3, bucket: str) -> dict[str, Any]:
    """distribution-style ``storage.s3`` for the bucket: a root directory and 5 MiB parts."""
    return s3_server.parameters(bucket, rootdirectory=ROOT_DIRECTORY, chunksize=MIN_CHUNK_SIZE)


@pytest.fixture
def shim(s3_server: RcloneS3) -> Iterator[ListPartsShim]:
    with ListPartsShim(s3_server.port) as proxy:
        yield proxy


def _pull_and_check(host: str, ref: str, out: Path, image: OciImage) -> None:
    """skopeo copies ``ref`` to ``dir:out``: the manifest and every blob, byte for byte."""
    skopeo_pull(host, ref, out)
    check_pulled_dir(out, image)


def _image_blobs(image: OciImage) -> dict[str, bytes]:
    blobs = image["path"] / "blobs" / "sha256"
    return {
        digest: (blobs / digest.removeprefix("sha256:")).read_bytes()
        for digest in [image["config_digest"], *image["layer_digests"]]
    }


def test_go_cannot_take_uploads_from_rclone_directly(
    s3_server: RcloneS3, parameters: dict[str, Any], image: OciImage
) -> None:
    """Without the shim, Go 2.8.2 panics on the first request that resumes an upload.

    If this starts passing a push, rclone (or the registry) changed: drop the shim.
    """
    assert parameters["regionendpoint"] == s3_server.endpoint
    with S3GoRegistry(parameters) as go:
        with pytest.raises(SkopeoError):
            skopeo_push(image, go.host, f"{REPO}:v1")
        log = go.log_text()
    assert "nil pointer dereference" in log
    assert "s3-aws.(*driver).Writer" in log


def test_go_chunked_uploads_on_rclone(parameters: dict[str, Any], shim: ListPartsShim) -> None:
    """What the shim does not fix: rclone has no ``UploadPartCopy`` (it answers 200 with an
    empty body), which 2.8 needs when a PATCH finds the upload's last part under 5 MiB after
    5 MiB or more. PATCHes of 5 MiB or more work, and so do small ones under 5 MiB in all."""
    rng = random.Random(7)
    with S3GoRegistry({**parameters, "regionendpoint": shim.endpoint}) as go:
        with go.client(timeout=120) as client:
            for chunks in ([6 * MIB, 6 * MIB, 100], [MIB, MIB, MIB]):
                data = rng.randbytes(sum(chunks))
                digest = client.push_blob(REPO, data, chunks)
                assert client.get_blob(REPO, digest, expect=(200,)).body == data
            with pytest.raises(RegistryHTTPError) as failed:
                client.push_blob(REPO, rng.randbytes(8 * MIB), [6 * MIB, MIB, MIB])
        assert failed.value.status == 500
        assert "SerializationError: empty response payload" in go.log_text()


def test_distblob_reads_what_go_pushed(
    parameters: dict[str, Any], shim: ListPartsShim, image: OciImage, tmp_path: Path
) -> None:
    with S3GoRegistry({**parameters, "regionendpoint": shim.endpoint}) as go:
        skopeo_push(image, go.host, f"{REPO}:v1")
        _pull_and_check(go.host, f"{REPO}:v1", tmp_path / "from-go", image)

    # Go is stopped: distblob reads the bucket alone.
    registry = Registry(S3Driver.from_parameters(parameters))
    assert registry.catalog() == [REPO]
    repository = registry.repository(REPO)
    assert repository.manifests.tags() == ["v1"]
    assert repository.manifests.resolve("v1") == Digest.parse(image["manifest_digest"])
    body, descriptor = repository.manifests.get("v1")
    assert body == image["manifest"]
    assert (descriptor.digest, descriptor.size, descriptor.media_type) == (
        Digest.parse(image["manifest_digest"]),
        len(image["manifest"]),
        OCI_MANIFEST,
    )
    expected = _image_blobs(image)
    assert {str(d) for d in repository.blobs.enumerate()} == set(expected)
    for digest, data in expected.items():
        stat = repository.blobs.stat(digest)
        assert (str(stat.digest), stat.size) == (digest, len(data))
        got = repository.blobs.get(digest)
        assert sha256_digest(got) == digest
        assert got == data


@pytest.mark.parametrize("redirect", [False, True], ids=["served", "redirected"])
def test_go_serves_what_distblob_wrote(
    s3_server: RcloneS3,
    parameters: dict[str, Any],
    image: OciImage,
    tmp_path: Path,
    redirect: bool,
) -> None:
    registry = Registry(S3Driver.from_parameters(parameters))
    repository = registry.repository(REPO)
    manifest = json.loads(image["manifest"])
    blobs = _image_blobs(image)
    # The big layer goes through an upload, in pieces that are not multiples of the part
    # size; the others are put whole.
    big = image["layer_digests"][0]
    writer = repository.blobs.create()
    data = blobs[big]
    for start in range(0, len(data), 3 * MIB + 17):
        writer.write(data[start : start + 3 * MIB + 17])
    committed = writer.commit(Descriptor(size=len(data), digest=Digest.parse(big)))
    assert str(committed.digest) == big
    for layer in manifest["layers"][1:]:
        assert (
            str(repository.blobs.put(blobs[layer["digest"]], OCI_LAYER_GZIP).digest)
            == (layer["digest"])
        )
    config = repository.blobs.put(blobs[image["config_digest"]], OCI_CONFIG)
    assert str(config.digest) == image["config_digest"]
    stored = repository.manifests.put("v1", image["manifest"], OCI_MANIFEST)
    assert str(stored.digest) == image["manifest_digest"]
    keys = [
        entry["Key"]
        for entry in s3_server.client().list_objects_v2(Bucket=parameters["bucket"])["Contents"]
    ]
    assert not [key for key in keys if "/_uploads/" in key], keys

    # Go reads without the shim: nothing it does to serve resumes an upload.
    with S3GoRegistry(parameters, redirect=redirect) as go, go.client() as client:
        catalog = json.loads(client.request("GET", "/v2/_catalog", expect=(200,)).body)
        assert catalog == {"repositories": [REPO]}
        tags = json.loads(client.request("GET", f"/v2/{REPO}/tags/list", expect=(200,)).body)
        assert tags == {"name": REPO, "tags": ["v1"]}
        response = client.get_manifest(REPO, "v1")
        assert response.body == image["manifest"]
        assert response.headers["Docker-Content-Digest"] == image["manifest_digest"]
        blob = client.get_blob(REPO, big, expect=(307,) if redirect else (200,))
        if redirect:
            assert blob.headers["Location"].startswith(s3_server.endpoint + "/")
        else:
            assert blob.body == data
            assert blob.headers["Docker-Content-Digest"] == big
        _pull_and_check(go.host, f"{REPO}:v1", tmp_path / "from-go", image)
