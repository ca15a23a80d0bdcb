"""``http.debug.prometheus`` (``distblob.server.metrics``): after a known push and pull, the
exposition (parsed with ``prometheus_client.parser``) says so, under distribution's names and
labels and distblob's own."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from distblob.server.metrics import handler_name
from support import wait_until
from support.goregistry import LOOPBACK, OCI_CONFIG, OCI_MANIFEST, RegistryClient, free_port
from support.server import DistblobServer

pytestmark = pytest.mark.timeout(120)

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(port: int, path: str = "/metrics") -> Samples:
    with RegistryClient(f"http://{LOOPBACK}:{port}") as client:
        response = client.request("GET", path, expect=(200,))
    assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(response.body.decode())
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def test_push_and_pull_counted(tmp_path: Path) -> None:
    debug = free_port()
    config = {"http": {"debug": {"addr": f"{LOOPBACK}:{debug}", "prometheus": {"enabled": True}}}}
    layer = b"layer bytes " * 1000
    config_blob = b'{"architecture":"amd64","os":"linux"}'
    with DistblobServer(tmp_path, extra_config=config) as server, server.client() as client:
        before = scrape(debug)
        layer_digest = client.push_blob("team/app", layer)
        config_digest = client.push_blob("team/app", config_blob)
        manifest = {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {"mediaType": OCI_CONFIG, "digest": config_digest, "size": len(config_blob)},
            "layers": [{"mediaType": OCI_CONFIG, "digest": layer_digest, "size": len(layer)}],
        }
        manifest_bytes = json.dumps(manifest).encode()
        client.put_manifest("team/app", "v1", manifest_bytes, OCI_MANIFEST)
        client.get_manifest("team/app", "v1")
        assert client.request("GET", f"/v2/team/app/blobs/{layer_digest}").body == layer
        assert client.request("GET", "/v2/team/app/blobs/sha256:" + "0" * 64).status == 404

        # A request is counted when its handler returns, which may be just after its client
        # has the last byte: scrape until the two blob GETs are in.
        def counted(code: str) -> float:
            return value(
                scrape(debug),
                "registry_http_requests_total",
                handler="blob",
                code=code,
                method="get",
            )

        wait_until(lambda: counted("200") == 1 and counted("404") == 1, timeout=10)
        after = scrape(debug)

    total = "registry_http_requests_total"
    assert value(before, total, handler="blob_upload", code="202", method="post") == 0
    assert value(after, total, handler="blob_upload", code="202", method="post") == 2
    assert value(after, total, handler="blob_upload_chunk", code="201", method="put") == 2
    assert value(after, total, handler="manifest", code="201", method="put") == 1
    assert value(after, total, handler="manifest", code="200", method="get") == 1
    assert value(after, total, handler="blob", code="200", method="get") == 1
    assert value(after, total, handler="blob", code="404", method="get") == 1
    duration = "registry_http_request_duration_seconds_count"
    assert value(after, duration, handler="blob", method="get") == 2
    assert value(after, "registry_http_in_flight_requests", handler="blob") == 0
    # The layer's body went out once (the 404's small error body besides).
    sent = value(after, "registry_http_response_size_bytes_sum", handler="blob")
    assert len(layer) < sent < len(layer) + 1024
    received = value(after, "registry_http_request_size_bytes_sum", handler="blob_upload_chunk")
    assert received > len(layer) + len(config_blob)
    # distblob's own: every pushed byte hashed and written once; no upload left open.
    written = value(after, "distblob_blob_bytes_written_total")
    pushed = len(layer) + len(config_blob)  # manifests are not blobs here
    assert written - value(before, "distblob_blob_bytes_written_total") == pushed
    assert value(after, "distblob_uploads_in_flight") == 0
    # The storage driver's actions, timed under distribution's labels.
    for action in ("Stat", "GetContent", "PutContent"):
        count = "registry_storage_action_seconds_count"
        assert value(after, count, driver="filesystem", action=action) > 0, action
    # Blob descriptor cache lookups: 2.8's labeled counter and 3.x's counters agree.
    requests = value(after, "registry_storage_cache_total", type="Request")
    hits = value(after, "registry_storage_cache_total", type="Hit")
    misses = value(after, "registry_storage_cache_total", type="Miss")
    assert requests > 0 and requests == hits + misses
    assert value(after, "registry_storage_cache_requests_total") == requests
    assert value(after, "registry_storage_cache_hits_total") == hits


def test_metrics_path_and_not_found(tmp_path: Path) -> None:
    debug = free_port()
    prometheus = {"enabled": True, "path": "/prom"}
    config = {"http": {"debug": {"addr": f"{LOOPBACK}:{debug}", "prometheus": prometheus}}}
    with DistblobServer(tmp_path, extra_config=config):
        assert "registry_http_requests_total" in {name for name, _ in scrape(debug, "/prom")}
        with RegistryClient(f"http://{LOOPBACK}:{debug}") as client:
            assert client.request("GET", "/metrics").status == 404
            assert client.request("GET", "/debug/health").status == 200


@pytest.mark.parametrize(
    ("path", "name"),
    [
        ("/v2/", "base"),
        ("/v2/_catalog", "catalog"),
        ("/v2/a/blobs/tags/list", "tags"),
        ("/v2/a/manifests/b/manifests/latest", "manifest"),
        ("/v2/a/blobs/uploads/", "blob_upload"),
        ("/v2/a/blobs/uploads/0123-abcd", "blob_upload_chunk"),
        ("/v2/a/blobs/sha256:00", "blob"),
        ("/v2/a/referrers/sha256:00", "referrers"),
        ("/", None),
        ("/v2/a/unknown", None),
    ],
)
def test_handler_names(path: str, name: str | None) -> None:
    assert handler_name(path) == name
