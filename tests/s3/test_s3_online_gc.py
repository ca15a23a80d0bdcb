"""Online garbage collection on S3 (rclone serve s3), one replica collecting while another
pushes: the same forced orderings as ``tests/storage/test_online_gc.py``, across two drivers
on one bucket, with the storage's own (second-precision) clock for the grace period.
"""

from __future__ import annotations

import json
import time

import pytest

from distblob import Descriptor, Digest, Registry, Repository
from distblob.errors import ManifestBlobUnknownError
from distblob.storage.collection import read_state
from distblob.storage.driver.s3 import MIN_CHUNK_SIZE, S3Driver
from distblob.storage.online import collect
from support.gcrace import in_sweep, manifest, options
from support.s3server import RcloneS3


def replica(server: RcloneS3, bucket: str) -> Registry:
    driver = S3Driver.from_parameters(server.parameters(bucket, chunksize=MIN_CHUNK_SIZE))
    return Registry(driver, redirect=False, delete_enabled=True)


@pytest.fixture
def replicas(s3_server: RcloneS3) -> tuple[Registry, Registry]:
    bucket = s3_server.new_bucket("onlinegc")
    return replica(s3_server, bucket), replica(s3_server, bucket)


def settle() -> None:
    """Let the storage's clock (whole seconds on S3) pass what was just written: with a grace
    period of 0 it is then older than the collection's start."""
    time.sleep(1.1)


def test_grace_by_the_storage_clock_and_a_bulk_sweep(replicas: tuple[Registry, Registry]) -> None:
    collector, server = replicas
    repo = server.repository("gc/app")
    garbage = [repo.blobs.put(f"garbage {n}".encode()).digest for n in range(30)]
    config = repo.blobs.put(b'{"os":"linux"}', "application/json")
    layer = repo.blobs.put(b"kept layer" * 20)
    repo.manifests.put("v1", manifest(config, layer))
    settle()
    # Within the grace period of 60 s: nothing goes.
    _, summary = collect(collector, options(grace=60, manifests_only=True))
    assert summary.blobs == 0 and summary.young >= 30
    _, summary = collect(collector, options(grace=0, manifests_only=True, batch=7))
    assert (summary.blobs, summary.layer_links, summary.spared) == (30, 30, 0)
    assert not any(server.blobs.exists(str(d)) for d in garbage)
    assert repo.blobs.exists(str(layer.digest)) and repo.manifests.exists("v1")
    assert read_state(server.driver).generation == 2 and not read_state(server.driver).active
    assert server.driver.list("/distblob/gc") == ["/distblob/gc/state"]


@pytest.fixture
def garbage(replicas: tuple[Registry, Registry]) -> tuple[Repository, bytes, Digest]:
    _, server = replicas
    data = b"a layer pushed long ago" * 100
    repo = server.repository("gc/old")
    digest = repo.blobs.put(data).digest
    assert digest is not None
    settle()
    return repo, data, digest


@pytest.mark.parametrize("touch_first", [True, False], ids=["spared", "repaired"])
def test_a_commit_on_one_replica_while_another_sweeps_its_blob(
    replicas: tuple[Registry, Registry],
    garbage: tuple[Repository, bytes, Digest],
    monkeypatch: pytest.MonkeyPatch,
    touch_first: bool,
) -> None:
    collector, server = replicas
    _, data, digest = garbage
    repo = server.repository("gc/new")
    writer = repo.blobs.create()
    writer.write(data)
    result, _ = in_sweep(
        collector,
        monkeypatch,
        lambda: writer.commit(Descriptor("", len(data), digest)),
        touch_first=touch_first,
        opts=options(grace=0, manifests_only=True),
    )
    assert isinstance(result, Descriptor) and result.digest == digest
    assert repo.blobs.get(str(digest)) == data


@pytest.mark.parametrize("touch_first", [True, False], ids=["spared", "refused"])
def test_a_manifest_on_one_replica_while_another_sweeps_its_layer(
    replicas: tuple[Registry, Registry],
    monkeypatch: pytest.MonkeyPatch,
    touch_first: bool,
) -> None:
    collector, server = replicas
    repo = server.repository("gc/app")
    config = repo.blobs.put(json.dumps({"os": "linux"}).encode(), "application/json")
    layer = repo.blobs.put(b"an old layer" * 60)
    settle()
    body = manifest(config, layer)
    result, _ = in_sweep(
        collector,
        monkeypatch,
        lambda: repo.manifests.put("v1", body),
        touch_first=touch_first,
        opts=options(grace=0, manifests_only=True),
    )
    if touch_first:
        assert isinstance(result, Descriptor)
        assert (
            repo.blobs.exists(str(layer.digest)) and repo.manifests.resolve("v1") == result.digest
        )
    else:
        assert isinstance(result, ManifestBlobUnknownError)
        assert not repo.manifests.exists(str(Digest.from_bytes(body)))
