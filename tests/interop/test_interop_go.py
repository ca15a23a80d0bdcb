"""distblob and the real Go registry (Debian's docker-registry, distribution 2.8.2) on one root.

The Go registry's ``storage.filesystem.rootdirectory`` is our ``FilesystemDriver`` root, so every
test here has one side write and the other read, resume or serve:

- blobs we commit or ``put`` are served by Go with the right bytes and headers, and our serve
  plans answer as Go does; blobs of other algorithms we store do not disturb it;
- uploads we leave are resumed and committed by Go from our hash state (a corrupt state makes Go
  fail, a well-formed wrong one makes its digest wrong: it reads ours rather than rehashing), and
  uploads Go leaves are resumed by us from Go's state, without rehashing;
- the tree and the upload the real registry wrote (``tests/fixtures/go-registry``) read, serve
  and resume correctly;
- what we write survives a restart of Go, and what Go writes (HTTP pushes, skopeo) reads back.

Every test starts its own registry (about 50 ms) on 127.0.0.1 and stops it at the end.
"""

from __future__ import annotations

import base64
import datetime as dt
import gzip
import hashlib
import json
import random
import shutil
import urllib.parse
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from distblob import Descriptor, Digest, Registry
from distblob.errors import BlobUnknownError, BlobUploadUnknownError
from distblob.hashing import Sha256
from distblob.storage.linked import LinkedBlobStore
from distblob.storage.writer import BlobWriter
from support.goregistry import (
    SHA256_STATE_SIZE,
    GoRegistry,
    RegistryClient,
    RegistryHTTPError,
    make_oci_image_layout,
    run_skopeo,
    upload_location,
)

V2 = Path("docker/registry/v2")
ENGINES = ("native", "python")
engines = pytest.mark.parametrize("engine", ENGINES)

#: Headers of a blob GET that Go and our serve plans must agree on (Date and the API version
#: header are the HTTP layer's).
SERVE_HEADERS = (
    "ETag",
    "Cache-Control",
    "Docker-Content-Digest",
    "Content-Type",
    "Content-Length",
    "Accept-Ranges",
)


def _payload(size: int, seed: int) -> bytes:
    # Seeded, so a failure reproduces with the same bytes.
    return random.Random(seed).randbytes(size)


def _sha256(data: bytes) -> Digest:
    return Digest.from_bytes(data)


def _upload_dir(root: Path, repo: str, upload_id: str) -> Path:
    return root / V2 / "repositories" / repo / "_uploads" / upload_id


def _state_offsets(upload_dir: Path) -> list[int]:
    states = upload_dir / "hashstates" / "sha256"
    if not states.is_dir():
        return []
    return sorted(int(p.name) for p in states.iterdir() if p.name.isdigit())


def _uuid_of(location: str) -> str:
    return urllib.parse.urlsplit(location).path.rsplit("/", 1)[1]


def _state_json(location: str) -> dict[str, Any]:
    """The JSON signed into a Location's ``_state`` (after the 32-byte HMAC)."""
    token = urllib.parse.parse_qs(urllib.parse.urlsplit(location).query)["_state"][0]
    state: dict[str, Any] = json.loads(base64.urlsafe_b64decode(token)[32:])
    return state


def _write_in_sessions(
    store: LinkedBlobStore, data: bytes, chunks: list[int], close_after: set[int]
) -> BlobWriter:
    """Write ``data`` in ``chunks``, closing and resuming after the chunk numbers given."""
    writer = store.create()
    offset = 0
    for number, size in enumerate(chunks):
        writer.write(data[offset : offset + size])
        offset += size
        if number in close_after:
            writer.close()
            writer = store.resume(writer.id)
            assert writer.size == offset
    assert offset == len(data)
    return writer


def _headers(source: Any) -> dict[str, str]:
    """The :data:`SERVE_HEADERS` of a serve plan's headers (a dict) or of an HTTP response's
    (an ``HTTPMessage``, whose lookups ignore case: Go spells ``Etag``)."""
    return {name: source.get(name) for name in SERVE_HEADERS if source.get(name) is not None}


