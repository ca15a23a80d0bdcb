"""``distblob serve`` as a pull-through cache (``proxy:``), against real and fake upstreams.

Everything runs on 127.0.0.1 and is started and stopped by the tests: the Go registry
(Debian's ``docker-registry``) as the upstream, open or behind ``auth: htpasswd`` or
``auth: token`` (a token server here issues JWTs signed with a throw-away key), a fake upstream
that breaks transfers, and our server as the cache (a subprocess with a YAML config).
"""

from __future__ import annotations

import base64
import datetime as dt
import gzip
import hashlib
import http.client
import http.server
import json
import os
import re
import signal
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from distblob.errors import BlobUnknownError, NameUnknownError
from distblob.proxy.manifests import ProxyManifestStore
from distblob.proxy.scheduler import TTLScheduler, format_expiry, parse_expiry
from distblob.proxy.upstream import Upstream, UpstreamAuthError, UpstreamError, parse_challenge
from distblob.registry import Registry
from distblob.storage.cache import InMemoryBlobDescriptorCache
from distblob.storage.driver import FilesystemDriver
from support import wait_until
from support.goregistry import (
    LOOPBACK,
    OCI_MANIFEST,
    REGISTRY_BIN,
    GoRegistry,
    OciImage,
    make_oci_image_layout,
    sha256_digest,
    skopeo_pull,
    skopeo_push,
)
from support.server import DistblobServer

pytestmark = pytest.mark.timeout(120)

BLOB_GET = re.compile(r'"GET /v2/[^ "]+/blobs/(sha256:[0-9a-f]{64}) HTTP')


def upstream_blob_gets(go: GoRegistry, digest: str | None = None) -> int:
    """Blob GETs in the Go registry's access log (optionally of one digest)."""
    found = BLOB_GET.findall(go.log_text())
    return len(found) if digest is None else found.count(digest)


def proxy_server(root: Path, remoteurl: str, **proxy: Any) -> DistblobServer:
    return DistblobServer(root, extra_config={"proxy": {"remoteurl": remoteurl, **proxy}})


def stored_blobs(root: Path) -> set[str]:
    base = root / "docker/registry/v2/blobs/sha256"
    return {"sha256:" + p.parent.name for p in base.glob("*/*/data")}


def layer_link(root: Path, name: str, digest: str) -> Path:
    hexpart = digest.split(":", 1)[1]
    return root / f"docker/registry/v2/repositories/{name}/_layers/sha256/{hexpart}/link"


def uploads_left(root: Path) -> list[Path]:
    return list((root / "docker/registry/v2/repositories").glob("*/*/_uploads/*"))


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory) -> OciImage:
    layers = [os.urandom(300_000), os.urandom(2_000_000) + b"layer two"]
    return make_oci_image_layout(tmp_path_factory.mktemp("layout"), layers, tag="v1")


# -- units: challenge parsing, token handling, the schedule's format ----------------------------


def test_parse_challenge() -> None:
    scheme, params = parse_challenge(
        'Bearer realm="https://auth.example/token",service="registry",scope="repository:a:pull"'
    )
    assert scheme == "bearer"
    assert params == {
        "realm": "https://auth.example/token",
        "service": "registry",
        "scope": "repository:a:pull",
    }
    assert parse_challenge('Basic realm="Registry Realm"') == ("basic", {"realm": "Registry Realm"})


def _token_upstream(realm: str, seen: list[httpx.Request]) -> httpx.MockTransport:
    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if request.url.path == "/token":
            return httpx.Response(200, json={"token": "T1", "expires_in": 300})
        if request.headers.get("authorization") != "Bearer T1":
            challenge = f'Bearer realm="{realm}",service="reg"'
            return httpx.Response(401, headers={"WWW-Authenticate": challenge})
        return httpx.Response(200, content=b"ok")

    return httpx.MockTransport(handler)


@pytest.mark.anyio
async def test_token_fetched_once_with_credentials_on_same_host() -> None:
    seen: list[httpx.Request] = []
    transport = _token_upstream("http://reg.test/token", seen)
    upstream = Upstream("http://reg.test", "user", "secret", transport=transport)
    for _ in range(3):
        response = await upstream.head("/v2/a/blobs/x", name="a")
        assert response.status_code == 200
    await upstream.aclose()
    token_requests = [r for r in seen if r.url.path == "/token"]
    assert len(token_requests) == 1  # cached until it expires
    query = dict(urllib.parse.parse_qsl(token_requests[0].url.query.decode()))
    assert query == {"service": "reg", "scope": "repository:a:pull"}
    expected = "Basic " + base64.b64encode(b"user:secret").decode()
    assert token_requests[0].headers["authorization"] == expected
    assert len(seen) == 5  # 401, token, then the three requests with the token
    assert repr(upstream).count("secret") == 0


@pytest.mark.anyio
async def test_credentials_never_go_to_a_foreign_realm() -> None:
    seen: list[httpx.Request] = []
    transport = _token_upstream("http://evil.test/token", seen)
    upstream = Upstream("http://reg.test", "user", "secret", transport=transport)
    response = await upstream.head("/v2/a/blobs/x", name="a")
    await upstream.aclose()
    assert response.status_code == 200
    token_requests = [r for r in seen if r.url.host == "evil.test"]
    assert len(token_requests) == 1
    assert "authorization" not in token_requests[0].headers  # an anonymous token request


@pytest.mark.anyio
async def test_refused_credentials_raise() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(401, headers={"WWW-Authenticate": 'Basic realm="r"'})

    upstream = Upstream("http://reg.test", "u", "p", transport=httpx.MockTransport(handler))
    with pytest.raises(UpstreamAuthError):
        await upstream.head("/v2/a/blobs/x", name="a")
    await upstream.aclose()


def test_expiry_format_round_trips() -> None:
    when = dt.datetime(2026, 11, 28, 2, 46, 45, 123456, tzinfo=dt.UTC).timestamp()
    text = format_expiry(when)
    assert text == "2026-11-28T02:46:45.123456Z"
    assert abs(parse_expiry(text) - when) < 1e-6
    assert parse_expiry("2026-11-28T03:46:45.123456789+01:00") == pytest.approx(when, abs=1e-6)
    assert format_expiry(float(int(when))) == "2026-11-28T02:46:45Z"


