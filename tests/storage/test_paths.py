"""distribution's storage layout: exact paths, the Go registry's own tree, and input validation."""

from __future__ import annotations

import os
import pathlib
import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from distblob import Digest, errors
from distblob.storage import paths
from distblob.storage.driver import FilesystemDriver, validate_path

HEX = "7c82fb2e242c797ae53dcee46276fd736825c9d1f5a026af380809fb676bbc5e"
DIGEST = f"sha256:{HEX}"
SHA512 = "sha512:" + "ab" * 64
V2 = "/docker/registry/v2"

# The objects in the Go registry's tree (see tests/fixtures/go-registry/README.md).
MANIFEST = "sha256:34673efd11ed5362d5ab2f4bd35a42c838f90de61be174d98c7e59f386f0a847"
DEMO_LAYERS = [
    "sha256:6d105b0d41ba5d6928d4a7e559bf94155c02380ab8d7ad75f8dce89d4472f8e3",
    "sha256:7c82fb2e242c797ae53dcee46276fd736825c9d1f5a026af380809fb676bbc5e",
]
FIXTURE_BLOB = "sha256:cb980270fb23f414e99bb16653ffc4a685f370ff4d4626bd311925552791df20"


@pytest.fixture(scope="session")
def go_tree(go_fixtures: pathlib.Path) -> pathlib.Path:
    """The driver root of the Go registry's storage tree (it holds ``docker/registry/v2``)."""
    return go_fixtures / "tree"


def on_disk(root: pathlib.Path, driver_path: str) -> pathlib.Path:
    return root / driver_path.lstrip("/")


# -- exact strings -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        (paths.blobs_root(), f"{V2}/blobs"),
        (paths.blobs_root("sha256"), f"{V2}/blobs/sha256"),
        (paths.blob_dir_path(DIGEST), f"{V2}/blobs/sha256/7c/{HEX}"),
        (paths.blob_data_path(DIGEST), f"{V2}/blobs/sha256/7c/{HEX}/data"),
        (paths.blob_data_path(SHA512), f"{V2}/blobs/sha512/ab/{'ab' * 64}/data"),
        (paths.repositories_root(), f"{V2}/repositories"),
        (paths.repository_path("demo/app"), f"{V2}/repositories/demo/app"),
        (paths.layers_root("demo/app"), f"{V2}/repositories/demo/app/_layers"),
        (
            paths.layer_link_path("demo/app", DIGEST),
            f"{V2}/repositories/demo/app/_layers/sha256/{HEX}/link",
        ),
        (paths.manifest_revisions_root("a"), f"{V2}/repositories/a/_manifests/revisions"),
        (
            paths.manifest_revision_link_path("a", DIGEST),
            f"{V2}/repositories/a/_manifests/revisions/sha256/{HEX}/link",
        ),
        (paths.manifest_tags_root("a"), f"{V2}/repositories/a/_manifests/tags"),
        (paths.manifest_tag_path("a", "v1"), f"{V2}/repositories/a/_manifests/tags/v1"),
        (
            paths.manifest_tag_current_path("a", "v1"),
            f"{V2}/repositories/a/_manifests/tags/v1/current/link",
        ),
        (
            paths.manifest_tag_index_path("a", "v1"),
            f"{V2}/repositories/a/_manifests/tags/v1/index",
        ),
        (
            paths.manifest_tag_index_entry_link_path("a", "v1", DIGEST),
            f"{V2}/repositories/a/_manifests/tags/v1/index/sha256/{HEX}/link",
        ),
        (paths.uploads_root("a/b"), f"{V2}/repositories/a/b/_uploads"),
        (paths.upload_dir_path("a/b", "u-1"), f"{V2}/repositories/a/b/_uploads/u-1"),
        (paths.upload_data_path("a/b", "u-1"), f"{V2}/repositories/a/b/_uploads/u-1/data"),
        (
            paths.upload_started_at_path("a/b", "u-1"),
            f"{V2}/repositories/a/b/_uploads/u-1/startedat",
        ),
        (
            paths.upload_hash_states_root("a/b", "u-1", "sha256"),
            f"{V2}/repositories/a/b/_uploads/u-1/hashstates/sha256",
        ),
        (
            paths.upload_hash_state_path("a/b", "u-1", "sha256", 0),
            f"{V2}/repositories/a/b/_uploads/u-1/hashstates/sha256/0",
        ),
        (
            paths.upload_hash_state_path("a/b", "u-1", "sha512", 225289),
            f"{V2}/repositories/a/b/_uploads/u-1/hashstates/sha512/225289",
        ),
        (paths.SCHEDULER_STATE_PATH, "/scheduler-state.json"),
        (paths.ROOT, V2),
    ],
)
def test_exact_paths(path: str, expected: str) -> None:
    assert path == expected
    # Every path of the layout is one the drivers accept.
    assert validate_path(path) == path


def test_digest_objects_and_strings_give_the_same_path() -> None:
    assert paths.blob_data_path(Digest(DIGEST)) == paths.blob_data_path(DIGEST)


