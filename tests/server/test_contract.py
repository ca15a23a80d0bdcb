"""The contract the HTTP layer serves (``interfaces.AsyncRegistry``) and its two implementations:
the storage registry in worker threads and the pull-through cache; the one response that
executes every plan, growing regions included; the storage primitives a cache expires with."""

from __future__ import annotations

import asyncio
import os
import threading
import time
import warnings
from pathlib import Path
from typing import Any

import httpx
import pytest

from distblob import Descriptor, Digest, Registry
from distblob.errors import (
    BlobUnknownError,
    BlobUploadBusyError,
    ManifestUnknownError,
    TransferError,
    UnsupportedError,
)
from distblob.interfaces import (
    AsyncBlobStore,
    AsyncManifestService,
    AsyncRegistry,
    AsyncRepository,
    GrowingRegion,
    ServePlan,
)
from distblob.proxy import ProxyRegistry
from distblob.proxy.blobs import Fetch
from distblob.server import create_app
from distblob.server.responses import plan_response
from distblob.storage.aio import ThreadedRegistry

with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # starlette prefers httpx2; plain httpx works in-process
    from starlette.testclient import TestClient

#: The server's event loop.
on_asyncio = pytest.mark.parametrize("anyio_backend", ["asyncio"])

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"


def _refusing_upstream() -> httpx.MockTransport:
    """An upstream that must never be asked (a test fails if it is)."""

    def handler(request: httpx.Request) -> httpx.Response:
        raise AssertionError(f"upstream asked: {request.method} {request.url}")

    return httpx.MockTransport(handler)


@pytest.mark.anyio
@on_asyncio
async def test_both_registries_offer_the_contract(tmp_path: Path, anyio_backend: str) -> None:
    local = Registry.filesystem(tmp_path / "local")
    cache = ProxyRegistry(
        Registry.filesystem(tmp_path / "cache"), "http://up.test", transport=_refusing_upstream()
    )
    for served in (ThreadedRegistry(local), cache):
        assert isinstance(served, AsyncRegistry)
        repository = served.repository("a/b")
        assert isinstance(repository, AsyncRepository)
        assert repository.name == "a/b"
        assert isinstance(repository.blobs, AsyncBlobStore)
        assert isinstance(repository.manifests, AsyncManifestService)
    assert isinstance(Fetch("a/b", Digest.from_bytes(b"x")), GrowingRegion)
    await cache.upstream.aclose()


@pytest.mark.anyio
@on_asyncio
async def test_the_cache_refuses_every_write_verb_and_stores_nothing(
    tmp_path: Path, anyio_backend: str
) -> None:
    root = tmp_path / "cache"
    cache = ProxyRegistry(
        Registry.filesystem(root), "http://up.test", transport=_refusing_upstream()
    )
    repository = cache.repository("lib/app")
    digest = Digest.from_bytes(b"layer")
    writes: list[Any] = [
        lambda: repository.blobs.create(),
        lambda: repository.blobs.resume("an-upload"),
        lambda: repository.blobs.start(),
        lambda: repository.blobs.resume_with("an-upload", lambda writer: writer.close()),
        lambda: repository.blobs.put(b"layer", algorithm="sha256", expected=digest),
        lambda: repository.blobs.mount("other/app", str(digest)),
        lambda: repository.blobs.delete(str(digest)),
        lambda: repository.manifests.put("v1", b"{}", OCI_MANIFEST),
        lambda: repository.manifests.delete("v1"),
    ]
    for write in writes:
        with pytest.raises(UnsupportedError):
            await write()
    assert not any(path.is_file() for path in root.rglob("*"))
    await cache.upstream.aclose()


@pytest.mark.anyio
@on_asyncio
async def test_resume_waits_for_the_holder_on_the_event_loop(
    tmp_path: Path, anyio_backend: str
) -> None:
    """A second writer of one upload waits without holding a worker thread (the loop keeps
    running meanwhile) and gets the upload once the first lets it go; with ``wait=0`` it is
    busy at once."""
    served = ThreadedRegistry(Registry.filesystem(tmp_path))
    blobs = served.repository("a/b").blobs
    holder = await blobs.create()
    holder.write(b"first")
    with pytest.raises(BlobUploadBusyError):
        await blobs.resume(holder.id, wait=0)

    ticks = 0

    async def tick() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0.01)

    ticker = asyncio.create_task(tick())
    release = threading.Timer(0.3, holder.close)
    release.start()
    started = time.monotonic()
    writer = await blobs.resume(holder.id, wait=5)
    waited = time.monotonic() - started
    ticker.cancel()
    assert writer.size == len(b"first")
    writer.close()
    assert waited >= 0.25
    assert ticks >= 10  # the loop ran other work all along