def assert_alias_headers(
    go_headers: Any, store: LinkedBlobStore, alias: Digest, canonical: str
) -> None:
    """A blob asked for by ``alias`` (another algorithm's digest of a blob stored under
    ``canonical``): Go 2.8.2 names it by ``canonical``; we answer with the digest asked for, as
    the OCI conformance suite requires. The other headers are the same."""
    ours = _headers(store.serve_blob(alias).headers)
    assert go_headers["Docker-Content-Digest"] == canonical
    assert (ours["Docker-Content-Digest"], ours["ETag"]) == (str(alias), f'"{alias}"')
    differing = ("Docker-Content-Digest", "ETag")
    theirs = {k: v for k, v in _headers(go_headers).items() if k not in differing}
    assert theirs == {k: v for k, v in ours.items() if k not in differing}


def assert_go_serves(client: RegistryClient, store: LinkedBlobStore, repo: str, data: bytes) -> str:
    """Go serves ``data`` in ``repo`` exactly, and our serve plans give the same headers."""
    digest = _sha256(data)
    status, headers, body = client.get_blob(repo, digest)
    assert (status, body) == (200, data)
    assert headers["Docker-Content-Digest"] == digest
    assert headers["Content-Length"] == str(len(data))
    assert headers["ETag"] == f'"{digest}"'
    plan = store.serve_blob(digest)
    assert plan.status == 200
    assert _headers(plan.headers) == _headers(headers)

    head = client.head_blob(repo, digest)
    assert (head.status, head.body) == (200, b"")
    head_plan = store.serve_blob(digest, method="HEAD")
    assert head_plan.body is None
    assert _headers(head_plan.headers) == _headers(head.headers)

    if len(data) > 2:
        wanted = f"bytes=1-{len(data) - 2}"
        ranged = client.get_blob(repo, digest, {"Range": wanted})
        assert (ranged.status, ranged.body) == (206, data[1:-1])
        range_plan = store.serve_blob(digest, range=wanted)
        assert range_plan.status == 206
        assert _headers(range_plan.headers) == _headers(ranged.headers)
        assert range_plan.headers["Content-Range"] == ranged.headers["Content-Range"]
    return digest


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """The storage root both registries share."""
    return tmp_path / "root"


@pytest.fixture
def go(root: Path) -> Iterator[tuple[GoRegistry, RegistryClient]]:
    """The Go registry over :func:`root`, and a client of it; stopped after the test."""
    with GoRegistry(root) as registry, registry.client() as client:
        yield registry, client


# -- what we store, Go serves ------------------------------------------------------------------


@engines
@pytest.mark.parametrize("size", [0, 1, 64, 300_007])
def test_go_serves_blob_we_commit_in_chunks(
    root: Path, go: tuple[GoRegistry, RegistryClient], engine: str, size: int
) -> None:
    _, client = go
    store = Registry.filesystem(root, engine=engine).repository("ours/chunked").blobs
    data = _payload(size, seed=size)
    third = size // 3
    writer = _write_in_sessions(store, data, [third, third, size - 2 * third], {0, 1})
    descriptor = writer.commit(Descriptor(digest=_sha256(data)))
    assert (descriptor.digest, descriptor.size) == (_sha256(data), size)

    assert_go_serves(client, store, "ours/chunked", data)
    assert not _upload_dir(root, "ours/chunked", writer.id).exists()


@engines
def test_go_serves_blobs_we_put(
    root: Path, go: tuple[GoRegistry, RegistryClient], engine: str
) -> None:
    _, client = go
    store = Registry.filesystem(root, engine=engine).repository("ours/put").blobs
    blobs = [_payload(n, seed=n) for n in (0, 5, 4096, 1 << 20)]
    for data in blobs:
        assert store.put(data).digest == _sha256(data)
    for data in blobs:
        assert_go_serves(client, store, "ours/put", data)
    # Go links per repository too: our blob is not in another repository.
    missing = client.get_blob("ours/elsewhere", _sha256(blobs[1]))
    assert missing.status == 404


