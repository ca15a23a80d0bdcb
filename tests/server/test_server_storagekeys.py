"""``storage.maintenance.readonly``, ``catalog.maxentries`` and ``validation``: ``distblob
serve`` and the Go registry 2.8.2 side by side on the same requests; the 3.x keys Go 2.8.2 does
not have (``middleware.storage: redirect``) against distblob alone."""

from __future__ import annotations

import http.client
import json
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest

from support.goregistry import GoRegistry, sha256_digest
from support.server import DistblobServer

pytestmark = pytest.mark.timeout(180)

FOREIGN = "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip"
DOCKER = "application/vnd.docker.distribution.manifest.v2+json"
OCI = "application/vnd.oci.image.manifest.v1+json"
LAYER = sha256_digest(b"remote layer")


def _request(port: int, method: str, path: str, body: bytes | None = None, **headers: str) -> Any:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request(method, path, body=body, headers=headers)
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
    finally:
        conn.close()


def _both(tmp_path: Path, config: dict[str, Any], seed: list[str]) -> Iterator[list[int]]:
    """A Go registry and distblob on roots seeded with blobs in ``seed``'s repositories (by
    a writable server first), then restarted with ``config``; yields both ports."""
    with ExitStack() as stack:
        ports = []
        for kind, name in ((GoRegistry, "go"), (DistblobServer, "db")):
            root = tmp_path / name
            if seed:
                with kind(root) as writable, writable.client() as client:  # type: ignore[abstract]
                    for repo in seed:
                        client.push_blob(repo, b"seed")
            server = stack.enter_context(kind(root, extra_config=config))  # type: ignore[abstract]
            ports.append(server.port)
        yield ports


def test_readonly_refuses_writes_as_go(tmp_path: Path) -> None:
    config = {"storage": {"maintenance": {"readonly": {"enabled": True}}}}
    digest = sha256_digest(b"seed")
    probes = [
        ("POST", "/v2/r/blobs/uploads/"),
        ("PUT", "/v2/r/manifests/t"),
        ("DELETE", f"/v2/r/manifests/{digest}"),
        ("DELETE", f"/v2/r/blobs/{digest}"),
        ("GET", f"/v2/r/blobs/{digest}"),
        ("HEAD", f"/v2/r/blobs/{digest}"),
        ("GET", "/v2/_catalog"),
    ]
    for go_port, ours_port in _pairs(tmp_path, config, ["r"]):
        for method, path in probes:
            body = b"{}" if method == "PUT" else None
            theirs = _request(go_port, method, path, body)
            ours = _request(ours_port, method, path, body)
            assert ours[0] == theirs[0], (method, path, ours, theirs)
            if theirs[0] == 405:
                assert ours[1]["allow"] == theirs[1]["allow"] == "GET, HEAD"
                assert ours[1]["content-type"] == theirs[1]["content-type"]
                assert ours[2] == theirs[2] == b"Method not allowed\n"
            elif path == "/v2/_catalog":
                assert json.loads(ours[2]) == json.loads(theirs[2])
            elif method == "GET":
                assert ours[2] == theirs[2] == b"seed"


def _pairs(tmp_path: Path, config: dict[str, Any], seed: list[str]) -> Iterator[list[int]]:
    yield from _both(tmp_path, config, seed)


def test_catalog_maxentries_pages_as_go(tmp_path: Path) -> None:
    config = {"catalog": {"maxentries": 2}}
    queries = ["", "?n=2", "?n=3", "?n=0", "?n=1&last=a", "?last=b", "?last=d", "?n=2&last=e"]
    for go_port, ours_port in _pairs(tmp_path, config, ["a", "b", "c", "d", "e"]):
        for query in queries:
            theirs = _request(go_port, "GET", f"/v2/_catalog{query}")
            ours = _request(ours_port, "GET", f"/v2/_catalog{query}")
            assert ours[0] == theirs[0], (query, ours, theirs)
            assert json.loads(ours[2]) == json.loads(theirs[2]), query
            assert ours[1].get("link") == theirs[1].get("link"), query


