"""Manifests, tags, the catalog and referrers at the storage level (distribution's
``manifestStore``, ``tagStore`` and ``catalog``), over every engine and driver, plus the Go
registry's own tree: what it stored reads back byte for byte, and what we store is laid out
exactly as it lays it out."""

from __future__ import annotations

import json
import os
import pathlib
import shutil
from collections.abc import Callable
from typing import Any

import pytest

from distblob import Descriptor, Digest, Registry, Repository
from distblob.errors import (
    BlobInvalidDigestError,
    ManifestBlobUnknownError,
    ManifestInvalidError,
    ManifestUnknownError,
    NameUnknownError,
    TagInvalidError,
    UnsupportedError,
)
from distblob.storage import paths
from distblob.storage.driver import StorageDriver
from distblob.storage.manifests import (
    DOCKER_MANIFEST,
    DOCKER_MANIFEST_LIST,
    OCI_INDEX,
    OCI_MANIFEST,
)

OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER = "application/vnd.docker.image.rootfs.diff.tar.gzip"
FOREIGN_LAYER = "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip"
SBOM = "application/vnd.example.sbom.v1"
SIGNATURE = "application/vnd.example.signature.v1"
EMPTY_JSON = "application/vnd.oci.empty.v1+json"


def dumps(document: dict[str, Any]) -> bytes:
    return json.dumps(document, separators=(",", ":")).encode()


def sha256(data: bytes) -> Digest:
    return Digest.from_bytes(data)


def push_blob(repo: Repository, data: bytes, media_type: str) -> dict[str, Any]:
    """Store a blob in ``repo`` and return its descriptor as a manifest would hold it."""
    descriptor = repo.blobs.put(data, media_type)
    return {"mediaType": media_type, "digest": str(descriptor.digest), "size": len(data)}


def image(
    repo: Repository,
    *,
    seed: str = "a",
    media_type: str = OCI_MANIFEST,
    with_media_type: bool = True,
    subject: dict[str, Any] | None = None,
    artifact_type: str | None = None,
    annotations: dict[str, str] | None = None,
) -> bytes:
    """Push a config and a layer into ``repo`` and return an image manifest referencing them."""
    docker = media_type == DOCKER_MANIFEST
    config = json.dumps({"architecture": "amd64", "os": "linux", "seed": seed}).encode()
    layer = f"layer {seed}".encode() * 50
    manifest: dict[str, Any] = {"schemaVersion": 2}
    if with_media_type:
        manifest["mediaType"] = media_type
    if artifact_type is not None:
        manifest["artifactType"] = artifact_type
    manifest["config"] = push_blob(repo, config, DOCKER_CONFIG if docker else OCI_CONFIG)
    manifest["layers"] = [push_blob(repo, layer, DOCKER_LAYER if docker else OCI_LAYER)]
    if subject is not None:
        manifest["subject"] = subject
    if annotations is not None:
        manifest["annotations"] = annotations
    return dumps(manifest)


def index(
    children: list[tuple[bytes, str]], *, media_type: str = OCI_INDEX, with_media_type: bool = True
) -> bytes:
    """An index (or manifest list) of ``(body, media type)`` manifests, one platform each."""
    manifest: dict[str, Any] = {"schemaVersion": 2}
    if with_media_type:
        manifest["mediaType"] = media_type
    manifest["manifests"] = [
        {
            "mediaType": child_type,
            "digest": str(sha256(body)),
            "size": len(body),
            "platform": {"architecture": arch, "os": "linux"},
        }
        for (body, child_type), arch in zip(children, ["amd64", "arm64", "s390x"], strict=False)
    ]
    return dumps(manifest)


@pytest.fixture
def deleting(make_registry: Callable[..., Registry]) -> Repository:
    """``library/test`` of a registry with deletes enabled."""
    return make_registry(delete_enabled=True).repository("library/test")


# -- put and get, every media type --------------------------------------------------------------


