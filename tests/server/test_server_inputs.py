"""Client input that once reached the server's internals unchecked: each gets its 4xx (or a
501), never a 500. Found by an independent check; the app runs in-process here."""

from __future__ import annotations

import json
import urllib.parse
import warnings
from pathlib import Path
from typing import Any

import pytest

from distblob import Registry
from distblob.config import parse_config
from distblob.server import ConfigError, create_app
from support.blobstore import payload, sha256

with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # starlette prefers httpx2; plain httpx works in-process
    from starlette.testclient import TestClient

BLOB = payload(1000, seed=41)
CONFIG = b'{"architecture":"amd64","os":"linux"}'


@pytest.fixture
def client(tmp_path: Path) -> TestClient:
    registry = Registry.filesystem(tmp_path / "root", fsync=False)
    for data in (BLOB, CONFIG):
        registry.repository("in/app").blobs.put(data)
    return TestClient(create_app(registry, secret=b"inputs", access_log=False))


def error_code(response: Any) -> str:
    return str(response.json()["errors"][0]["code"])


def start_upload(client: TestClient) -> str:
    response = client.post("/v2/in/app/blobs/uploads/")
    assert response.status_code == 202
    return str(response.headers["Location"])


@pytest.mark.parametrize("path", ["/v2/_catalog", "/v2/in/app/tags/list"])
def test_a_superscript_digit_is_no_number(client: TestClient, path: str) -> None:
    response = client.get(f"{path}?{urllib.parse.urlencode({'n': '²'})}")
    assert response.status_code == 400 and error_code(response) == "PAGINATION_NUMBER_INVALID"


def test_a_content_range_of_unicode_digits_is_refused(client: TestClient) -> None:
    location = start_upload(client)
    response = client.patch(location, content=b"xy", headers={"Content-Range": b"0-\xb9"})
    assert response.status_code == 416 and error_code(response) == "RANGE_INVALID"
    status = client.get(location)  # the upload took nothing
    assert status.status_code == 204 and status.headers["Range"] == "0-0"


def test_a_range_of_unicode_digits_is_not_a_range(client: TestClient) -> None:
    response = client.get(f"/v2/in/app/blobs/{sha256(BLOB)}", headers={"Range": b"bytes=-\xb9"})
    assert response.status_code in (200, 416)
    if response.status_code == 200:
        assert response.content == BLOB


def test_a_manifest_nested_too_deeply_is_invalid(client: TestClient) -> None:
    body = b'{"schemaVersion":2,"a":' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    response = client.put(
        "/v2/in/app/manifests/deep",
        content=body,
        headers={"Content-Type": "application/vnd.oci.image.manifest.v1+json"},
    )
    assert response.status_code == 400 and error_code(response) == "MANIFEST_INVALID"


@pytest.mark.parametrize("coding", ["gzip, chunked", "deflate", "br, chunked"])
def test_a_transfer_coding_other_than_chunked_is_not_implemented(
    client: TestClient, coding: str
) -> None:
    location = start_upload(client)
    response = client.patch(location, content=b"compressed?", headers={"Transfer-Encoding": coding})
    assert response.status_code == 501 and error_code(response) == "UNSUPPORTED"
    assert client.get(location).headers["Range"] == "0-0"  # nothing stored


def test_manifest_if_none_match(client: TestClient) -> None:
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": str(sha256(CONFIG)),
                "size": len(CONFIG),
            },
            "layers": [
                {
                    "mediaType": "application/vnd.oci.image.layer.v1.tar",
                    "digest": str(sha256(BLOB)),
                    "size": len(BLOB),
                }
            ],
        }
    ).encode()
    put = client.put(
        "/v2/in/app/manifests/v1",
        content=manifest,
        headers={"Content-Type": "application/vnd.oci.image.manifest.v1+json"},
    )
    assert put.status_code == 201
    etag = client.get("/v2/in/app/manifests/v1").headers["ETag"]
    assert etag == f'"{sha256(manifest)}"'
    unchanged = client.get("/v2/in/app/manifests/v1", headers={"If-None-Match": etag})
    assert unchanged.status_code == 304 and unchanged.content == b""
    assert unchanged.headers["Docker-Content-Digest"] == str(sha256(manifest))
    other = client.get("/v2/in/app/manifests/v1", headers={"If-None-Match": '"sha256:00"'})
    assert other.status_code == 200 and other.content == manifest


@pytest.mark.parametrize("addr", ["127.0.0.1:²", "127.0.0.1:٣"])
def test_a_port_of_unicode_digits_is_a_config_error(addr: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config({"http": {"addr": addr}})
    assert info.value.key == "http.addr"


@pytest.mark.parametrize("where", ["filesystem", "in-memory"])
def test_several_ranges_without_sendfile(tmp_path: Path, where: str) -> None:
    """The multipart body read in chunks: by pread on a local file, and through the driver's
    reader (reopened at each range) on storage with no local path."""
    if where == "filesystem":
        registry = Registry.filesystem(tmp_path / "root", fsync=False)
    else:
        registry = Registry.in_memory()
    data = payload(3 << 20, seed=42)  # ranges longer than one read
    digest = registry.repository("in/app").blobs.put(data).digest
    client = TestClient(create_app(registry, secret=b"inputs", access_log=False))
    ranges = [(2 << 20, (3 << 20) - 1), (5, 9), (0, (1 << 20) + 7)]
    header = "bytes=" + ",".join(f"{first}-{last}" for first, last in ranges)
    response = client.get(f"/v2/in/app/blobs/{digest}", headers={"Range": header})
    assert response.status_code == 206
    boundary = response.headers["content-type"].removeprefix("multipart/byteranges; boundary=")
    expected = b"".join(
        (b"\r\n" if index else b"")
        + f"--{boundary}\r\nContent-Range: bytes {first}-{last}/{len(data)}\r\n".encode()
        + b"Content-Type: application/octet-stream\r\n\r\n"
        + data[first : last + 1]
        for index, (first, last) in enumerate(ranges)
    )
    assert response.content == expected + f"\r\n--{boundary}--\r\n".encode()
    assert int(response.headers["content-length"]) == len(response.content)