def _manifest(kind: str, config_digest: str, media_type: str, urls: list[str]) -> bytes:
    layer: dict[str, Any] = {"mediaType": media_type, "size": 12, "digest": LAYER}
    if urls:
        layer["urls"] = urls
    config_type = (
        "application/vnd.docker.container.image.v1+json"
        if kind == DOCKER
        else "application/vnd.oci.image.config.v1+json"
    )
    return json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": kind,
            "config": {"mediaType": config_type, "size": 4, "digest": config_digest},
            "layers": [layer],
        }
    ).encode()


URL_CASES = [
    (DOCKER, FOREIGN, ["https://example.com/x"]),
    (DOCKER, FOREIGN, ["https://other.org/x"]),
    (DOCKER, FOREIGN, []),
    (OCI, "application/vnd.oci.image.layer.v1.tar+gzip", ["https://example.com/x"]),
    (OCI, "application/vnd.oci.image.layer.v1.tar+zstd", ["https://example.com/x"]),
    (OCI, "application/vnd.oci.image.layer.v1.tar", ["https://example.com/x#frag"]),
    (OCI, "application/vnd.oci.image.layer.v1.tar", ["ftp://example.com/x"]),
]


@pytest.mark.parametrize(
    "validation",
    [
        {},
        {"manifests": {"urls": {"allow": ["^https://example\\.com/"]}}},
        {"manifests": {"urls": {"allow": ["^https://"], "deny": ["example"]}}},
        {"disabled": True, "manifests": {"urls": {"allow": ["^https://example\\.com/"]}}},
    ],
    ids=["default", "allow", "allow-deny", "disabled"],
)
def test_manifest_urls_validated_as_go(tmp_path: Path, validation: dict[str, Any]) -> None:
    """Accepted and refused alike; a refusal names the layer as MANIFEST_BLOB_UNKNOWN in both
    (Go answers 500 with two UNKNOWN errors first: see docs/configuration.md)."""
    config = {"validation": validation} if validation else {}
    seed_digest = sha256_digest(b"seed")
    for go_port, ours_port in _pairs(tmp_path, config, ["r"]):
        for i, (kind, media_type, urls) in enumerate(URL_CASES):
            body = _manifest(kind, seed_digest, media_type, urls)
            path = f"/v2/r/manifests/t{i}"
            theirs = _request(go_port, "PUT", path, body, **{"Content-Type": kind})
            ours = _request(ours_port, "PUT", path, body, **{"Content-Type": kind})
            assert (ours[0] == 201) == (theirs[0] == 201), (i, ours, theirs)
            if theirs[0] != 201:
                assert ours[0] == 400
                their_errors = json.loads(theirs[2])["errors"]
                our_errors = json.loads(ours[2])["errors"]
                assert their_errors[-1]["code"] == "MANIFEST_BLOB_UNKNOWN"
                assert [error["code"] for error in our_errors] == ["MANIFEST_BLOB_UNKNOWN"]
                assert LAYER in json.dumps(our_errors[0]) and LAYER in json.dumps(their_errors[-1])


def test_redirect_middleware_sends_blob_gets_to_baseurl(tmp_path: Path) -> None:
    """3.x's ``redirect`` storage middleware: a blob GET is a 307 to ``baseurl`` joined with
    the blob's storage path; a manifest is still served."""
    config = {
        "middleware": {
            "storage": [{"name": "redirect", "options": {"baseurl": "https://cdn.example/p"}}]
        }
    }
    with DistblobServer(tmp_path / "db", extra_config=config) as server:
        with server.client() as client:
            digest = client.push_blob("r", b"redirected")
        status, headers, _ = _request(server.port, "GET", f"/v2/r/blobs/{digest}")
        hexdigest = digest.split(":", 1)[1]
        assert status == 307
        assert headers["location"] == (
            f"https://cdn.example/p/docker/registry/v2/blobs/sha256/{hexdigest[:2]}/"
            f"{hexdigest}/data"
        )