@pytest.mark.parametrize("media_type", [OCI_MANIFEST, DOCKER_MANIFEST])
def test_put_image_by_tag_and_read_back(
    repo: Repository, blob_driver: StorageDriver, media_type: str
) -> None:
    body = image(repo, media_type=media_type)
    digest = sha256(body)
    descriptor = repo.manifests.put("latest", body, media_type)
    assert descriptor == Descriptor(media_type=media_type, size=len(body), digest=digest)
    for reference in ("latest", digest):
        assert repo.manifests.get(reference) == (body, descriptor)
        assert repo.manifests.stat(reference) == descriptor
        assert repo.manifests.exists(reference)
    assert repo.manifests.resolve("latest") == digest
    assert repo.manifests.tags() == ["latest"]
    # distribution's layout: the body is a blob, but not one linked under _layers.
    assert blob_driver.get_content(paths.blob_data_path(digest)) == body
    link = digest.encode()
    assert blob_driver.get_content(paths.manifest_revision_link_path(repo.name, digest)) == link
    assert blob_driver.get_content(paths.manifest_tag_current_path(repo.name, "latest")) == link
    index_link = paths.manifest_tag_index_entry_link_path(repo.name, "latest", digest)
    assert blob_driver.get_content(index_link) == link
    assert not repo.blobs.exists(digest)
    assert digest not in set(repo.blobs.enumerate())


@pytest.mark.parametrize(
    ("index_type", "child_type"),
    [(OCI_INDEX, OCI_MANIFEST), (DOCKER_MANIFEST_LIST, DOCKER_MANIFEST)],
)
def test_put_index_by_digest_after_its_children(
    repo: Repository, index_type: str, child_type: str
) -> None:
    children = [(image(repo, seed=seed, media_type=child_type), child_type) for seed in "ab"]
    for body, _ in children:
        repo.manifests.put(str(sha256(body)), body)
    body = index(children, media_type=index_type)
    digest = sha256(body)
    descriptor = repo.manifests.put(digest, body, index_type)
    assert descriptor == Descriptor(media_type=index_type, size=len(body), digest=digest)
    assert repo.manifests.get(digest) == (body, descriptor)
    with pytest.raises(NameUnknownError):  # never tagged, as distribution says
        repo.manifests.tags()
    assert repo.manifests.referrers(digest)["manifests"] == []
    assert set(repo.manifests.enumerate()) == {digest, *(sha256(b) for b, _ in children)}


def test_media_type_without_body_field(
    make_registry: Callable[..., Registry], repo: Repository
) -> None:
    # An OCI manifest may leave mediaType out: the Content-Type names it, then sniffing does.
    body = image(repo, with_media_type=False)
    assert repo.manifests.put("v1", body, OCI_MANIFEST).media_type == OCI_MANIFEST
    assert repo.manifests.get("v1")[1].media_type == OCI_MANIFEST
    child = (body, OCI_MANIFEST)
    listing = index([child], with_media_type=False)
    # No Content-Type (or a generic one): the shape says it is an index.
    assert repo.manifests.put("multi", listing, "application/json").media_type == OCI_INDEX
    # After a restart (an empty descriptor cache) sniffing still gives the same answers.
    fresh = make_registry().repository(repo.name)
    assert fresh.manifests.stat("v1").media_type == OCI_MANIFEST
    assert fresh.manifests.get("multi")[1].media_type == OCI_INDEX


def test_content_type_parameters_and_agreement(repo: Repository) -> None:
    body = image(repo, with_media_type=False)
    descriptor = repo.manifests.put("v1", body, f"{OCI_MANIFEST}; charset=utf-8")
    assert descriptor.media_type == OCI_MANIFEST
    declared = image(repo)
    with pytest.raises(ManifestInvalidError, match="Content-Type"):
        repo.manifests.put("v2", declared, DOCKER_MANIFEST)


def test_put_again_moves_the_tag_and_keeps_its_history(
    repo: Repository, blob_driver: StorageDriver
) -> None:
    first, second = image(repo, seed="a"), image(repo, seed="b")
    repo.manifests.put("v1", first)
    repo.manifests.put("v1", second)
    assert repo.manifests.get("v1")[0] == second
    assert repo.manifests.get(sha256(first))[0] == first  # Still there by digest.
    history = blob_driver.list(paths.manifest_tag_index_path(repo.name, "v1") + "/sha256")
    assert sorted(p.rsplit("/", 1)[1] for p in history) == sorted(
        [sha256(first).encoded, sha256(second).encoded]
    )


