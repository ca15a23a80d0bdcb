"""A blob deleted between the lookup of a GET and the read of its bytes (a ``gc`` or DELETE in
between): the GET answers ``404 BLOB_UNKNOWN``, never a ``200`` with a missing body."""

from __future__ import annotations

import shutil
import warnings
from pathlib import Path
from typing import Any

import pytest

from distblob import Registry
from distblob.interfaces import ServePlan
from distblob.server import create_app
from distblob.storage import paths
from distblob.storage.linked import LinkedBlobStore
from support.blobstore import payload, sha256

with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # starlette prefers httpx2; plain httpx works in-process
    from starlette.testclient import TestClient

DATA = payload(300_000, seed=31)


@pytest.mark.parametrize("ranged", [False, True])
def test_get_of_a_blob_deleted_after_lookup(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, ranged: bool
) -> None:
    registry = Registry.filesystem(tmp_path / "root", fsync=False)
    digest = sha256(DATA)
    registry.repository("race/app").blobs.put(DATA)
    blob_dir = tmp_path / "root" / paths.blob_dir_path(digest).lstrip("/")
    assert blob_dir.is_dir()
    original = LinkedBlobStore.serve_blob

    def serve_then_lose_it(self: LinkedBlobStore, *args: Any, **kwargs: Any) -> ServePlan:
        plan = original(self, *args, **kwargs)
        shutil.rmtree(blob_dir)  # deleted after the plan was made, before the bytes are read
        return plan

    monkeypatch.setattr(LinkedBlobStore, "serve_blob", serve_then_lose_it)
    client = TestClient(create_app(registry, secret=b"race", access_log=False))
    headers = {"Range": "bytes=10-99"} if ranged else {}
    response = client.get(f"/v2/race/app/blobs/{digest}", headers=headers)
    assert response.status_code == 404, response.headers
    assert response.json()["errors"][0]["code"] == "BLOB_UNKNOWN"
    monkeypatch.undo()
    # Nothing half-answered is cached either: the next GET says the same.
    assert client.get(f"/v2/race/app/blobs/{digest}").status_code == 404