def test_scheduler_persists_caps_and_keeps_shared_blobs(tmp_path: Path) -> None:
    now = [1_000_000.0]
    registry = Registry.filesystem(tmp_path)
    shared = registry.repository("a").blobs.put(b"shared layer")
    registry.repository("b").blobs.link(shared.digest)  # type: ignore[arg-type]
    scheduler = TTLScheduler(registry, 100.0, clock=lambda: now[0])
    scheduler.add_blob("a", str(shared.digest))
    now[0] += 50
    scheduler.add_blob("b", str(shared.digest))
    assert scheduler.save()
    doc = json.loads((tmp_path / "scheduler-state.json").read_text())
    key = f"a@{shared.digest}"
    assert doc[key] == {"Key": key, "ExpiryData": format_expiry(1_000_100.0), "EntryType": 0}

    # A restart with a lower ttl brings later expiries forward to now + ttl.
    later = TTLScheduler(registry, 10.0, clock=lambda: now[0])
    later.load()
    assert {e.expiry for e in later.entries().values()} == {1_000_060.0}
    restarted = TTLScheduler(registry, 100.0, clock=lambda: now[0])
    restarted.load()
    now[0] = 1_000_101.0
    assert restarted.expire_due() == [key]
    assert not registry.repository("a").blobs.exists(str(shared.digest))
    assert registry.repository("b").blobs.exists(str(shared.digest))  # b still links it
    now[0] = 1_000_151.0
    assert restarted.expire_due() == [f"b@{shared.digest}"]
    assert not registry.blobs.exists(str(shared.digest))  # nobody links it: the data went


def test_expiry_of_the_last_link_clears_the_blob_descriptor_cache(tmp_path: Path) -> None:
    """Once expiry removes a blob's data, the registry's descriptor cache (which a Redis cache
    shares between replicas) stops answering for it too."""
    now = [1_000_000.0]
    registry = Registry(FilesystemDriver(tmp_path), descriptor_cache=InMemoryBlobDescriptorCache())
    digest = registry.repository("a").blobs.put(b"cached layer").digest
    assert digest is not None
    assert registry.blobs.stat(digest).size == len(b"cached layer")  # now in the cache
    scheduler = TTLScheduler(registry, 10.0, clock=lambda: now[0])
    scheduler.add_blob("a", str(digest))
    now[0] += 11
    assert scheduler.expire_due() == [f"a@{digest}"]
    with pytest.raises(BlobUnknownError):
        registry.blobs.stat(digest)


# -- the Go registry as upstream ----------------------------------------------------------------


@pytest.fixture(scope="module")
def go(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GoRegistry]:
    if not REGISTRY_BIN.exists():
        pytest.skip("docker-registry not installed")
    with GoRegistry(tmp_path_factory.mktemp("upstream")) as registry:
        yield registry


def test_skopeo_pulls_through_the_cache_cold_then_warm(
    go: GoRegistry, image: OciImage, tmp_path: Path
) -> None:
    skopeo_push(image, go.host, "lib/app:v1")
    root = tmp_path / "cache"
    with proxy_server(root, go.url) as cache:
        before = upstream_blob_gets(go)
        skopeo_pull(cache.host, "lib/app:v1", tmp_path / "cold")
        cold = upstream_blob_gets(go) - before
        assert cold == 3  # config and two layers, each once
        # skopeo compresses the plain layers on push: read what upstream has from the pull.
        manifest = json.loads((tmp_path / "cold" / "manifest.json").read_bytes())
        layers = [manifest["config"]["digest"], *(d["digest"] for d in manifest["layers"])]
        for digest in layers:
            data = (tmp_path / "cold" / digest.split(":", 1)[1]).read_bytes()
            assert sha256_digest(data) == digest
        # The last byte goes out once the digest is verified; the commit follows it.
        wait_until(lambda: stored_blobs(root) >= set(layers) and not uploads_left(root), 10)

        skopeo_pull(cache.host, "lib/app:v1", tmp_path / "warm")
        assert upstream_blob_gets(go) - before == cold  # the warm pull read no blob upstream

        with cache.client() as client:
            # Range works on cached blobs.
            layer = layers[2]
            resp = client.get_blob("lib/app", layer, {"Range": "bytes=10-19"}, expect=(206,))
            assert resp.body == (tmp_path / "cold" / layer.split(":", 1)[1]).read_bytes()[10:20]
            # A read-only cache: pushes and deletes are unsupported.
            for method, path in [
                ("POST", "/v2/lib/app/blobs/uploads/"),
                ("PUT", "/v2/lib/app/blobs/uploads/x?digest=" + layer),
                ("PATCH", "/v2/lib/app/blobs/uploads/x"),
                ("DELETE", f"/v2/lib/app/blobs/{layer}"),
                ("DELETE", "/v2/lib/app/manifests/v1"),
                ("PUT", "/v2/lib/app/manifests/v2"),
            ]:
                resp = client.request(method, path, body=b"{}")
                assert resp.status == 405, (method, path)
                assert json.loads(resp.body)["errors"][0]["code"] == "UNSUPPORTED"
            # HEAD of a cold blob asks upstream with HEAD only.
            fresh = client_push(go, "lib/other", os.urandom(1000))
            gets = upstream_blob_gets(go)
            resp = client.head_blob("lib/other", fresh, expect=(200,))
            assert resp.headers["Content-Length"] == "1000"
            assert upstream_blob_gets(go) == gets
            assert fresh not in stored_blobs(root)
            # Unknown upstream: 404s pass through.
            missing = sha256_digest(b"nowhere")
            assert client.get_blob("lib/app", missing).status == 404
            assert client.get_manifest("lib/app", "nope", expect=(404,)).status == 404
        assert "unexpected error" not in cache.log_text(), cache.log_text()


def client_push(go: GoRegistry, name: str, data: bytes) -> str:
    with go.client() as client:
        return client.push_blob(name, data, chunks=max(1, len(data) >> 24))