@engines
def test_blobs_of_other_algorithms_do_not_break_go(
    root: Path, go: tuple[GoRegistry, RegistryClient], engine: str
) -> None:
    _, client = go
    name = "ours/algorithms"
    store = Registry.filesystem(root, engine=engine).repository(name).blobs
    plain = _payload(10_000, seed=1)
    store.put(plain)
    sha512_blob = store.put(b"hashed with sha512", algorithm="sha512")
    blake3_blob = store.put(b"hashed with blake3", algorithm="blake3")
    # A sha256 upload committed under a sha512 digest: linked under both.
    aliased = _payload(3000, seed=2)
    writer = store.create()
    writer.write(aliased)
    writer.commit(Descriptor(digest=Digest.from_bytes(aliased, "sha512")))
    # An open blake3 upload (with distblob's "algorithm" file) sits in the repository.
    open_upload = store.create(algorithm="blake3")
    open_upload.write(b"unfinished")
    open_upload.close()
    assert (_upload_dir(root, name, open_upload.id) / "algorithm").read_text() == "blake3"

    assert_go_serves(client, store, name, plain)
    assert_go_serves(client, store, name, aliased)
    # 2.8.2 knows sha512 (go-digest registers it): it serves our sha512 blob as it is.
    status, headers, body = client.get_blob(name, str(sha512_blob.digest))
    assert (status, body) == (200, b"hashed with sha512")
    assert headers["Docker-Content-Digest"] == sha512_blob.digest
    # The sha512 link of the aliased blob leads Go to the sha256 blob, as it leads us.
    alias = Digest.from_bytes(aliased, "sha512")
    status, headers, body = client.get_blob(name, alias)
    assert (status, body) == (200, aliased)
    assert_alias_headers(headers, store, alias, _sha256(aliased))
    # blake3 is not registered in 2.8.2: the request is refused, nothing worse.
    refused = client.get_blob(name, str(blake3_blob.digest))
    assert refused.status == 400
    assert json.loads(refused.body)["errors"][0]["code"] == "DIGEST_INVALID"
    # Go keeps working in the repository: a push of its own, served back.
    pushed = _payload(5000, seed=3)
    client.push_blob(name, pushed, chunks=2)
    assert client.get_blob(name, _sha256(pushed)).body == pushed
    assert store.get(_sha256(pushed)) == pushed
    # And our open upload is still ours to finish.
    resumed = store.resume(open_upload.id)
    resumed.write(b" business")
    done = resumed.commit(Descriptor(digest=Digest.from_bytes(b"unfinished business", "blake3")))
    assert done.digest == Digest.from_bytes(b"unfinished business", "blake3")


@engines
def test_sha384_digests_both_ways(
    root: Path, go: tuple[GoRegistry, RegistryClient], engine: str
) -> None:
    """go-digest accepts sha384 from clients: each side reads what the other committed under one."""
    _, client = go
    name = "both/sha384"
    store = Registry.filesystem(root, engine=engine).repository(name).blobs
    theirs = _payload(70_000, seed=5)
    location = client.start_upload(name)
    location = client.patch(location, theirs[:50_000], 0)
    their_alias = Digest.from_bytes(theirs, "sha384")
    client.finish(location, their_alias, theirs[50_000:])
    # Go stored it under sha256 and linked the sha384 alias to it; we follow that link.
    assert store.get(their_alias) == theirs
    assert store.stat(their_alias).digest == _sha256(theirs)

    ours = _payload(40_000, seed=6)
    writer = store.create()
    writer.write(ours)
    our_alias = Digest.from_bytes(ours, "sha384")
    assert writer.commit(Descriptor(digest=our_alias)).digest == _sha256(ours)
    native = store.put(b"hashed with sha384", algorithm="sha384")
    assert native.digest == Digest.from_bytes(b"hashed with sha384", "sha384")
    status, headers, body = client.get_blob(name, our_alias)
    assert (status, body) == (200, ours)
    assert_alias_headers(headers, store, our_alias, _sha256(ours))
    status, headers, body = client.get_blob(name, str(native.digest))
    assert (status, body) == (200, b"hashed with sha384")
    assert headers["Docker-Content-Digest"] == native.digest


