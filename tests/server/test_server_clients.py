"""``distblob serve`` with python-dxf: a blob pushed in one streamed PUT and pulled back.

python-dxf's ``push_blob`` opens an upload with POST and sends the whole blob in one PUT with the
digest: from a file (a ``Content-Length`` body read as it is sent) or from an iterator of chunks
(``Transfer-Encoding: chunked``). ``pull_blob`` streams the blob back and checks its digest.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from pathlib import Path

import dxf
import pytest
import requests

from support.server import DistblobServer

pytestmark = pytest.mark.timeout(120)

MIB = 1 << 20


@pytest.fixture
def ours(tmp_path: Path) -> Iterator[DistblobServer]:
    with DistblobServer(tmp_path / "root") as server:
        yield server


def _pull(client: object, digest: str) -> bytes:
    chunks, size = client.pull_blob(digest, size=True, chunk_size=MIB)  # type: ignore[attr-defined]
    data = b"".join(chunks)
    assert len(data) == size
    return data


def test_dxf_push_file_pull(ours: DistblobServer, tmp_path: Path) -> None:
    payload = os.urandom(5 * MIB + 123)
    source = tmp_path / "blob"
    source.write_bytes(payload)
    digest = "sha256:" + hashlib.sha256(payload).hexdigest()
    client = dxf.DXF(ours.host, "dxf/file", insecure=True)
    assert client.push_blob(str(source)) == digest
    assert client.blob_size(digest) == len(payload)
    assert _pull(client, digest) == payload
    # Pushed again, the HEAD finds it and nothing is uploaded.
    assert client.push_blob(str(source)) == digest


def test_dxf_push_chunks_pull(ours: DistblobServer) -> None:
    payload = os.urandom(3 * MIB + 7)
    digest = "sha256:" + hashlib.sha256(payload).hexdigest()
    pieces = (payload[i : i + 256 * 1024] for i in range(0, len(payload), 256 * 1024))
    client = dxf.DXF(ours.host, "dxf/chunks", insecure=True)
    assert client.push_blob(data=pieces, digest=digest) == digest
    assert _pull(client, digest) == payload


def test_dxf_push_wrong_digest_rejected(ours: DistblobServer) -> None:
    payload = os.urandom(64 * 1024)
    wrong = "sha256:" + hashlib.sha256(b"something else").hexdigest()
    client = dxf.DXF(ours.host, "dxf/wrong", insecure=True)
    with pytest.raises(requests.exceptions.HTTPError) as info:
        client.push_blob(data=iter([payload]), digest=wrong)
    assert info.value.response.status_code == 400
    assert "DIGEST_INVALID" in info.value.response.text