def test_concurrent_cold_gets_share_one_upstream_fetch(go: GoRegistry, tmp_path: Path) -> None:
    data = os.urandom(64 << 20)
    digest = client_push(go, "big/blob", data)
    root = tmp_path / "cache"
    with proxy_server(root, go.url) as cache:
        before = upstream_blob_gets(go, digest)

        def fetch(_: int) -> str:
            conn = http.client.HTTPConnection(LOOPBACK, cache.port, timeout=60)
            try:
                conn.request("GET", f"/v2/big/blob/blobs/{digest}")
                resp = conn.getresponse()
                assert resp.status == 200
                hasher = hashlib.sha256()
                while chunk := resp.read(1 << 20):
                    hasher.update(chunk)
                return "sha256:" + hasher.hexdigest()
            finally:
                conn.close()

        with ThreadPoolExecutor(10) as pool:
            results = list(pool.map(fetch, range(10)))
        assert results == [digest] * 10
        assert upstream_blob_gets(go, digest) - before == 1
        wait_until(lambda: stored_blobs(root) == {digest} and not uploads_left(root), 10)
        assert fetch(0) == digest  # warm
        assert upstream_blob_gets(go, digest) - before == 1


# -- a fake upstream that breaks transfers ------------------------------------------------------


class FakeUpstream:
    """An HTTP/1.1 upstream whose blob answers are made by ``respond`` (counts blob GETs)."""

    def __init__(self, respond: Callable[[http.server.BaseHTTPRequestHandler, int], None]) -> None:
        self.gets = 0
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                if "/blobs/" not in self.path:
                    self.send_response(404)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                outer.gets += 1
                respond(self, outer.gets)

        self.server = http.server.ThreadingHTTPServer((LOOPBACK, 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.server.server_address[1]}"

    def __enter__(self) -> FakeUpstream:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


def _read_all(port: int, path: str) -> tuple[int, bytes, bool]:
    """GET ``path``: status, body read, whether the body arrived complete."""
    conn = http.client.HTTPConnection(LOOPBACK, port, timeout=30)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        try:
            return resp.status, resp.read(), True
        except http.client.IncompleteRead as exc:
            return resp.status, exc.partial, False
    finally:
        conn.close()


@pytest.mark.parametrize("fault", ["truncated", "wrong-bytes"])
def test_broken_upstream_transfer_caches_nothing(fault: str, tmp_path: Path) -> None:
    data = os.urandom(3 << 20)
    digest = sha256_digest(data)

    def respond(handler: http.server.BaseHTTPRequestHandler, count: int) -> None:
        handler.send_response(200)
        handler.send_header("Content-Length", str(len(data)))
        handler.send_header("Content-Type", "application/octet-stream")
        handler.end_headers()
        if count == 3:  # the third attempt is served whole
            handler.wfile.write(data)
            return
        if fault == "truncated":
            handler.wfile.write(data[: len(data) // 2])
            handler.close_connection = True
        else:
            handler.wfile.write(data[:-1] + bytes([data[-1] ^ 1]))

    root = tmp_path / "cache"
    with FakeUpstream(respond) as upstream, proxy_server(root, upstream.url) as cache:
        for attempt in (1, 2):
            status, body, complete = _read_all(cache.port, f"/v2/x/y/blobs/{digest}")
            assert status == 200
            assert not complete and len(body) < len(data)  # aborted, never completed
            assert upstream.gets == attempt
            assert stored_blobs(root) == set()
            time.sleep(0.1)
            assert uploads_left(root) == []
        status, body, complete = _read_all(cache.port, f"/v2/x/y/blobs/{digest}")
        assert (status, complete) == (200, True) and body == data
        assert upstream.gets == 3
        # The last byte goes out once the digest is verified; the commit may still be running.
        wait_until(lambda: stored_blobs(root) == {digest}, timeout=10)


def test_blob_redirect_is_followed_and_credentials_stay_on_the_upstream(tmp_path: Path) -> None:
    """Upstream asks for Basic auth and sends the blob body from another host (a CDN, a
    bucket): the cache follows the redirect, and the credentials go to the upstream only."""
    data = os.urandom(2 << 20)
    digest = sha256_digest(data)
    expected = "Basic " + base64.b64encode(b"puller:s3cret").decode()
    seen: dict[str, list[str | None]] = {"upstream": [], "cdn": []}

    def cdn(handler: http.server.BaseHTTPRequestHandler, count: int) -> None:
        seen["cdn"].append(handler.headers.get("Authorization"))
        handler.send_response(200)
        handler.send_header("Content-Length", str(len(data)))
        handler.end_headers()
        handler.wfile.write(data)

    with FakeUpstream(cdn) as other_host:
        # "localhost" is another host than the upstream's 127.0.0.1, on another port too.
        target = f"http://localhost:{other_host.server.server_address[1]}/cdn/blobs/{digest}"

        def upstream_answer(handler: http.server.BaseHTTPRequestHandler, count: int) -> None:
            authorization = handler.headers.get("Authorization")
            seen["upstream"].append(authorization)
            if authorization != expected:
                handler.send_response(401)
                handler.send_header("WWW-Authenticate", 'Basic realm="test"')
                handler.send_header("Content-Length", "0")
            else:
                handler.send_response(307)
                handler.send_header("Location", target)
                handler.send_header("Content-Length", "0")
            handler.end_headers()

        root = tmp_path / "cache"
        with (
            FakeUpstream(upstream_answer) as upstream,
            proxy_server(root, upstream.url, username="puller", password="s3cret") as cache,
        ):
            status, body, complete = _read_all(cache.port, f"/v2/x/y/blobs/{digest}")
            assert (status, complete) == (200, True) and body == data
            wait_until(lambda: stored_blobs(root) == {digest}, timeout=10)
            assert "s3cret" not in cache.log_text()
    assert seen["upstream"] == [None, expected]  # challenged, then answered with credentials
    assert seen["cdn"] == [None]  # the other host never saw them


def _stalling_after_1_mib(
    data: bytes, release: threading.Event
) -> Callable[[http.server.BaseHTTPRequestHandler, int], None]:
    """An upstream answer that sends ``data``'s headers and first MiB, then waits for
    ``release`` (never sending the rest while a test runs)."""

    def stall(handler: http.server.BaseHTTPRequestHandler, count: int) -> None:
        handler.send_response(200)
        handler.send_header("Content-Length", str(len(data)))
        handler.end_headers()
        handler.wfile.write(data[: 1 << 20])
        handler.wfile.flush()
        release.wait(60)

    return stall


def test_shutdown_stops_a_stalled_fetch_and_keeps_nothing(tmp_path: Path) -> None:
    """A client that gave up on a cold blob whose upstream then stalls: stopping the server
    interrupts the fetch at once (not after the upstream's read timeout) and keeps no upload."""
    data = os.urandom(4 << 20)
    digest = sha256_digest(data)
    release = threading.Event()
    stall = _stalling_after_1_mib(data, release)

    root = tmp_path / "cache"
    try:
        with FakeUpstream(stall) as upstream:
            cache = proxy_server(root, upstream.url)
            with cache:
                conn = http.client.HTTPConnection(LOOPBACK, cache.port, timeout=30)
                conn.request("GET", f"/v2/x/y/blobs/{digest}")
                response = conn.getresponse()
                assert response.status == 200
                assert len(response.read(512 << 10)) == 512 << 10  # the bytes that arrived
                conn.close()  # the client gives up; the fetch goes on in the background
                assert len(uploads_left(root)) == 1
                started = time.monotonic()
            stopped = time.monotonic() - started
            # uvicorn ends by re-raising the SIGTERM it handled; -9 would mean it had to be killed.
            assert cache.returncode in (0, -signal.SIGTERM), cache.log_text()
            assert "Traceback" not in cache.log_text()
            assert stopped < 8, f"the server took {stopped:.1f}s to stop"
            assert uploads_left(root) == [] and stored_blobs(root) == set()
    finally:
        release.set()


def test_a_copy_slower_than_cachewritetimeout_is_abandoned(tmp_path: Path) -> None:
    """``proxy.cachewritetimeout`` (distribution 3): a cold fetch whose upstream stalls past it
    is abandoned: the client's transfer is cut, the upload removed, nothing stored; the next
    GET fetches again, and a whole transfer in time is kept."""
    data = os.urandom(4 << 20)
    digest = sha256_digest(data)
    release = threading.Event()
    stall = _stalling_after_1_mib(data, release)

    def respond(handler: http.server.BaseHTTPRequestHandler, count: int) -> None:
        if count == 1:
            stall(handler, count)
            return
        handler.send_response(200)
        handler.send_header("Content-Length", str(len(data)))
        handler.end_headers()
        handler.wfile.write(data)

    root = tmp_path / "cache"
    try:
        with (
            FakeUpstream(respond) as upstream,
            proxy_server(root, upstream.url, cachewritetimeout="2s") as cache,
        ):
            status, body, complete = _read_all(cache.port, f"/v2/x/y/blobs/{digest}")
            assert status == 200 and not complete and len(body) < len(data)
            assert "proxy.cachewritetimeout (2s) passed" in cache.log_text()
            wait_until(lambda: uploads_left(root) == [], timeout=10)
            assert stored_blobs(root) == set()
            status, body, complete = _read_all(cache.port, f"/v2/x/y/blobs/{digest}")
            assert (status, complete) == (200, True) and body == data
            assert upstream.gets == 2
            wait_until(lambda: stored_blobs(root) == {digest}, timeout=10)
    finally:
        release.set()


def _chunked(handler: http.server.BaseHTTPRequestHandler, data: bytes, *, end: bool) -> None:
    """A 200 whose body is ``data`` in chunks: no Content-Length (``end``: the last chunk is
    sent; without it the connection closes mid-body)."""
    handler.send_response(200)
    handler.send_header("Transfer-Encoding", "chunked")
    handler.end_headers()
    for start in range(0, len(data), 256 << 10):
        piece = data[start : start + (256 << 10)]
        handler.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece))
    if end:
        handler.wfile.write(b"0\r\n\r\n")
    else:
        handler.close_connection = True


def test_an_upstream_body_without_length_is_streamed_and_verified(tmp_path: Path) -> None:
    """No Content-Length upstream: the client gets the blob chunked, its end held back until
    the digest is verified; a body cut short is aborted, never a complete (or empty) 200."""
    data = os.urandom((3 << 20) + 5)
    digest = sha256_digest(data)

    def respond(handler: http.server.BaseHTTPRequestHandler, count: int) -> None:
        _chunked(handler, data if count > 1 else data[: len(data) // 2], end=count > 1)

    root = tmp_path / "cache"
    with FakeUpstream(respond) as upstream, proxy_server(root, upstream.url) as cache:
        conn = http.client.HTTPConnection(LOOPBACK, cache.port, timeout=30)
        conn.request("GET", f"/v2/x/y/blobs/{digest}")
        response = conn.getresponse()
        assert response.status == 200
        assert response.getheader("Content-Length") is None
        with pytest.raises(http.client.IncompleteRead):
            response.read()
        conn.close()
        assert stored_blobs(root) == set()
        status, body, complete = _read_all(cache.port, f"/v2/x/y/blobs/{digest}")
        assert (status, complete) == (200, True) and body == data
        wait_until(lambda: stored_blobs(root) == {digest}, timeout=10)
        assert "Traceback" not in cache.log_text()


def test_stalled_upstreams_do_not_starve_other_requests(tmp_path: Path) -> None:
    """More cold fetches stalled upstream than the server has worker threads: cached blobs,
    uploads and everything else are still served at once."""
    release = threading.Event()

    def stall(handler: http.server.BaseHTTPRequestHandler, count: int) -> None:
        release.wait(60)
        handler.send_response(500)
        handler.send_header("Content-Length", "0")
        handler.end_headers()

    root = tmp_path / "cache"
    warm = os.urandom(100_000)
    Registry.filesystem(root).repository("x/warm").blobs.put(warm)
    try:
        with FakeUpstream(stall) as upstream, proxy_server(root, upstream.url) as cache:
            clients = []
            for n in range(45):
                conn = http.client.HTTPConnection(LOOPBACK, cache.port, timeout=30)
                conn.request("GET", f"/v2/x/cold/blobs/{sha256_digest(b'%d' % n)}")
                clients.append(conn)
            wait_until(lambda: upstream.gets >= 45, 20)
            # Starved, this GET would wait for the stalls (60 s): the client gives up after 10.
            conn = http.client.HTTPConnection(LOOPBACK, cache.port, timeout=10)
            conn.request("GET", f"/v2/x/warm/blobs/{sha256_digest(warm)}")
            response = conn.getresponse()
            assert (response.status, response.read()) == (200, warm)
            conn.close()
            release.set()
            for conn in clients:
                assert conn.getresponse().status == 502
                conn.close()
    finally:
        release.set()


def test_a_client_leaving_before_upstream_answers_ends_its_request(tmp_path: Path) -> None:
    """Upstream has not even sent headers when the client gives up: the request ends at once
    (logged as 499) rather than waiting on upstream, and a stop does not wait the drain
    timeout for it."""
    release = threading.Event()

    def no_headers(handler: http.server.BaseHTTPRequestHandler, count: int) -> None:
        release.wait(60)

    root = tmp_path / "cache"
    digest = sha256_digest(b"never sent")
    try:
        with FakeUpstream(no_headers) as upstream:
            cache = DistblobServer(
                root,
                extra_config={"proxy": {"remoteurl": upstream.url}, "http": {"draintimeout": "8s"}},
            )
            with cache:
                conn = http.client.HTTPConnection(LOOPBACK, cache.port, timeout=30)
                conn.request("GET", f"/v2/x/y/blobs/{digest}")
                wait_until(lambda: upstream.gets == 1, 10)  # the request now waits on upstream
                time.sleep(0.2)
                conn.close()
                wait_until(lambda: "status=499" in cache.log_text(), 5)
                started = time.monotonic()
            stopped = time.monotonic() - started
            assert cache.returncode in (0, -signal.SIGTERM), cache.log_text()
            assert stopped < 6, f"the server took {stopped:.1f}s to stop"
            assert "Traceback" not in cache.log_text()
    finally:
        release.set()


def test_stop_with_a_client_on_a_stalled_fetch_drains_then_cleans_up(tmp_path: Path) -> None:
    """A client still receiving a cold blob whose upstream stalls: the stop waits
    ``http.draintimeout``, then cuts the response and removes the upload."""
    data = os.urandom(4 << 20)
    digest = sha256_digest(data)
    release = threading.Event()
    stall = _stalling_after_1_mib(data, release)

    root = tmp_path / "cache"
    try:
        with FakeUpstream(stall) as upstream:
            cache = DistblobServer(
                root,
                extra_config={"proxy": {"remoteurl": upstream.url}, "http": {"draintimeout": "1s"}},
            )
            with cache:
                conn = http.client.HTTPConnection(LOOPBACK, cache.port, timeout=30)
                conn.request("GET", f"/v2/x/y/blobs/{digest}")
                response = conn.getresponse()
                assert len(response.read(256 << 10)) == 256 << 10
                wait_until(lambda: len(uploads_left(root)) == 1, 10)
            conn.close()
            # Stopped by SIGTERM, not killed (the harness kills after 10 s; the fetch's read
            # timeout is 60 s, so only the drain timeout and the interrupt make it in time).
            assert cache.returncode in (0, -signal.SIGTERM), cache.log_text()
            assert uploads_left(root) == [] and stored_blobs(root) == set()
            assert "Traceback" not in cache.log_text()
    finally:
        release.set()


# -- authenticated upstreams --------------------------------------------------------------------


class AuthGoRegistry(GoRegistry):
    """The Go registry with ``auth:``: ready when ``GET /v2/`` answers 401."""

    def _answers_ping(self) -> bool:
        conn = http.client.HTTPConnection(LOOPBACK, self.port, timeout=2.0)
        try:
            conn.request("GET", "/v2/")
            resp = conn.getresponse()
            resp.read()
            return resp.status == 401
        except OSError:
            return False
        finally:
            conn.close()


def _pull_fails_cleanly(cache: DistblobServer, ref: str, out: Path) -> None:
    name, _, tag = ref.partition(":")
    with cache.client() as client:
        resp = client.get_manifest(name, tag, expect=None)
    assert resp.status == 403, resp
    assert json.loads(resp.body)["errors"][0]["code"] == "DENIED"
    with pytest.raises(Exception, match=r"denied|DENIED|403"):
        skopeo_pull(cache.host, ref, out)
    assert "unexpected error" not in cache.log_text(), cache.log_text()
    assert "hunter2" not in cache.log_text() and "wrong" not in cache.log_text()


def test_htpasswd_upstream(image: OciImage, tmp_path: Path) -> None:
    import bcrypt

    htpasswd = tmp_path / "htpasswd"
    hashed = bcrypt.hashpw(b"hunter2", bcrypt.gensalt(rounds=4)).decode()
    htpasswd.write_text(f"alice:{hashed}\n")
    auth = {"auth": {"htpasswd": {"realm": "test-realm", "path": str(htpasswd)}}}
    with AuthGoRegistry(tmp_path / "upstream", extra_config=auth) as go:
        skopeo_push(image, go.host, "sec/app:v1", creds="alice:hunter2")
        remote = go.url
        with proxy_server(tmp_path / "good", remote, username="alice", password="hunter2") as c:
            skopeo_pull(c.host, "sec/app:v1", tmp_path / "out")
            assert (tmp_path / "out" / "manifest.json").exists()
            assert "hunter2" not in c.log_text()
        with proxy_server(tmp_path / "bad", remote, username="alice", password="wrong") as c:
            _pull_fails_cleanly(c, "sec/app:v1", tmp_path / "out-bad")
        assert stored_blobs(tmp_path / "bad") == set()


class TokenServer:
    """A Docker token server: basic auth ``alice:hunter2``, JWTs signed with a throw-away EC key
    whose self-signed certificate is the registry's ``rootcertbundle`` (``x5c`` header)."""

    SERVICE = "test-registry"
    ISSUER = "test-issuer"

    def __init__(self, workdir: Path) -> None:
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import NameOID

        self.key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "distblob test token signer")])
        now = dt.datetime.now(dt.UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(self.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(days=1))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(self.key, hashes.SHA256())
        )
        self.bundle = workdir / "token-ca.pem"
        self.bundle.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        self.x5c = base64.b64encode(cert.public_bytes(serialization.Encoding.DER)).decode()
        self.requests: list[dict[str, Any]] = []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                outer.handle(self)

        self.server = http.server.ThreadingHTTPServer((LOOPBACK, 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def realm(self) -> str:
        return f"http://{LOOPBACK}:{self.server.server_address[1]}/token"

    def handle(self, handler: http.server.BaseHTTPRequestHandler) -> None:
        import jwt

        query = urllib.parse.parse_qs(urllib.parse.urlsplit(handler.path).query)
        expected = "Basic " + base64.b64encode(b"alice:hunter2").decode()
        authorized = handler.headers.get("Authorization") == expected
        self.requests.append({"query": query, "authorized": authorized})
        if not authorized:
            handler.send_response(401)
            handler.send_header("Content-Length", "0")
            handler.end_headers()
            return
        access = []
        for scope in query.get("scope", []):
            kind, _, rest = scope.partition(":")
            name, _, actions = rest.rpartition(":")
            access.append({"type": kind, "name": name, "actions": actions.split(",")})
        now = int(time.time())
        claims = {
            "iss": self.ISSUER,
            "sub": "alice",
            "aud": self.SERVICE,
            "exp": now + 300,
            "nbf": now - 10,
            "iat": now,
            "jti": os.urandom(8).hex(),
            "access": access,
        }
        token = jwt.encode(claims, self.key, algorithm="ES256", headers={"x5c": [self.x5c]})
        body = json.dumps({"token": token, "expires_in": 300}).encode()
        handler.send_response(200)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        handler.wfile.write(body)

    def __enter__(self) -> TokenServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_token_upstream(image: OciImage, tmp_path: Path) -> None:
    with TokenServer(tmp_path) as tokens:
        auth = {
            "auth": {
                "token": {
                    "realm": tokens.realm,
                    "service": TokenServer.SERVICE,
                    "issuer": TokenServer.ISSUER,
                    "rootcertbundle": str(tokens.bundle),
                }
            }
        }
        with AuthGoRegistry(tmp_path / "upstream", extra_config=auth) as go:
            skopeo_push(image, go.host, "tok/app:v1", creds="alice:hunter2")
            pushed = len(tokens.requests)
            with proxy_server(tmp_path / "good", go.url, username="alice", password="hunter2") as c:
                skopeo_pull(c.host, "tok/app:v1", tmp_path / "out")
                assert (tmp_path / "out" / "manifest.json").exists()
            ours = tokens.requests[pushed:]
            assert len(ours) == 1  # one token, reused for the manifest and every blob
            assert ours[0]["authorized"]
            assert ours[0]["query"]["scope"] == ["repository:tok/app:pull"]
            assert ours[0]["query"]["service"] == [TokenServer.SERVICE]
            with proxy_server(tmp_path / "bad", go.url, username="alice", password="wrong") as c:
                _pull_fails_cleanly(c, "tok/app:v1", tmp_path / "out-bad")


# -- TTL expiry across a restart ----------------------------------------------------------------


def test_ttl_expires_and_survives_restart(go: GoRegistry, tmp_path: Path) -> None:
    shared, own = os.urandom(5000), os.urandom(6000)
    shared_digest = client_push(go, "ttl/a", shared)
    assert client_push(go, "ttl/b", shared) == shared_digest
    own_digest = client_push(go, "ttl/b", own)
    config = {"mediaType": "application/vnd.oci.image.config.v1+json"}
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {**config, "digest": own_digest, "size": len(own)},
            "layers": [],
        }
    ).encode()
    with go.client() as client:
        client.put_manifest("ttl/b", "v1", manifest, "application/vnd.oci.image.manifest.v1+json")
    manifest_digest = sha256_digest(manifest)
    root = tmp_path / "cache"
    cache = proxy_server(root, go.url, ttl="3s")
    with cache:
        with cache.client() as client:
            client.get_blob("ttl/a", shared_digest, expect=(200,))
            fetched_a = time.time()
            time.sleep(1.5)
            client.get_blob("ttl/b", shared_digest, expect=(200,))
            client.get_blob("ttl/b", own_digest, expect=(200,))
            assert client.get_manifest("ttl/b", "v1").body == manifest
        cache.stop()  # the schedule is saved at shutdown
        state = json.loads((root / "scheduler-state.json").read_text())
        assert set(state) == {
            f"ttl/a@{shared_digest}",
            f"ttl/b@{shared_digest}",
            f"ttl/b@{own_digest}",
            f"ttl/b@{manifest_digest}",
        }
        assert state[f"ttl/b@{manifest_digest}"]["EntryType"] == 1
        assert state[f"ttl/a@{shared_digest}"]["EntryType"] == 0
        cache.start()  # the timers resume
        wait_until(lambda: not layer_link(root, "ttl/a", shared_digest).exists(), 6)
        assert time.time() - fetched_a >= 3
        assert shared_digest in stored_blobs(root)  # ttl/b still links it
        wait_until(lambda: stored_blobs(root) == set(), 6)
        revisions = root / "docker/registry/v2/repositories/ttl/b/_manifests/revisions/sha256"
        assert list(revisions.glob("*/link")) == []
        wait_until(lambda: json.loads((root / "scheduler-state.json").read_text()) == {}, 8)