# -- uploads we leave, Go finishes -------------------------------------------------------------


@engines
def test_go_resumes_and_commits_our_upload(
    root: Path, go: tuple[GoRegistry, RegistryClient], engine: str
) -> None:
    registry, client = go
    name = "ours/resumed-by-go"
    store = Registry.filesystem(root, engine=engine).repository(name).blobs
    data = _payload(500_000, seed=4)
    ours = 300_001
    writer = _write_in_sessions(store, data[:ours], [1, 99_999, 200_001], {0, 1})
    writer.close()
    upload_dir = _upload_dir(root, name, writer.id)
    # native keeps a Go state at the size; the python engine saves none (so Go rehashes).
    assert (_state_offsets(upload_dir)[-1:] == [ours]) == (engine == "native")

    location = upload_location(registry, name, writer.id, ours, writer.started_at)
    status = client.request("GET", location, expect=(204,))
    assert status.headers["Range"] == f"0-{ours - 1}"
    assert status.headers["Docker-Upload-UUID"] == writer.id
    # Go re-signs exactly what we signed: it read our startedat as we wrote it.
    assert status.headers["Location"] == location
    assert _state_json(location) == {
        "Name": name,
        "UUID": writer.id,
        "Offset": ours,
        "StartedAt": writer.started_at.strftime("%Y-%m-%dT%H:%M:%SZ"),
    }

    location = client.patch(status.headers["Location"], data[ours:400_000], ours)
    assert _state_json(location)["Offset"] == 400_000
    headers = client.finish(location, _sha256(data), data[400_000:])
    assert headers["Docker-Content-Digest"] == _sha256(data)

    assert_go_serves(client, store, name, data)
    assert store.stat(_sha256(data)).size == len(data)
    assert not (upload_dir / "data").exists()


@pytest.mark.parametrize("corruption", ["bad-magic", "truncated", "other-bytes"])
def test_go_reads_our_hash_state(
    root: Path, go: tuple[GoRegistry, RegistryClient], corruption: str
) -> None:
    """Go continues from the state we stored rather than rehashing: spoil it and Go fails.

    A state Go cannot parse fails the request with 500 (as distribution's ``resumeDigest``
    returns the unmarshal error); a well-formed state of other bytes of the same length is
    loaded silently, so Go's digest comes out wrong. We skip the first and the commit check
    catches the second, so the upload stays committable by us.
    """
    registry, client = go
    name = "ours/state"
    store = Registry.filesystem(root, engine="native").repository(name).blobs
    data = _payload(70_000, seed=5)
    ours = 50_001
    writer = _write_in_sessions(store, data[:ours], [20_000, 30_001], {0})
    writer.close()
    state = _upload_dir(root, name, writer.id) / "hashstates" / "sha256" / str(ours)
    good = state.read_bytes()
    assert len(good) == SHA256_STATE_SIZE
    if corruption == "bad-magic":
        state.write_bytes(b"sha\x09" + good[4:])
    elif corruption == "truncated":
        state.write_bytes(good[:100])
    else:
        impostor = Sha256()
        impostor.update(bytes(ours))
        state.write_bytes(impostor.marshal_binary())

    location = upload_location(registry, name, writer.id, ours, writer.started_at)
    if corruption == "other-bytes":
        location = client.patch(location, data[ours:], ours)
        with pytest.raises(RegistryHTTPError) as info:
            client.finish(location, _sha256(data))
        assert (info.value.status, info.value.codes) == (400, ["DIGEST_INVALID"])
        assert client.get_blob(name, _sha256(data)).status == 404
        return
    with pytest.raises(RegistryHTTPError) as info:
        client.patch(location, data[ours:], ours)
    assert (info.value.status, info.value.codes) == (500, ["UNKNOWN"])
    detail = json.loads(info.value.body)["errors"][0]["detail"]
    expected = "identifier" if corruption == "bad-magic" else "size"
    assert detail == f"crypto/sha256: invalid hash state {expected}"
    # Go wrote nothing; we skip the state we cannot read, rehash, and finish the upload.
    resumed = store.resume(writer.id)
    assert (resumed.size, resumed.hashed) == (ours, 20_000)
    resumed.write(data[ours:])
    assert resumed.commit(Descriptor(digest=_sha256(data))).digest == _sha256(data)
    assert_go_serves(client, store, name, data)


