"""``health`` and ``http.debug`` (``distblob.server.health``, ``distblob.server.debug``).

- ``health.file`` beside the Go registry 2.8.2: the file appears, both answer every API request
  503 with the same error body and report it at ``/debug/health``; it goes, both recover;
- ``health.http``: an endpoint the test runs starts failing; with ``threshold: 2`` the registry
  turns unhealthy only after two failed ``HEAD``s (sent with the configured headers), and
  recovers on the first success;
- ``health.tcp``: a port the test listens on closes, then opens again;
- ``health.storagedriver``: the S3 server behind the registry stops;
- the threshold rule itself, and the config's refusals.
"""

from __future__ import annotations

import contextlib
import http.server
import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from distblob.config import ConfigError, parse_config
from distblob.server.health import Check
from support.goregistry import LOOPBACK, GoRegistry, RegistryClient, free_port
from support.s3server import RcloneS3
from support.server import DistblobServer

pytestmark = pytest.mark.timeout(180)


def wait_for(condition: Callable[[], bool], timeout: float = 60.0) -> None:
    """Poll ``condition`` until it holds (a generous deadline for a loaded machine)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached")
        time.sleep(0.05)


def debug_health(port: int) -> tuple[int, dict[str, str]]:
    with RegistryClient(f"http://{LOOPBACK}:{port}") as client:
        response = client.request("GET", "/debug/health")
    return response.status, json.loads(response.body)


def v2_status(client: RegistryClient) -> int:
    return client.request("GET", "/v2/").status


def health_config(debug_port: int, **health: Any) -> dict[str, Any]:
    return {"http": {"debug": {"addr": f"{LOOPBACK}:{debug_port}"}}, "health": health}


def test_health_file_side_by_side_with_go(tmp_path: Path) -> None:
    down = tmp_path / "down"
    go_debug, our_debug = free_port(), free_port()
    check = [{"file": str(down), "interval": "1s"}]
    with (
        contextlib.ExitStack() as stack,
        GoRegistry(tmp_path / "go", extra_config=health_config(go_debug, file=check)) as go,
        DistblobServer(tmp_path / "ours", extra_config=health_config(our_debug, file=check)) as us,
    ):
        go_client, our_client = go.client(), us.client()
        stack.callback(go_client.close)
        stack.callback(our_client.close)
        assert v2_status(go_client) == v2_status(our_client) == 200
        assert debug_health(go_debug) == debug_health(our_debug) == (200, {})
        down.write_text("")
        wait_for(lambda: v2_status(go_client) == 503 and v2_status(our_client) == 503)
        for path in ("/v2/", "/v2/some/repo/manifests/latest", "/v2/_catalog"):
            theirs = go_client.request("GET", path)
            ours = our_client.request("GET", path)
            assert (ours.status, json.loads(ours.body)) == (theirs.status, json.loads(theirs.body))
            assert json.loads(ours.body)["errors"][0]["code"] == "UNAVAILABLE"
            assert ours.headers["Content-Type"] == theirs.headers["Content-Type"]
        assert (
            debug_health(go_debug) == debug_health(our_debug) == (503, {str(down): "file exists"})
        )
        down.unlink()
        wait_for(lambda: v2_status(go_client) == 200 and v2_status(our_client) == 200)
        assert debug_health(go_debug) == debug_health(our_debug) == (200, {})


class Endpoint(http.server.BaseHTTPRequestHandler):
    """Answers ``HEAD`` with the server's ``status``, recording each status and headers."""

    server: Any

    def do_HEAD(self) -> None:
        status = self.server.status
        self.server.served.append((status, self.headers.get_all("X-Probe")))
        self.send_response(status)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def endpoint() -> Iterator[Any]:
    server = http.server.ThreadingHTTPServer((LOOPBACK, 0), Endpoint)
    server.status = 200  # type: ignore[attr-defined]
    server.served = []  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()
    thread.join()


def test_health_http_threshold(tmp_path: Path, endpoint: Any) -> None:
    stack = contextlib.ExitStack()
    uri = f"http://{LOOPBACK}:{endpoint.server_address[1]}/ping"
    check = {
        "uri": uri,
        "headers": {"X-Probe": ["one", "two"]},
        "statuscode": 204,
        "interval": "1s",
        "threshold": 2,
        "timeout": "5s",
    }
    endpoint.status = 204
    debug = free_port()
    with stack, DistblobServer(tmp_path, extra_config=health_config(debug, http=[check])) as server:
        client = server.client()
        stack.callback(client.close)
        wait_for(lambda: len(endpoint.served) >= 1)
        assert endpoint.served[0] == (204, ["one", "two"])
        assert debug_health(debug) == (200, {})
        endpoint.status = 500
        wait_for(lambda: debug_health(debug)[0] == 503)
        # Two failures in a row before the registry turns unhealthy, not one.
        assert [status for status, _ in endpoint.served].count(500) >= 2
        error = f"{uri}: downstream service returned unexpected status: 500"
        assert debug_health(debug) == (503, {uri: error})
        assert v2_status(client) == 503
        endpoint.status = 204
        wait_for(lambda: v2_status(client) == 200)
        assert debug_health(debug) == (200, {})


