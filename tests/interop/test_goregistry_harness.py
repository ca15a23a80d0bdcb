"""Self-tests of tests/support/goregistry.py against the real Go registry and skopeo.

They prove the harness drives Debian's docker-registry 2.8.2 correctly (so interop tests can
trust it) and pin down the registry behaviour distblob mirrors: the on-disk layout, the
resumable hash states of an in-progress upload, and state surviving a restart.
"""

from __future__ import annotations

import gzip
import json
import random
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from support import gofixtures
from support.goregistry import (
    OCI_MANIFEST,
    SHA256_STATE_SIZE,
    GoRegistry,
    GoRegistryError,
    RegistryClient,
    RegistryHTTPError,
    make_oci_image_layout,
    run_skopeo,
    sha256_digest,
)

V2 = Path("docker/registry/v2")


def _payload(size: int, seed: int) -> bytes:
    # Seeded so a failure reproduces with the same bytes.
    return random.Random(seed).randbytes(size)


def _gzip_layer(size: int, seed: int) -> bytes:
    # mtime=0 keeps the gzip header, and so the digest, stable across runs.
    return gzip.compress(_payload(size, seed), mtime=0)


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GoRegistry]:
    """One registry for the read/write tests; each test uses its own repository."""
    with GoRegistry(tmp_path_factory.mktemp("goregistry") / "root") as reg:
        yield reg


@pytest.fixture
def client(registry: GoRegistry) -> Iterator[RegistryClient]:
    with registry.client() as c:
        yield c


def test_registry_listens_on_loopback(registry: GoRegistry, client: RegistryClient) -> None:
    assert registry.url == f"http://127.0.0.1:{registry.port}"
    client.ping()
    config = json.loads(registry.config_path.read_text())
    assert config["http"]["addr"] == f"127.0.0.1:{registry.port}"
    assert config["storage"]["filesystem"]["rootdirectory"] == str(registry.root)
    assert f"listening on 127.0.0.1:{registry.port}" in registry.log_text()


@pytest.mark.parametrize(
    ("chunks", "size"),
    [(None, 70_000), (5, 300_001), ([1, 63, 1000], 5_000), (3, 0)],
    ids=["monolithic-put", "five-patches", "explicit-sizes-plus-put-body", "empty"],
)
def test_push_then_read_back(
    client: RegistryClient, chunks: int | list[int] | None, size: int
) -> None:
    data = _payload(size, seed=size)
    digest = client.push_blob("harness/push", data, chunks=chunks)
    assert digest == sha256_digest(data)

    status, headers, body = client.get_blob("harness/push", digest)
    assert status == 200
    assert body == data
    assert headers["Docker-Content-Digest"] == digest
    assert headers["Content-Length"] == str(size)
    assert headers["ETag"] == f'"{digest}"'

    head = client.head_blob("harness/push", digest)
    assert (head.status, head.body) == (200, b"")
    assert head.headers["Content-Length"] == str(size)


def test_range_and_unknown_blob(client: RegistryClient) -> None:
    data = _payload(1000, seed=7)
    digest = client.push_blob("harness/range", data, chunks=2)
    status, headers, body = client.get_blob("harness/range", digest, {"Range": "bytes=10-19"})
    assert (status, body) == (206, data[10:20])
    assert headers["Content-Range"] == "bytes 10-19/1000"

    missing = client.get_blob("harness/range", sha256_digest(b"not pushed"))
    assert missing.status == 404
    assert json.loads(missing.body)["errors"][0]["code"] == "BLOB_UNKNOWN"


def test_unexpected_status_raises(client: RegistryClient) -> None:
    location = client.patch(client.start_upload("harness/errors"), b"abc", 0)
    with pytest.raises(RegistryHTTPError) as info:
        client.finish(location, sha256_digest(b"something else"))
    assert info.value.status == 400
    assert info.value.codes == ["DIGEST_INVALID"]