# -- uploads Go leaves, we finish --------------------------------------------------------------


@engines
def test_we_resume_upload_go_started(
    root: Path, go: tuple[GoRegistry, RegistryClient], engine: str
) -> None:
    _, client = go
    name = "go/resumed-by-us"
    data = _payload(400_000, seed=6)
    location = client.start_upload(name)
    upload_id = _uuid_of(location)
    offset = 0
    for size in (1, 63, 1000, 70_001):
        location = client.patch(location, data[offset : offset + size], offset)
        offset += size
    assert _state_offsets(_upload_dir(root, name, upload_id)) == [0, 1, 64, 1064, offset]

    store = Registry.filesystem(root, engine=engine).repository(name).blobs
    writer = store.resume(upload_id)
    assert writer.size == offset
    # native loads Go's state at the size: nothing is rehashed. python cannot load states.
    assert writer.hashed == (offset if engine == "native" else 0)
    startedat = (_upload_dir(root, name, upload_id) / "startedat").read_text()
    assert writer.started_at == dt.datetime.fromisoformat(startedat.replace("Z", "+00:00"))
    writer.write(data[offset:])
    assert writer.commit(Descriptor(digest=_sha256(data))).digest == _sha256(data)

    assert_go_serves(client, store, name, data)
    with pytest.raises(RegistryHTTPError) as info:
        client.upload_status(location)
    assert (info.value.status, info.value.codes) == (404, ["BLOB_UPLOAD_UNKNOWN"])


@engines
def test_upload_passed_back_and_forth(
    root: Path, go: tuple[GoRegistry, RegistryClient], engine: str
) -> None:
    """Go starts, we write, Go writes, we write, Go commits: each side resumes the other."""
    registry, client = go
    name = "both/ping-pong"
    store = Registry.filesystem(root, engine=engine).repository(name).blobs
    data = _payload(1_000_003, seed=7)
    cuts = [0, 100_000, 333_333, 600_001, 900_000, len(data)]
    location = client.patch(client.start_upload(name), data[: cuts[1]], 0)
    upload_id = _uuid_of(location)
    for turn in range(1, 5):
        start, end = cuts[turn], cuts[turn + 1]
        if turn % 2:
            writer = store.resume(upload_id)
            assert writer.size == start
            writer.write(data[start:end])
            writer.close()
            location = upload_location(registry, name, upload_id, end, writer.started_at)
        else:
            location = client.patch(location, data[start:end], start)
    # The last turn was ours; Go commits with an empty PUT.
    headers = client.finish(location, _sha256(data))
    assert headers["Docker-Content-Digest"] == _sha256(data)
    assert_go_serves(client, store, name, data)