def test_tag_and_untag(repo: Repository) -> None:
    body = image(repo)
    digest = repo.manifests.put(str(sha256(body)), body).digest
    assert digest is not None
    repo.manifests.tag("stable", digest)
    repo.manifests.tag("v1.0", digest)
    assert repo.manifests.tags() == ["stable", "v1.0"]
    assert repo.manifests.lookup(digest) == ["stable", "v1.0"]
    repo.manifests.untag("stable")  # A storage primitive: no delete_enabled needed.
    assert repo.manifests.tags() == ["v1.0"]
    with pytest.raises(ManifestUnknownError):
        repo.manifests.untag("stable")
    with pytest.raises(ManifestUnknownError):
        repo.manifests.resolve("stable")
    with pytest.raises(ManifestUnknownError):
        repo.manifests.tag("other", sha256(b"not a manifest here"))
    with pytest.raises(TagInvalidError):
        repo.manifests.tag(".hidden", digest)


# -- unknown references and validation ---------------------------------------------------------


def test_unknown_references(registry: Registry, repo: Repository) -> None:
    missing = sha256(b"nothing")
    for reference in ("latest", missing):
        with pytest.raises(ManifestUnknownError) as info:
            repo.manifests.get(reference)
        assert info.value.reference == reference
        with pytest.raises(ManifestUnknownError):
            repo.manifests.stat(reference)
        assert not repo.manifests.exists(reference)
    # A manifest pushed to one repository is unknown in another.
    body = image(repo)
    repo.manifests.put("v1", body)
    other = registry.repository("library/other")
    assert not other.manifests.exists(sha256(body))
    with pytest.raises(ManifestUnknownError):
        other.manifests.get("v1")


def test_bad_references(repo: Repository) -> None:
    body = image(repo)
    with pytest.raises(TagInvalidError):
        repo.manifests.put("-bad", body)
    with pytest.raises(TagInvalidError):
        repo.manifests.get("x" * 129)
    with pytest.raises(BlobInvalidDigestError):
        repo.manifests.put("sha256:abc", body)
    with pytest.raises(BlobInvalidDigestError):
        repo.manifests.get("sha256:ABC")


def test_digest_reference_must_match(repo: Repository) -> None:
    body = image(repo)
    with pytest.raises(ManifestInvalidError, match="does not match"):
        repo.manifests.put(str(sha256(body + b" ")), body)
    assert repo.manifests.enumerate() == []
    # Another registered algorithm names the manifest under that digest.
    sha512 = Digest.from_bytes(body, "sha512")
    assert repo.manifests.put(sha512, body).digest == sha512
    assert repo.manifests.get(sha512)[0] == body


def _image_dict(repo: Repository) -> dict[str, Any]:
    document: dict[str, Any] = json.loads(image(repo))
    return document


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        (lambda m: m.update(schemaVersion=1), "schemaVersion"),
        (lambda m: m.update(schemaVersion=True), "schemaVersion"),
        (lambda m: m.pop("schemaVersion"), "schemaVersion"),
        (lambda m: m.update(mediaType="application/vnd.example+json"), "media type"),
        (lambda m: m.update(mediaType=7), "mediaType"),
        (lambda m: m.pop("config"), "config is required"),
        (lambda m: m.pop("layers"), "layers is required"),
        (lambda m: m.update(layers={}), "must be a list"),
        (lambda m: m.update(config="sha256:x"), "descriptor object"),
        (lambda m: m["config"].pop("mediaType"), "mediaType is required"),
        (lambda m: m["config"].pop("digest"), "digest is required"),
        (lambda m: m["config"].update(digest="sha256:1234"), "sha256 needs 64"),
        (lambda m: m["config"].update(digest="md5:" + "0" * 32), "unsupported"),
        (lambda m: m["layers"][0].update(size=-1), "size"),
        (lambda m: m["layers"][0].update(size="12"), "size"),
        (lambda m: m["layers"][0].update(size=1.0 * m["layers"][0]["size"]), "size"),
        (lambda m: m["layers"][0].update(size=1 << 63), "size"),
        (lambda m: m.update(schemaVersion=2.0), "schemaVersion"),
        (lambda m: m["layers"][0].update(urls="http://x"), "urls"),
        (lambda m: m["layers"][0].update(annotations={"a": 1}), "annotations"),
        (lambda m: m.update(annotations=["a"]), "annotations"),
        (lambda m: m.update(artifactType=3), "artifactType"),
        (lambda m: m.update(subject={"mediaType": OCI_MANIFEST}), "subject"),
    ],
)
def test_invalid_manifests(
    repo: Repository, change: Callable[[dict[str, Any]], object], reason: str
) -> None:
    manifest = _image_dict(repo)
    change(manifest)
    with pytest.raises(ManifestInvalidError, match=reason):
        repo.manifests.put("v1", dumps(manifest))
    assert repo.manifests.enumerate() == []
    assert not repo.manifests.exists("v1")


