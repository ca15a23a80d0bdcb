"""``distblob serve`` with real clients and peers: skopeo, oras, and the Go registry on one root.

- skopeo copies a multi-layer OCI image into our server and back out, digests preserved;
- the Go registry (distribution 2.8.2) and our server share a root and a secret: an image pushed
  to either is pulled from the other, and an upload started on one continues on the other with
  the Location the first handed out (the signed ``_state`` token is distribution's);
- oras-py pushes a file and pulls it back.
"""

from __future__ import annotations

import email
import email.policy
import gzip
import hashlib
import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from support.goregistry import (
    GoRegistry,
    OciImage,
    check_pulled_dir,
    make_oci_image_layout,
    sha256_digest,
    skopeo_pull,
    skopeo_push,
)
from support.server import DistblobServer

pytestmark = pytest.mark.timeout(120)

SECRET = "shared-secret-for-go-and-distblob"


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("shared-root")


@pytest.fixture(scope="module")
def ours(root: Path) -> Iterator[DistblobServer]:
    with DistblobServer(root, secret=SECRET) as srv:
        yield srv
        assert "unexpected error" not in srv.log_text(), srv.log_text()


@pytest.fixture(scope="module")
def go(root: Path) -> Iterator[GoRegistry]:
    registry = GoRegistry(root)
    registry._secret = SECRET  # the harness pins a random one; share ours instead
    with registry:
        yield registry


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory) -> OciImage:
    layers = [
        gzip.compress(os.urandom(300_000)),
        os.urandom(2_500_000),  # several MiB-sized reads and PATCHes
        b"",
        gzip.compress(b"small layer"),
    ]
    return make_oci_image_layout(tmp_path_factory.mktemp("layout"), layers, tag="v1")


def test_skopeo_round_trip(ours: DistblobServer, image: OciImage, tmp_path: Path) -> None:
    skopeo_push(image, ours.host, "skopeo/app:v1")
    with ours.client() as client:
        resp = client.get_manifest("skopeo/app", "v1")
        assert resp.body == image["manifest"]
        assert resp.headers["Docker-Content-Digest"] == image["manifest_digest"]
    skopeo_pull(ours.host, "skopeo/app:v1", tmp_path / "out")
    check_pulled_dir(tmp_path / "out", image)
    # A second push finds every blob present (HEAD) and changes nothing.
    skopeo_push(image, ours.host, "skopeo/app:v1")


def test_go_pulls_what_we_served(
    ours: DistblobServer, go: GoRegistry, image: OciImage, tmp_path: Path
) -> None:
    skopeo_push(image, ours.host, "shared/from-ours:v1")
    skopeo_pull(go.host, "shared/from-ours:v1", tmp_path / "out")
    check_pulled_dir(tmp_path / "out", image)


def test_we_serve_what_go_received(
    ours: DistblobServer, go: GoRegistry, image: OciImage, tmp_path: Path
) -> None:
    skopeo_push(image, go.host, "shared/from-go:v1")
    skopeo_pull(ours.host, "shared/from-go:v1", tmp_path / "out")
    check_pulled_dir(tmp_path / "out", image)
    with ours.client() as client:
        tags = json.loads(client.request("GET", "/v2/shared/from-go/tags/list").body)
        assert tags == {"name": "shared/from-go", "tags": ["v1"]}


def test_upload_started_on_go_continues_on_ours(ours: DistblobServer, go: GoRegistry) -> None:
    data = os.urandom(3_000_000)
    digest = sha256_digest(data)
    with go.client() as go_client, ours.client() as our_client:
        location = go_client.start_upload("handoff/go-first")
        location = go_client.patch(location, data[:1_000_000], 0)
        # Go's absolute Location, _state and all, sent to our server.
        location = our_client.patch(location, data[1_000_000:2_000_000], 1_000_000)
        _, end = our_client.upload_status(location)
        assert end == 1_999_999
        our_client.finish(location, digest, data[2_000_000:])
        assert go_client.get_blob("handoff/go-first", digest).body == data
        assert our_client.get_blob("handoff/go-first", digest).body == data


def test_upload_started_on_ours_continues_on_go(ours: DistblobServer, go: GoRegistry) -> None:
    data = os.urandom(2_000_000)
    digest = sha256_digest(data)
    with go.client() as go_client, ours.client() as our_client:
        location = our_client.start_upload("handoff/ours-first")
        location = our_client.patch(location, data[:1_200_000], 0)
        # Our relative Location, signed like distribution's, accepted by Go.
        location = go_client.patch(location, data[1_200_000:], 1_200_000)
        go_client.finish(location, digest)
        assert our_client.get_blob("handoff/ours-first", digest).body == data


