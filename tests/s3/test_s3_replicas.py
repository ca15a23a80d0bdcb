"""Several ``distblob serve`` replicas over one S3 bucket, with one ``http.secret``.

Two server processes share nothing but the bucket (rclone serve s3 on loopback) and the secret:
skopeo pushes an image through one and pulls it through the other, and one chunked upload
hops between them PATCH by PATCH, its multipart upload and hash state carried in the bucket.
"""

from __future__ import annotations

import gzip
import itertools
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from distblob import Registry
from distblob.storage.driver.s3 import MIN_CHUNK_SIZE, S3Driver
from support.goregistry import (
    OciImage,
    check_pulled_dir,
    make_oci_image_layout,
    sha256_digest,
    skopeo_pull,
    skopeo_push,
)
from support.s3server import RcloneS3
from support.server import DistblobServer

pytestmark = pytest.mark.timeout(180)

SECRET = "one-secret-for-every-replica"
MiB = 1 << 20


class S3Replica(DistblobServer):
    """``distblob serve`` with ``storage.s3`` instead of a filesystem root."""

    def __init__(self, tmp: Path, parameters: dict[str, Any], **options: Any) -> None:
        super().__init__(tmp, secret=SECRET, **options)
        self.parameters = parameters

    def config(self) -> dict[str, Any]:
        config = super().config()
        config["storage"] = {"s3": self.parameters, **self.extra_config.get("storage", {})}
        return config


@pytest.fixture(scope="module")
def bucket(s3_server: RcloneS3) -> str:
    return s3_server.new_bucket("replicas")


@pytest.fixture(scope="module")
def parameters(s3_server: RcloneS3, bucket: str) -> dict[str, Any]:
    return s3_server.parameters(bucket, chunksize=MIN_CHUNK_SIZE, rootdirectory="/registry")


@pytest.fixture(scope="module")
def replicas(
    tmp_path_factory: pytest.TempPathFactory, parameters: dict[str, Any]
) -> Iterator[tuple[S3Replica, S3Replica]]:
    a = S3Replica(tmp_path_factory.mktemp("a"), parameters)
    b = S3Replica(tmp_path_factory.mktemp("b"), parameters)
    with a, b:
        yield a, b
        for replica in (a, b):
            assert "unexpected error" not in replica.log_text(), replica.log_text()


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory) -> OciImage:
    layers = [
        gzip.compress(os.urandom(200_000)),
        os.urandom(12 * MiB + 3),  # several parts of a multipart upload
        b"",
        gzip.compress(b"small layer"),
    ]
    return make_oci_image_layout(tmp_path_factory.mktemp("layout"), layers, tag="v1")


def test_skopeo_pushes_through_one_replica_and_pulls_through_the_other(
    replicas: tuple[S3Replica, S3Replica], image: OciImage, tmp_path: Path
) -> None:
    a, b = replicas
    skopeo_push(image, a.host, "replicated/app:v1")
    out = tmp_path / "out"
    skopeo_pull(b.host, "replicated/app:v1", out)
    check_pulled_dir(out, image)
    # B answered the blob GETs with presigned URLs of the bucket (distribution's default).
    layer = image["layer_digests"][1]
    response = httpx.get(f"{b.url}/v2/replicated/app/blobs/{layer}", follow_redirects=False)
    assert response.status_code == 307
    assert response.headers["location"].startswith(a.parameters["regionendpoint"])
    fetched = httpx.get(response.headers["location"])
    assert sha256_digest(fetched.content) == layer


def test_a_chunked_upload_alternates_between_replicas(
    replicas: tuple[S3Replica, S3Replica], parameters: dict[str, Any]
) -> None:
    a, b = replicas
    data = os.urandom(14 * MiB + 11)
    digest = sha256_digest(data)
    cuts = [0, 6 * MiB, 6 * MiB + 1, 11 * MiB, len(data)]
    with a.client() as on_a, b.client() as on_b:
        location = on_a.start_upload("replicated/chunked")
        for index, (start, end) in enumerate(itertools.pairwise(cuts)):
            client = (on_b, on_a)[index % 2]
            location = client.patch(location, data[start:end], start)
            _, last = (on_a, on_b)[index % 2].upload_status(location)  # the other one agrees
            assert last == end - 1
        on_b.finish(location, digest)
    fetched = httpx.get(f"{a.url}/v2/replicated/chunked/blobs/{digest}", follow_redirects=True)
    assert fetched.content == data
    # What the replicas stored is the blob itself, where distribution's layout puts it.
    registry = Registry(S3Driver.from_parameters(parameters), redirect=False)
    assert registry.repository("replicated/chunked").blobs.get(digest) == data
    tags = httpx.get(f"{b.url}/v2/_catalog").json()
    assert "replicated/chunked" in tags["repositories"]


def test_an_out_of_order_patch_on_the_other_replica_is_refused(
    replicas: tuple[S3Replica, S3Replica],
) -> None:
    a, b = replicas
    with a.client() as on_a:
        location = on_a.start_upload("replicated/strict")
        location = on_a.patch(location, b"x" * 100, 0)
    target = location.split(a.host, 1)[-1]
    response = httpx.patch(
        f"{b.url}{target}",
        content=b"y" * 10,
        headers={"Content-Range": "50-59", "Content-Type": "application/octet-stream"},
    )
    assert response.status_code == 416
    with a.client() as on_a:
        _, last = on_a.upload_status(location)
    assert last == 99  # the refused PATCH changed nothing