# -- upstreams that compress, refuse HEAD, rate-limit; tags lists --------------------------------


class ScriptedUpstream:
    """A loopback upstream whose every answer comes from ``respond(handler, method)``; it
    records each request as ``(method, path, headers)``."""

    def __init__(self, respond: Callable[[http.server.BaseHTTPRequestHandler, str], None]) -> None:
        self.requests: list[tuple[str, str, dict[str, str]]] = []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def _any(self) -> None:
                outer.requests.append((self.command, self.path, dict(self.headers.items())))
                respond(self, self.command)

            do_GET = do_HEAD = _any

        self.server = http.server.ThreadingHTTPServer((LOOPBACK, 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.url = f"http://{LOOPBACK}:{self.server.server_address[1]}"

    def __enter__(self) -> ScriptedUpstream:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


def _answer(
    handler: http.server.BaseHTTPRequestHandler,
    status: int,
    body: bytes = b"",
    headers: dict[str, str] | None = None,
) -> None:
    """Answer as many real upstreams do: gzip the body whenever the client accepts gzip."""
    handler.send_response(status)
    if body and "gzip" in handler.headers.get("Accept-Encoding", ""):
        body = gzip.compress(body)
        handler.send_header("Content-Encoding", "gzip")
    for name, value in (headers or {}).items():
        handler.send_header(name, value)
    handler.send_header("Content-Length", str(len(body)))
    handler.end_headers()
    if handler.command != "HEAD":
        handler.wfile.write(body)


def test_an_upstream_that_compresses_refuses_head_and_rate_limits(tmp_path: Path) -> None:
    config = b'{"architecture":"amd64","os":"linux"}' * 50  # compressible
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": sha256_digest(config),
                "size": len(config),
            },
            "layers": [],
        }
    ).encode()
    limited = sha256_digest(b"rate limited")

    def respond(handler: http.server.BaseHTTPRequestHandler, method: str) -> None:
        path = handler.path
        if path.endswith(f"/blobs/{limited}") or path.endswith("/manifests/busy"):
            _answer(handler, 429, b'{"errors":[]}', {"Retry-After": "17"})
        elif "/manifests/" in path and method == "HEAD":
            _answer(handler, 405)  # this upstream serves manifests by GET only
        elif path.endswith(("/manifests/v1", f"/manifests/{sha256_digest(manifest)}")):
            _answer(handler, 200, manifest, {"Content-Type": json.loads(manifest)["mediaType"]})
        elif path.endswith(f"/blobs/{sha256_digest(config)}"):
            _answer(handler, 200, config, {"Content-Type": "application/octet-stream"})
        else:
            _answer(handler, 404, b'{"errors":[]}')

    with ScriptedUpstream(respond) as upstream:
        with proxy_server(tmp_path / "cache", upstream.url) as cache, cache.client() as client:
            # The manifest by tag (HEAD refused: a GET instead) and by digest, as upstream has it.
            got = client.get_manifest("x/app", "v1", expect=(200,))
            assert got.body == manifest
            assert got.headers["Docker-Content-Digest"] == sha256_digest(manifest)
            by_digest = client.get_manifest("x/app", sha256_digest(manifest), expect=(200,))
            assert by_digest.body == manifest
            # A cold HEAD tells the blob's true size; the GET brings the blob itself.
            head = client.head_blob("x/app", sha256_digest(config), expect=(200,))
            assert head.headers["Content-Length"] == str(len(config))
            assert client.get_blob("x/app", sha256_digest(config)).body == config
            # A rate-limited upstream: 429 with its Retry-After, not a 502.
            for response in (
                client.get_blob("x/app", limited),
                client.get_manifest("x/app", "busy", expect=None),
            ):
                assert response.status == 429
                assert json.loads(response.body)["errors"][0]["code"] == "TOOMANYREQUESTS"
                assert response.headers["Retry-After"] == "17"
            # A tag that is no tag is refused before anything goes upstream.
            asked = len(upstream.requests)
            for bad in ("v1%3Fx=y", "%2E%2E", "v1%23frag", ".hidden"):
                resp = client.request("GET", f"/v2/x/app/manifests/{bad}")
                assert resp.status in (400, 404), bad
            assert len(upstream.requests) == asked
        assert all(h.get("Accept-Encoding") == "identity" for _, _, h in upstream.requests)
        assert "Traceback" not in cache.log_text()