def test_algorithm_separators_nest_as_distribution_does() -> None:
    # No registered algorithm has them yet; the mapping is distribution's blobAlgorithmReplacer.
    assert paths._algorithm_dir("tarsum+v1.sha256;x") == "tarsum/v1/sha256/x"
    assert paths._algorithm_dir("sha256") == "sha256"


# -- the Go registry's tree --------------------------------------------------------------------


def test_the_go_registry_wrote_exactly_these_paths(go_tree: pathlib.Path) -> None:
    expected = {
        paths.blob_data_path(MANIFEST),
        paths.blob_data_path(FIXTURE_BLOB),
        *(paths.blob_data_path(layer) for layer in DEMO_LAYERS),
        *(paths.layer_link_path("demo/app", layer) for layer in DEMO_LAYERS),
        paths.layer_link_path("fixture", FIXTURE_BLOB),
        paths.manifest_revision_link_path("demo/app", MANIFEST),
        paths.manifest_tag_current_path("demo/app", "v1"),
        paths.manifest_tag_index_entry_link_path("demo/app", "v1", MANIFEST),
    }
    written = {
        "/" + file.relative_to(go_tree).as_posix() for file in go_tree.rglob("*") if file.is_file()
    }
    assert written == expected


def test_link_files_hold_the_digest_without_newline(go_tree: pathlib.Path) -> None:
    links = {
        paths.layer_link_path("fixture", FIXTURE_BLOB): FIXTURE_BLOB,
        paths.manifest_revision_link_path("demo/app", MANIFEST): MANIFEST,
        paths.manifest_tag_current_path("demo/app", "v1"): MANIFEST,
        paths.manifest_tag_index_entry_link_path("demo/app", "v1", MANIFEST): MANIFEST,
        **{paths.layer_link_path("demo/app", layer): layer for layer in DEMO_LAYERS},
    }
    for link, digest in links.items():
        assert on_disk(go_tree, link).read_bytes() == digest.encode()
        # Every linked digest has its blob in the global store.
        assert on_disk(go_tree, paths.blob_data_path(digest)).is_file()


def test_blob_data_is_stored_under_its_digest(go_tree: pathlib.Path) -> None:
    for data in (go_tree / "docker/registry/v2/blobs").rglob("data"):
        digest = Digest.from_bytes(data.read_bytes())
        assert on_disk(go_tree, paths.blob_data_path(digest)) == data


def test_the_driver_reads_the_go_tree(go_tree: pathlib.Path) -> None:
    driver = FilesystemDriver(go_tree)
    assert (
        driver.get_content(paths.manifest_tag_current_path("demo/app", "v1")) == MANIFEST.encode()
    )
    assert driver.list(paths.repository_path("demo/app")) == [
        paths.layers_root("demo/app"),
        f"{paths.repository_path('demo/app')}/_manifests",
    ]
    assert driver.list(paths.manifest_tags_root("demo/app")) == [
        paths.manifest_tag_path("demo/app", "v1")
    ]
    assert driver.stat(paths.blob_data_path(FIXTURE_BLOB)).size == 225289


def test_upload_files_are_named_as_the_go_registry_names_them(go_fixtures: pathlib.Path) -> None:
    # The fixture upload directory lost its repository and id; compare what lies below them.
    upload = go_fixtures / "upload"
    prefix = paths.upload_dir_path("fixture", "id")
    offsets = sorted(int(name) for name in os.listdir(upload / "hashstates" / "sha256"))
    for offset in offsets:
        path = paths.upload_hash_state_path("fixture", "id", "sha256", offset)
        assert (upload / path.removeprefix(prefix + "/")).is_file()
    started_at = paths.upload_started_at_path("fixture", "id")
    assert (upload / started_at.removeprefix(prefix + "/")).is_file()
    assert paths.upload_hash_states_root("fixture", "id", "sha256").removeprefix(prefix + "/") == (
        "hashstates/sha256"
    )


# -- inputs that must not become paths ---------------------------------------------------------


@pytest.mark.parametrize(
    "digest",
    ["sha256:" + HEX.upper(), "sha256:abc", "sha256/../x", "../" + HEX, "", "sha256:" + HEX + "/"],
)
def test_bad_digests_are_refused(digest: str) -> None:
    with pytest.raises(errors.DigestInvalidError):
        paths.blob_data_path(digest)
    with pytest.raises(errors.DigestInvalidError):
        paths.layer_link_path("a", digest)


def test_unsupported_algorithms_are_refused() -> None:
    with pytest.raises(errors.DigestUnsupportedError):
        paths.blob_data_path("md5:" + "0" * 32)
    for algorithm in ("md5", "sha-256", "../sha256", "sha256/x", ""):
        with pytest.raises(errors.DigestUnsupportedError):
            paths.blobs_root(algorithm)
        with pytest.raises(errors.DigestUnsupportedError):
            paths.upload_hash_state_path("a", "u", algorithm, 0)


@pytest.mark.parametrize("offset", [-1, True, 1.0, "1"])
def test_bad_offsets_are_refused(offset: object) -> None:
    with pytest.raises((TypeError, ValueError)):
        paths.upload_hash_state_path("a", "u", "sha256", offset)  # type: ignore[arg-type]