@pytest.mark.anyio
@on_asyncio
async def test_start_and_resume_with_do_an_upload_in_one_call(
    tmp_path: Path, anyio_backend: str
) -> None:
    """``start`` leaves a new, closed upload that resumes empty; ``resume_with`` runs its work
    with the resumed writer in the worker thread that resumed it, waits for a holder as
    ``resume`` does, and does not retry a ``BlobUploadBusyError`` its work raises."""
    served = ThreadedRegistry(Registry.filesystem(tmp_path))
    blobs = served.repository("a/b").blobs
    started = await blobs.start()
    assert started.closed
    empty = await blobs.resume(started.id, wait=0)
    assert empty.size == 0
    empty.close()

    def append(writer: Any) -> tuple[int, str]:
        try:
            writer.write(b"chunk")
            return writer.size, threading.current_thread().name
        finally:
            writer.close()

    assert (await blobs.resume_with(started.id, append))[0] == len(b"chunk")
    assert (await blobs.resume_with(started.id, append))[1] != threading.current_thread().name

    holder = await blobs.resume(started.id)
    with pytest.raises(BlobUploadBusyError):
        await blobs.resume_with(started.id, append, wait=0)
    threading.Timer(0.2, holder.close).start()
    assert (await blobs.resume_with(started.id, append, wait=5))[0] == 3 * len(b"chunk")

    calls = 0

    def busy(writer: Any) -> None:
        nonlocal calls
        calls += 1
        writer.close()
        raise BlobUploadBusyError("the work's own answer")

    with pytest.raises(BlobUploadBusyError, match="the work's own answer"):
        await blobs.resume_with(started.id, busy, wait=5)
    assert calls == 1
    writer = await blobs.resume(started.id, wait=0)  # every writer above let the upload go
    assert writer.size == 3 * len(b"chunk")
    writer.close()


@pytest.mark.anyio
@on_asyncio
async def test_storage_primitives_expire_with_deletes_disabled(
    tmp_path: Path, anyio_backend: str
) -> None:
    """What a cache's expiry uses: a repository's ``unlink`` and ``remove`` and the store's
    ``remove`` work whether deletes are enabled or not, while ``delete`` stays refused."""
    registry = Registry.filesystem(tmp_path)
    assert not registry.delete_enabled
    a, b = registry.repository("a"), registry.repository("b")
    layer = a.blobs.put(b"shared layer").digest
    assert layer is not None
    b.blobs.link(layer)
    config = a.blobs.put(b"{}").digest
    manifest = (
        b'{"schemaVersion":2,"mediaType":"%s","config":{"mediaType":'
        b'"application/vnd.oci.image.config.v1+json","digest":"%s","size":2},"layers":[]}'
        % (OCI_MANIFEST.encode(), str(config).encode())
    )
    stored = a.manifests.put("v1", manifest, OCI_MANIFEST)
    with pytest.raises(UnsupportedError):
        a.blobs.delete(str(layer))
    with pytest.raises(UnsupportedError):
        a.manifests.delete(str(stored.digest))

    a.blobs.unlink(str(layer))
    assert not a.blobs.exists(str(layer)) and b.blobs.exists(str(layer))
    assert registry.is_linked(str(layer))  # b still links it
    b.blobs.unlink(str(layer))
    assert not registry.is_linked(str(layer))
    with pytest.raises(BlobUnknownError):
        b.blobs.unlink(str(layer))
    registry.blobs.remove(str(layer))
    assert not registry.blobs.exists(str(layer))

    a.manifests.remove(str(stored.digest))
    assert a.manifests.lookup(str(stored.digest)) == []  # its tag went with it
    with pytest.raises(ManifestUnknownError):
        a.manifests.get("v1")


class _Arriving:
    """A :class:`GrowingRegion` the test feeds by hand."""

    def __init__(self, path: Path, length: int | None) -> None:
        self.path = path
        path.write_bytes(b"")
        self._length = length
        self.written = 0
        self.complete = False
        self.failed = False
        self.changed = asyncio.Event()

    @property
    def length(self) -> int | None:
        return self._length

    async def open(self) -> int:
        return os.open(self.path, os.O_RDONLY)

    def land(self, data: bytes, *, complete: bool = False) -> None:
        with self.path.open("ab") as out:
            out.write(data)
        self.written += len(data)
        self.complete = complete
        self.changed.set()

    def fail(self) -> None:
        self.failed = True
        self.changed.set()

    def available(self) -> tuple[int, bool]:
        if self.failed:
            raise TransferError("upstream went away")
        return self.written, self.complete

    async def wait(self, sent: int) -> None:
        while self.written <= sent and not self.complete and not self.failed:
            self.changed.clear()
            await self.changed.wait()


