"""The local scan garbage collection uses on a filesystem (:mod:`distblob.storage.gcscan`)
finds what the driver's walk finds: nested repositories, layer links (an alias under another
algorithm included), revisions, tags and their index, with uploads left out, and every blob."""

from __future__ import annotations

import json
import os
from pathlib import Path

from distblob import Descriptor, Digest, Registry
from distblob.storage import garbagecollect, paths
from distblob.storage.gcscan import (
    scan_blobs,
    scan_repositories,
    walk_blobs,
    walk_repositories,
)


def build(root: Path) -> Registry:
    registry = Registry.filesystem(root)
    for name in ("top", "team/app", "team/app/sub", "a/b/c/d"):
        repo = registry.repository(name)
        config = repo.blobs.put(json.dumps({"repo": name}).encode(), "application/json")
        layer = repo.blobs.put(f"layer of {name}".encode() * 10)
        body = json.dumps(
            {
                "schemaVersion": 2,
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "config": json.loads(config.to_json()),
                "layers": [json.loads(layer.to_json())],
            }
        ).encode()
        repo.manifests.put("v1", body)
        repo.manifests.put("v2", body)
        repo.manifests.put(str(Digest.from_bytes(body + b" ")), body + b" ")  # untagged
        repo.blobs.create().close()  # an upload left under _uploads
    # A blob committed under a sha512 digest: an alias link naming its sha256 blob.
    repo = registry.repository("team/app")
    data = b"aliased layer"
    writer = repo.blobs.create()
    writer.write(data)
    writer.commit(Descriptor("", len(data), Digest.from_bytes(data, "sha512")))
    return registry


def test_the_scan_finds_what_the_walk_finds(tmp_path: Path) -> None:
    registry = build(tmp_path / "root")
    driver = registry.driver
    local = driver.local_path(paths.repositories_root())
    assert local is not None
    scanned = scan_repositories(local, times=True)
    walked = walk_repositories(driver)
    assert sorted(scanned) == sorted(walked) == ["a/b/c/d", "team/app", "team/app/sub", "top"]
    for name, repo in walked.items():
        other = scanned[name]
        assert (other.revisions, other.tags, other.tag_index) == (
            repo.revisions,
            repo.tags,
            repo.tag_index,
        )
        assert other.layers == repo.layers
        assert other.layer_times == repo.layer_times
        assert other.revision_times == repo.revision_times
    aliases = [d for d in walked["team/app"].layers if d.algorithm == "sha512"]
    assert len(aliases) == 1
    assert scanned["team/app"].layers[aliases[0]] == Digest.from_bytes(b"aliased layer")
    assert scan_repositories(local, times=False)["top"].layer_times == {}

    blobs_local = driver.local_path(paths.blobs_root())
    assert blobs_local is not None
    found = scan_blobs(blobs_local)
    listed = walk_blobs(driver)
    assert set(found) == set(listed) and len(found) == 17
    for digest, blob in found.items():
        mine, theirs = blob.info(driver, digest), listed[digest].info(driver, digest)
        assert mine is not None and theirs is not None
        assert (mine.path, mine.size, mine.mod_time) == (theirs.path, theirs.size, theirs.mod_time)
    os.unlink(os.path.join(tmp_path, "root", paths.blob_data_path(digest).lstrip("/")))
    assert found[digest].info(driver, digest) is None  # gone since the scan


def test_a_store_without_repositories_or_blobs(tmp_path: Path) -> None:
    assert scan_repositories(str(tmp_path / "none"), times=True) == {}
    assert scan_blobs(str(tmp_path / "none")) == {}


def test_the_native_reading_of_manifests_finds_what_references_finds(tmp_path: Path) -> None:
    registry = Registry.filesystem(tmp_path / "root")
    a, b = (Digest.from_bytes(x) for x in (b"a", b"b"))
    documents: list[object] = [
        {"config": {"digest": a}, "layers": [{"digest": b}, {"digest": "sha256:BAD"}, 7]},
        {"manifests": [{"digest": a}], "blobs": [{"digest": "md5:00"}], "config": "x"},
        {"layers": [{"digest": str(Digest.from_bytes(b"c", "sha512"))}, {"nodigest": 1}]},
        [1, 2],
        "just a string",
    ]
    stored = []
    for document in documents:
        body = json.dumps(document).encode()
        digest = Digest.from_bytes(body)
        registry.blobs.write(digest, body)
        stored.append((digest, document))
    broken = Digest.from_bytes(b"{not json")
    registry.blobs.write(broken, b"{not json")
    missing = Digest.from_bytes(b"never stored")
    found = garbagecollect.read_manifests(registry.driver, [d for d, _ in stored], 1)
    for digest, document in stored:
        assert found[digest] == list(garbagecollect.references(document))
    errors = garbagecollect.read_manifests(registry.driver, [broken, missing], 1)
    assert all(str(why).startswith("cannot read the manifest") for why in errors.values())