def test_empty_upload_started_on_ours_continues_on_go(ours: DistblobServer, go: GoRegistry) -> None:
    """A POST leaves no hash state at 0 (nothing to restore); Go resumes from nothing."""
    data = os.urandom(300_000)
    digest = sha256_digest(data)
    with go.client() as go_client, ours.client() as our_client:
        location = our_client.start_upload("handoff/empty-first")
        location = go_client.patch(location, data[:100_000], 0)
        location = our_client.patch(location, data[100_000:200_000], 100_000)
        go_client.finish(location, digest, data[200_000:])
        assert our_client.get_blob("handoff/empty-first", digest).body == data


def test_oras_push_pull(ours: DistblobServer, tmp_path: Path) -> None:
    import oras.client as oras_client

    source = tmp_path / "artifact.txt"
    payload = os.urandom(100_000)
    source.write_bytes(payload)
    client = oras_client.OrasClient(hostname=ours.host, insecure=True)
    target = f"{ours.host}/oras/artifact:v1"
    cwd = os.getcwd()
    os.chdir(tmp_path)  # oras-py pushes paths relative to the working directory
    try:
        resp = client.push(files=[source.name], target=target, quiet=True)
        assert resp.status_code == 201
        out = tmp_path / "pulled"
        files = client.pull(target=target, outdir=str(out))
    finally:
        os.chdir(cwd)
    assert [Path(f).read_bytes() for f in files] == [payload]
    assert hashlib.sha256(payload).hexdigest() in json.dumps(client.get_manifest(target))


def _byteranges(resp: object) -> list[tuple[str, str, bytes]]:
    """The (Content-Range, Content-Type, data) of each part of a multipart/byteranges body."""
    headers, body = resp.headers, resp.body  # type: ignore[attr-defined]
    content_type = headers["Content-Type"]
    assert content_type.startswith("multipart/byteranges; boundary=")
    message = email.message_from_bytes(
        f"Content-Type: {content_type}\r\n\r\n".encode() + body, policy=email.policy.HTTP
    )
    assert message.is_multipart() and not message.defects
    assert int(headers["Content-Length"]) == len(body)
    return [
        (part["Content-Range"], part["Content-Type"], part.get_payload(decode=True))
        for part in message.iter_parts()
    ]


@pytest.mark.parametrize(
    "header",
    [
        "bytes=0-9,100-199",
        "bytes=-5,10-,0-0",
        "bytes=5-5,999999-,7-8",
        "bytes=0-,0-",
        # Overlapping ranges are answered as asked (Go merges none) while they add up to no
        # more than the blob; one byte more and the whole blob is sent.
        "bytes=" + ",".join(f"{i}-{i + 1}" for i in range(150)),
        "bytes=" + ",".join("0-0" for _ in range(301)),
    ],
    ids=["two", "suffix-open-one", "unsatisfiable-dropped", "too-large", "overlap", "sum-over"],
)
def test_several_ranges_as_go_serves_them(
    ours: DistblobServer, go: GoRegistry, header: str
) -> None:
    """One Range header with several ranges: the same parts from Go's ServeContent and from us
    (the boundary aside), or the same fallback to the whole blob."""
    data = os.urandom(300)
    with ours.client() as ours_client, go.client() as go_client:
        digest = ours_client.push_blob("shared/ranges", data)
        theirs = go_client.get_blob("shared/ranges", digest, {"Range": header})
        mine = ours_client.get_blob("shared/ranges", digest, {"Range": header})
        head = ours_client.request(
            "HEAD", f"/v2/shared/ranges/blobs/{digest}", headers={"Range": header}
        )
    assert mine.status == theirs.status
    if theirs.status == 200:
        assert mine.body == theirs.body == data
        return
    assert mine.status == 206
    assert _byteranges(mine) == _byteranges(theirs)
    for first_last, _, part in _byteranges(mine):
        first, last = first_last.removeprefix("bytes ").split("/")[0].split("-")
        assert part == data[int(first) : int(last) + 1]
    assert head.status == 206 and head.body == b""
    assert head.headers["Content-Length"] == mine.headers["Content-Length"]


@pytest.mark.parametrize("count", [1, 100, 101, 150, 600, 2000])
def test_many_ranges_as_go_serves_them(ours: DistblobServer, go: GoRegistry, count: int) -> None:
    """Lazy-pulling clients (zstd:chunked, stargz) ask for hundreds of ranges in one header:
    Go's ServeContent answers them all, multipart, whatever their number; so does distblob."""
    data = os.urandom(3 * count + 100)
    header = "bytes=" + ",".join(f"{3 * i}-{3 * i + 1}" for i in range(count))
    with ours.client() as ours_client, go.client() as go_client:
        digest = ours_client.push_blob("shared/manyranges", data)
        theirs = go_client.get_blob("shared/manyranges", digest, {"Range": header})
        mine = ours_client.get_blob("shared/manyranges", digest, {"Range": header})
    assert mine.status == theirs.status == 206
    if count == 1:
        assert mine.body == theirs.body == data[0:2]
        return
    parts = _byteranges(mine)
    assert parts == _byteranges(theirs)
    assert len(parts) == count
    assert all(part == data[3 * i : 3 * i + 2] for i, (_, _, part) in enumerate(parts))
