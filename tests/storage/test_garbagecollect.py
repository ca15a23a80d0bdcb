"""Garbage collection at the storage level (:mod:`distblob.storage.garbagecollect`): what
:func:`plan` marks and lists, and what :func:`sweep` deletes, on a registry built through its
own verbs. ``distblob gc``'s output and exit codes are tested in ``test_commands.py``."""

from __future__ import annotations

import json
from dataclasses import dataclass

import pytest

from distblob import Descriptor, Digest, Registry, Repository
from distblob.errors import BlobUnknownError, ManifestUnknownError, PathNotFoundError
from distblob.storage import paths
from distblob.storage.cache import InMemoryBlobDescriptorCache
from distblob.storage.garbagecollect import (
    GCError,
    RepositoryLinks,
    plan,
    read_repositories,
    references,
    sweep,
)

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"


def manifest_body(repo: Repository, seed: str) -> tuple[bytes, Descriptor, Descriptor]:
    """An image manifest over a config and a layer pushed into ``repo``."""
    config = repo.blobs.put(json.dumps({"os": "linux", "seed": seed}).encode(), "application/json")
    layer = repo.blobs.put(f"layer {seed}".encode() * 10, "application/vnd.oci.image.layer.v1.tar")
    body = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": json.loads(config.to_json()),
            "layers": [json.loads(layer.to_json())],
        }
    ).encode()
    return body, config, layer


@dataclass
class Store:
    """A registry holding one repository with:

    - ``tagged``: ``v1``'s manifest (config and layer its own);
    - ``old``: ``v1``'s previous manifest (an untagged revision still in ``v1``'s index; config
      and layer its own);
    - ``ingested``: a blob linked without any manifest;
    - ``stray``: a blob no repository links."""

    registry: Registry
    repo: Repository
    tagged: Digest
    tagged_blobs: set[Digest]
    old: Digest
    old_blobs: set[Digest]
    ingested: Digest
    stray: Digest


@pytest.fixture
def store() -> Store:
    registry = Registry.in_memory()
    repo = registry.repository("gc/app")
    old_body, old_config, old_layer = manifest_body(repo, "old")
    old = repo.manifests.put("v1", old_body).digest
    tagged_body, config, layer = manifest_body(repo, "new")
    tagged = repo.manifests.put("v1", tagged_body).digest
    ingested = repo.blobs.put(b"a file ingest stored").digest
    stray = Digest.from_bytes(b"nobody links this")
    registry.blobs.write(stray, b"nobody links this")
    assert old is not None and tagged is not None and ingested is not None
    return Store(
        registry,
        repo,
        tagged,
        {d for d in (config.digest, layer.digest) if d is not None},
        old,
        {d for d in (old_config.digest, old_layer.digest) if d is not None},
        ingested,
        stray,
    )


def stored(registry: Registry) -> set[Digest]:
    return set(registry.blobs.enumerate())


def test_read_repositories_finds_revisions_tags_index_and_layer_links(store: Store) -> None:
    repos = read_repositories(store.registry.driver)
    assert set(repos) == {"gc/app"}
    links = repos["gc/app"]
    assert isinstance(links, RepositoryLinks)
    assert links.revisions == {store.tagged, store.old}
    assert links.tags == {"v1": store.tagged}
    assert links.tag_index == {"v1": {store.tagged, store.old}}
    linked = store.tagged_blobs | store.old_blobs | {store.ingested}
    assert links.layers == {digest: digest for digest in linked}


def test_read_repositories_of_an_empty_store() -> None:
    assert read_repositories(Registry.in_memory().driver) == {}


def test_references_of_images_indexes_and_artifacts() -> None:
    one, two, three, four = (Digest.from_bytes(bytes([i])) for i in range(4))
    manifest = {
        "config": {"digest": str(one)},
        "layers": [{"digest": str(two)}, {"digest": "sha256:not-a-digest"}, "junk"],
        "manifests": [{"digest": str(three)}, {"size": 3}],
        "blobs": [{"digest": str(four)}],
        "subject": {"digest": str(one)},  # not a reference the collection follows
    }
    assert list(references(manifest)) == [one, two, three, four]
    assert list(references([manifest])) == []
    assert list(references({"config": "sha256:x", "layers": {"digest": str(two)}})) == []


