"""Hostile input, fuzzed with hypothesis: every case is a typed error or a 4xx, never a 500.

The HTTP cases run against the app in-process (starlette's ``TestClient``) over a filesystem
registry in ``tmp/root``; after each module the test checks that nothing was written beside the
root and that no stored blob changed. Cases: digest strings, ``Content-Range`` and ``Range``
headers, repository names (``..``, absolute, unicode, 10,000 characters), upload ids, manifest
JSON (random values and mutations of a valid manifest), and hash-state files of random bytes
(resume and commit still give the right digest). Request bodies that end early go over a raw
socket to a real ``distblob serve``: the upload stays resumable and no blob is stored.
"""

from __future__ import annotations

import contextlib
import copy
import email
import email.policy
import hashlib
import json
import os
import socket
import string
import urllib.parse
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from distblob import Descriptor, Digest, Registry
from distblob.errors import DistblobError
from distblob.server import create_app
from distblob.storage import paths
from support.goregistry import OCI_CONFIG, OCI_LAYER_TAR, OCI_MANIFEST, sha256_digest
from support.server import DistblobServer

with warnings.catch_warnings():
    # starlette prefers ``httpx2`` now; plain httpx still works for an in-process client.
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient

pytestmark = pytest.mark.timeout(180)

FUZZ = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
REPO = "fuzz/repo"
BLOB = os.urandom(5000)
BLOB_DIGEST = sha256_digest(BLOB)


def snapshot(root: Path) -> dict[str, str]:
    """Every file under ``blobs/`` with the SHA-256 of its bytes."""
    out: dict[str, str] = {}
    for parent, _, files in os.walk(root / "docker/registry/v2/blobs"):
        for name in files:
            path = Path(parent, name)
            out[str(path)] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


