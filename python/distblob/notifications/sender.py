"""Delivery to one endpoint: its queue's events POSTed one at a time, in order, each until
the endpoint accepts it (any 2xx or 3xx, as distribution), retried as distribution's
``retryingSink``: at once while fewer than ``threshold`` tries in a row have failed, then once
every ``backoff``.

Unlike distribution, an event leaves the queue only once delivered (the queue is a
:class:`~distblob.notifications.journal.Journal` on disk, or a
:class:`~distblob.notifications.redisqueue.RedisQueue`), so a restart resends what was not.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from typing import Final

import httpx
from starlette.concurrency import run_in_threadpool

from distblob.config.notifications import Endpoint
from distblob.notifications.events import EVENTS_MEDIA_TYPE, envelope
from distblob.notifications.journal import Queue

logger = logging.getLogger("distblob.notifications")

#: The longest an appended event waits on disk before it is synced.
SYNC_INTERVAL: Final = 1.0


class Sender:
    """Sends ``queue``'s events to ``endpoint`` (:meth:`run`, a task of the server's lifespan);
    :meth:`wake` says an event was queued."""

    def __init__(self, endpoint: Endpoint, queue: Queue) -> None:
        self.endpoint = endpoint
        self.queue = queue
        self._ready = asyncio.Event()
        self.failures = 0
        headers = [(name, value) for name, values in endpoint.headers.items() for value in values]
        headers.append(("Content-Type", EVENTS_MEDIA_TYPE))
        self._headers = headers

    def wake(self) -> None:
        self._ready.set()

    async def run(self) -> None:
        """Deliver forever; cancelled when the server stops (the queue keeps what is left)."""
        timeout = httpx.Timeout(self.endpoint.timeout)
        async with httpx.AsyncClient(timeout=timeout, follow_redirects=False) as client:
            synced = time.monotonic()
            while True:
                if time.monotonic() - synced >= SYNC_INTERVAL:
                    await run_in_threadpool(self.queue.sync)
                    synced = time.monotonic()
                batch = await run_in_threadpool(self.queue.read, 1)
                if not batch:
                    self._ready.clear()
                    if self.queue.pending:
                        continue  # appended between the read and the clear
                    await run_in_threadpool(self.queue.sync)
                    synced = time.monotonic()
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._ready.wait(), SYNC_INTERVAL)
                    continue
                seq, body = batch[0]
                if await self._post(client, body):
                    await run_in_threadpool(self.queue.ack, seq)

    async def _post(self, client: httpx.AsyncClient, body: bytes) -> bool:
        """One try: whether the endpoint took the envelope. Past ``threshold`` failures in a
        row, each try first waits ``backoff``."""
        endpoint = self.endpoint
        if self.failures >= endpoint.threshold:
            await asyncio.sleep(endpoint.backoff)
        try:
            # The journal holds each event compact; it is sent as Go sends it (one per envelope).
            content = envelope([json.loads(body)])
            response = await client.post(endpoint.url, content=content, headers=self._headers)
        except httpx.HTTPError as exc:
            problem = f"{type(exc).__name__}: {exc}"
        else:
            if 200 <= response.status_code < 400:
                self.failures = 0
                return True
            problem = f"response status {response.status_code} unaccepted"
        self.failures += 1
        if self.failures == endpoint.threshold:
            logger.warning(
                "notifications: endpoint %s (%s): %d failures in a row (%s): retrying every %gs, "
                "%d events waiting",
                endpoint.name,
                endpoint.url,
                self.failures,
                problem,
                endpoint.backoff,
                self.queue.pending,
            )
        elif self.failures < endpoint.threshold:
            logger.debug("notifications: endpoint %s: %s, retrying", endpoint.name, problem)
        return False


__all__ = ["SYNC_INTERVAL", "Sender"]