def test_tags_list_follows_upstream_and_falls_back_to_the_cache(
    image: OciImage, tmp_path: Path
) -> None:
    """As distribution's proxyTagService: upstream's tags while it answers, the cache's when
    it does not (NAME_UNKNOWN for a repository the cache never saw)."""
    with GoRegistry(tmp_path / "upstream") as go:
        skopeo_push(image, go.host, "tl/app:v1")
        with proxy_server(tmp_path / "cache", go.url) as cache, cache.client() as client:
            listed = client.request("GET", "/v2/tl/app/tags/list")
            assert json.loads(listed.body) == {"name": "tl/app", "tags": ["v1"]}
            client.get_manifest("tl/app", "v1", expect=(200,))  # now cached, tag and all
            with go.client() as upstream:
                upstream.put_manifest("tl/app", "v2", image["manifest"], OCI_MANIFEST)
            listed = client.request("GET", "/v2/tl/app/tags/list")
            assert json.loads(listed.body)["tags"] == ["v1", "v2"]
            page = client.request("GET", "/v2/tl/app/tags/list?n=1")
            assert json.loads(page.body)["tags"] == ["v1"] and "last=v1" in page.headers["Link"]
            go.stop()
            listed = client.request("GET", "/v2/tl/app/tags/list")
            assert (listed.status, json.loads(listed.body)["tags"]) == (200, ["v1"])
            unknown = client.request("GET", "/v2/tl/never/tags/list")
            assert unknown.status == 404
            assert json.loads(unknown.body)["errors"][0]["code"] == "NAME_UNKNOWN"


