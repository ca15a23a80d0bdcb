"""The debug listener (``http.debug.addr``) and what wraps the API when health checks or
metrics are configured.

:class:`Observability` is built once from the config. :meth:`Observability.wrap` puts the
health gate (:class:`~distblob.server.health.HealthGate`) and the request metrics
(:class:`~distblob.server.metrics.RequestMetrics`) around the API, and takes over the app's
lifespan to run, beside it, the checks' loops and the debug listener: a second uvicorn server
in the same event loop, which serves ``GET /debug/health`` (200 and ``{}`` when healthy, 503
and the failing checks otherwise, as distribution's ``health.StatusHandler``) and, with
``http.debug.prometheus``, the metrics at its ``path``. Anything else there is 404, as Go's
``http.NotFound``. distribution also serves ``expvar`` and ``pprof`` on that listener; distblob
does not.
"""

from __future__ import annotations

import contextlib
import json
import logging
import socket
from collections.abc import Iterator
from typing import TYPE_CHECKING

import anyio
import uvicorn
from starlette.types import ASGIApp, Receive, Scope, Send

from distblob.config.observability import Debug, Health
from distblob.config.values import parse_addr
from distblob.server.health import HealthChecks, HealthGate
from distblob.storage.driver import StorageDriver

if TYPE_CHECKING:
    from distblob.server.metrics import Metrics

logger = logging.getLogger("distblob.serve")

_NOT_FOUND = b"404 page not found\n"
#: What ``generate_latest`` writes: Prometheus' text format 0.0.4.
_EXPOSITION = b"text/plain; version=0.0.4; charset=utf-8"


class _InLoopServer(uvicorn.Server):
    """A uvicorn server that leaves signals to the main one: it stops when told to."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


async def _respond(send: Send, status: int, body: bytes, content_type: bytes) -> None:
    headers = [(b"content-type", content_type), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class DebugApp:
    """The debug listener's ASGI app: ``/debug/health`` and the metrics."""

    def __init__(self, checks: HealthChecks, metrics: Metrics | None, path: str) -> None:
        self.checks = checks
        self.metrics = metrics
        self.path = path

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        path, method = scope.get("path", ""), scope.get("method", "")
        if path == "/debug/health" and method == "GET":
            failing = self.checks.failing()
            body = json.dumps(dict(failing), separators=(",", ":")).encode()
            content_type = b"application/json; charset=utf-8"
            await _respond(send, 503 if failing else 200, body, content_type)
        elif path == self.path and self.metrics is not None and method in ("GET", "HEAD"):
            body = self.metrics.exposition() if method == "GET" else b""
            await _respond(send, 200, body, _EXPOSITION)
        else:
            await _respond(send, 404, _NOT_FOUND, b"text/plain; charset=utf-8")


class Observability:
    """Health checks, metrics and the debug listener, as the config has them."""

    def __init__(self, checks: HealthChecks, debug: Debug | None, metrics: Metrics | None) -> None:
        self.checks = checks
        self.debug = debug
        self.metrics = metrics
        self._debug_done = anyio.Event()

    @classmethod
    def build(
        cls, health: Health, debug: Debug | None, driver: StorageDriver | None
    ) -> Observability | None:
        """What ``health`` and ``http.debug`` configure, or ``None`` when neither does."""
        if not health.any and debug is None:
            return None
        metrics = None
        if debug is not None and debug.prometheus.enabled:
            from distblob.server.metrics import Metrics

            metrics = Metrics()
            metrics.install()
        return cls(HealthChecks.build(health, driver), debug, metrics)

    def wrap(self, app: ASGIApp) -> ASGIApp:
        """``app`` behind the health gate, observed by the request metrics; its lifespan runs
        the checks and the debug listener too."""
        if self.metrics is not None:
            from distblob.server.metrics import RequestMetrics

            app = RequestMetrics(app, self.metrics)
        gated = HealthGate(app, self.checks) if self.checks.checks else app

        async def observed(scope: Scope, receive: Receive, send: Send) -> None:
            if scope["type"] != "lifespan":
                await gated(scope, receive, send)
                return
            async with anyio.create_task_group() as group:
                server = await self._start_debug(group)
                group.start_soon(self.checks.run)
                try:
                    await app(scope, receive, send)
                finally:
                    if server is not None:
                        server.should_exit = True
                        with anyio.move_on_after(5):
                            await self._debug_done.wait()
                    group.cancel_scope.cancel()

        return observed

    async def _start_debug(self, group: anyio.abc.TaskGroup) -> uvicorn.Server | None:
        """The debug listener, bound now (a port in use stops the start, as in distribution)."""
        if self.debug is None:
            return None
        host, port = parse_addr(self.debug.addr, "http.debug.addr")
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.create_server((host, port), family=family, reuse_port=False)
        metrics = self.metrics
        app = DebugApp(self.checks, metrics, self.debug.prometheus.path)
        config = uvicorn.Config(
            app, lifespan="off", log_config=None, access_log=False, server_header=False
        )
        server = _InLoopServer(config)
        done = self._debug_done = anyio.Event()

        async def serve() -> None:
            try:
                await server.serve([sock])
            finally:
                done.set()

        group.start_soon(serve)
        logger.info(
            "debug server listening %s%s",
            self.debug.addr,
            f" (metrics at {self.debug.prometheus.path})" if metrics is not None else "",
        )
        return server


__all__ = ["DebugApp", "Observability"]