@pytest.mark.parametrize(
    "body",
    [b"", b"not json", b"\xff\xfe", b"[]", b'"manifest"', b'{"schemaVersion": 2}'],
)
def test_unparsable_manifests(repo: Repository, body: bytes) -> None:
    with pytest.raises(ManifestInvalidError):
        repo.manifests.put("v1", body)


@pytest.mark.parametrize(
    ("encode", "reason"),
    [
        (lambda text: text.encode("utf-16"), "not JSON"),
        (lambda text: text.encode("utf-16-le"), "not JSON"),
        (lambda text: b"\xef\xbb\xbf" + text.encode(), "byte order mark"),
        (lambda text: text.encode("utf-32"), "not JSON"),
        (
            lambda text: text.replace('"schemaVersion":2', '"schemaVersion":2,"x":NaN').encode(),
            "NaN",
        ),
    ],
)
def test_manifests_clients_cannot_read_are_refused(
    repo: Repository, encode: Callable[[str], bytes], reason: str
) -> None:
    """A manifest JSON decoders of Go (skopeo, containerd, the Go registry) refuse: Python's
    json would guess UTF-16, skip a BOM or take NaN."""
    text = image(repo).decode()
    repo.manifests.put("ok", text.encode())  # the same manifest, plainly encoded, is fine
    with pytest.raises(ManifestInvalidError, match=reason):
        repo.manifests.put("v1", encode(text))
    assert not repo.manifests.exists("v1")


def test_index_needs_manifests_list(repo: Repository) -> None:
    for manifests in (None, "x", [{"mediaType": OCI_MANIFEST}]):
        document: dict[str, Any] = {"schemaVersion": 2, "mediaType": OCI_INDEX}
        if manifests is not None:
            document["manifests"] = manifests
        with pytest.raises(ManifestInvalidError):
            repo.manifests.put("v1", dumps(document))


def test_missing_blobs_are_reported(registry: Registry, repo: Repository) -> None:
    manifest = _image_dict(repo)
    absent = sha256(b"absent layer")
    manifest["layers"].append({"mediaType": OCI_LAYER, "digest": absent, "size": 12})
    with pytest.raises(ManifestBlobUnknownError) as info:
        repo.manifests.put("v1", dumps(manifest))
    assert info.value.digest == absent
    # A blob stored for another repository is not linked here.
    other = registry.repository("library/other")
    with pytest.raises(ManifestBlobUnknownError) as info:
        other.manifests.put("v1", dumps(_image_dict(repo)))
    assert info.value.digest == _image_dict(repo)["config"]["digest"]
    assert repo.manifests.enumerate() == other.manifests.enumerate() == []


def test_foreign_layers_may_be_absent(repo: Repository) -> None:
    manifest = json.loads(image(repo, media_type=DOCKER_MANIFEST))
    manifest["layers"].append(
        {
            "mediaType": FOREIGN_LAYER,
            "digest": sha256(b"windows base layer"),
            "size": 18,
            "urls": ["https://example.com/base.tar.gz"],
        }
    )
    assert repo.manifests.put("win", dumps(manifest)).media_type == DOCKER_MANIFEST


def test_index_referencing_a_missing_manifest(repo: Repository) -> None:
    present, absent = image(repo, seed="a"), image(repo, seed="b")
    repo.manifests.put(str(sha256(present)), present)
    body = index([(present, OCI_MANIFEST), (absent, OCI_MANIFEST)])
    with pytest.raises(ManifestBlobUnknownError) as info:
        repo.manifests.put("multi", body)
    assert info.value.digest == sha256(absent)
    # A blob with the child's digest is not a manifest of the repository.
    repo.blobs.put(absent, OCI_MANIFEST)
    with pytest.raises(ManifestBlobUnknownError):
        repo.manifests.put("multi", body)
    repo.manifests.put(str(sha256(absent)), absent)
    assert repo.manifests.put("multi", body).media_type == OCI_INDEX