def test_on_disk_layout(registry: GoRegistry, client: RegistryClient) -> None:
    data = _payload(4096, seed=1)
    digest = client.push_blob("harness/layout/nested", data, chunks=2)
    hex_ = digest.removeprefix("sha256:")
    v2 = registry.root / V2

    assert (v2 / "blobs/sha256" / hex_[:2] / hex_ / "data").read_bytes() == data
    repo = v2 / "repositories/harness/layout/nested"
    # A link holds the bare digest string, no trailing newline.
    assert (repo / "_layers/sha256" / hex_ / "link").read_bytes() == digest.encode()
    uploads = repo / "_uploads"
    assert not uploads.exists() or not any(uploads.iterdir()), "commit removes the upload dir"


def test_in_progress_upload_leaves_hash_states(
    registry: GoRegistry, client: RegistryClient
) -> None:
    location = client.start_upload("harness/progress")
    # 2.8.2 answers with an absolute URL carrying an HMAC-signed _state (name, uuid, offset).
    match = re.fullmatch(
        re.escape(registry.url) + r"/v2/harness/progress/blobs/uploads/([0-9a-f-]{36})\?_state=.+",
        location,
    )
    assert match, location
    upload_dir = registry.root / V2 / "repositories/harness/progress/_uploads" / match[1]
    assert client.upload_status(location)[1] == 0

    data = _payload(1164, seed=2)
    offset = 0
    for size in (100, 64, 1000):
        location = client.patch(location, data[offset : offset + size], offset)
        offset += size
    location, range_end = client.upload_status(location)
    assert range_end == len(data) - 1

    assert (upload_dir / "data").read_bytes() == data
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", (upload_dir / "startedat").read_text())
    states = {p.name: p.read_bytes() for p in (upload_dir / "hashstates/sha256").iterdir()}
    # One state when the session opened and one after every PATCH, named by offset.
    assert sorted(states, key=int) == ["0", "100", "164", "1164"]
    for name, state in states.items():
        n = int(name)
        assert len(state) == SHA256_STATE_SIZE
        assert state[:4] == b"sha\x03"
        assert int.from_bytes(state[-8:], "big") == n, "trailing length = bytes hashed"
        pending = n % 64
        assert state[36 : 36 + pending] == data[n - pending : n], "buffered tail of the input"

    client.cancel(location)
    # 2.8.2 removes the upload dir, then the request's writer Close stores a fresh hash state
    # again, leaving an orphan hashstates/sha256/0; without data/startedat the upload is gone.
    leftovers = {p.relative_to(upload_dir).as_posix() for p in upload_dir.rglob("*") if p.is_file()}
    assert leftovers <= {"hashstates/sha256/0"}
    with pytest.raises(RegistryHTTPError) as info:
        client.upload_status(location)
    assert (info.value.status, info.value.codes) == (404, ["BLOB_UPLOAD_UNKNOWN"])


def test_patch_content_range_is_not_checked_by_2_8_2(client: RegistryClient) -> None:
    """Quirk worth knowing for interop tests: 2.8.2 appends regardless of Content-Range.

    Upstream 3.x answers 416 when the start is not the current size; 2.8.2 ignores the header.
    What it does check is the offset signed into ``_state``: a stale Location gets 404.
    """
    first = client.patch(client.start_upload("harness/quirk"), b"abc", 0)
    second = client.patch(first, b"de", 10)  # wrong start, still accepted
    assert client.upload_status(second)[1] == 4
    with pytest.raises(RegistryHTTPError) as info:
        client.patch(first, b"x", 3)
    assert (info.value.status, info.value.codes) == (404, ["BLOB_UPLOAD_INVALID"])
    client.cancel(second)