GOOD_NAMES = [
    "a",
    "0",
    "demo/app",
    "library/ubuntu",
    "a.b",
    "a_b",
    "a__b",
    "a-b",
    "a---b",
    "a.b_c__d-e/f/g",
    "x" * 255,
    "/".join(["a" * 127, "b" * 127]),
]
BAD_NAMES = [
    "",
    "x" * 256,
    "/".join(["a" * 127, "b" * 128]),
    "a/../b",
    "..",
    ".",
    "a/./b",
    "/abs",
    "a/",
    "a//b",
    "A",
    "demo/App",
    "é",
    "caf\u00e9",
    "a b",
    "a\n",
    "a\x00",
    "_uploads",
    "a/_layers",
    "a/_manifests/b",
    "a/_uploads/b",
    "-a",
    "a-",
    ".a",
    "a.",
    "a..b",
    "a___b",
    "a._b",
    "a:b",
    "a\\b",
    "a/b\\..\\c",
]


@pytest.mark.parametrize("name", GOOD_NAMES)
def test_good_repository_names(name: str) -> None:
    assert paths.validate_repository_name(name) == name
    assert paths.repository_path(name) == f"{V2}/repositories/{name}"


@pytest.mark.parametrize("name", BAD_NAMES)
def test_bad_repository_names(name: str) -> None:
    with pytest.raises(errors.NameInvalidError) as raised:
        paths.validate_repository_name(name)
    assert raised.value.name == name
    # Every path function taking a name refuses it before building anything.
    with pytest.raises(errors.NameInvalidError):
        paths.upload_data_path(name, "u")
    with pytest.raises(errors.NameInvalidError):
        paths.layer_link_path(name, DIGEST)


def test_a_name_is_a_str() -> None:
    with pytest.raises(TypeError):
        paths.validate_repository_name(b"a")  # type: ignore[arg-type]


# The OCI grammar, written out once more independently of the module's own pattern.
OCI_NAME = r"[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*(/[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*)*"


@given(
    st.one_of(
        st.text(),
        st.text(alphabet="ab0._-/"),
        st.text(alphabet="aA0._-/\\:é \x00", max_size=20),
        st.lists(st.sampled_from(["a", "b", "..", ".", "_", "__", "-", "/", "x" * 128])).map(
            "".join
        ),
    )
)
def test_name_validation_fuzz(name: str) -> None:
    try:
        accepted = paths.validate_repository_name(name)
    except errors.NameInvalidError:
        assert not (re.fullmatch(OCI_NAME, name) and len(name) <= 255)
        return
    assert accepted == name
    assert re.fullmatch(OCI_NAME, name) and len(name) <= 255
    assert ".." not in name.split("/") and not name.startswith("/")
    assert validate_path(paths.upload_data_path(name, "u"))


@given(st.from_regex(OCI_NAME, fullmatch=True))
def test_every_grammatical_name_up_to_255_is_accepted(name: str) -> None:
    if len(name) <= 255:
        assert paths.validate_repository_name(name) == name
    else:
        with pytest.raises(errors.NameInvalidError):
            paths.validate_repository_name(name)


@pytest.mark.parametrize(
    "upload_id",
    [
        "0195a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b",
        "a",
        "A-Z_a.z=",
        "...",
        "a..b",
        "=" * 10,
        "x" * paths.MAX_UPLOAD_ID_LENGTH,
    ],
)
def test_good_upload_ids(upload_id: str) -> None:
    assert paths.validate_upload_id(upload_id) == upload_id
    assert validate_path(paths.upload_data_path("a", upload_id))


@pytest.mark.parametrize(
    "upload_id",
    [
        "",
        ".",
        "..",
        "a/b",
        "../x",
        "/x",
        "a b",
        "é",
        "a\n",
        "a+b",
        "x" * (paths.MAX_UPLOAD_ID_LENGTH + 1),
    ],
)
def test_bad_upload_ids(upload_id: str) -> None:
    with pytest.raises(errors.BlobUploadUnknownError) as raised:
        paths.validate_upload_id(upload_id)
    assert raised.value.upload_id == upload_id
    with pytest.raises(errors.BlobUploadUnknownError):
        paths.upload_started_at_path("a", upload_id)


def test_a_non_str_upload_id_is_unknown() -> None:
    with pytest.raises(errors.BlobUploadUnknownError):
        paths.validate_upload_id(None)  # type: ignore[arg-type]


@pytest.mark.parametrize("tag", ["v1", "latest", "_", "1.0.0-rc.1", "A_b.C-d", "x" * 128])
def test_good_tags(tag: str) -> None:
    assert paths.validate_tag(tag) == tag


@pytest.mark.parametrize(
    "tag", ["", ".", "..", ".v1", "-v1", "a/b", "../x", "v 1", "é", "x" * 129, "v1\n", "a:b"]
)
def test_bad_tags(tag: str) -> None:
    with pytest.raises(ValueError, match="invalid tag"):
        paths.validate_tag(tag)
    with pytest.raises(ValueError, match="invalid tag"):
        paths.manifest_tag_current_path("a", tag)