def test_go_state_after_a_stateless_resume_does_not_fool_us(
    root: Path, go: tuple[GoRegistry, RegistryClient]
) -> None:
    """2.8.2 stores a wrong state after resuming an upload that has none at its size.

    Its writer starts at ``written = 0`` and never reads the data back, so after a PATCH of
    ``n`` bytes it saves, under ``hashstates/sha256/<n>``, the state of those ``n`` bytes only.
    Our native resume takes the newest state not past the size (to hash only the gap), finds
    that one and cannot tell; the commit rehashes the data before calling the digest wrong.
    """
    registry, client = go
    name = "go/wrong-state"
    data = _payload(20_000, seed=8)
    # The python engine saves no hash states, so Go finds none to resume from.
    python_store = Registry.filesystem(root, engine="python").repository(name).blobs
    writer = python_store.create()
    writer.write(data[:5000])
    writer.close()
    upload_dir = _upload_dir(root, name, writer.id)
    assert _state_offsets(upload_dir) == []

    location = upload_location(registry, name, writer.id, 5000, writer.started_at)
    client.patch(location, data[5000:5100], 5000)
    assert _state_offsets(upload_dir) == [100]
    wrong = (upload_dir / "hashstates" / "sha256" / "100").read_bytes()
    of_patch, of_prefix = Sha256(), Sha256()
    of_patch.update(data[5000:5100])
    of_prefix.update(data[:100])
    assert wrong == of_patch.marshal_binary() != of_prefix.marshal_binary()

    store = Registry.filesystem(root, engine="native").repository(name).blobs
    resumed = store.resume(writer.id)
    assert (resumed.size, resumed.hashed) == (5100, 100)
    resumed.write(data[5100:])
    assert resumed.commit(Descriptor(digest=_sha256(data))).digest == _sha256(data)
    assert_go_serves(client, store, name, data)


# -- the tree and the upload the real registry wrote -------------------------------------------


def _copy_writable(source: Path, target: Path) -> Path:
    """Copy a read-only fixture tree, leaving the copy writable (and removable)."""
    shutil.copytree(source, target, copy_function=shutil.copyfile)
    for path in [target, *target.rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)
    return target


def _tree_blobs(root: Path) -> dict[str, Path]:
    """Every blob under ``blobs/`` of a tree, digest -> data file."""
    return {
        f"sha256:{path.parent.name}": path
        for path in (root / V2 / "blobs" / "sha256").glob("*/*/data")
    }


def _linked(root: Path, repo: str) -> set[str]:
    layers = root / V2 / "repositories" / repo / "_layers" / "sha256"
    return {f"sha256:{path.name}" for path in layers.iterdir()}


@engines
def test_fixture_tree_reads_and_serves(tmp_path: Path, go_fixtures: Path, engine: str) -> None:
    root = _copy_writable(go_fixtures / "tree", tmp_path / "tree")
    registry = Registry.filesystem(root, engine=engine)
    blobs = _tree_blobs(root)
    assert len(blobs) == 4
    manifest = (root / V2 / "repositories/demo/app/_manifests/tags/v1/current/link").read_text()
    linked = {repo: _linked(root, repo) for repo in ("demo/app", "fixture")}
    assert len(linked["demo/app"]) == 2
    assert len(linked["fixture"]) == 1
    assert manifest not in linked["demo/app"]

    for digest, path in blobs.items():
        data = path.read_bytes()
        assert hashlib.sha256(data).hexdigest() == Digest(digest).encoded
        assert registry.blobs.stat(digest).size == len(data)
        assert registry.blobs.get(digest) == data
    for repo, digests in linked.items():
        store = registry.repository(repo).blobs
        assert set(store.enumerate()) == digests
        for digest in digests:
            data = blobs[digest].read_bytes()
            descriptor = store.stat(digest)
            assert (descriptor.digest, descriptor.size) == (digest, len(data))
            assert descriptor.media_type == "application/octet-stream"
            assert store.get(digest) == data
            with store.open(digest) as reader:
                assert reader.read() == data
            plan = store.serve_blob(digest)
            assert plan.status == 200
            assert plan.headers["Docker-Content-Digest"] == digest
            assert plan.headers["Content-Length"] == str(len(data))
            assert plan.headers["ETag"] == f'"{digest}"'
            assert plan.body is not None
            assert (plan.body.offset, plan.body.length) == (0, len(data))
            assert plan.body.local_path == str(blobs[digest])
            assert store.serve_blob(digest, if_none_match=f'"{digest}"').status == 304
            tail = store.serve_blob(digest, range="bytes=-10")
            assert tail.body is not None
            assert (tail.status, tail.body.offset, tail.body.length) == (206, len(data) - 10, 10)
        # Blobs of other repositories, and the manifest (linked as a revision, not a layer),
        # are not blobs of this repository.
        for digest in set(blobs) - digests:
            assert not store.exists(digest)
            with pytest.raises(BlobUnknownError):
                store.get(digest)

    # Go answers every (repository, digest) pair as we do, with the same headers.
    with GoRegistry(root) as go, go.client() as client:
        for repo, digests in linked.items():
            store = registry.repository(repo).blobs
            for digest in blobs:
                response = client.get_blob(repo, digest)
                if digest in digests:
                    assert response.status == 200
                    assert response.body == blobs[digest].read_bytes()
                    assert _headers(response.headers) == _headers(store.serve_blob(digest).headers)
                else:
                    assert response.status == 404