def test_skopeo_copies_layout_in_and_out(
    registry: GoRegistry, client: RegistryClient, tmp_path: Path
) -> None:
    layers = [_gzip_layer(50_000, seed=3), _gzip_layer(10, seed=4), b"not really a tar"]
    image = make_oci_image_layout(tmp_path / "oci", layers, tag="v1")
    ref = f"docker://{registry.host}/harness/image:v1"

    # --preserve-digests: without it skopeo gzips the uncompressed layer on the way to a
    # registry, rewriting the manifest (see the next test).
    run_skopeo(
        "copy", "--preserve-digests", "--dest-tls-verify=false", f"oci:{image['path']}:v1", ref
    )
    manifest = client.get_manifest("harness/image", "v1", OCI_MANIFEST)
    assert manifest.body == image["manifest"]
    assert manifest.headers["Docker-Content-Digest"] == image["manifest_digest"]
    assert manifest.headers["Content-Type"] == OCI_MANIFEST
    for digest, data in zip(image["layer_digests"], layers, strict=True):
        assert client.get_blob("harness/image", digest).body == data

    out = tmp_path / "out"
    run_skopeo("copy", "--src-tls-verify=false", ref, f"dir:{out}")
    # The dir: transport names blobs by bare hex digest.
    for digest, data in zip(image["layer_digests"], layers, strict=True):
        assert (out / digest.removeprefix("sha256:")).read_bytes() == data
    assert (out / image["config_digest"].removeprefix("sha256:")).read_bytes() == image["config"]
    assert (out / "manifest.json").read_bytes() == image["manifest"]


def test_skopeo_compresses_uncompressed_layers_by_default(
    registry: GoRegistry, client: RegistryClient, tmp_path: Path
) -> None:
    image = make_oci_image_layout(tmp_path / "oci", [b"plain layer bytes"], tag="t")
    run_skopeo(
        "copy",
        "--dest-tls-verify=false",
        f"oci:{image['path']}:t",
        f"docker://{registry.host}/harness/compressed:t",
    )
    manifest = json.loads(client.get_manifest("harness/compressed", "t", OCI_MANIFEST).body)
    (layer,) = manifest["layers"]
    assert layer["mediaType"] == "application/vnd.oci.image.layer.v1.tar+gzip"
    blob = client.get_blob("harness/compressed", layer["digest"]).body
    assert gzip.decompress(blob) == b"plain layer bytes"


def test_restart_keeps_blob_and_resumable_upload(tmp_path: Path) -> None:
    with GoRegistry(tmp_path / "root") as reg, reg.client() as client:
        data = _payload(10_000, seed=5)
        digest = client.push_blob("harness/restart", data, chunks=2)
        pending = _payload(3000, seed=6)
        location = client.patch(client.start_upload("harness/restart"), pending[:1000], 0)
        port = reg.port

        reg.stop()
        assert not reg.running
        reg.start()
        assert reg.port == port

        # Same client: its keep-alive connection died with the old process and is redone.
        status, _, body = client.get_blob("harness/restart", digest)
        assert (status, body) == (200, data)
        # The Location from before the restart still works because the harness pins
        # http.secret, which signs _state.
        location = client.patch(location, pending[1000:], 1000)
        client.finish(location, sha256_digest(pending))
        assert client.get_blob("harness/restart", sha256_digest(pending)).body == pending
        assert reg.log_text().count("--- harness: start") == 2
    assert "listening on" in reg.log_text(), "log stays readable after exit"


def test_startup_failure_reports_log(tmp_path: Path) -> None:
    with (
        pytest.raises(GoRegistryError, match="exited") as info,
        GoRegistry(tmp_path / "root", extra_config={"version": "9.9"}),
    ):
        pass
    assert "version" in str(info.value).lower()


def test_committed_fixtures_are_what_the_registry_writes(tmp_path: Path) -> None:
    """tests/fixtures/go-registry comes out of the registry again byte for byte, but for the
    upload's start time (the README there says so, and how to regenerate)."""
    out = tmp_path / "go-registry"
    gofixtures.regenerate(out)
    assert gofixtures.differences(gofixtures.FIXTURES, out) == ["upload/startedat"]
    assert gofixtures.started_at_is_valid(out / "upload")
    assert gofixtures.started_at_is_valid(gofixtures.FIXTURES / "upload")
    # The check itself sees a change: one flipped byte in one hash state.
    state = out / "upload/hashstates/sha256/193"
    state.write_bytes(bytes([state.read_bytes()[0] ^ 1]) + state.read_bytes()[1:])
    assert gofixtures.differences(gofixtures.FIXTURES, out) == [
        "upload/hashstates/sha256/193",
        "upload/startedat",
    ]
