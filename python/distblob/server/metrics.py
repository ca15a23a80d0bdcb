"""Prometheus metrics (``http.debug.prometheus``), with distribution's names and labels where it
has the metric and distblob's own under ``distblob_``.

Imported only when metrics are configured (it needs ``prometheus_client``). :class:`Metrics`
holds one registry of its own; :class:`RequestMetrics` is the ASGI middleware that observes
each API request under its route's handler name (distribution's route names: ``base``,
``catalog``, ``tags``, ``manifest``, ``blob``, ``blob_upload``, ``blob_upload_chunk``; and
``referrers``, which distribution 2.8 does not have); the storage layer reports through
``distblob._observe``, which :meth:`Metrics.install` points here.
"""

from __future__ import annotations

import re
import time
from collections.abc import Sequence
from typing import Final

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    gc_collector,
    generate_latest,
    platform_collector,
    process_collector,
)
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from distblob import _observe
from distblob._asgi import ZEROCOPY_SEND

#: distribution's (go-metrics) buckets: request durations, and sizes from 1 KiB to 2 GiB.
DURATION_BUCKETS: Final = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 25, 60)
SIZE_BUCKETS: Final = tuple(1024.0 * 2**i for i in range(22))

#: Each route's handler name, most specific first (as the routes are tried).
_HANDLERS: Final = (
    (re.compile(r"/v2/\Z"), "base"),
    (re.compile(r"/v2/_catalog\Z"), "catalog"),
    (re.compile(r"/v2/.+/tags/list\Z"), "tags"),
    (re.compile(r"/v2/.+/manifests/[^/]+\Z"), "manifest"),
    (re.compile(r"/v2/.+/referrers/[^/]+\Z"), "referrers"),
    (re.compile(r"/v2/.+/blobs/uploads/?\Z"), "blob_upload"),
    (re.compile(r"/v2/.+/blobs/uploads/[^/]+\Z"), "blob_upload_chunk"),
    (re.compile(r"/v2/.+/blobs/[^/]+\Z"), "blob"),
)


def handler_name(path: str) -> str | None:
    """The route name distribution gives ``path``, or ``None`` (not an API route)."""
    for pattern, name in _HANDLERS:
        if pattern.match(path):
            return name
    return None