# -- delete --------------------------------------------------------------------------------------


def test_delete_disabled(repo: Repository) -> None:
    body = image(repo)
    repo.manifests.put("v1", body)
    for reference in ("v1", sha256(body)):
        with pytest.raises(UnsupportedError):
            repo.manifests.delete(reference)
    assert repo.manifests.exists("v1")


def test_delete_by_tag_removes_only_the_tag(deleting: Repository) -> None:
    body = image(deleting)
    deleting.manifests.put("v1", body)
    deleting.manifests.tag("v2", sha256(body))
    deleting.manifests.delete("v1")
    assert deleting.manifests.tags() == ["v2"]
    assert deleting.manifests.exists(sha256(body))
    with pytest.raises(ManifestUnknownError):
        deleting.manifests.delete("v1")


def test_delete_by_digest_removes_the_tags_pointing_to_it(
    deleting: Repository, blob_driver: StorageDriver
) -> None:
    body, kept = image(deleting, seed="a"), image(deleting, seed="b")
    digest = sha256(body)
    deleting.manifests.put("v1", body)
    deleting.manifests.tag("latest", digest)
    deleting.manifests.put("v2", kept)
    # "old" pointed to the manifest once, but points elsewhere now: it stays.
    deleting.manifests.put("old", body)
    deleting.manifests.put("old", kept)
    deleting.manifests.delete(digest)
    assert deleting.manifests.tags() == ["old", "v2"]
    assert not deleting.manifests.exists(digest)
    with pytest.raises(ManifestUnknownError):
        deleting.manifests.get(digest)
    with pytest.raises(ManifestUnknownError):
        deleting.manifests.delete(digest)
    # The body stays in blobs/ for garbage collection; the revision directory is gone.
    assert blob_driver.get_content(paths.blob_data_path(digest)) == body
    revisions = blob_driver.list(paths.manifest_revisions_root(deleting.name) + "/sha256")
    assert revisions == [paths.manifest_revision_link_path(deleting.name, sha256(kept))[:-5]]
    # Pushing it again brings it back.
    deleting.manifests.put("v1", body)
    assert deleting.manifests.get("v1")[0] == body


def test_tag_whose_revision_is_gone_is_unknown(
    repo: Repository, blob_driver: StorageDriver
) -> None:
    body = image(repo)
    repo.manifests.put("v1", body)
    blob_driver.delete(paths.manifest_revision_link_path(repo.name, sha256(body)))
    with pytest.raises(ManifestUnknownError):
        repo.manifests.get("v1")


# -- tags and catalog ---------------------------------------------------------------------------


def test_tags_listing(registry: Registry, repo: Repository) -> None:
    with pytest.raises(NameUnknownError):
        repo.manifests.tags()
    image(repo)  # Blobs only: the repository exists but was never tagged (distribution too).
    with pytest.raises(NameUnknownError):
        repo.manifests.tags()
    body = image(repo)
    for tag in ("v2", "V1", "latest", "1.0_rc-1"):
        repo.manifests.put(tag, body)
    assert repo.manifests.tags() == sorted(["v2", "V1", "latest", "1.0_rc-1"])


def test_catalog_with_pagination(registry: Registry) -> None:
    assert registry.catalog() == []
    names = ["library/ubuntu", "a", "a/b/c", "a/b", "zeta", "library/alpine", "m-n.o_p", "a-b"]
    for i, name in enumerate(names):
        repository = registry.repository(name)
        if i % 2 == 0:
            repository.manifests.put("v1", image(repository))
        else:
            repository.blobs.put(b"only a blob")
    # Only an upload in progress: not a repository yet (distribution does not list it).
    registry.repository("uploading/only").blobs.create().close()
    # Component by component, as distribution walks: "a/b" before "a-b" ("/" sorts first).
    expected = ["a", "a/b", "a/b/c", "a-b", "library/alpine", "library/ubuntu", "m-n.o_p", "zeta"]
    assert registry.catalog() == expected
    assert registry.catalog(n=3) == expected[:3]
    assert registry.catalog(n=3, last=expected[2]) == expected[3:6]
    assert registry.catalog(n=3, last=expected[5]) == expected[6:]
    assert registry.catalog(last=expected[-1]) == []
    assert registry.catalog(last="b") == expected[4:]
    assert registry.catalog(last="a/b/c") == expected[3:]
    assert registry.uploading_repositories() == ["uploading/only"]  # what purging visits
    assert registry.catalog(n=0) == []
    with pytest.raises(ValueError):
        registry.catalog(n=-1)
    # Directories that are not repositories, nor under one, are not listed.
    registry.driver.put_content(f"{paths.repositories_root()}/x/y/stray", b"")
    assert registry.catalog() == expected


