"""Notifications side by side with the Go registry 2.8.2: one webhook receiver (a small HTTP
server on loopback) gets both registries' events for the same push, pull, mount and delete,
and the envelopes match field by field (ids, timestamps, addresses and instance ids aside).
Then distblob's durable queue: events for an endpoint that is down survive a SIGKILL and
arrive, in order, once the endpoint is back."""

from __future__ import annotations

import base64
import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import bcrypt
import pytest

from support.goregistry import (
    LOOPBACK,
    GoRegistry,
    RegistryClient,
    Response,
    free_port,
    sha256_digest,
)
from support.server import DistblobServer

pytestmark = pytest.mark.timeout(180)

MEDIA_TYPE = "application/vnd.docker.distribution.events.v1+json"
USER, PASSWORD = "alice", "C0rrect-Horse"
AUTHORIZATION = "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
USER_AGENT = "notify-test/1.0"
REPO, OTHER = "hooks/app", "hooks/mounted"
LAYER = b"a layer that is announced\n" * 10
CONFIG = b'{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}'
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"


def manifest(tag: str = "") -> bytes:
    document: dict[str, Any] = {
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
    }
    if tag:
        document["annotations"] = {"org.example.tag": tag}
    return json.dumps(document).encode()


class Receiver:
    """A webhook endpoint on loopback: every POST's path, headers and envelope, in order of
    arrival; 200 to each."""

    def __init__(self, port: int = 0) -> None:
        received: list[tuple[str, dict[str, str], dict[str, Any]]] = []
        self.received = received

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                received.append((self.path, dict(self.headers), json.loads(body)))
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer((LOOPBACK, port), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def port(self) -> int:
        return int(self.server.server_address[1])

    def url(self, path: str) -> str:
        return f"http://{LOOPBACK}:{self.port}{path}"

    def events(self, path: str) -> list[dict[str, Any]]:
        return [
            e for p, _, envelope in self.received if p == path for e in envelope.get("events", [])
        ]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class Client(RegistryClient):
    """Every request as alice, with a ``User-Agent``."""

    def request(self, method: str, location: str, **options: Any) -> Response:
        headers = {
            **(options.pop("headers", None) or {}),
            "Authorization": AUTHORIZATION,
            "User-Agent": USER_AGENT,
        }
        return super().request(method, location, headers=headers, **options)


def endpoint(url: str, **extra: Any) -> dict[str, Any]:
    return {
        "name": "hook",
        "url": url,
        "headers": {"X-Hook-Token": ["s3cret"]},
        "timeout": "2s",
        "threshold": 3,
        "backoff": "200ms",
        **extra,
    }


def wait_for(condition: Any, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


@pytest.fixture(scope="module")
def htpasswd(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("auth") / "htpasswd"
    path.write_bytes(f"{USER}:".encode() + bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(5)))
    return path


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    hook = Receiver()
    yield hook
    hook.close()


def workflow(client: RegistryClient) -> None:
    """Push, pull, mount and delete, each of blobs and manifests."""
    layer = client.push_blob(REPO, LAYER)
    client.push_blob(REPO, CONFIG, chunks=2)
    headers = client.put_manifest(REPO, "v1", manifest(), OCI_MANIFEST)
    digest = headers["Docker-Content-Digest"]
    client.get_manifest(REPO, "v1")
    client.get_manifest(REPO, digest)
    client.request("HEAD", f"/v2/{REPO}/manifests/v1", headers={"Accept": OCI_MANIFEST})
    client.get_blob(REPO, layer, expect=(200,))
    client.head_blob(REPO, layer, expect=(200,))
    client.request("POST", f"/v2/{OTHER}/blobs/uploads/?mount={layer}&from={REPO}", expect=(201,))
    client.delete_blob(OTHER, layer)
    client.request("DELETE", f"/v2/{REPO}/manifests/{digest}", expect=(202,))


def comparable(event: dict[str, Any]) -> dict[str, Any]:
    """An event without what differs between two registries by nature: ids, time, the
    client's port, the registry's address and instance, the host in its URLs."""
    event = json.loads(json.dumps(event))
    for key in ("id", "timestamp", "source"):
        event.pop(key)
    for key in ("id", "addr", "host"):
        event["request"].pop(key)
    url = event["target"].get("url")
    if url:
        event["target"]["url"] = "/v2/" + url.split("/v2/", 1)[1]
    return event


def test_events_match_the_go_registrys_field_by_field(
    tmp_path: Path, htpasswd: Path, receiver: Receiver
) -> None:
    def config(path: str) -> dict[str, Any]:
        return {
            "auth": {"htpasswd": {"realm": "hooks", "path": str(htpasswd)}},
            "notifications": {
                "events": {"includereferences": True},
                "endpoints": [endpoint(receiver.url(path))],
            },
        }

    with GoRegistry(tmp_path / "go", delete_enabled=True, extra_config=config("/go")) as go:
        with Client(go.url) as client:
            workflow(client)
        with DistblobServer(
            tmp_path / "ours", delete_enabled=True, extra_config=config("/ours")
        ) as ours:
            with Client(ours.url) as client:
                workflow(client)
            wait_for(lambda: len(receiver.events("/ours")) >= len(receiver.events("/go")) > 0)
            time.sleep(1.0)  # nothing more is coming from either
            go_events, our_events = receiver.events("/go"), receiver.events("/ours")
            our_host = ours.host
        go_host = go.host
    assert [e["action"] for e in go_events] == [e["action"] for e in our_events]
    for theirs, mine in zip(go_events, our_events, strict=True):
        assert comparable(mine) == comparable(theirs)
    actions = [(e["action"], e["target"].get("mediaType")) for e in our_events]
    assert actions[:3] == [
        ("push", "application/octet-stream"),
        ("push", "application/octet-stream"),
        ("push", OCI_MANIFEST),
    ]
    assert {a for a, _ in actions} == {"push", "pull", "mount", "delete"}
    # What was put aside above, checked on its own.
    for events, host in ((go_events, go_host), (our_events, our_host)):
        assert len({e["id"] for e in events}) == len(events)
        assert {e["request"]["host"] for e in events} == {host}
        assert all(e["request"]["addr"].startswith(f"{LOOPBACK}:") for e in events)
        urls = [e["target"]["url"] for e in events if "url" in e["target"]]
        assert urls and all(url.startswith(f"http://{host}/v2/") for url in urls)
        assert len({e["source"]["instanceID"] for e in events}) == 1
    go_source, our_source = go_events[0]["source"]["addr"], our_events[0]["source"]["addr"]
    assert our_source.rsplit(":", 1)[0] == go_source.rsplit(":", 1)[0]  # the hostname
    assert our_source.endswith(f":{our_host.rsplit(':', 1)[1]}")
    for path, headers, envelope in receiver.received:
        assert headers["Content-Type"] == MEDIA_TYPE, path
        assert headers["X-Hook-Token"] == "s3cret", path
        assert len(envelope["events"]) == 1  # one event per POST, as Go sends them


def test_ignored_media_types_and_actions_are_not_sent(tmp_path: Path, receiver: Receiver) -> None:
    ignore = {"mediatypes": ["application/octet-stream"], "actions": ["pull"]}
    config = {"notifications": {"endpoints": [endpoint(receiver.url("/"), ignore=ignore)]}}
    with DistblobServer(tmp_path, delete_enabled=True, extra_config=config) as ours:
        with ours.client() as client:
            workflow(client)
        wait_for(lambda: len(receiver.events("/")) >= 4)
        time.sleep(1.0)
    # The manifest's push; deletes carry no media type, so none is ignored (as in Go): the
    # blob's, the manifest's and its tag's.
    sent = [(e["action"], e["target"].get("tag")) for e in receiver.events("/")]
    assert sent == [("push", "v1"), ("delete", None), ("delete", None), ("delete", "v1")]


def test_undelivered_events_survive_a_sigkill_in_order(tmp_path: Path) -> None:
    port = free_port()  # nothing listens there yet: the endpoint is down
    url = f"http://{LOOPBACK}:{port}/hook"
    config = {"notifications": {"endpoints": [endpoint(url)]}}
    expected = [f"t{n:03d}" for n in range(100)]
    with DistblobServer(tmp_path, extra_config=config) as ours:
        with ours.client() as client:
            client.push_blob(REPO, LAYER)
            client.push_blob(REPO, CONFIG)
            for tag in expected:
                client.put_manifest(REPO, tag, manifest(tag), OCI_MANIFEST)
        proc = ours._proc
        assert proc is not None
        proc.kill()  # SIGKILL: no shutdown, nothing flushed by the process
        proc.wait()
        ours._proc = None
        hook = Receiver(port)
        try:
            ours.start()
            wait_for(lambda: len(hook.events("/hook")) >= 102)
            time.sleep(1.0)  # would-be duplicates
            events = hook.events("/hook")
        finally:
            hook.close()
    tags = [e["target"].get("tag") for e in events if e["target"].get("tag")]
    first_seen = list(dict.fromkeys(tags))
    assert first_seen == expected  # all 100, in order
    ids = [e["id"] for e in events]
    duplicates = len(ids) - len(set(ids))
    assert duplicates == 0, f"{duplicates} events sent twice"
    assert [e["action"] for e in events[:2]] == ["push", "push"]


@pytest.mark.parametrize(
    "http",
    [{"host": "https://registry.example:5443"}, {"relativeurls": True}, {}],
    ids=["http.host", "relativeurls", "default"],
)
def test_event_urls_follow_the_http_section_as_go(
    tmp_path: Path, receiver: Receiver, http: dict[str, Any]
) -> None:
    """distribution builds an event's URL with its Location builder: on ``http.host``,
    relative with ``relativeurls: true``, else absolute on the request's host."""
    blob = b"a blob whose event names its URL\n"
    digest = sha256_digest(blob)
    urls = {}
    for name, server in (("go", GoRegistry), ("ours", DistblobServer)):
        config = {
            "http": http,
            "notifications": {"endpoints": [endpoint(receiver.url(f"/{name}"))]},
        }
        with server(tmp_path / name, extra_config=config) as running:
            with running.client() as client:
                client.push_blob("lib/app", blob)
            path = f"/{name}"
            wait_for(lambda path=path: len(receiver.events(path)) >= 1)  # type: ignore[misc]
            url = receiver.events(path)[0]["target"]["url"]
            urls[name] = url.replace(running.host, "HOST")
    assert urls["ours"] == urls["go"]
    expected = {
        "http.host": f"https://registry.example:5443/v2/lib/app/blobs/{digest}",
        "relativeurls": f"/v2/lib/app/blobs/{digest}",
        "default": f"http://HOST/v2/lib/app/blobs/{digest}",
    }
    assert urls["ours"] in expected.values()
