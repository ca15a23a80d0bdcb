"""``http.headers``, ``http.prefix``, ``http.host``, ``http.relativeurls``, ``http.net: unix``
and ``GET /``, each side by side with the Go registry 2.8.2 started with the same keys."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from support.goregistry import LOOPBACK, GoRegistry
from support.server import DistblobServer

pytestmark = pytest.mark.timeout(180)


def _root_answers(port: int) -> bool:
    """Whether a registry answers ``GET /`` (its liveness path, outside any prefix)."""
    try:
        return httpx.get(f"http://{LOOPBACK}:{port}/", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


class _Go(GoRegistry):
    def _answers_ping(self) -> bool:
        return _root_answers(self.port)


class _Ours(DistblobServer):
    def _answers_ping(self) -> bool:
        return _root_answers(self.port)


@contextmanager
def both(tmp_path: Path, http: dict[str, Any]) -> Iterator[dict[str, str]]:
    """The Go registry and distblob, each with ``http`` merged into its config: their base
    URLs by name."""
    with ExitStack() as stack:
        go = stack.enter_context(_Go(tmp_path / "go", extra_config={"http": http}))
        ours = stack.enter_context(_Ours(tmp_path / "ours", extra_config={"http": http}))
        yield {"go": go.url, "distblob": ours.url}


def _start_upload(base: str, prefix: str = "", **headers: str) -> httpx.Response:
    response = httpx.post(f"{base}{prefix}/v2/lib/app/blobs/uploads/", headers=headers)
    assert response.status_code == 202, response.text
    return response


def test_get_root_as_go(tmp_path: Path) -> None:
    """``/`` is 200, empty, not cached, without the API version header or the configured
    headers, for any method (a Helm chart's liveness probe)."""
    with both(tmp_path, {"headers": {"X-Probe": ["yes"]}}) as urls:
        for name, base in urls.items():
            for method in ("GET", "HEAD", "POST"):
                response = httpx.request(method, f"{base}/")
                assert response.status_code == 200, (name, method)
                assert response.content == b"", name
                assert response.headers["cache-control"] == "no-cache", name
                assert "docker-distribution-api-version" not in response.headers, name
                assert "x-probe" not in response.headers, name


def test_headers_sent_as_go(tmp_path: Path) -> None:
    """The configured headers go on every answer of an API route (200, 404 of a blob, 405),
    each value on its own line, and not on a path no route takes."""
    headers = {"X-Served-By": ["registry-a"], "X-Multi": ["one", "two"]}
    with both(tmp_path, {"headers": headers}) as urls:
        seen: dict[str, list[tuple[int, list[str], list[str]]]] = {}
        for name, base in urls.items():
            answers = [
                httpx.get(f"{base}/v2/"),
                httpx.get(f"{base}/v2/lib/app/blobs/sha256:{'0' * 64}"),
                httpx.request("PATCH", f"{base}/v2/lib/app/tags/list"),
                httpx.get(f"{base}/nothing/here"),
            ]
            seen[name] = [
                (
                    r.status_code,
                    r.headers.get_list("x-served-by"),
                    r.headers.get_list("x-multi"),
                )
                for r in answers
            ]
        assert seen["distblob"] == seen["go"]
        assert seen["go"][0] == (200, ["registry-a"], ["one", "two"])
        assert seen["go"][1][1:] == (["registry-a"], ["one", "two"])
        assert seen["go"][3][1:] == ([], [])


def _push(base: str, location: str, data: bytes) -> httpx.Response:
    """PUT the whole blob on an upload ``location`` (absolute or a path on ``base``)."""
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    url = location if location.startswith("http") else base + location
    return httpx.put(f"{url}&digest={digest}", content=data)


def test_prefix_routed_as_go(tmp_path: Path) -> None:
    """Under ``prefix: /reg/`` the API answers at ``/reg/v2/`` only; Locations carry the
    prefix (absolute with ``relativeurls: false``, Go's default) and work."""
    with both(tmp_path, {"prefix": "/reg/", "relativeurls": False}) as urls:
        for name, base in urls.items():
            assert httpx.get(f"{base}/reg/v2/").status_code == 200, name
            assert httpx.get(f"{base}/v2/").status_code == 404, name
            location = _start_upload(base, "/reg").headers["location"]
            assert location.startswith(f"{base}/reg/v2/lib/app/blobs/uploads/"), name
            done = _push(base, location, b"prefixed")
            assert done.status_code == 201, (name, done.text)
            digest = "sha256:" + hashlib.sha256(b"prefixed").hexdigest()
            assert done.headers["location"] == f"{base}/reg/v2/lib/app/blobs/{digest}", name
            assert httpx.get(done.headers["location"]).content == b"prefixed", name


def test_prefix_in_relative_locations(tmp_path: Path) -> None:
    """With ``relativeurls: true`` distblob keeps the prefix in the path; Go 2.8.2 leaves it
    out (a Location that misses the registry: a documented difference)."""
    with both(tmp_path, {"prefix": "/reg", "relativeurls": True}) as urls:
        go = _start_upload(urls["go"], "/reg").headers["location"]
        ours = _start_upload(urls["distblob"], "/reg").headers["location"]
    assert go.startswith("/v2/lib/app/blobs/uploads/")
    assert ours.startswith("/reg/v2/lib/app/blobs/uploads/")


def test_host_in_location_as_go(tmp_path: Path) -> None:
    """``http.host`` is the scheme and host of every Location, whatever the request's
    ``Host`` and ``X-Forwarded-*`` headers say."""
    host = "https://registry.example.com:8443"
    with both(tmp_path, {"host": host}) as urls:
        for name, base in urls.items():
            forwarded = {"X-Forwarded-Proto": "http", "X-Forwarded-Host": "other.example"}
            location = _start_upload(base, **forwarded).headers["location"]
            assert location.startswith(f"{host}/v2/lib/app/blobs/uploads/"), name
            path = location.removeprefix(host)
            done = _push(base, path, b"hosted")
            digest = "sha256:" + hashlib.sha256(b"hosted").hexdigest()
            assert done.headers["location"] == f"{host}/v2/lib/app/blobs/{digest}", name


def test_relative_urls_as_go(tmp_path: Path) -> None:
    """``relativeurls: true``: paths; ``false``: absolute on the request's host, or on what
    ``X-Forwarded-Proto``/``X-Forwarded-Host`` (the first of a list) or ``Forwarded`` say."""
    with both(tmp_path, {"relativeurls": True}) as urls:
        for name, base in urls.items():
            assert _start_upload(base).headers["location"].startswith("/v2/lib/app/"), name
    with both(tmp_path, {"relativeurls": False}) as urls:
        for name, base in urls.items():
            location = _start_upload(base).headers["location"]
            assert location.startswith(f"{base}/v2/lib/app/blobs/uploads/"), name
            behind = {"X-Forwarded-Proto": "https", "X-Forwarded-Host": "a.example, b.example"}
            location = _start_upload(base, **behind).headers["location"]
            assert location.startswith("https://a.example/v2/lib/app/"), name
            rfc = {"Forwarded": 'for=10.0.0.1;proto=https;host="c.example:444"'}
            location = _start_upload(base, **rfc).headers["location"]
            assert location.startswith("https://c.example:444/v2/lib/app/"), name


def test_unix_socket(tmp_path: Path) -> None:
    """``http.net: unix`` serves on the socket at ``http.addr`` (the API and ``/``)."""
    socket_path = tmp_path / "registry.sock"
    config = {
        "version": 0.1,
        "storage": {"filesystem": {"rootdirectory": str(tmp_path / "root")}},
        "http": {"net": "unix", "addr": str(socket_path), "secret": "unix-secret"},
    }
    config_path = tmp_path / "config.yml"
    config_path.write_text(json.dumps(config))
    log = (tmp_path / "serve.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "distblob.cli", "serve", "--config", str(config_path)],
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=tmp_path,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    transport = httpx.HTTPTransport(uds=str(socket_path))
    try:
        with httpx.Client(transport=transport, base_url="http://registry") as client:
            deadline = time.monotonic() + 30
            while not socket_path.exists():
                assert proc.poll() is None, (tmp_path / "serve.log").read_text()
                assert time.monotonic() < deadline, "no socket"
                time.sleep(0.05)
            assert client.get("/").status_code == 200
            assert client.get("/v2/").status_code == 200
            location = client.post("/v2/lib/app/blobs/uploads/").headers["location"]
            digest = "sha256:" + hashlib.sha256(b"over a socket").hexdigest()
            done = client.put(f"{location}&digest={digest}", content=b"over a socket")
            assert done.status_code == 201
            assert client.get(f"/v2/lib/app/blobs/{digest}").content == b"over a socket"
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        log.close()
    assert "addr=unix:" in (tmp_path / "serve.log").read_text()