def test_a_cache_removes_abandoned_uploads_at_start(tmp_path: Path) -> None:
    """A fetch killed with its process leaves an upload nothing will resume: the cache removes
    it when it starts, but not one a live writer holds, nor one written a moment ago."""
    root = tmp_path / "cache"
    store = Registry.filesystem(root).repository("x/app").blobs
    abandoned, recent, held = store.create(), store.create(), store.create()
    for writer in (abandoned, recent, held):
        writer.write(b"partial body")
    abandoned.close()
    recent.close()
    data = root / "docker/registry/v2/repositories/x/app/_uploads" / abandoned.id / "data"
    os.utime(data, (time.time() - 3600, time.time() - 3600))
    os.utime(data.parent / "startedat", (time.time() - 3600, time.time() - 3600))
    held_data = data.parent.parent / held.id / "data"
    os.utime(held_data, (time.time() - 3600, time.time() - 3600))
    try:
        with (
            FakeUpstream(lambda handler, count: None) as upstream,
            proxy_server(root, upstream.url) as cache,
        ):
            wait_until(lambda: not data.parent.exists(), 10)
            assert {p.name for p in uploads_left(root)} == {recent.id, held.id}
            assert "removed abandoned upload" in cache.log_text()
    finally:
        held.cancel()


@pytest.mark.anyio
async def test_a_rate_limited_token_server_is_a_429() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/token":
            return httpx.Response(429, headers={"Retry-After": "17"})
        challenge = 'Bearer realm="http://reg.test/token",service="reg"'
        return httpx.Response(401, headers={"WWW-Authenticate": challenge})

    upstream = Upstream("http://reg.test", transport=httpx.MockTransport(handler))
    with pytest.raises(UpstreamError) as caught:
        await upstream.head("/v2/a/blobs/x", name="a")
    await upstream.aclose()
    assert (caught.value.status, caught.value.retry_after) == (429, "17")


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio"])  # the server's loop
async def test_upstream_tags_pages_loops_and_junk(tmp_path: Path, anyio_backend: str) -> None:
    """Every page is followed; a Link back to a page seen ends the list (with what it held);
    a page no JSON parser can take (nested too deeply) falls back to the cache's tags."""
    pages = {
        "/v2/t/app/tags/list": (["a", "b"], '</v2/t/app/tags/list?last=b>; rel="next"'),
        "/v2/t/app/tags/list?last=b": (["c", "..bad", 7], '</v2/t/app/tags/list>; rel="next"'),
    }

    def handler(request: httpx.Request) -> httpx.Response:
        target = request.url.raw_path.decode()
        if target.startswith("/v2/deep/"):
            return httpx.Response(200, content=b"[" * 200_000 + b"]" * 200_000)
        tags, link = pages[target]
        return httpx.Response(200, json={"name": "t/app", "tags": tags}, headers={"Link": link})

    registry = Registry.filesystem(tmp_path)
    upstream = Upstream("http://reg.test", transport=httpx.MockTransport(handler))
    store = ProxyManifestStore(registry, upstream, TTLScheduler(registry, 0.0))
    assert await store.tags(registry.repository("t/app")) == ["a", "b", "c"]
    deep = registry.repository("deep/app")
    deep.blobs.put(b"{}")
    deep.manifests.put("v1", _oci_manifest(b"{}"))
    assert await store.tags(deep) == ["v1"]
    # A repository the cache holds only blobs of was never tagged here: NAME_UNKNOWN, as from
    # an upstream Go registry, whatever the cache pulled.
    blobs_only = registry.repository("deep/blobs")
    blobs_only.blobs.put(b"a blob: the repository exists, with no tag")
    with pytest.raises(NameUnknownError):
        await store.tags(blobs_only)
    await upstream.aclose()