class Fuzzed:
    """The app in-process, a stored blob, a valid manifest and an open upload."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self.root = base / "root"
        self.registry = Registry.filesystem(self.root, fsync=False)
        app = create_app(self.registry, secret=b"fuzz", access_log=False)
        self.client = TestClient(app, raise_server_exceptions=True)
        self.check(
            self.client.post(f"/v2/{REPO}/blobs/uploads/?digest={BLOB_DIGEST}", content=BLOB)
        )
        config = b"{}"
        self.check(
            self.client.post(
                f"/v2/{REPO}/blobs/uploads/?digest={sha256_digest(config)}", content=config
            )
        )
        self.manifest: dict[str, Any] = {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {"mediaType": OCI_CONFIG, "digest": sha256_digest(config), "size": 2},
            "layers": [{"mediaType": OCI_LAYER_TAR, "digest": BLOB_DIGEST, "size": len(BLOB)}],
        }
        resp = self.put_manifest("v1", json.dumps(self.manifest).encode())
        assert resp.status_code == 201, resp.text
        self.blobs_before = snapshot(self.root)

    def check(self, resp: Any) -> Any:
        assert resp.status_code < 500, (resp.request.method, resp.request.url, resp.text[:300])
        assert resp.headers["Docker-Distribution-API-Version"] == "registry/2.0"
        unsatisfiable = resp.status_code == 416 and "content-range" in resp.headers
        if resp.status_code >= 400 and resp.request.method != "HEAD" and not unsatisfiable:
            # (A blob GET's 416 is HTTP's, as http.ServeContent's: `Content-Range: bytes */N`.)
            assert resp.headers["Content-Type"].startswith("application/json"), resp.headers
            assert json.loads(resp.content)["errors"]
        return resp

    def put_manifest(self, ref: str, body: bytes) -> Any:
        return self.check(
            self.client.put(
                f"/v2/{REPO}/manifests/{ref}", content=body, headers={"Content-Type": OCI_MANIFEST}
            )
        )

    def start(self) -> str:
        resp = self.check(self.client.post(f"/v2/{REPO}/blobs/uploads/"))
        assert resp.status_code == 202
        location: str = resp.headers["Location"]
        return location


@pytest.fixture(scope="module")
def fuzzed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fuzzed]:
    target = Fuzzed(tmp_path_factory.mktemp("fuzz"))
    with target.client:
        yield target
    # Nothing beside the root, nothing in the root but the registry, no stored blob changed
    # (blobs may only have been added by the valid uploads).
    assert sorted(os.listdir(target.base)) == ["root"]
    assert sorted(os.listdir(target.root)) == ["docker"]
    after = snapshot(target.root)
    assert {k: after[k] for k in target.blobs_before} == target.blobs_before


text = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=80) | st.text(
    string.printable, max_size=80
)


def quote(value: str) -> str:
    return urllib.parse.quote(value, safe="")


# -- digests ----------------------------------------------------------------------------------

digests = (
    text
    | st.builds(
        lambda a, e: f"{a}:{e}", st.sampled_from(["sha256", "sha512", "blake3", "md5", ""]), text
    )
    | st.builds(
        lambda e: "sha256:" + e, st.text("0123456789abcdefABCDEF", min_size=60, max_size=70)
    )
)


@FUZZ
@given(value=digests)
def test_digest_strings(fuzzed: Fuzzed, value: str) -> None:
    try:
        digest = Digest(value)
    except DistblobError:
        pass
    else:
        assert digest == value
    for method in ("GET", "HEAD"):
        fuzzed.check(fuzzed.client.request(method, f"/v2/{REPO}/blobs/{quote(value)}"))
    fuzzed.check(
        fuzzed.client.post(f"/v2/{REPO}/blobs/uploads/?digest={quote(value)}", content=b"x")
    )
    fuzzed.check(fuzzed.client.get(f"/v2/{REPO}/manifests/{quote(value)}"))


# -- Range and Content-Range -------------------------------------------------------------------

numbers = st.integers(0, 10_000).map(str) | st.integers(0, 10**40).map(str) | st.just("")
ranges = text | st.builds(
    lambda unit, a, b, extra: f"{unit}{a}-{b}{extra}",
    st.sampled_from(["bytes=", "bytes ", "", "pages=", "bytes=-"]),
    numbers,
    numbers,
    st.sampled_from(["", "/5000", "/*", ",0-1", " "]),
)


@FUZZ
@given(header=ranges)
def test_range_headers(fuzzed: Fuzzed, header: str) -> None:
    try:
        header.encode("latin-1")
    except UnicodeEncodeError:
        return
    resp = fuzzed.check(
        fuzzed.client.get(
            f"/v2/{REPO}/blobs/{BLOB_DIGEST}", headers={"Range": header.encode("latin-1")}
        )
    )
    assert resp.status_code in (200, 206, 416), resp.status_code
    if resp.status_code == 200:
        assert resp.content == BLOB
    elif resp.status_code == 206 and "Content-Range" in resp.headers:
        first, last = resp.headers["Content-Range"].removeprefix("bytes ").split("/")[0].split("-")
        assert resp.content == BLOB[int(first) : int(last) + 1]
    elif resp.status_code == 206:  # several ranges: every part is the range it names
        content_type = resp.headers["Content-Type"]
        assert content_type.startswith("multipart/byteranges; boundary=")
        message = email.message_from_bytes(
            f"Content-Type: {content_type}\r\n\r\n".encode() + resp.content,
            policy=email.policy.HTTP,
        )
        parts = list(message.iter_parts())
        assert len(parts) > 1 and not message.defects
        for part in parts:
            first, last = part["Content-Range"].removeprefix("bytes ").split("/")[0].split("-")
            assert part.get_payload(decode=True) == BLOB[int(first) : int(last) + 1]


@FUZZ
@given(header=ranges, body=st.binary(max_size=64))
def test_content_range_headers(fuzzed: Fuzzed, header: str, body: bytes) -> None:
    try:
        header.encode("latin-1")
    except UnicodeEncodeError:
        return
    location = fuzzed.start()
    resp = fuzzed.check(
        fuzzed.client.patch(
            location, content=body, headers={"Content-Range": header.encode("latin-1")}
        )
    )
    status = fuzzed.check(fuzzed.client.get(resp.headers.get("Location", location)))
    if resp.status_code == 202:
        assert status.headers["Range"] == f"0-{max(len(body) - 1, 0)}"
    else:
        assert resp.status_code in (400, 416)
        assert status.headers["Range"] == "0-0"
    fuzzed.check(fuzzed.client.delete(location))


# -- names and upload ids ------------------------------------------------------------------------

names = (
    text
    | st.sampled_from(
        ["..", "../..", "/abs", "a/../b", "a//b", "A", "a/.", "%2e%2e", "é/ü", "a" * 256]
    )
    | st.builds(lambda n: "a" * n, st.integers(250, 10_000))
    | st.builds(lambda parts: "/".join(parts), st.lists(text, min_size=1, max_size=5))
)


@FUZZ
@given(name=names)
def test_repository_names(fuzzed: Fuzzed, name: str) -> None:
    with contextlib.suppress(DistblobError):
        fuzzed.registry.repository(name)
    path = quote(name).replace("%2F", "/")
    client = fuzzed.client
    fuzzed.check(client.post(f"/v2/{path}/blobs/uploads/"))
    fuzzed.check(client.get(f"/v2/{path}/blobs/{BLOB_DIGEST}"))
    fuzzed.check(client.get(f"/v2/{path}/tags/list"))
    fuzzed.check(client.put(f"/v2/{path}/manifests/v1", content=b"{}"))
    fuzzed.check(client.post(f"/v2/{REPO}/blobs/uploads/?mount={BLOB_DIGEST}&from={quote(name)}"))


def test_a_10000_character_name_is_a_4xx(fuzzed: Fuzzed) -> None:
    resp = fuzzed.check(fuzzed.client.post(f"/v2/{'a' * 10_000}/blobs/uploads/"))
    assert resp.status_code == 400
    assert json.loads(resp.content)["errors"][0]["code"] == "NAME_INVALID"


@FUZZ
@given(upload_id=text | st.sampled_from(["..", ".", "a/../b", "x" * 5000, "%00"]))
def test_upload_ids(fuzzed: Fuzzed, upload_id: str) -> None:
    with contextlib.suppress(DistblobError):
        fuzzed.registry.repository(REPO).blobs.resume(upload_id)
    target = f"/v2/{REPO}/blobs/uploads/{quote(upload_id)}"
    for method in ("GET", "PATCH", "PUT", "DELETE"):
        fuzzed.check(fuzzed.client.request(method, target + f"?digest={BLOB_DIGEST}", content=b"x"))


# -- manifests ----------------------------------------------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | text,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(text, children, max_size=4),
    max_leaves=12,
)


@FUZZ
@given(value=json_values)
def test_random_json_manifests(fuzzed: Fuzzed, value: Any) -> None:
    resp = fuzzed.put_manifest("fuzzed", json.dumps(value).encode())
    assert 400 <= resp.status_code < 500


@st.composite
def mutated_manifests(draw: st.DrawFn, base: dict[str, Any]) -> dict[str, Any]:
    doc = copy.deepcopy(base)
    for _ in range(draw(st.integers(1, 3))):
        # Walk to a random container, then drop, replace or add a key there.
        node: Any = doc
        while True:
            children = list(node.items()) if isinstance(node, dict) else list(enumerate(node))
            containers = [(k, v) for k, v in children if isinstance(v, (dict, list)) and v]
            if not containers or draw(st.booleans()):
                break
            node = draw(st.sampled_from(containers))[1]
        keys = list(node.keys()) if isinstance(node, dict) else list(range(len(node)))
        if not keys:
            continue
        key = draw(st.sampled_from(keys))
        action = draw(st.sampled_from(["drop", "replace", "add"]))
        if action == "drop":
            del node[key]
        elif action == "replace":
            node[key] = draw(json_values)
        elif isinstance(node, dict):
            node[draw(text)] = draw(json_values)
    return doc


def test_mutated_manifests(fuzzed: Fuzzed) -> None:
    @FUZZ
    @given(doc=mutated_manifests(fuzzed.manifest))
    def run(doc: dict[str, Any]) -> None:
        resp = fuzzed.put_manifest("mutated", json.dumps(doc).encode())
        assert resp.status_code in (201, 400, 404, 413), resp.text
        if resp.status_code == 201:
            # Accepted: it must be readable back byte for byte.
            digest = resp.headers["Docker-Content-Digest"]
            got = fuzzed.check(fuzzed.client.get(f"/v2/{REPO}/manifests/{digest}"))
            assert got.status_code == 200

    run()


# -- hash-state files of random bytes -----------------------------------------------------------


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    state=st.binary(max_size=300) | st.builds(lambda b: b"sha\x03" + b, st.binary(max_size=110)),
    size=st.integers(0, 50_000),
    cut=st.floats(0, 1),
    at_size=st.booleans(),
    engine=st.sampled_from(["native", "python"]),
)
def test_random_hash_states_never_make_a_wrong_digest(
    tmp_path_factory: pytest.TempPathFactory,
    state: bytes,
    size: int,
    cut: float,
    at_size: bool,
    engine: str,
) -> None:
    root = tmp_path_factory.mktemp("states")
    registry = Registry.filesystem(root, engine=engine, fsync=False)
    repo = registry.repository("states/repo")
    data = os.urandom(size)
    first = int(size * cut)
    writer = repo.blobs.create()
    writer.write(data[:first])
    writer.close()
    offset = first if at_size else int(first * cut)
    # Overwrite (or add) the state at that offset with garbage.
    registry.driver.put_content(
        paths.upload_hash_state_path("states/repo", writer.id, "sha256", offset), state
    )
    writer = repo.blobs.resume(writer.id)
    writer.write(data[first:])
    expected = Digest("sha256:" + hashlib.sha256(data).hexdigest())
    assert writer.commit(Descriptor(digest=expected)).digest == expected
    assert repo.blobs.get(expected) == data


# -- bodies that end early -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DistblobServer]:
    with DistblobServer(tmp_path_factory.mktemp("early")) as srv:
        yield srv
        assert "unexpected error" not in srv.log_text()


def _send_and_close(port: int, head: str, body: bytes) -> None:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(head.encode() + body)
        sock.shutdown(socket.SHUT_WR)
        with contextlib.suppress(OSError):
            sock.recv(65536)  # whatever the server answers, if anything


@pytest.mark.parametrize("kind", ["chunked", "short-length", "chunked-put", "short-put"])
def test_bodies_that_end_early(server: DistblobServer, kind: str) -> None:
    data = os.urandom(600_000)
    with server.client() as client:
        location = client.start_upload("early/repo")
        location = client.patch(location, data[:100_000], 0)
        target = client.target(location)
        method = "PUT" if kind.endswith("put") else "PATCH"
        if method == "PUT":
            target += f"&digest={sha256_digest(data)}"
        piece = data[100_000:300_000]
        if kind.startswith("chunked"):
            head = (
                f"{method} {target} HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
                "Content-Type: application/octet-stream\r\n\r\n"
            )
            body = f"{len(piece) * 2:x}\r\n".encode() + piece  # promises more than it sends
        else:
            head = (
                f"{method} {target} HTTP/1.1\r\nHost: x\r\n"
                f"Content-Length: {len(data) - 100_000}\r\n"
                "Content-Type: application/octet-stream\r\n\r\n"
            )
            body = piece
        _send_and_close(server.port, head, body)
        # The upload is still there and resumable from whatever it holds now; no blob stored.
        location, end = client.upload_status(location)
        held = end + 1
        assert 100_000 <= held <= 300_000
        assert client.head_blob("early/repo", sha256_digest(data)).status == 404
        assert not any((server.root / "docker/registry/v2/blobs").rglob("data")) or all(
            p.parent.name != sha256_digest(data)[7:]
            for p in (server.root / "docker/registry/v2/blobs").rglob("data")
        )
        # What it holds is a prefix of what was sent; finish from there.
        location = client.patch(location, data[held:500_000], held)
        client.finish(location, sha256_digest(data), data[500_000:])
        assert client.get_blob("early/repo", sha256_digest(data)).body == data