# -- referrers -----------------------------------------------------------------------------------


def test_referrers(repo: Repository) -> None:
    subject_body = image(repo, seed="subject")
    subject = repo.manifests.put("v1", subject_body)
    subject_ref = subject.to_dict()
    empty = push_blob(repo, b"{}", EMPTY_JSON)
    sbom = dumps(
        {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "artifactType": SBOM,
            "config": empty,
            "layers": [push_blob(repo, b'{"sbom": true}', "application/json")],
            "subject": subject_ref,
            "annotations": {"org.opencontainers.image.created": "2026-11-28T00:00:00Z"},
        }
    )
    # No artifactType: the config's media type stands for it.
    signature = image(repo, seed="sig", subject=subject_ref)
    signature_doc = json.loads(signature)
    signature_doc["config"] = push_blob(repo, b'{"sig": 1}', SIGNATURE)
    signature = dumps(signature_doc)
    unrelated = image(repo, seed="other")
    for body in (sbom, signature, unrelated):
        repo.manifests.put(str(sha256(body)), body)

    result = repo.manifests.referrers(subject.digest or "")
    assert result["schemaVersion"] == 2
    assert result["mediaType"] == OCI_INDEX
    by_type = {entry["artifactType"]: entry for entry in result["manifests"]}
    assert set(by_type) == {SBOM, SIGNATURE}
    assert by_type[SBOM] == {
        "mediaType": OCI_MANIFEST,
        "digest": str(sha256(sbom)),
        "size": len(sbom),
        "artifactType": SBOM,
        "annotations": {"org.opencontainers.image.created": "2026-11-28T00:00:00Z"},
    }
    assert by_type[SIGNATURE] == {
        "mediaType": OCI_MANIFEST,
        "digest": str(sha256(signature)),
        "size": len(signature),
        "artifactType": SIGNATURE,
    }
    filtered = repo.manifests.referrers(subject.digest or "", artifact_type=SBOM)
    assert filtered["manifests"] == [by_type[SBOM]]
    assert repo.manifests.referrers(subject.digest or "", "application/none")["manifests"] == []
    assert repo.manifests.referrers(sha256(b"nothing"))["manifests"] == []
    with pytest.raises(BlobInvalidDigestError):
        repo.manifests.referrers("sha256:zz")


def test_subject_need_not_exist(repo: Repository) -> None:
    # The OCI spec: a registry accepts a manifest whose subject it does not (yet) hold.
    missing: dict[str, Any] = {"mediaType": OCI_MANIFEST, "digest": sha256(b"later"), "size": 5}
    body = image(repo, subject=missing, artifact_type=SBOM)
    repo.manifests.put(str(sha256(body)), body)
    assert [e["digest"] for e in repo.manifests.referrers(missing["digest"])["manifests"]] == [
        sha256(body)
    ]


# -- the Go registry's tree -----------------------------------------------------------------------

GO_DIGEST = Digest("sha256:34673efd11ed5362d5ab2f4bd35a42c838f90de61be174d98c7e59f386f0a847")


def copy_tree(source: pathlib.Path, target: pathlib.Path) -> pathlib.Path:
    """A writable copy of the (read-only) fixture tree."""
    shutil.copytree(source, target)
    for directory, dirnames, filenames in os.walk(target):
        for entry in (directory, *(os.path.join(directory, n) for n in dirnames + filenames)):
            os.chmod(entry, 0o755 if os.path.isdir(entry) else 0o644)
    return target


def files_under(root: pathlib.Path) -> dict[str, bytes]:
    return {
        str(path.relative_to(root)): path.read_bytes() for path in root.rglob("*") if path.is_file()
    }