def test_plan_keeps_what_manifests_and_layer_links_reference(store: Store) -> None:
    before = stored(store.registry)
    result = plan(store.registry)
    assert result.blobs == [store.stray]
    assert result.manifests == [] and result.layer_links == []
    every = {store.tagged, store.old, store.ingested} | store.tagged_blobs | store.old_blobs
    assert result.marked == every
    assert stored(store.registry) == before  # a plan is a dry run: nothing deleted


def test_plan_delete_untagged_lists_the_untagged_revision(store: Store) -> None:
    result = plan(store.registry, delete_untagged=True)
    assert result.manifests == [("gc/app", store.old)]
    # Its config and layer stay, being linked; its own body goes with the other unmarked blobs.
    assert result.blobs == sorted([store.old, store.stray])
    assert store.old_blobs <= result.marked


def test_plan_manifests_only_is_distributions_rule(store: Store) -> None:
    result = plan(store.registry, delete_untagged=True, manifests_only=True)
    assert result.manifests == [("gc/app", store.old)]
    gone = sorted([store.old, store.stray, store.ingested, *store.old_blobs])
    assert result.blobs == gone
    assert result.layer_links == [("gc/app", d) for d in sorted([store.ingested, *store.old_blobs])]
    assert result.marked == {store.tagged, *store.tagged_blobs}


def test_sweep_deletes_the_plan_links_before_data(store: Store) -> None:
    registry, repo = store.registry, store.repo
    result = plan(registry, delete_untagged=True, manifests_only=True)
    assert sweep(registry, result) == 0  # an in-memory cache holds no clears back
    assert stored(registry) == {store.tagged, *store.tagged_blobs}
    for digest in [store.ingested, *store.old_blobs]:
        with pytest.raises(BlobUnknownError):
            repo.blobs.stat(digest)
        with pytest.raises(PathNotFoundError):
            registry.driver.stat(paths.layer_link_path("gc/app", digest))
    for digest in store.tagged_blobs:
        assert repo.blobs.stat(digest).digest == digest
    # The untagged revision is gone with its tag index entry; the tagged one stays.
    with pytest.raises(ManifestUnknownError):
        repo.manifests.get(str(store.old))
    assert read_repositories(registry.driver)["gc/app"].tag_index == {"v1": {store.tagged}}
    assert repo.manifests.resolve("v1") == store.tagged
    # Nothing left to collect, and sweeping what is gone already is no error.
    again = plan(registry, delete_untagged=True, manifests_only=True)
    assert again.blobs == [] and again.manifests == [] and again.layer_links == []
    assert sweep(registry, result) == 0
    assert stored(registry) == {store.tagged, *store.tagged_blobs}


def test_sweep_clears_the_descriptor_cache(store: Store) -> None:
    cache = store.registry.descriptor_cache
    ingested = store.repo.blobs.stat(store.ingested)  # the repository's entry
    assert ingested.digest == store.ingested
    result = plan(store.registry, manifests_only=True)
    sweep(store.registry, result)
    scoped = cache.repository_scoped("gc/app")
    with pytest.raises(BlobUnknownError):
        scoped.stat(store.ingested)
    for digest in (store.ingested, store.stray):
        with pytest.raises(BlobUnknownError):
            cache.stat(digest)


def test_sweep_reports_the_clears_a_cache_holds_back(store: Store) -> None:
    class Unreachable(InMemoryBlobDescriptorCache):
        """A cache that, like Redis while it is away, kept clears it could not apply."""

        pending = 3

    registry = Registry(store.registry.driver, descriptor_cache=Unreachable())
    result = plan(registry)
    assert result.blobs == [store.stray]
    assert sweep(registry, result) == 3
    assert store.stray not in stored(registry)


def test_plan_refuses_an_unreadable_manifest_and_deletes_nothing(store: Store) -> None:
    store.registry.driver.delete(paths.blob_dir_path(store.tagged))
    before = stored(store.registry)
    with pytest.raises(GCError, match=f"gc/app@{store.tagged}: cannot read the manifest"):
        plan(store.registry)
    assert stored(store.registry) == before


def test_an_index_keeps_its_untagged_child(store: Store) -> None:
    """A tagged index references the untagged revision: it is marked through the index and
    not listed, with its config and layer."""
    body = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": OCI_INDEX,
            "manifests": [{"mediaType": OCI_MANIFEST, "digest": str(store.old), "size": 1}],
        }
    ).encode()
    index = store.repo.manifests.put("multi", body).digest
    result = plan(store.registry, delete_untagged=True, manifests_only=True)
    assert result.manifests == []
    assert {index, store.old, *store.old_blobs} <= result.marked
    assert result.blobs == sorted([store.stray, store.ingested])
