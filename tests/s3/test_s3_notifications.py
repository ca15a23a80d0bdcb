"""Notifications on S3 with Redis: ``distblob serve`` replicas over one bucket keep each
endpoint's queue in the shared Redis (:mod:`distblob.notifications.redisqueue`). Events for an
endpoint that is down survive a SIGKILL and arrive in order once it is back; two replicas
deliver every event once per endpoint, in the order of the pushes, whichever took it."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from distblob.storage.driver.s3 import MIN_CHUNK_SIZE
from support.goregistry import LOOPBACK, free_port, sha256_digest
from support.redisserver import RedisServer
from support.s3server import RcloneS3
from support.server import DistblobServer

pytestmark = pytest.mark.timeout(240)

REPO = "hooks/app"
LAYER = b"a layer that is announced\n" * 10
CONFIG = b'{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}'
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"


def manifest(tag: str) -> bytes:
    return json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "size": len(CONFIG),
                "digest": sha256_digest(CONFIG),
            },
            "layers": [
                {
                    "mediaType": "application/vnd.oci.image.layer.v1.tar",
                    "size": len(LAYER),
                    "digest": sha256_digest(LAYER),
                }
            ],
            "annotations": {"org.example.tag": tag},
        }
    ).encode()


class Receiver:
    """A webhook endpoint on loopback: every envelope, by path, in order of arrival."""

    def __init__(self, port: int = 0) -> None:
        received: list[tuple[str, dict[str, Any]]] = []
        self.received = received

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                received.append((self.path, json.loads(body)))
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer((LOOPBACK, port), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def port(self) -> int:
        return int(self.server.server_address[1])

    def events(self, path: str) -> list[dict[str, Any]]:
        return [e for p, envelope in self.received if p == path for e in envelope["events"]]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class S3Replica(DistblobServer):
    """``distblob serve`` with ``storage.s3`` instead of a filesystem root."""

    def __init__(self, tmp: Path, parameters: dict[str, Any], **options: Any) -> None:
        super().__init__(tmp, secret="one-secret", **options)
        self.parameters = parameters

    def config(self) -> dict[str, Any]:
        config = super().config()
        config["storage"] = {"s3": self.parameters}
        return config


def endpoint(name: str, url: str) -> dict[str, Any]:
    return {"name": name, "url": url, "timeout": "2s", "threshold": 3, "backoff": "200ms"}


def wait_for(condition: Any, timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    with RedisServer(tmp_path_factory.mktemp("redis")) as server:
        yield server


def parameters(s3_server: RcloneS3, name: str) -> dict[str, Any]:
    bucket = s3_server.new_bucket(name)
    return s3_server.parameters(bucket, chunksize=MIN_CHUNK_SIZE, rootdirectory="/registry")


def duplicates(events: list[dict[str, Any]]) -> int:
    ids = [e["id"] for e in events]
    return len(ids) - len(set(ids))


def test_undelivered_events_survive_a_sigkill_in_order_on_s3_with_redis(
    tmp_path: Path, s3_server: RcloneS3, redis_server: RedisServer
) -> None:
    port = free_port()  # nothing listens there yet: the endpoint is down
    config = {
        "redis": {"addr": f"{LOOPBACK}:{redis_server.port}"},
        "notifications": {"endpoints": [endpoint("hook", f"http://{LOOPBACK}:{port}/hook")]},
    }
    expected = [f"t{n:03d}" for n in range(100)]
    with S3Replica(tmp_path, parameters(s3_server, "sigkill"), extra_config=config) as ours:
        with ours.client() as client:
            client.push_blob(REPO, LAYER)
            client.push_blob(REPO, CONFIG)
            for tag in expected:
                client.put_manifest(REPO, tag, manifest(tag), OCI_MANIFEST)
        proc = ours._proc
        assert proc is not None
        proc.kill()  # SIGKILL: no shutdown, its lease left to expire
        proc.wait()
        ours._proc = None
        hook = Receiver(port)
        try:
            ours.start()
            wait_for(lambda: len(hook.events("/hook")) >= 102)
            time.sleep(1.5)  # would-be duplicates
            events = hook.events("/hook")
        finally:
            hook.close()
        log = ours.log_text()
    assert "queue in redis" in log
    tags = [e["target"].get("tag") for e in events if e["target"].get("tag")]
    assert list(dict.fromkeys(tags)) == expected  # all 100, in order
    assert [e["action"] for e in events[:2]] == ["push", "push"]
    assert duplicates(events) == 0, f"{duplicates(events)} events sent twice"
    assert len(events) == 102


def test_two_replicas_deliver_every_event_once_per_endpoint_in_order(
    tmp_path: Path, s3_server: RcloneS3, redis_server: RedisServer
) -> None:
    hook = Receiver()
    url = f"http://{LOOPBACK}:{hook.port}"
    config = {
        "redis": {"addr": f"{LOOPBACK}:{redis_server.port}"},
        "notifications": {
            "endpoints": [endpoint("first", f"{url}/first"), endpoint("second", f"{url}/second")]
        },
    }
    shared = parameters(s3_server, "two")
    expected = [f"r{n:03d}" for n in range(60)]
    try:
        with (
            S3Replica(tmp_path / "a", shared, extra_config=config) as a,
            S3Replica(tmp_path / "b", shared, extra_config=config) as b,
        ):
            with a.client() as via_a, b.client() as via_b:
                via_a.push_blob(REPO, LAYER)
                via_b.push_blob(REPO, CONFIG)
                for n, tag in enumerate(expected):
                    (via_a if n % 2 == 0 else via_b).put_manifest(
                        REPO, tag, manifest(tag), OCI_MANIFEST
                    )
            for path in ("/first", "/second"):
                wait_for(lambda path=path: len(hook.events(path)) >= 62)  # type: ignore[misc]
            time.sleep(2.5)  # would-be duplicates, or events a second deliverer sends
            logs = a.log_text() + b.log_text()
    finally:
        hook.close()
    assert logs.count("queue in redis") == 4
    for path in ("/first", "/second"):
        events = hook.events(path)
        tags = [e["target"]["tag"] for e in events if e["target"].get("tag")]
        assert tags == expected, path  # every one, in the order of the pushes, once
        assert duplicates(events) == 0, path
        assert len(events) == 62, path
        # Both replicas' events, whichever replica delivered them.
        assert len({e["source"]["instanceID"] for e in events}) == 2, path