@pytest.fixture
def go_tree(go_fixtures: pathlib.Path, tmp_path: pathlib.Path) -> pathlib.Path:
    return copy_tree(go_fixtures / "tree", tmp_path / "go")


@pytest.mark.parametrize("engine", ["native", "python"])
def test_read_what_go_stored(go_tree: pathlib.Path, engine: str) -> None:
    repo = Registry.filesystem(go_tree, engine=engine).repository("demo/app")
    blob = go_tree / "docker/registry/v2/blobs/sha256/34" / GO_DIGEST[7:] / "data"
    body, descriptor = repo.manifests.get("v1")
    assert body == blob.read_bytes()
    assert descriptor == Descriptor(media_type=OCI_MANIFEST, size=len(body), digest=GO_DIGEST)
    assert repo.manifests.get(GO_DIGEST) == (body, descriptor)
    assert repo.manifests.tags() == ["v1"]
    assert repo.manifests.resolve("v1") == GO_DIGEST
    assert "demo/app" in Registry.filesystem(go_tree).catalog()


@pytest.mark.parametrize("engine", ["native", "python"])
def test_we_write_what_go_writes(
    go_fixtures: pathlib.Path, tmp_path: pathlib.Path, engine: str
) -> None:
    """Push Go's image (its blobs, then its manifest as tag v1) into an empty registry: the
    repository's manifest links and the blobs are exactly the files Go wrote."""
    go_root = go_fixtures / "tree/docker/registry/v2"
    go_body = (go_root / "blobs/sha256/34" / GO_DIGEST[7:] / "data").read_bytes()
    manifest = json.loads(go_body)
    ours = tmp_path / "ours"
    repo = Registry.filesystem(ours, engine=engine).repository("demo/app")
    for entry in [manifest["config"], *manifest["layers"]]:
        hex_ = entry["digest"][7:]
        repo.blobs.put((go_root / "blobs/sha256" / hex_[:2] / hex_ / "data").read_bytes())
    descriptor = repo.manifests.put("v1", go_body, "application/vnd.oci.image.manifest.v1+json")
    assert descriptor.digest == GO_DIGEST

    our_root = ours / "docker/registry/v2"
    go_repo = files_under(go_root / "repositories/demo/app")
    our_repo = files_under(our_root / "repositories/demo/app")
    assert {k: v for k, v in our_repo.items() if not k.startswith("_uploads")} == go_repo
    go_blobs = {k: v for k, v in files_under(go_root / "blobs").items() if "/cb/" not in k}
    assert files_under(our_root / "blobs") == go_blobs


def test_put_into_gos_tree_keeps_its_layout(go_tree: pathlib.Path) -> None:
    """A second tag and a new manifest written into Go's tree sit beside Go's own links, in the
    same shape."""
    registry = Registry.filesystem(go_tree)
    repo = registry.repository("demo/app")
    repo.manifests.put("v2", repo.manifests.get("v1")[0])
    manifests = go_tree / "docker/registry/v2/repositories/demo/app/_manifests"
    v1 = files_under(manifests / "tags/v1")
    assert files_under(manifests / "tags/v2") == v1
    assert v1 == {
        "current/link": GO_DIGEST.encode(),
        f"index/sha256/{GO_DIGEST[7:]}/link": GO_DIGEST.encode(),
    }
    body = image(repo, seed="new")
    digest = repo.manifests.put("v3", body).digest
    assert digest is not None
    assert files_under(manifests / "revisions") == {
        f"sha256/{GO_DIGEST[7:]}/link": GO_DIGEST.encode(),
        f"sha256/{digest.encoded}/link": digest.encode(),
    }
    assert repo.manifests.tags() == ["v1", "v2", "v3"]


def test_invalid_utf8_inside_a_string_is_accepted_as_go_does(repo: Repository) -> None:
    """Go's JSON decoder reads invalid UTF-8 in a string as U+FFFD: such a manifest is usable."""
    manifest = _image_dict(repo)
    manifest["annotations"] = {"note": "PLACEHOLDER"}
    body = dumps(manifest).replace(b"PLACEHOLDER", b"caf\xe9")
    descriptor = repo.manifests.put("v1", body)
    assert repo.manifests.get("v1") == (body, descriptor)
