"""distribution's health checks (``health`` in the config): periodic checks, their status, and
the gate that answers every API request 503 UNAVAILABLE while one fails.

As in distribution, a check's status starts healthy and is first updated one ``interval``
after the start, then every ``interval``; with a ``threshold`` it turns unhealthy only after
that many failures in a row, and any success resets the count. The status is what
``/debug/health`` reports (:mod:`distblob.server.debug`): a JSON object of the failing checks'
names and errors. The checks are distribution's: ``storagedriver_<driver>`` (a listing of
``/``; a missing root passes: the backend answered), a file that must not exist, a ``HEAD``
that must answer the expected status, and a TCP connection that must open.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Final

import anyio
import httpx
from starlette.types import ASGIApp, Receive, Scope, Send

from distblob.config.observability import FileCheck, Health, HTTPCheck, TCPCheck
from distblob.config.values import parse_addr
from distblob.errors import PathNotFoundError
from distblob.server.errors import error_body
from distblob.storage.driver import StorageDriver

logger = logging.getLogger("distblob.health")

#: distribution's answer to an API request while a check fails (``errcode.ErrorCodeUnavailable``).
UNAVAILABLE_BODY: Final = error_body(
    "UNAVAILABLE", "service unavailable", "health check failed: please see /debug/health"
)

Probe = Callable[[], Awaitable[str | None]]


@dataclass(slots=True)
class Check:
    """One periodic check: ``probe`` returns an error, or ``None`` when healthy."""

    name: str
    probe: Probe
    interval: float
    threshold: int = 0
    error: str | None = None
    failures: int = field(default=0)

    def update(self, error: str | None) -> None:
        """distribution's threshold updater: the count of failures in a row, capped at the
        threshold, and the last result."""
        if error is None:
            self.failures = 0
        elif self.failures < self.threshold:
            self.failures += 1
        self.error = error

    @property
    def status(self) -> str | None:
        """The error this check reports now, or ``None`` (healthy)."""
        return self.error if self.failures >= self.threshold else None

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            try:
                error = await self.probe()
            except Exception as exc:  # a probe's bug must not end its loop
                logger.exception("health check %s failed to run", self.name)
                error = str(exc) or type(exc).__name__
            if error != self.error:
                log = logger.warning if error is not None else logger.info
                log("health check %s: %s", self.name, error or "healthy")
            self.update(error)


def _file_probe(check: FileCheck) -> Probe:
    path = os.path.abspath(check.file)

    def stat() -> str | None:
        try:
            os.stat(path)
        except FileNotFoundError:
            return None
        except OSError as exc:
            return str(exc)
        return "file exists"

    async def probe() -> str | None:
        return await anyio.to_thread.run_sync(stat)

    return probe


def _http_probe(check: HTTPCheck) -> Probe:
    headers = [(name, value) for name, values in check.headers.items() for value in values]
    timeout = check.timeout or check.interval

    async def probe() -> str | None:
        try:
            async with httpx.AsyncClient(timeout=timeout, verify=True) as client:
                response = await client.head(check.uri, headers=headers)
        except httpx.HTTPError as exc:
            return f"{check.uri}: error while checking: {exc or type(exc).__name__}"
        if response.status_code != check.statuscode:
            return (
                f"{check.uri}: downstream service returned unexpected status: "
                f"{response.status_code}"
            )
        return None

    return probe


def _tcp_probe(check: TCPCheck) -> Probe:
    host, port = parse_addr(check.addr, "health.tcp.addr")
    if check.addr.startswith(":"):
        host = "localhost"  # Go dials the local system for an empty host
    timeout = check.timeout or check.interval

    async def probe() -> str | None:
        try:
            _, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
        except (OSError, TimeoutError) as exc:
            return f"{check.addr}: connection failed: {exc or 'timed out'}"
        writer.close()
        return None

    return probe


def _driver_probe(driver: StorageDriver) -> Probe:
    def stat() -> str | None:
        # A listing, not ``stat("/")``: an object store answers that without a request, and
        # distribution's s3 driver lists to stat the root anyway.
        try:
            driver.list("/")
        except PathNotFoundError:
            return None  # the backend answered; an empty root is not a failure
        except Exception as exc:
            return str(exc) or type(exc).__name__
        return None

    async def probe() -> str | None:
        return await anyio.to_thread.run_sync(stat)

    return probe


class HealthChecks:
    """The configured checks, their loops and their status."""

    def __init__(self, checks: list[Check]) -> None:
        self.checks = checks

    @classmethod
    def build(cls, health: Health, driver: StorageDriver | None) -> HealthChecks:
        """The checks ``health`` configures (``storagedriver`` on ``driver``)."""
        checks: list[Check] = []
        sd = health.storagedriver
        if sd.enabled and driver is not None:
            name = f"storagedriver_{driver.name}"
            checks.append(Check(name, _driver_probe(driver), sd.interval, sd.threshold))
        for fc in health.file:
            checks.append(Check(fc.file, _file_probe(fc), fc.interval))
        for hc in health.http:
            checks.append(Check(hc.uri, _http_probe(hc), hc.interval, hc.threshold))
        for tc in health.tcp:
            checks.append(Check(tc.addr, _tcp_probe(tc), tc.interval, tc.threshold))
        for check in checks:
            logger.info(
                "health check %s: every %gs, threshold %d",
                check.name,
                check.interval,
                check.threshold,
            )
        return cls(checks)

    def failing(self) -> Mapping[str, str]:
        """The failing checks' names and errors (empty: healthy)."""
        return {c.name: c.status for c in self.checks if c.status is not None}

    async def run(self) -> None:
        """Run every check's loop until cancelled."""
        async with anyio.create_task_group() as group:
            for check in self.checks:
                group.start_soon(check.run)


class HealthGate:
    """ASGI middleware: 503 UNAVAILABLE for every request while a check fails (distribution's
    ``health.Handler`` around its whole router)."""

    def __init__(self, app: ASGIApp, checks: HealthChecks) -> None:
        self.app = app
        self.checks = checks

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not self.checks.failing():
            await self.app(scope, receive, send)
            return
        headers = [
            (b"content-type", b"application/json; charset=utf-8"),
            (b"content-length", str(len(UNAVAILABLE_BODY)).encode()),
        ]
        await send({"type": "http.response.start", "status": 503, "headers": headers})
        body = b"" if scope.get("method") == "HEAD" else UNAVAILABLE_BODY
        await send({"type": "http.response.body", "body": body})


__all__ = ["UNAVAILABLE_BODY", "Check", "HealthChecks", "HealthGate"]