def _oci_manifest(config: bytes, **extra: Any) -> bytes:
    return json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": sha256_digest(config),
                "size": len(config),
            },
            "layers": [],
            **extra,
        }
    ).encode()


def test_referrers_come_from_upstream_cold(tmp_path: Path) -> None:
    """Referrers are asked upstream (a cold cache knows none), filtered by artifactType."""
    with DistblobServer(tmp_path / "upstream") as up, up.client() as upstream:
        config = b"{}"
        upstream.push_blob("r/app", config)
        subject = _oci_manifest(config)
        upstream.put_manifest("r/app", "v1", subject, OCI_MANIFEST)
        described = {
            "mediaType": OCI_MANIFEST,
            "digest": sha256_digest(subject),
            "size": len(subject),
        }
        referrers = {}
        for kind in ("application/vnd.example.sig", "application/vnd.example.sbom"):
            body = _oci_manifest(config, artifactType=kind, subject=described)
            upstream.put_manifest("r/app", sha256_digest(body), body, OCI_MANIFEST)
            referrers[kind] = sha256_digest(body)
        with proxy_server(tmp_path / "cache", up.url) as cache, cache.client() as client:
            target = f"/v2/r/app/referrers/{sha256_digest(subject)}"
            listed = client.request("GET", target)
            assert listed.status == 200
            assert listed.headers["Content-Type"] == "application/vnd.oci.image.index.v1+json"
            found = {m["digest"] for m in json.loads(listed.body)["manifests"]}
            assert found == set(referrers.values())
            kind = "application/vnd.example.sig"
            filtered = client.request("GET", f"{target}?artifactType={kind}")
            assert filtered.headers["OCI-Filters-Applied"] == "artifactType"
            assert [m["digest"] for m in json.loads(filtered.body)["manifests"]] == [
                referrers[kind]
            ]
            bad = client.request("GET", "/v2/r/app/referrers/sha256:nothex")
            assert bad.status == 400


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio"])  # the server's loop
async def test_upstream_referrers_pages_filters_junk_and_fallback(
    tmp_path: Path, anyio_backend: str
) -> None:
    """Upstream's pages are followed, entries that name no manifest dropped, the filter applied
    here when upstream did not; an upstream without the referrers API (404) gives the cache's."""
    subject = "sha256:" + "a" * 64

    def entry(n: int, kind: str) -> dict[str, Any]:
        return {
            "mediaType": OCI_MANIFEST,
            "digest": f"sha256:{n:064x}",
            "size": 9,
            "artifactType": kind,
        }

    junk = [{"digest": "sha256:nothex", "mediaType": OCI_MANIFEST, "size": 1}, "x", {"size": True}]
    first = f"/v2/p/app/referrers/{subject}?artifactType=sig"
    pages = {
        first: ([entry(1, "sig"), entry(2, "sbom"), *junk], f'<{first}&page=2>; rel="next"'),
        f"{first}&page=2": ([entry(3, "sig")], ""),
    }

    def handler(request: httpx.Request) -> httpx.Response:
        target = request.url.raw_path.decode()
        if target not in pages:
            return httpx.Response(404, text="404 page not found")
        listed, link = pages[target]
        index = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json"}
        return httpx.Response(200, json={**index, "manifests": listed}, headers={"Link": link})

    registry = Registry.filesystem(tmp_path)
    upstream = Upstream("http://reg.test", transport=httpx.MockTransport(handler))
    store = ProxyManifestStore(registry, upstream, TTLScheduler(registry, 0.0))
    index = await store.referrers(registry.repository("p/app"), subject, "sig")
    assert [m["digest"] for m in index["manifests"]] == [
        entry(1, "")["digest"],
        entry(3, "")["digest"],
    ]
    # No referrers API upstream: what the cache holds (here a referrer it stored earlier).
    repo = registry.repository("q/app")
    config = b"{}"
    repo.blobs.put(config)
    cached = _oci_manifest(
        config, subject={"mediaType": OCI_MANIFEST, "digest": subject, "size": 9}
    )
    repo.manifests.put(sha256_digest(cached), cached, OCI_MANIFEST)
    index = await store.referrers(repo, subject)
    assert [m["digest"] for m in index["manifests"]] == [sha256_digest(cached)]
    await upstream.aclose()