class Metrics:
    """Every metric, in one registry (with the process and runtime collectors, as Go's default
    registry has its own)."""

    def __init__(self) -> None:
        self.registry = registry = CollectorRegistry()
        process_collector.ProcessCollector(registry=registry)
        platform_collector.PlatformCollector(registry=registry)
        gc_collector.GCCollector(registry=registry)

        def counter(subsystem: str, name: str, doc: str, labels: tuple[str, ...] = ()) -> Counter:
            namespace = "distblob" if not subsystem else "registry"
            return Counter(
                name, doc, labels, namespace=namespace, subsystem=subsystem, registry=registry
            )

        def histogram(
            subsystem: str,
            name: str,
            doc: str,
            labels: tuple[str, ...],
            buckets: Sequence[float] = Histogram.DEFAULT_BUCKETS,
        ) -> Histogram:
            return Histogram(
                name,
                doc,
                labels,
                namespace="registry",
                subsystem=subsystem,
                registry=registry,
                buckets=buckets,
            )

        self.in_flight = Gauge(
            "in_flight_requests",
            "The in-flight HTTP requests",
            ["handler"],
            namespace="registry",
            subsystem="http",
            registry=registry,
        )
        self.requests = counter(
            "http", "requests", "Total number of HTTP requests made.", ("handler", "code", "method")
        )
        self.duration = histogram(
            "http",
            "request_duration_seconds",
            "The HTTP request latencies in seconds.",
            ("handler", "method"),
            buckets=DURATION_BUCKETS,
        )
        self.request_size = histogram(
            "http",
            "request_size_bytes",
            "The HTTP request sizes in bytes.",
            ("handler",),
            buckets=SIZE_BUCKETS,
        )
        self.response_size = histogram(
            "http",
            "response_size_bytes",
            "The HTTP response sizes in bytes.",
            ("handler",),
            buckets=SIZE_BUCKETS,
        )
        self.storage_actions = histogram(
            "storage",
            "action_seconds",
            "The number of seconds that the storage action takes",
            ("driver", "action"),
        )
        # distribution 2.8 counts cache lookups in one labeled counter; 3.x in three.
        self.cache = counter("storage", "cache", "The number of cache request received", ("type",))
        self.cache_requests = counter(
            "storage", "cache_requests", "The number of cache request received"
        )
        self.cache_hits = counter("storage", "cache_hits", "The number of cache request received")
        self.cache_errors = counter("storage", "cache_errors", "The number of cache request errors")
        kind = ("type",)
        self.proxy_requests = counter(
            "proxy", "requests", "The number of total incoming proxy request received", kind
        )
        self.proxy_hits = counter("proxy", "hits", "The number of total proxy request hits", kind)
        self.proxy_misses = counter(
            "proxy", "misses", "The number of total proxy request misses", kind
        )
        self.proxy_pulled = counter(
            "proxy", "pulled_bytes", "The size of total bytes pulled from the upstream", kind
        )
        self.proxy_pushed = counter(
            "proxy", "pushed_bytes", "The size of total bytes pushed to the client", kind
        )
        self.upload_bytes = counter(
            "",
            "blob_bytes_written",
            "Bytes hashed and written into blobs (uploads, and whole blobs put at once).",
        )
        self.uploads = Gauge(
            "uploads_in_flight",
            "Upload writers open in this process.",
            namespace="distblob",
            registry=registry,
        )
        self.proxy_fetches = counter(
            "", "proxy_fetches", "Blobs the pull-through cache fetched from upstream."
        )
        self.proxy_saved = counter(
            "",
            "proxy_bytes_saved",
            "Blob bytes the pull-through cache served from storage instead of upstream.",
        )

    # -- what the storage layer and the proxy report (distblob._observe.Observer) ------------

    def storage_action(self, driver: str, action: str, seconds: float) -> None:
        self.storage_actions.labels(driver, action).observe(seconds)

    def cache_lookup(self, outcome: str) -> None:
        self.cache.labels("Request").inc()
        self.cache_requests.inc()
        if outcome == "Error":
            self.cache_errors.inc()
            return
        self.cache.labels(outcome).inc()
        if outcome == "Hit":
            self.cache_hits.inc()

    def blob_written(self, count: int) -> None:
        self.upload_bytes.inc(count)

    def uploads_open(self, delta: int) -> None:
        self.uploads.inc(delta)

    def proxy_blob(self, size: int, *, hit: bool) -> None:
        self.proxy_requests.labels("blob").inc()
        self.proxy_pushed.labels("blob").inc(size)
        if hit:
            self.proxy_hits.labels("blob").inc()
            self.proxy_saved.inc(size)
        else:
            self.proxy_misses.labels("blob").inc()
            self.proxy_pulled.labels("blob").inc(size)
            self.proxy_fetches.inc()

    # -- wiring --------------------------------------------------------------------------------

    def install(self) -> None:
        """Have the storage layer and the proxy report here (``distblob._observe.observer``)."""
        _observe.observer = self

    def exposition(self) -> bytes:
        """The metrics in Prometheus' text format."""
        return generate_latest(self.registry)


def _request_size(scope: Scope) -> int:
    """promhttp's approximate request size: the URL, method, protocol, headers and declared
    body length (the body itself is not counted as read)."""
    size = len(scope.get("raw_path") or b"") + len(scope.get("query_string") or b"")
    size += len(scope.get("method", "")) + len(scope.get("http_version", "")) + 5
    for name, value in scope.get("headers", []):
        size += len(name) + len(value)
        if name == b"content-length" and value.isdigit():
            size += int(value)
    return size


class RequestMetrics:
    """ASGI middleware: distribution's ``registry_http_*`` metrics for every API request."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        handler = handler_name(scope.get("path", "")) if scope["type"] == "http" else None
        if handler is None:
            await self.app(scope, receive, send)
            return
        metrics = self.metrics
        method = str(scope.get("method", "")).lower()
        status = 0
        sent = 0

        async def counted(message: Message) -> None:
            nonlocal status, sent
            if message["type"] == "http.response.start":
                status = message["status"]
            elif message["type"] == "http.response.body":
                sent += len(message.get("body", b""))
            elif message["type"] == ZEROCOPY_SEND:
                sent += int(message.get("count") or 0)
            await send(message)

        in_flight = metrics.in_flight.labels(handler)
        in_flight.inc()
        started = time.perf_counter()
        try:
            await self.app(scope, receive, counted)
        finally:
            in_flight.dec()
            metrics.duration.labels(handler, method).observe(time.perf_counter() - started)
            metrics.requests.labels(handler, str(status or 500), method).inc()
            metrics.request_size.labels(handler).observe(_request_size(scope))
            metrics.response_size.labels(handler).observe(sent)


__all__ = ["DURATION_BUCKETS", "SIZE_BUCKETS", "Metrics", "RequestMetrics", "handler_name"]