def test_health_tcp_port_closed(tmp_path: Path) -> None:
    listener = socket.create_server((LOOPBACK, 0))
    port = listener.getsockname()[1]
    addr = f"{LOOPBACK}:{port}"
    debug = free_port()
    check = {"addr": addr, "interval": "1s", "timeout": "2s"}
    try:
        with (
            contextlib.ExitStack() as stack,
            DistblobServer(tmp_path, extra_config=health_config(debug, tcp=[check])) as server,
        ):
            client = server.client()
            stack.callback(client.close)
            time.sleep(1.5)  # one check has run against the open port
            assert debug_health(debug) == (200, {})
            listener.close()
            wait_for(lambda: v2_status(client) == 503)
            status, failing = debug_health(debug)
            assert status == 503 and list(failing) == [addr]
            assert failing[addr].startswith(f"{addr}: connection failed")
            listener = socket.create_server((LOOPBACK, port))
            wait_for(lambda: v2_status(client) == 200)
    finally:
        listener.close()


def test_health_storagedriver_s3_down(tmp_path: Path) -> None:
    debug = free_port()
    with contextlib.ExitStack() as stack, RcloneS3() as s3:
        storage = {"s3": s3.parameters(s3.new_bucket("health"))}
        config = {
            **health_config(debug, storagedriver={"enabled": True, "interval": "1s"}),
            "storage": storage,
        }
        server = DistblobServer(tmp_path, extra_config=config)
        server.config = lambda: {  # type: ignore[method-assign]
            "version": 0.1,
            "storage": storage,
            "http": {
                "addr": f"{LOOPBACK}:{server.port}",
                "secret": server.secret,
                **config["http"],
            },
            "health": config["health"],
        }
        with server:
            client = server.client()
            stack.callback(client.close)
            time.sleep(1.5)
            assert debug_health(debug) == (200, {})
            s3.stop()
            wait_for(lambda: v2_status(client) == 503, timeout=120)
            status, failing = debug_health(debug)
            assert status == 503 and list(failing) == ["storagedriver_s3"]


def test_threshold_counts_failures_in_a_row() -> None:
    async def never() -> str | None:
        raise AssertionError("not run")

    check = Check("c", never, 1.0, threshold=3)
    for error in ("a", "b", None, "c", "d"):
        check.update(error)
        assert check.status is None
    check.update("e")
    assert check.status == "e"
    check.update(None)
    assert check.status is None
    plain = Check("p", never, 1.0)
    plain.update("x")
    assert plain.status == "x"


@pytest.mark.parametrize(
    ("health", "key"),
    [
        ({"tcp": [{"addr": "nope"}]}, "health.tcp[0].addr"),
        ({"http": [{"uri": "ftp://x"}]}, "health.http[0].uri"),
        ({"http": [{"uri": "http://x", "headers": {"A": "b"}}]}, "health.http[0].headers.A"),
        ({"file": [{"interval": "1s"}]}, "health.file[0].file"),
        ({"storagedriver": {"enabled": "yes"}}, "health.storagedriver.enabled"),
        ({"tcp": [{"addr": "127.0.0.1:1", "treshold": 1}]}, "health.tcp[0].treshold"),
    ],
)
def test_health_config_refusals(health: dict[str, Any], key: str) -> None:
    with pytest.raises(ConfigError) as refused:
        parse_config({"version": 0.1, "health": health})
    assert refused.value.key == key


def test_health_config_defaults() -> None:
    config = parse_config(
        {
            "version": 0.1,
            "health": {"http": [{"uri": "http://x/", "interval": 0}], "file": [{"file": "f"}]},
            "http": {"debug": {"addr": "127.0.0.1:5001", "prometheus": {"enabled": True}}},
        }
    )
    assert config.health.http[0].interval == 10.0 and config.health.http[0].statuscode == 200
    assert config.health.file[0].interval == 10.0
    assert config.http.debug is not None and config.http.debug.prometheus.path == "/metrics"
    assert parse_config({"version": 0.1}).http.debug is None