@engines
@pytest.mark.parametrize("offset", [1, 1193, 100_000, 105_289, 225_289])
def test_fixture_upload_resumes(
    tmp_path: Path, go_fixtures: Path, go_upload: dict[str, Any], engine: str, offset: int
) -> None:
    """The upload the real registry left (states at each PATCH) resumes from its state.

    The data is cut to ``offset``: at an offset with a state the resume rehashes nothing; at
    100000 it starts from the newest state below (5289) and hashes the gap; states past the
    data (left by the longer upload) are ignored.
    """
    root = tmp_path / "root"
    upload_id = str(uuid.uuid4())
    upload_dir = _copy_writable(go_fixtures / "upload", _upload_dir(root, "fixture", upload_id))
    data: bytes = go_upload["data"]
    (upload_dir / "data").write_bytes(data[:offset])
    with_state = [n for n in go_upload["offsets_with_state"] if n <= offset]

    store = Registry.filesystem(root, engine=engine).repository("fixture").blobs
    writer = store.resume(upload_id)
    assert writer.size == offset
    assert writer.hashed == (max(with_state) if engine == "native" else 0)
    if offset in go_upload["offsets_with_state"] and engine == "native":
        assert writer.hashed == writer.size
    startedat = (go_fixtures / "upload" / "startedat").read_text()
    assert writer.started_at == dt.datetime.fromisoformat(startedat.replace("Z", "+00:00"))
    writer.write(data[offset:])
    descriptor = writer.commit(Descriptor(digest=Digest(go_upload["digest"]), size=len(data)))
    assert (descriptor.digest, descriptor.size) == (go_upload["digest"], go_upload["length"])
    assert not upload_dir.exists()
    assert store.get(go_upload["digest"]) == data

    # Byte for byte the blob the real registry committed.
    fixture_blobs = _tree_blobs(go_fixtures / "tree")
    ours = _tree_blobs(root)
    assert ours[go_upload["digest"]].read_bytes() == fixture_blobs[go_upload["digest"]].read_bytes()
    link = Path("repositories/fixture/_layers/sha256", Digest(go_upload["digest"]).encoded, "link")
    assert (root / V2 / link).read_bytes() == (go_fixtures / "tree" / V2 / link).read_bytes()
    with GoRegistry(root) as go, go.client() as client:
        assert_go_serves(client, store, "fixture", data)


# -- restarts, and reading what Go wrote -------------------------------------------------------


@engines
def test_go_reads_our_writes_across_a_restart(root: Path, engine: str) -> None:
    name = "ours/restart"
    store = Registry.filesystem(root, engine=engine).repository(name).blobs
    first = _payload(200_000, seed=9)
    second = _payload(3000, seed=10)
    third = _payload(70_000, seed=11)
    pending = _payload(90_000, seed=12)
    with GoRegistry(root) as go, go.client() as client:
        _write_in_sessions(store, first, [50_000, 150_000], {0}).commit(
            Descriptor(digest=_sha256(first))
        )
        store.put(second)
        assert_go_serves(client, store, name, first)
        assert_go_serves(client, store, name, second)

        go.stop()
        # While Go is down: a blob, and an upload left open.
        store.put(third)
        writer = store.create()
        writer.write(pending[:40_000])
        writer.close()
        go.start()

        for data in (first, second, third):
            assert_go_serves(client, store, name, data)
        location = upload_location(go, name, writer.id, 40_000, writer.started_at)
        client.finish(location, _sha256(pending), pending[40_000:])
        assert_go_serves(client, store, name, pending)
        assert go.log_text().count("--- harness: start") == 2


