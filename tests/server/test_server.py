"""``distblob serve``: the OCI distribution HTTP API, its protocol edge cases and its config.

One server (a ``python -m distblob.cli serve`` subprocess on a loopback port) serves the whole
module; a second one, with deletes enabled, the delete tests. Every response is checked for the
API version header, and no client input may produce a 500.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
import os
import random
import subprocess
import sys
import threading
import time
import urllib.parse
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from distblob.config import (
    ConfigError,
    RedisConfig,
    RedisPool,
    build_registry,
    parse_config,
    parse_duration,
)
from distblob.digest import Digest
from distblob.registry import Registry
from distblob.server import state
from distblob.storage.cache import (
    DEFAULT_DIAL_TIMEOUT,
    DEFAULT_TIMEOUT,
    InMemoryBlobDescriptorCache,
    RedisBlobDescriptorCache,
)
from distblob.storage.driver import FilesystemDriver, InMemoryDriver
from distblob.storage.driver.s3 import S3Driver
from support import wait_until
from support.goregistry import (
    OCI_CONFIG,
    OCI_LAYER_TAR,
    OCI_MANIFEST,
    RegistryClient,
    Response,
    sha256_digest,
    upload_location,
)
from support.s3server import RcloneS3
from support.server import DistblobServer

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DistblobServer]:
    with DistblobServer(tmp_path_factory.mktemp("root")) as srv:
        yield srv
        assert "unexpected error" not in srv.log_text(), srv.log_text()


@pytest.fixture
def client(server: DistblobServer) -> Iterator[RegistryClient]:
    with server.client() as c:
        yield c


def codes(resp: Response) -> list[str]:
    doc = json.loads(resp.body)
    return [e["code"] for e in doc["errors"]]


def check(resp: Response, status: int, code: str | None = None) -> Response:
    assert resp.status == status, (resp.status, resp.body[:500])
    assert resp.headers["Docker-Distribution-API-Version"] == "registry/2.0"
    if code is not None:
        assert codes(resp) == [code]
        assert resp.headers["Content-Type"] == "application/json"
    return resp


def with_query(location: str, **params: str) -> str:
    parts = urllib.parse.urlsplit(location)
    query = dict(urllib.parse.parse_qsl(parts.query))
    query.update(params)
    return urllib.parse.urlunsplit(parts._replace(query=urllib.parse.urlencode(query)))


def without_state(location: str) -> str:
    return urllib.parse.urlsplit(location).path


def start(client: RegistryClient, repo: str, query: str = "") -> Response:
    resp = check(client.request("POST", f"/v2/{repo}/blobs/uploads/{query}"), 202)
    assert resp.headers["Range"] == "0-0"
    assert resp.headers["Content-Length"] == "0"
    assert resp.headers["Docker-Upload-UUID"] in resp.headers["Location"]
    return resp


# -- basics ------------------------------------------------------------------------------------


def test_base(client: RegistryClient) -> None:
    resp = check(client.request("GET", "/v2/"), 200)
    assert json.loads(resp.body) == {}
    for method in ("GET", "HEAD"):  # without the slash: redirected, as by distribution
        resp = client.request(method, "/v2")
        assert (resp.status, resp.headers["Location"]) == (301, "/v2/")


@pytest.mark.parametrize(
    ("method", "path", "allowed"),
    [
        ("POST", "/v2/", {"GET", "HEAD"}),
        ("PUT", "/v2/lib/x/blobs/sha256:" + "0" * 64, {"GET", "HEAD", "DELETE"}),
        ("PATCH", "/v2/lib/x/tags/list", {"GET", "HEAD"}),
    ],
)
def test_a_method_a_route_does_not_take(
    client: RegistryClient, method: str, path: str, allowed: set[str]
) -> None:
    # 405 UNSUPPORTED, with the Allow header RFC 9110 asks of every 405.
    response = check(client.request(method, path), 405, "UNSUPPORTED")
    assert {m.strip() for m in response.headers["Allow"].split(",")} == allowed


def test_chunked_upload_and_serve(client: RegistryClient) -> None:
    data = os.urandom(3 * 1024 * 1024 + 17)
    digest = client.push_blob("lib/app", data, chunks=[1_000_000, 2_000_000])
    resp = check(client.get_blob("lib/app", digest), 200)
    assert resp.body == data
    assert resp.headers["Docker-Content-Digest"] == digest
    assert resp.headers["ETag"] == f'"{digest}"'
    head = check(client.head_blob("lib/app", digest), 200)
    assert head.body == b""
    assert head.headers["Content-Length"] == str(len(data))
    # Another repository does not see it until it is mounted.
    check(client.get_blob("lib/other", digest), 404, None)
    assert codes(client.get_blob("lib/other", digest)) == ["BLOB_UNKNOWN"]


def test_range_and_conditional(client: RegistryClient) -> None:
    data = bytes(range(256)) * 10
    digest = client.push_blob("lib/range", data)
    part = check(client.get_blob("lib/range", digest, {"Range": "bytes=100-199"}), 206)
    assert part.body == data[100:200]
    assert part.headers["Content-Range"] == f"bytes 100-199/{len(data)}"
    check(client.get_blob("lib/range", digest, {"Range": "bytes=99999-"}), 416)
    not_modified = check(
        client.get_blob("lib/range", digest, {"If-None-Match": f'"{digest}"'}), 304
    )
    assert not_modified.body == b""


def test_monolithic_post(client: RegistryClient) -> None:
    data = b"monolithic blob"
    digest = sha256_digest(data)
    resp = check(
        client.request("POST", f"/v2/lib/mono/blobs/uploads/?digest={digest}", body=data), 201
    )
    assert resp.headers["Location"] == f"/v2/lib/mono/blobs/{digest}"
    assert resp.headers["Docker-Content-Digest"] == digest
    assert client.get_blob("lib/mono", digest).body == data
    wrong = "sha256:" + "1" * 64
    bad = client.request("POST", f"/v2/lib/mono/blobs/uploads/?digest={wrong}", body=data)
    check(bad, 400, "DIGEST_INVALID")
    check(client.get_blob("lib/mono", wrong), 404, "BLOB_UNKNOWN")


@pytest.mark.parametrize(
    ("query", "algorithm"),
    [
        ("", "sha256"),
        ("&digest-algorithm=sha512", "sha512"),
        ("", "sha512"),
        ("&digest-algorithm=sha384", "sha384"),
        ("", "sha384"),
    ],
)
def test_small_monolithic_post_leaves_no_upload(
    server: DistblobServer, client: RegistryClient, query: str, algorithm: str
) -> None:
    """Stored whole, in the digest's algorithm or (another one than the upload's) as an alias."""
    data = os.urandom(3000)
    digest = f"{algorithm}:" + hashlib.new(algorithm, data).hexdigest()
    name = f"lib/mono-{algorithm}{'-alias' if not query and algorithm != 'sha256' else ''}"
    target = f"/v2/{name}/blobs/uploads/?digest={digest}{query}"
    resp = check(client.request("POST", target, body=data), 201)
    assert resp.headers["Docker-Content-Digest"] == digest
    assert client.get_blob(name, digest).body == data
    uploads = server.root / "docker/registry/v2/repositories" / name / "_uploads"
    wait_until(lambda: not uploads.exists() or not any(uploads.iterdir()), 5)
    wrong = f"{algorithm}:" + hashlib.new(algorithm, data + b"!").hexdigest()
    check(client.request("POST", target.replace(digest, wrong), body=data), 400, "DIGEST_INVALID")
    check(client.get_blob(name, wrong), 404, "BLOB_UNKNOWN")


# -- what the OCI conformance suites check, beyond distribution 2.8 ---------------------------


def test_a_chunk_sent_again_on_a_kept_location_is_out_of_order(client: RegistryClient) -> None:
    """A PATCH with Content-Range on the POST's Location after the upload moved on: 416 (the
    range says where the bytes go), and the status on that Location says where it stands."""
    data = os.urandom(42)
    kept = start(client, "lib/kept").headers["Location"]
    headers = {"Content-Type": "application/octet-stream"}
    first = {**headers, "Content-Range": "0-21"}
    moved = check(client.request("PATCH", kept, body=data[:22], headers=first), 202)
    again = client.request("PATCH", kept, body=data[:22], headers=first)
    check(again, 416, "RANGE_INVALID")
    status = check(client.request("GET", kept), 204)
    assert status.headers["Range"] == "0-21"
    assert status.headers["Location"]
    # Without a range the stale Location is refused: it would append the bytes again.
    check(
        client.request("PATCH", kept, body=data[22:], headers=headers), 404, "BLOB_UPLOAD_INVALID"
    )
    rest = {**headers, "Content-Range": "22-41"}
    location = check(client.request("PATCH", kept, body=data[22:], headers=rest), 202).headers[
        "Location"
    ]
    assert moved.headers["Location"] != location
    digest = sha256_digest(data)
    assert client.finish(location, digest)["Docker-Content-Digest"] == digest
    assert client.get_blob("lib/kept", digest).body == data


@pytest.mark.parametrize("size", [100, 2 << 20])  # read whole, and streamed
def test_a_final_put_with_a_chunk_out_of_order(client: RegistryClient, size: int) -> None:
    """The last chunk on the PUT with a Content-Range that is not the upload's size: 416, and the
    upload stays (a right range or none then completes it)."""
    data = os.urandom(size + 1024)
    location = client.patch(start(client, "lib/put-range").headers["Location"], data[:1024], 0)
    digest = sha256_digest(data)
    wrong = {"Content-Type": "application/octet-stream", "Content-Range": f"{2048}-{2047 + size}"}
    target = with_query(location, digest=digest)
    check(client.request("PUT", target, body=data[1024:], headers=wrong), 416, "RANGE_INVALID")
    right = {**wrong, "Content-Range": f"1024-{1023 + size}"}
    check(client.request("PUT", target, body=data[1024:], headers=right), 201)
    assert client.get_blob("lib/put-range", digest).body == data


@pytest.mark.parametrize("method", ["GET", "HEAD", "DELETE"])
def test_a_manifest_by_an_invalid_tag_is_unknown(client: RegistryClient, method: str) -> None:
    resp = client.request(method, "/v2/lib/tags/manifests/.INVALID_MANIFEST_NAME")
    assert resp.status == 404
    if method != "HEAD":
        assert codes(resp) == ["MANIFEST_UNKNOWN"]


@pytest.mark.parametrize("algorithm", ["sha512", "sha384", "blake3"])
def test_a_blob_asked_for_by_an_alias_is_answered_with_that_digest(
    client: RegistryClient, algorithm: str
) -> None:
    """Pushed with a digest of another algorithm than the upload's (stored under its sha256,
    linked under both): GET and HEAD by that digest carry it, and its ETag answers 304."""
    data = os.urandom(5000)
    if algorithm == "blake3":
        import blake3

        digest = "blake3:" + blake3.blake3(data).hexdigest()
    else:
        digest = f"{algorithm}:" + hashlib.new(algorithm, data).hexdigest()
    target = f"/v2/lib/alias-{algorithm}/blobs/uploads/?digest={digest}"
    check(client.request("POST", target, body=data), 201)
    for method in ("GET", "HEAD"):
        resp = check(client.request(method, f"/v2/lib/alias-{algorithm}/blobs/{digest}"), 200)
        assert resp.headers["Docker-Content-Digest"] == digest
        assert resp.headers["ETag"] == f'"{digest}"'
    again = client.get_blob(f"lib/alias-{algorithm}", digest, {"If-None-Match": f'"{digest}"'})
    assert again.status == 304
    canonical = sha256_digest(data)
    resp = check(client.request("HEAD", f"/v2/lib/alias-{algorithm}/blobs/{canonical}"), 200)
    assert resp.headers["Docker-Content-Digest"] == canonical


def test_streamed_patch_and_status(client: RegistryClient) -> None:
    location = start(client, "lib/stream").headers["Location"]
    resp = check(client.request("PATCH", location, body=b"abc"), 202)  # no Content-Range
    assert resp.headers["Range"] == "0-2"
    location = resp.headers["Location"]
    status = check(client.request("GET", location), 204)
    assert status.headers["Range"] == "0-2"
    assert status.headers["Docker-Upload-UUID"] in location
    location = client.patch(status.headers["Location"], b"defg", 3)
    digest = sha256_digest(b"abcdefgh")
    assert client.finish(location, digest, b"h")["Docker-Content-Digest"] == digest
    assert client.get_blob("lib/stream", digest).body == b"abcdefgh"


@pytest.mark.parametrize("size", [10, 3 << 20])
def test_committed_upload_is_gone(
    server: DistblobServer, client: RegistryClient, size: int
) -> None:
    """The 201 comes before the upload's directory is removed; the upload is unknown at once
    and its directory goes right after."""
    data = os.urandom(size)
    location = start(client, "lib/committed").headers["Location"]
    location = client.patch(location, data[:5], 0)
    client.finish(location, sha256_digest(data), data[5:])
    check(client.request("GET", without_state(location)), 404, "BLOB_UPLOAD_UNKNOWN")
    resp = client.request("PATCH", location, body=b"more", headers={"Content-Range": f"{size}-"})
    check(resp, 404, "BLOB_UPLOAD_UNKNOWN")
    upload_id = location.split("?")[0].rsplit("/", 1)[1]
    upload = server.root / "docker/registry/v2/repositories/lib/committed/_uploads" / upload_id
    wait_until(lambda: not upload.exists(), 5)
    assert client.get_blob("lib/committed", sha256_digest(data)).body == data


def test_access_log_lines(server: DistblobServer, client: RegistryClient) -> None:
    """One logfmt line per request, with the bytes sent (also when sent with sendfile)."""
    data = os.urandom(3 << 20)
    digest = sha256_digest(data)
    location = start(client, "lib/logged").headers["Location"]
    client.finish(location, digest, data)
    assert client.get_blob("lib/logged", digest).body == data
    path = json.dumps(f"/v2/lib/logged/blobs/{digest}")

    def logged() -> list[str]:
        return [line for line in server.log_text().splitlines() if f"path={path}" in line]

    wait_until(lambda: bool(logged()), 5)
    (line,) = logged()
    fields = dict(field.split("=", 1) for field in line.split() if "=" in field)
    assert fields["logger"] == "distblob.access"
    assert (fields["method"], fields["status"], fields["bytes"]) == ("GET", "200", str(len(data)))
    assert float(fields["duration_ms"]) >= 0


def test_put_with_last_chunk(client: RegistryClient) -> None:
    location = start(client, "lib/last").headers["Location"]
    location = client.patch(location, b"abc", 0)
    digest = sha256_digest(b"abcdef")
    headers = client.finish(location, digest, b"def")
    assert headers["Location"] == f"/v2/lib/last/blobs/{digest}"
    assert client.get_blob("lib/last", digest).body == b"abcdef"


def test_out_of_order_patch(client: RegistryClient) -> None:
    location = start(client, "lib/order").headers["Location"]
    location = client.patch(location, b"0123", 0)
    resp = client.request("PATCH", location, body=b"xx", headers={"Content-Range": "10-11"})
    check(resp, 416, "RANGE_INVALID")
    resp = client.request("PATCH", location, body=b"xx", headers={"Content-Range": "zz"})
    check(resp, 416, "RANGE_INVALID")
    # The upload is unharmed and continues at 4.
    location = client.patch(location, b"4567", 4)
    client.finish(location, sha256_digest(b"01234567"))


def test_wrong_digest_cancels_upload(client: RegistryClient) -> None:
    location = start(client, "lib/wrong").headers["Location"]
    location = client.patch(location, b"payload", 0)
    wrong = "sha256:" + "2" * 64
    check(client.request("PUT", with_query(location, digest=wrong)), 400, "DIGEST_INVALID")
    check(client.request("GET", without_state(location)), 404, "BLOB_UPLOAD_UNKNOWN")


def test_missing_or_malformed_digest_keeps_upload(client: RegistryClient) -> None:
    location = start(client, "lib/nodigest").headers["Location"]
    location = client.patch(location, b"payload", 0)
    check(client.request("PUT", location), 400, "DIGEST_INVALID")
    check(client.request("PUT", with_query(location, digest="sha256:XYZ")), 400, "DIGEST_INVALID")
    check(client.request("PUT", with_query(location, digest="md5:abc")), 400, "DIGEST_INVALID")
    client.finish(location, sha256_digest(b"payload"))


def test_unknown_upload(client: RegistryClient) -> None:
    target = f"/v2/lib/app/blobs/uploads/{uuid.uuid4()}"
    for method in ("GET", "PATCH", "DELETE"):
        check(client.request(method, target, body=b"x"), 404, "BLOB_UPLOAD_UNKNOWN")
    put = client.request("PUT", f"{target}?digest={sha256_digest(b'x')}", body=b"x")
    check(put, 404, "BLOB_UPLOAD_UNKNOWN")
    check(client.request("GET", "/v2/lib/app/blobs/uploads/.."), 404, "BLOB_UPLOAD_UNKNOWN")


def test_cancel(client: RegistryClient) -> None:
    location = start(client, "lib/cancel").headers["Location"]
    location = client.patch(location, b"data", 0)
    client.cancel(location)
    check(client.request("GET", without_state(location)), 404, "BLOB_UPLOAD_UNKNOWN")


@pytest.mark.parametrize(
    "name", ["Upper/case", "a//b", "a/../b", "-lead", "x" * 300, "a" + "/b" * 200, "a%00b"]
)
def test_bad_names(client: RegistryClient, name: str) -> None:
    digest = sha256_digest(b"")
    check(client.request("GET", f"/v2/{name}/blobs/{digest}"), 400, "NAME_INVALID")
    check(client.request("POST", f"/v2/{name}/blobs/uploads/"), 400, "NAME_INVALID")
    check(client.request("GET", f"/v2/{name}/tags/list"), 400, "NAME_INVALID")


def test_mount(client: RegistryClient) -> None:
    data = b"mount me"
    digest = client.push_blob("lib/source", data)
    resp = check(
        client.request("POST", f"/v2/lib/target/blobs/uploads/?mount={digest}&from=lib/source"),
        201,
    )
    assert resp.headers["Location"] == f"/v2/lib/target/blobs/{digest}"
    assert resp.headers["Docker-Content-Digest"] == digest
    assert client.get_blob("lib/target", digest).body == data
    # Not in the source repository (or a bad source): a new session instead.
    other = sha256_digest(b"absent")
    for source in ("lib/source", "BAD"):
        start(client, "lib/target", f"?mount={other}&from={source}")
    start(client, "lib/target", "?mount=garbage&from=lib/source")


def test_digest_algorithm(client: RegistryClient) -> None:
    data = os.urandom(5000)
    location = start(client, "lib/algo", "?digest-algorithm=sha512").headers["Location"]
    location = client.patch(location, data, 0)
    digest = "sha512:" + hashlib.sha512(data).hexdigest()
    assert client.finish(location, digest)["Docker-Content-Digest"] == digest
    assert client.get_blob("lib/algo", digest).body == data
    bad = client.request("POST", "/v2/lib/algo/blobs/uploads/?digest-algorithm=md5")
    check(bad, 400, "DIGEST_INVALID")
    # An empty parameter is no choice: the default, SHA-256 (as the Go registry, which ignores it).
    location = start(client, "lib/algo", "?digest-algorithm=").headers["Location"]
    location = client.patch(location, data, 0)
    assert client.finish(location, sha256_digest(data))["Docker-Content-Digest"] == sha256_digest(
        data
    )


def test_delete_disabled(client: RegistryClient) -> None:
    digest = client.push_blob("lib/nodelete", b"keep")
    check(client.request("DELETE", f"/v2/lib/nodelete/blobs/{digest}"), 405, "UNSUPPORTED")
    assert client.get_blob("lib/nodelete", digest).status == 200


def test_delete_enabled(tmp_path: Path) -> None:
    with DistblobServer(tmp_path, delete_enabled=True) as srv, srv.client() as c:
        digest = c.push_blob("lib/gone", b"delete me")
        check(c.request("DELETE", f"/v2/lib/gone/blobs/{digest}"), 202)
        check(c.get_blob("lib/gone", digest), 404, "BLOB_UNKNOWN")
        check(c.request("DELETE", f"/v2/lib/gone/blobs/{digest}"), 404, "BLOB_UNKNOWN")


# -- the _state token ------------------------------------------------------------------------


def test_state_token_is_distributions(server: DistblobServer) -> None:
    """Our token is byte for byte the one the harness builds the way distribution 2.8 does."""

    class FakeGo:
        _secret = server.secret
        url = ""

    when = dt.datetime(2026, 11, 28, 2, 46, 45, 123000, tzinfo=dt.UTC)
    upload_id = str(uuid.uuid4())
    theirs = upload_location(FakeGo(), "lib/app", upload_id, 42, when)  # type: ignore[arg-type]
    token = urllib.parse.parse_qs(urllib.parse.urlsplit(theirs).query)["_state"][0]
    ours = state.pack(
        server.secret, state.UploadState("lib/app", upload_id, 42, state.go_time(when))
    )
    assert ours == token
    assert state.unpack(server.secret, token).offset == 42


def test_bad_state(client: RegistryClient, server: DistblobServer) -> None:
    resp = start(client, "lib/state")
    location = resp.headers["Location"]
    upload_id = resp.headers["Docker-Upload-UUID"]
    token = urllib.parse.parse_qs(urllib.parse.urlsplit(location).query)["_state"][0]
    raw = bytearray(base64.urlsafe_b64decode(token))
    raw[0] ^= 1
    tampered = base64.urlsafe_b64encode(bytes(raw)).decode()
    path = without_state(location)
    other = state.pack(server.secret, state.UploadState("lib/state", str(uuid.uuid4()), 0))
    stale = state.pack(server.secret, state.UploadState("lib/state", upload_id, 5))
    wrong_key = state.pack(b"not the secret", state.UploadState("lib/state", upload_id, 0))
    for bad in (tampered, "!!!", "", "QUJD", other, stale, wrong_key, "A" * 5000):
        target = f"{path}?{urllib.parse.urlencode({'_state': bad})}"
        check(client.request("PATCH", target, body=b"x"), 404, "BLOB_UPLOAD_INVALID")
        # The same for a PUT whose last chunk is small enough to be stored in one call: the
        # upload is neither committed nor cancelled.
        put = f"{target}&{urllib.parse.urlencode({'digest': sha256_digest(b'x')})}"
        check(client.request("PUT", put, body=b"x"), 404, "BLOB_UPLOAD_INVALID")
        check(client.request("HEAD", f"/v2/lib/state/blobs/{sha256_digest(b'x')}"), 404)
    # A missing _state is accepted: the upload lives in storage.
    check(client.request("PATCH", path, body=b"ok"), 202)
    client.finish(path, sha256_digest(b"ok"))


# -- manifests, tags, catalog, referrers -------------------------------------------------------


def push_image(client: RegistryClient, repo: str, tag: str, layer: bytes) -> tuple[str, bytes]:
    config = json.dumps({"architecture": "amd64", "os": "linux"}).encode()
    config_digest = client.push_blob(repo, config)
    layer_digest = client.push_blob(repo, layer)
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {"mediaType": OCI_CONFIG, "digest": config_digest, "size": len(config)},
            "layers": [{"mediaType": OCI_LAYER_TAR, "digest": layer_digest, "size": len(layer)}],
        }
    ).encode()
    headers = client.put_manifest(repo, tag, manifest, OCI_MANIFEST)
    digest = sha256_digest(manifest)
    assert headers["Docker-Content-Digest"] == digest
    assert headers["Location"] == f"/v2/{repo}/manifests/{digest}"
    return digest, manifest


def test_manifests_and_tags(client: RegistryClient) -> None:
    digest, manifest = push_image(client, "img/app", "v1", b"layer one")
    for tag in ("v2", "v3", "latest"):
        client.put_manifest("img/app", tag, manifest, OCI_MANIFEST)
    for ref in ("v1", digest):
        resp = check(client.get_manifest("img/app", ref), 200)
        assert resp.body == manifest
        assert resp.headers["Content-Type"] == OCI_MANIFEST
        assert resp.headers["Docker-Content-Digest"] == digest
        assert resp.headers["ETag"] == f'"{digest}"'
        head = check(client.request("HEAD", f"/v2/img/app/manifests/{ref}"), 200)
        assert head.body == b""
        assert head.headers["Content-Length"] == str(len(manifest))
    check(client.get_manifest("img/app", "nope", expect=None), 404, "MANIFEST_UNKNOWN")
    check(client.request("HEAD", "/v2/img/app/manifests/nope"), 404)
    tags = json.loads(check(client.request("GET", "/v2/img/app/tags/list"), 200).body)
    assert tags == {"name": "img/app", "tags": ["latest", "v1", "v2", "v3"]}
    page = check(client.request("GET", "/v2/img/app/tags/list?n=2"), 200)
    assert json.loads(page.body)["tags"] == ["latest", "v1"]
    assert page.headers["Link"] == '</v2/img/app/tags/list?n=2&last=v1>; rel="next"'
    page = check(client.request("GET", "/v2/img/app/tags/list?n=2&last=v1"), 200)
    assert json.loads(page.body)["tags"] == ["v2", "v3"]
    assert "Link" not in page.headers
    check(client.request("GET", "/v2/img/app/tags/list?n=-1"), 400, "PAGINATION_NUMBER_INVALID")
    check(client.request("GET", "/v2/img/none/tags/list"), 404, "NAME_UNKNOWN")
    check(client.request("DELETE", f"/v2/img/app/manifests/{digest}"), 405, "UNSUPPORTED")


def test_manifest_errors(client: RegistryClient) -> None:
    put = client.request
    missing = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {"mediaType": OCI_CONFIG, "digest": sha256_digest(b"?"), "size": 1},
            "layers": [],
        }
    ).encode()
    headers = {"Content-Type": OCI_MANIFEST}
    resp = put("PUT", "/v2/img/bad/manifests/v1", body=missing, headers=headers)
    check(resp, 400, "MANIFEST_BLOB_UNKNOWN")
    resp = put("PUT", "/v2/img/bad/manifests/v1", body=b"{not json", headers=headers)
    check(resp, 400, "MANIFEST_INVALID")
    resp = put("PUT", "/v2/img/bad/manifests/-bad-tag", body=missing, headers=headers)
    check(resp, 400, "TAG_INVALID")
    resp = put("PUT", "/v2/img/bad/manifests/v1", body=b" " * (4 << 20) + b"x", headers=headers)
    check(resp, 413, "MANIFEST_INVALID")


def test_catalog(client: RegistryClient) -> None:
    for name in ("cat/a", "cat/b", "cat/c"):
        client.push_blob(name, name.encode())
    names = json.loads(check(client.request("GET", "/v2/_catalog?n=1000"), 200).body)
    assert {"cat/a", "cat/b", "cat/c"} <= set(names["repositories"])
    page = check(client.request("GET", "/v2/_catalog?n=1&last=cat/a"), 200)
    assert json.loads(page.body) == {"repositories": ["cat/b"]}
    assert page.headers["Link"] == '</v2/_catalog?last=cat%2Fb&n=1>; rel="next"'
    check(client.request("GET", "/v2/_catalog?n=abc"), 400, "PAGINATION_NUMBER_INVALID")


def test_referrers(client: RegistryClient) -> None:
    subject, _ = push_image(client, "img/ref", "v1", b"subject layer")
    config = b"{}"
    config_digest = client.push_blob("img/ref", config)
    artifact = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "artifactType": "application/vnd.example.sbom",
            "config": {"mediaType": OCI_CONFIG, "digest": config_digest, "size": 2},
            "layers": [],
            "subject": {"mediaType": OCI_MANIFEST, "digest": subject, "size": 1},
        }
    ).encode()
    put = client.put_manifest("img/ref", sha256_digest(artifact), artifact, OCI_MANIFEST)
    assert put["OCI-Subject"] == subject  # OCI 1.1: the subject was processed
    resp = check(client.request("GET", f"/v2/img/ref/referrers/{subject}"), 200)
    assert resp.headers["Content-Type"] == "application/vnd.oci.image.index.v1+json"
    index = json.loads(resp.body)
    assert [m["digest"] for m in index["manifests"]] == [sha256_digest(artifact)]
    assert "OCI-Filters-Applied" not in resp.headers
    resp = check(
        client.request("GET", f"/v2/img/ref/referrers/{subject}?artifactType=other/type"), 200
    )
    assert json.loads(resp.body)["manifests"] == []
    assert resp.headers["OCI-Filters-Applied"] == "artifactType"
    check(client.request("GET", "/v2/img/ref/referrers/sha256:zz"), 400, "DIGEST_INVALID")


# -- never a 500 -------------------------------------------------------------------------------


def test_fuzz_never_500(client: RegistryClient, server: DistblobServer) -> None:
    rng = random.Random(1234)
    digest = client.push_blob("fuzz/repo", b"fuzz")
    location = start(client, "fuzz/repo").headers["Location"]
    pieces = [
        "v2", "fuzz", "repo", "blobs", "uploads", "manifests", "tags", "list", "referrers",
        "_catalog", digest, "sha256:", "..", ".", "%2e%2e", "%00", "%ff", "\u00e9", "A" * 300,
        "", "latest", str(uuid.uuid4()), "blake3:" + "0" * 64, "sha512:00",
    ]  # fmt: skip
    queries = [
        "", "?digest=" + digest, "?digest=%ff", "?mount=x&from=..", "?n=99999999999",
        "?last=%00", "?_state=%%%", "?digest-algorithm=blake3", "?artifactType=",
        "?" + urllib.parse.urlencode({"_state": "A" * 100}),
    ]  # fmt: skip
    headers_pool: list[dict[str, str]] = [
        {},
        {"Range": "bytes=-0"},
        {"Range": "bytes=5-1"},
        {"Range": "pages=1-2"},
        {"Range": "bytes=0-1,3-4"},
        {"Content-Range": "5-3"},
        {"Content-Range": "99999999999999999999999999-1"},
        {"If-None-Match": "*"},
        {"Content-Type": "\u00e9"},
        {"Accept": "*/*"},
    ]
    methods = ["GET", "HEAD", "PUT", "POST", "PATCH", "DELETE", "OPTIONS"]
    targets = [location, f"/v2/fuzz/repo/blobs/{digest}", "/v2/", "/v2/_catalog"]
    for _ in range(400):
        if rng.random() < 0.2:
            target = rng.choice(targets)
        else:
            parts = [rng.choice(pieces) for _ in range(rng.randint(1, 6))]
            target = "/" + "/".join(["v2", *parts]) + rng.choice(queries)
        target = urllib.parse.quote(target, safe="/?=&%:")
        method = rng.choice(methods)
        body = rng.choice([b"", b"x" * rng.randint(1, 3000)]) if method != "GET" else b""
        resp = client.request(method, target, body=body, headers=rng.choice(headers_pool))
        assert resp.status < 500, (method, target, resp.status, resp.body[:300])
        assert resp.headers["Docker-Distribution-API-Version"] == "registry/2.0"
        if resp.status >= 400 and method != "HEAD":
            assert json.loads(resp.body)["errors"], (method, target)
    assert "unexpected error" not in server.log_text()


# -- config ------------------------------------------------------------------------------------


def test_config_defaults_and_values() -> None:
    config = parse_config(None)
    assert (config.root, config.addr, config.secret) == ("./distblob-data", "127.0.0.1:5000", None)
    config = parse_config(
        {
            "version": 0.1,
            "log": {"level": "debug"},
            "storage": {
                "filesystem": {"rootdirectory": "/srv"},
                "delete": {"enabled": True},
                "maintenance": {"uploadpurging": {"age": "1h30m", "interval": "30m"}},
            },
            "http": {"addr": ":5001", "secret": "s", "draintimeout": "1m"},
            "proxy": {"remoteurl": "https://example.com", "ttl": "0"},
        }
    )
    assert config.delete_enabled and config.root == "/srv" and config.secret == "s"
    assert config.drain_timeout == 60 and parse_config(None).drain_timeout == 5
    assert config.upload_purging.age == 5400 and config.upload_purging.interval == 1800
    assert config.host_port == ("0.0.0.0", 5001)
    assert config.proxy is not None and config.proxy.ttl == 0
    empty_ttl = parse_config({"proxy": {"remoteurl": "https://example.com", "ttl": None}})
    assert empty_ttl.proxy is not None and empty_ttl.proxy.ttl == 168 * 3600
    assert parse_duration("168h") == 168 * 3600
    assert parse_duration("1.5s") == 1.5


@pytest.mark.parametrize(
    ("doc", "key"),
    [
        ({"version": "0.2"}, "version"),
        ({"storage": {"s3": {}}}, "storage.s3.bucket"),
        ({"storage": {"azure": {}}}, "storage.azure"),
        ({"storage": {"filesystem": {}, "inmemory": None}}, "storage"),
        ({"storage": {"inmemory": {"size": 1}}}, "storage.inmemory.size"),
        ({"storage": {"redirect": {"disable": "yes"}}}, "storage.redirect.disable"),
        ({"storage": {"redirect": {"enabled": False}}}, "storage.redirect.enabled"),
        ({"storage": {"cache": {"blobdescriptor": "memcached"}}}, "storage.cache.blobdescriptor"),
        ({"storage": {"cache": {"layerinfo": "inmemory"}}}, "storage.cache.layerinfo"),
        ({"storage": {"cache": {"blobdescriptor": "redis"}}}, "redis.addr"),
        ({"redis": "localhost:6379"}, "redis"),
        ({"redis": {"password": "p"}}, "redis.addr"),
        ({"redis": {"addr": "localhost"}}, "redis.addr"),
        ({"redis": {"addr": "h:6379", "db": -1}}, "redis.db"),
        ({"redis": {"addr": "h:6379", "db": True}}, "redis.db"),
        ({"redis": {"addr": "h:6379", "password": 5}}, "redis.password"),
        ({"redis": {"addr": "h:6379", "dialtimeout": "10 ms"}}, "redis.dialtimeout"),
        ({"redis": {"addr": "h:6379", "readtimeout": 5}}, "redis.readtimeout"),
        ({"redis": {"addr": "h:6379", "writetimeout": "1d"}}, "redis.writetimeout"),
        ({"redis": {"addr": "h:6379", "tls": {"enabled": "yes"}}}, "redis.tls.enabled"),
        ({"redis": {"addr": "h:6379", "pool": []}}, "redis.pool"),
        ({"redis": {"addr": "h:6379", "pool": {"maxactive": "64"}}}, "redis.pool.maxactive"),
        ({"redis": {"addr": "h:6379", "pool": {"maxidle": -1}}}, "redis.pool.maxidle"),
        ({"redis": {"addr": "h:6379", "pool": {"idletimeout": "1y"}}}, "redis.pool.idletimeout"),
        ({"redis": {"addr": "h:6379", "pool": {"wait": True}}}, "redis.pool.wait"),
        ({"storage": {"delete": {"enabled": "yes"}}}, "storage.delete.enabled"),
        (
            {"storage": {"maintenance": {"uploadpurging": {"age": "7d"}}}},
            "storage.maintenance.uploadpurging.age",
        ),
        ({"http": {"addr": "nowhere"}}, "http.addr"),
        ({"http": {"addr": "h:99999"}}, "http.addr"),
        ({"http": {"secret": 5}}, "http.secret"),
        ({"http": {"draintimeout": "soon"}}, "http.draintimeout"),
        ({"http": {"draintimeout": 10}}, "http.draintimeout"),
        ({"http": {"tls": {"key": "server.key"}}}, "http.tls.certificate"),
        ({"http": {"tls": {"letsencrypt": {"email": "a@b"}}}}, "http.tls.letsencrypt"),
        ({"log": {"level": "loud"}}, "log.level"),
        ({"log": {"formatter": "xml"}}, "log.formatter"),
        ({"proxy": {"username": "u"}}, "proxy.remoteurl"),
        ({"proxy": {"remoteurl": "https://x", "ttl": 5}}, "proxy.ttl"),
        ({"auth": {}}, "auth"),
        (["a list"], ""),
    ],
)
def test_config_errors(doc: Any, key: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(doc)
    assert info.value.key == key


def test_config_storage_cache_and_redis(tmp_path: Path) -> None:
    config = parse_config(None)
    assert (config.driver, config.redirect, config.blob_descriptor_cache) == (
        "filesystem",
        True,
        "inmemory",
    )
    assert config.redis is None and config.s3 is None
    config = parse_config(
        {
            "storage": {
                "inmemory": None,
                "redirect": {"disable": True},
                "cache": {"blobdescriptor": "redis"},
            },
            "redis": {
                "addr": "127.0.0.1:6390",
                "password": "secret",
                "db": 3,
                "dialtimeout": "10ms",
                "readtimeout": "250ms",
                "writetimeout": "2s",
                "pool": {"maxidle": 16, "maxactive": 64, "idletimeout": "300s"},
            },
        }
    )
    assert (config.driver, config.redirect, config.blob_descriptor_cache) == (
        "inmemory",
        False,
        "redis",
    )
    assert config.redis == RedisConfig(
        addr="127.0.0.1:6390",
        password="secret",
        db=3,
        dialtimeout=0.01,
        readtimeout=0.25,
        writetimeout=2.0,
        pool=RedisPool(maxidle=16, maxactive=64, idletimeout=300.0),
    )
    assert "secret" not in repr(config)

    registry = build_registry(config)
    assert isinstance(registry.driver, InMemoryDriver) and not registry.redirect
    cache = registry.descriptor_cache
    assert isinstance(cache, RedisBlobDescriptorCache)
    pool = cache.client.connection_pool
    assert pool.max_connections == 64
    assert {
        key: pool.connection_kwargs[key]
        for key in ("host", "port", "db", "password", "socket_connect_timeout", "socket_timeout")
    } == {
        "host": "127.0.0.1",
        "port": 6390,
        "db": 3,
        "password": "secret",
        "socket_connect_timeout": 0.01,
        "socket_timeout": 2.0,  # the longer of readtimeout and writetimeout
    }
    cache.close()

    # Timeouts left out are not none (distribution's default) but 1 s; 0 is none.
    assert parse_config({"redis": {"addr": "h:6379"}}).redis == RedisConfig(
        addr="h:6379",
        dialtimeout=DEFAULT_DIAL_TIMEOUT,
        readtimeout=DEFAULT_TIMEOUT,
        writetimeout=DEFAULT_TIMEOUT,
    )
    assert DEFAULT_DIAL_TIMEOUT == DEFAULT_TIMEOUT == 1.0
    for timeouts, expected in (
        ({}, {"socket_connect_timeout": 1.0, "socket_timeout": 1.0}),
        (
            {"dialtimeout": 0, "readtimeout": "0s", "writetimeout": "0"},
            {"socket_connect_timeout": None, "socket_timeout": None},
        ),
    ):
        config = parse_config(
            {
                "storage": {"inmemory": None, "cache": {"blobdescriptor": "redis"}},
                "redis": {"addr": "127.0.0.1:6390", **timeouts},
            }
        )
        cache = build_registry(config).descriptor_cache
        assert isinstance(cache, RedisBlobDescriptorCache)
        kwargs = cache.client.connection_pool.connection_kwargs
        assert {key: kwargs[key] for key in expected} == expected
        assert cache.journal is not None  # in the registry's storage
        cache.close()

    # A redis section alone changes nothing; the in-memory cache is the default.
    config = parse_config(
        {"storage": {"filesystem": {"rootdirectory": str(tmp_path)}}, "redis": {"addr": ":6379"}}
    )
    registry = build_registry(config)
    assert isinstance(registry.descriptor_cache, InMemoryBlobDescriptorCache)
    assert isinstance(registry.driver, FilesystemDriver) and registry.redirect


@pytest.mark.parametrize(
    ("s3", "key"),
    [
        ({"bucket": "b", "region": "r", "chunksize": "big"}, "storage.s3.chunksize"),
        ({"bucket": "b", "region": "r", "secure": "maybe"}, "storage.s3.secure"),
        ({"bucket": "b", "regoin": "r"}, "storage.s3.regoin"),
        ({"region": "r"}, "storage.s3.bucket"),
        ("bucket", "storage.s3"),
    ],
)
def test_config_s3_errors_name_the_parameter(s3: Any, key: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config({"storage": {"s3": s3}})
    assert info.value.key == key


def test_config_builds_a_registry_over_s3(s3_server: RcloneS3) -> None:
    parameters = s3_server.parameters(s3_server.new_bucket(), rootdirectory="/registry")
    registry = build_registry(parse_config({"storage": {"s3": parameters}}))
    assert isinstance(registry.driver, S3Driver) and registry.redirect
    repo = registry.repository("config/s3")
    descriptor = repo.blobs.put(b"stored through the config", "application/x-test")
    assert repo.blobs.get(str(descriptor.digest)) == b"stored through the config"
    assert repo.blobs.serve_blob(str(descriptor.digest)).status == 307  # a presigned URL
    # storage.redirect.disable: the registry serves the bytes itself.
    config = parse_config({"storage": {"s3": parameters, "redirect": {"disable": True}}})
    registry = build_registry(config)
    assert isinstance(registry.driver, S3Driver) and not registry.redirect
    plan = registry.repository("config/s3").blobs.serve_blob(str(descriptor.digest))
    assert plan.status == 200 and plan.headers["Content-Type"] == "application/octet-stream"


def test_cli_rejects_bad_config(tmp_path: Path) -> None:
    path = tmp_path / "config.yml"
    path.write_text("version: 0.1\nstorage:\n  delete:\n    enabeld: true\n")
    proc = subprocess.run(
        [sys.executable, "-m", "distblob.cli", "serve", "--config", str(path)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert proc.returncode == 2
    assert "storage.delete.enabeld" in proc.stderr
    proc = subprocess.run(
        [sys.executable, "-m", "distblob.cli", "serve", "--addr", "bad"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert proc.returncode == 2 and "--addr" in proc.stderr
    # --root is the filesystem root: with another driver it is a mistake, not an override.
    path.write_text("version: 0.1\nstorage:\n  inmemory: {}\n")
    proc = subprocess.run(
        [sys.executable, "-m", "distblob.cli", "serve", "--config", str(path), "--root", "x"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert proc.returncode == 2 and "--root" in proc.stderr and "inmemory" in proc.stderr


def test_digest_helper_is_valid() -> None:
    assert Digest(sha256_digest(b"x"))


# -- stateless: two processes, and the app in-process over any driver --------------------------


def test_two_servers_alternate_on_one_upload(server: DistblobServer) -> None:
    data = os.urandom(2_500_000)
    with (
        DistblobServer(server.root, secret=server.secret) as second,
        server.client() as one,
        second.client() as two,
    ):
        location = one.start_upload("lib/alternate")
        offset = 0
        for i, size in enumerate((700_000, 900_000, 600_000)):
            location = (one, two)[i % 2].patch(location, data[offset : offset + size], offset)
            offset += size
        two.finish(location, sha256_digest(data), data[offset:])
        assert one.get_blob("lib/alternate", sha256_digest(data)).body == data


def test_app_in_process_over_memory_driver() -> None:
    import threading
    import time

    import uvicorn

    from distblob import Registry
    from distblob.server import create_app
    from support.goregistry import free_port

    app = create_app(Registry.in_memory(), secret=b"in-process", access_log=False)
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 10
        while not server.started:
            assert time.monotonic() < deadline and thread.is_alive()
            time.sleep(0.02)
        with RegistryClient(f"http://127.0.0.1:{port}") as client:
            data = os.urandom(2_300_000)  # more than one read of the driver's reader
            digest = client.push_blob("mem/app", data, chunks=2)
            assert check(client.get_blob("mem/app", digest), 200).body == data
            part = check(client.get_blob("mem/app", digest, {"Range": "bytes=1048570-"}), 206)
            assert part.body == data[1048570:]
    finally:
        server.should_exit = True
        thread.join(10)


def test_client_disconnect_mid_download(client: RegistryClient, server: DistblobServer) -> None:
    import socket

    data = os.urandom(8 << 20)
    digest = client.push_blob("lib/big", data, chunks=4)
    for _ in range(3):
        with socket.create_connection(("127.0.0.1", server.port)) as sock:
            sock.sendall(f"GET /v2/lib/big/blobs/{digest} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
            assert sock.recv(65536)
    # The server is fine afterwards.
    assert client.get_blob("lib/big", digest).body == data


# -- upload purging ----------------------------------------------------------------------------


def _old_upload(root: Path, repo: str, started: str) -> str:
    from distblob import Registry
    from distblob.storage import paths

    registry = Registry.filesystem(root)
    writer = registry.repository(repo).blobs.create()
    writer.write(b"partial")
    writer.close()
    registry.driver.put_content(
        paths.upload_started_at_path(repo, writer.id), started.encode("ascii")
    )
    return writer.id


def test_purge_uploads_dry_run_and_real(tmp_path: Path) -> None:
    from distblob import Registry
    from distblob.storage.purge import purge_uploads

    old = _old_upload(tmp_path, "purge/a", "2020-01-01T00:00:00Z")
    unreadable = _old_upload(tmp_path, "purge/a", "not a time")
    fresh = _old_upload(tmp_path, "purge/b", "2099-01-01T00:00:00Z")
    registry = Registry.filesystem(tmp_path)
    cutoff = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    assert purge_uploads(registry, cutoff, dry_run=True) == [("purge/a", old)]
    assert registry.repository("purge/a").blobs.resume(old).size == 7
    assert purge_uploads(registry, cutoff) == [("purge/a", old)]
    assert purge_uploads(registry, cutoff) == []
    from distblob.storage import paths

    for repo, upload_id in (("purge/a", unreadable), ("purge/b", fresh)):
        assert registry.driver.stat(paths.upload_data_path(repo, upload_id)).size == 7


def test_server_purges_old_uploads_at_startup(tmp_path: Path) -> None:
    import time

    old = _old_upload(tmp_path, "purge/srv", "2020-01-01T00:00:00Z")
    fresh = _old_upload(tmp_path, "purge/srv", state.go_time(dt.datetime.now(dt.UTC))[:19] + "Z")
    purging = {"enabled": True, "age": "1h", "interval": "24h", "dryrun": False}
    extra = {"storage": {"maintenance": {"uploadpurging": purging}}}
    with DistblobServer(tmp_path, extra_config=extra) as srv, srv.client() as c:
        deadline = time.monotonic() + 10
        while c.request("GET", f"/v2/purge/srv/blobs/uploads/{old}").status != 404:
            assert time.monotonic() < deadline, srv.log_text()
            time.sleep(0.05)
        check(c.request("GET", f"/v2/purge/srv/blobs/uploads/{fresh}"), 204)


def _patch_into(
    server: DistblobServer, location: str, body: bytes, answers: dict[bytes, Any]
) -> None:
    with server.client() as own:
        answers[body] = own.request("PATCH", location, body=body)


@pytest.mark.parametrize("size", [100, 2 << 20])
def test_concurrent_patches_of_one_upload_never_store_wrong_bytes(
    server: DistblobServer, size: int
) -> None:
    """Two PATCHes racing on one upload with the same Location (a retry, or a hostile
    client): one writes, the other is refused; the blob the PUT stores under A's digest is A.
    Before uploads were locked, about 1 try in 10 stored B under A's digest, for every
    repository to get."""
    for attempt in range(10):
        a, b = os.urandom(size), os.urandom(size)
        with server.client() as client:
            location = start(client, f"race/patch{size}").headers["Location"]
        answers: dict[bytes, Any] = {}
        threads = [
            threading.Thread(target=_patch_into, args=(server, location, body, answers))
            for body in (a, b)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        statuses = sorted(answers[body].status for body in (a, b))
        assert statuses in ([202, 202], [202, 404], [202, 416]), statuses
        with server.client() as client:
            if answers[a].status == 202:
                put = client.request(
                    "PUT",
                    f"{answers[a].headers['Location']}&digest={sha256_digest(a)}",
                    body=b"",
                )
                if put.status == 201:
                    got = client.get_blob(f"race/patch{size}", sha256_digest(a))
                    assert got.body == a, f"attempt {attempt}: B stored under A's digest"
            stored = client.get_blob(f"race/patch{size}", sha256_digest(b))
            assert stored.status == 404 or stored.body == b


def _put_into(server: DistblobServer, target: str, body: bytes, answers: list[int]) -> None:
    with server.client() as own:
        answers.append(own.request("PUT", target, body=body).status)


@pytest.mark.parametrize("size", [100, 2 << 20])
def test_concurrent_final_puts_of_one_upload(server: DistblobServer, size: int) -> None:
    """A client retrying its final PUT while the first is still running: one 201, the others
    find the upload gone (404), never a 500."""
    for _ in range(5):
        data = os.urandom(size)
        with server.client() as client:
            location = start(client, f"race/put{size}").headers["Location"]
        target = f"{location}&digest={sha256_digest(data)}"
        answers: list[int] = []
        threads = [
            threading.Thread(target=_put_into, args=(server, target, data, answers))
            for _ in range(3)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        assert sorted(answers)[0] == 201 and set(answers) <= {201, 404}, answers
        with server.client() as client:
            assert client.get_blob(f"race/put{size}", sha256_digest(data)).body == data
    assert "Traceback" not in server.log_text()


def test_requests_waiting_for_a_held_upload_do_not_hold_the_server(server: DistblobServer) -> None:
    """Sixty PATCHes wait for an upload another process holds: they wait on the event loop,
    so the server answers everything else meanwhile; once the holder lets go, the first
    PATCH writes and the others, with a stale offset, are refused."""
    with server.client() as client:
        location = start(client, "held/app").headers["Location"]
    upload_id = without_state(location).rsplit("/", 1)[1]
    holder = Registry.filesystem(server.root).repository("held/app").blobs.resume(upload_id)
    answers: dict[bytes, Any] = {}
    bodies = [b"%02d" % n * 100 for n in range(60)]
    threads = [
        threading.Thread(target=_patch_into, args=(server, location, body, answers))
        for body in bodies
    ]
    try:
        for thread in threads:
            thread.start()
        time.sleep(1)  # every PATCH has arrived and waits
        with server.client() as client:
            check(client.request("GET", "/v2/_catalog"), 200)
            check(client.request("GET", "/v2/"), 200)
        assert all(thread.is_alive() for thread in threads) and not answers
    finally:
        holder.close()
    for thread in threads:
        thread.join(30)
    statuses = sorted(answers[body].status for body in bodies)
    assert statuses == [202] + [404] * 59, statuses
    (written,) = [body for body in bodies if answers[body].status == 202]
    with server.client() as client:
        status = check(client.request("GET", without_state(location)), 204)
    assert status.headers["Range"] == f"0-{len(written) - 1}"