async def _run_response(
    region: _Arriving, feed: list[tuple[bytes, bool] | None]
) -> list[dict[str, Any]]:
    """Send the plan of ``region``, feeding it ``feed`` (``None``: fail) one step per message."""
    sent: list[dict[str, Any]] = []
    steps = iter(feed)

    async def receive() -> dict[str, Any]:
        await asyncio.Event().wait()  # the client never leaves
        raise AssertionError

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)
        step = next(steps, "done")
        if step is None:
            region.fail()
        elif step != "done":
            assert isinstance(step, tuple)
            region.land(step[0], complete=step[1])

    response = plan_response(ServePlan(200, {"Content-Type": "x/y"}, body=region))
    scope = {"type": "http", "method": "GET", "extensions": {}}
    await asyncio.wait_for(response(scope, receive, send), 10)
    return sent


@pytest.mark.anyio
@on_asyncio
async def test_a_growing_region_is_sent_as_it_lands_and_ends_once_complete(
    tmp_path: Path, anyio_backend: str
) -> None:
    region = _Arriving(tmp_path / "upload", None)
    sent = await _run_response(region, [(b"abc", False), (b"def", False), (b"g", True)])
    start, *body = sent
    assert start["type"] == "http.response.start" and start["status"] == 200
    # No length was named: none is sent (no invented Content-Length: 0).
    assert b"content-length" not in dict(start["headers"])
    assert b"".join(m["body"] for m in body) == b"abcdefg"
    assert [m["more_body"] for m in body][-1] is False
    assert all(m["more_body"] for m in body[:-1])


@pytest.mark.anyio
@on_asyncio
async def test_a_failed_growing_region_never_ends_its_body(
    tmp_path: Path, anyio_backend: str
) -> None:
    """The transfer fails: the response returns without the end of its body, so the server
    drops the connection and no client takes what it got for a whole blob."""
    region = _Arriving(tmp_path / "upload", 10)
    sent = await _run_response(region, [(b"abcd", False), None])
    body = [m for m in sent if m["type"] == "http.response.body"]
    assert b"".join(m["body"] for m in body) == b"abcd"
    assert all(m["more_body"] for m in body)


def test_a_route_takes_only_the_methods_its_resource_declares(tmp_path: Path) -> None:
    client = TestClient(create_app(Registry.filesystem(tmp_path), secret=b"s", access_log=False))
    digest = Digest.from_bytes(b"x")
    response = client.request("PATCH", f"/v2/a/b/blobs/{digest}")
    assert response.status_code == 405
    assert response.json()["errors"][0]["code"] == "UNSUPPORTED"
    assert set(response.headers["allow"].replace(" ", "").split(",")) == {
        "GET",
        "HEAD",
        "DELETE",
    }
    # HEAD is served by the GET handler: an unknown blob is 404 with no body.
    head = client.head(f"/v2/a/b/blobs/{digest}")
    assert head.status_code == 404 and head.content == b""
    stored = Registry.filesystem(tmp_path).repository("a/b").blobs.put(b"x")
    assert stored == Descriptor("application/octet-stream", 1, digest)
    assert client.head(f"/v2/a/b/blobs/{digest}").headers["content-length"] == "1"


def test_a_cache_refuses_every_write_before_anything_else(tmp_path: Path) -> None:
    """Read-only is decided where requests are dispatched: a write to a pull-through cache is
    405 UNSUPPORTED whatever else is wrong with it (a bad digest, a missing one, a body too
    large, an invalid name or tag), and nothing is read, stored or asked upstream."""
    root = tmp_path / "cache"
    local = Registry.filesystem(root)
    cache = ProxyRegistry(local, "http://up.test", transport=_refusing_upstream())
    client = TestClient(create_app(local, secret=b"s", access_log=False, proxy=cache))
    big = b"x" * (5 << 20)
    writes = [
        ("POST", "/v2/lib/img/blobs/uploads/?digest=sha256:zz", b"abc"),
        ("POST", "/v2/Lib/img/blobs/uploads/", b""),
        ("PUT", "/v2/lib/img/blobs/uploads/abc", b"no digest"),
        ("PATCH", "/v2/lib/img/blobs/uploads/abc", b"chunk"),
        ("DELETE", "/v2/lib/img/blobs/uploads/abc", b""),
        ("PUT", "/v2/lib/img/manifests/big", big),
        ("PUT", "/v2/a..b/manifests/v1", b"{}"),
        ("DELETE", "/v2/lib/img/manifests/-bad", b""),
        ("DELETE", f"/v2/lib/img/blobs/{Digest.from_bytes(b'x')}", b""),
    ]
    for method, path, body in writes:
        response = client.request(method, path, content=body)
        assert (response.status_code, response.json()["errors"][0]["code"]) == (
            405,
            "UNSUPPORTED",
        ), (method, path)
    assert not any(path.is_file() for path in root.rglob("*"))