@engines
def test_we_read_what_go_wrote(root: Path, tmp_path: Path, engine: str) -> None:
    name = "go/pushed"
    pushed = {
        "monolithic": _payload(100_000, seed=13),
        "chunked": _payload(300_001, seed=14),
        "empty": b"",
    }
    layers = [gzip.compress(_payload(40_000, seed=15), mtime=0), b"a plain layer"]
    image = make_oci_image_layout(tmp_path / "oci", layers, tag="v1")
    with GoRegistry(root) as go, go.client() as client:
        client.push_blob(name, pushed["monolithic"])
        client.push_blob(name, pushed["chunked"], chunks=[1, 64, 100_000])
        client.push_blob(name, pushed["empty"], chunks=1)
        run_skopeo(
            "copy",
            "--preserve-digests",
            "--dest-tls-verify=false",
            f"oci:{image['path']}:v1",
            f"docker://{go.host}/go/image:v1",
        )
        go_headers = {
            digest: _headers(client.get_blob(name, digest).headers)
            for digest in map(_sha256, pushed.values())
        }

    # Go is stopped: we read its files alone.
    registry = Registry.filesystem(root, engine=engine)
    store = registry.repository(name).blobs
    assert set(store.enumerate()) == set(go_headers)
    for data in pushed.values():
        digest = _sha256(data)
        descriptor = store.stat(digest)
        assert (descriptor.digest, descriptor.size) == (digest, len(data))
        assert store.get(digest) == data
        plan = store.serve_blob(digest)
        assert _headers(plan.headers) == go_headers[digest]
        assert plan.body is not None
        assert plan.body.length == len(data)

    image_store = registry.repository("go/image").blobs
    for digest, data in zip(image["layer_digests"], layers, strict=True):
        assert image_store.get(digest) == data
    assert image_store.get(image["config_digest"]) == image["config"]
    # The manifest is a blob too, linked as a revision rather than a layer.
    assert registry.blobs.get(image["manifest_digest"]) == image["manifest"]
    with pytest.raises(BlobUnknownError):
        image_store.stat(image["manifest_digest"])
    with pytest.raises(BlobUploadUnknownError):
        image_store.resume(str(uuid.uuid4()))
    uploads = root / V2 / "repositories" / name / "_uploads"
    assert not uploads.exists() or not any((path / "data").exists() for path in uploads.iterdir())


def test_catalog_matches_go(root: Path, go: tuple[GoRegistry, RegistryClient]) -> None:
    """The same repositories in the same order, pages included: "/" sorts first, and a
    repository holding only an upload in progress is not listed."""
    _, client = go
    registry = Registry.filesystem(root)
    for name in ["z", "a-b", "a/b/c", "a", "a/b", "a.b/c"]:
        registry.repository(name).blobs.put(name.encode())
    registry.repository("uploading/only").blobs.create().close()
    for query in ["", "?n=2", "?n=2&last=a/b", "?last=a/b/c", "?n=3&last=a-b"]:
        resp = client.request("GET", f"/v2/_catalog{query}", expect=(200,))
        go_names = json.loads(resp.body)["repositories"]
        params = urllib.parse.parse_qs(query.lstrip("?"))
        n = int(params["n"][0]) if "n" in params else None
        assert registry.catalog(n=n, last=params.get("last", [None])[0]) == go_names, query
    assert registry.catalog()[:4] == ["a", "a/b", "a/b/c", "a-b"]
