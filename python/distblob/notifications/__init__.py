"""Notifications: distribution's events for pushes, pulls, mounts and deletes, sent to the
webhook endpoints of the config's ``notifications`` section.

The handlers call :class:`Notifier` (the one hook in their
:class:`~distblob.server.handlers.base.Context`) after each action succeeds; the notifier
builds the event once (:mod:`~distblob.notifications.events`), queues it for every endpoint
that does not ignore it, and each endpoint's :class:`~distblob.notifications.sender.Sender`
delivers its queue in order from a task of the server's lifespan.

Beyond distribution: on the filesystem driver each endpoint's queue is a journal under the
storage root (``_notifications/<endpoint>/``, :mod:`~distblob.notifications.journal`), so
events waiting for an endpoint that is slow or down survive a restart or a crash and are
delivered at least once. On other storage with a ``redis`` section it is a list in Redis that
the replicas share, one of them delivering at a time
(:mod:`~distblob.notifications.redisqueue`). Elsewhere the queue is in memory, as in
distribution.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import socket
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
from starlette.requests import Request

from distblob.config.notifications import Endpoint, Notifications
from distblob.descriptor import Descriptor
from distblob.notifications import events
from distblob.notifications.events import BLOB_MEDIA_TYPE, EVENTS_MEDIA_TYPE, Source
from distblob.notifications.journal import Journal, JournalBusyError, MemoryQueue, Queue
from distblob.notifications.redisqueue import LEASE_TTL, RedisQueue
from distblob.notifications.sender import Sender
from distblob.server.frontdoor import event_url

if TYPE_CHECKING:
    import redis

logger = logging.getLogger("distblob.notifications")

#: Where the journals live under the filesystem driver's root.
JOURNAL_DIRECTORY = "_notifications"
_SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")


def journal_directory(root: str | os.PathLike[str], name: str) -> Path:
    """The directory of endpoint ``name``'s journal under ``root`` (a name that is not a safe
    file name is written in hex)."""
    safe = name if _SAFE_NAME.fullmatch(name) else "x-" + name.encode().hex()[:200]
    return Path(root) / JOURNAL_DIRECTORY / safe


def source_addr(listen: str) -> str:
    """``<hostname>:<port>``, distribution's event source address."""
    _, _, port = listen.rpartition(":")
    return f"{socket.gethostname()}:{port}" if port else socket.gethostname()


class Notifier:
    """The handlers' hook: one method per event; a notifier without endpoints does nothing."""

    def __init__(
        self,
        config: Notifications | None = None,
        *,
        root: str | os.PathLike[str] | None = None,
        source: Source | None = None,
        max_events: int | None = None,
        redis_client: redis.Redis | None = None,
        storage: str = "",
        lease_ttl: float = LEASE_TTL,
    ) -> None:
        """Queues in a journal under ``root`` (the filesystem driver's), else in Redis through
        ``redis_client`` (keys named after ``storage``, leases of ``lease_ttl`` seconds), else
        in memory."""
        config = config or Notifications()
        self._redis = redis_client
        self._storage = storage
        self._lease_ttl = lease_ttl
        self.include_references = config.includereferences
        self.source = source or Source(socket.gethostname(), str(uuid.uuid4()))
        self.senders: list[Sender] = []
        for endpoint in config.enabled:
            queue = self._queue(endpoint, root, max_events)
            self.senders.append(Sender(endpoint, queue))
            if isinstance(queue, Journal):
                where = f"{queue.pending} events waiting in its journal"
            elif isinstance(queue, RedisQueue):
                where = f"queue in redis ({queue.events_key}, {queue.waiting} events waiting)"
            else:
                where = "queue in memory"
            logger.info(
                "notifications: endpoint %s (%s), timeout=%gs threshold=%d backoff=%gs, %s",
                endpoint.name,
                endpoint.url,
                endpoint.timeout,
                endpoint.threshold,
                endpoint.backoff,
                where,
            )

    def _queue(
        self, endpoint: Endpoint, root: str | os.PathLike[str] | None, limit: int | None
    ) -> Queue:
        bound = {} if limit is None else {"max_events": limit}
        if root is None and self._redis is not None:
            return RedisQueue(
                self._redis,
                endpoint.name,
                storage=self._storage,
                lease_ttl=self._lease_ttl,
                **bound,
            )
        if root is None:
            return MemoryQueue(endpoint.name, **bound)
        directory = journal_directory(root, endpoint.name)
        try:
            return Journal(directory, endpoint.name, **bound)
        except JournalBusyError:
            logger.warning(
                "notifications: endpoint %s: its journal %s is held by another process: this "
                "one keeps its events in memory (lost on restart)",
                endpoint.name,
                directory,
            )
            return MemoryQueue(endpoint.name, **bound)

    @property
    def enabled(self) -> bool:
        return bool(self.senders)

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        """The senders, as tasks, while the server runs; the queues closed after."""
        if not self.senders:
            yield
            return
        try:
            async with anyio.create_task_group() as group:
                for sender in self.senders:
                    group.start_soon(sender.run)
                yield
                group.cancel_scope.cancel()
        finally:
            for sender in self.senders:
                sender.queue.close()
            if self._redis is not None:
                self._redis.close()

    # -- the hook -------------------------------------------------------------------------------

    def _emit(self, action: str, request: Request, target: dict[str, Any]) -> None:
        event = events.event(action, request, self.source, target)
        payload: bytes | None = None
        media_type = target.get("mediaType")
        for sender in self.senders:
            endpoint = sender.endpoint
            if media_type in endpoint.ignored_media_types or action in endpoint.ignored_actions:
                continue
            if payload is None:
                payload = json.dumps(event, separators=(",", ":")).encode()
            sender.queue.append(payload)
            sender.wake()

    def _blob(
        self,
        action: str,
        request: Request,
        repository: str,
        descriptor: Descriptor,
        from_repository: str | None = None,
    ) -> None:
        if not self.senders:
            return
        digest = str(descriptor.digest)
        url = event_url(request, f"/v2/{repository}/blobs/{digest}")
        target = events.target(
            repository=repository,
            digest=digest,
            media_type=BLOB_MEDIA_TYPE,
            size=descriptor.size,
            url=url,
            from_repository=from_repository,
        )
        self._emit(action, request, target)

    def blob_pushed(self, request: Request, repository: str, descriptor: Descriptor) -> None:
        self._blob("push", request, repository, descriptor)

    def blob_pulled(self, request: Request, repository: str, descriptor: Descriptor) -> None:
        self._blob("pull", request, repository, descriptor)

    def blob_mounted(
        self, request: Request, repository: str, descriptor: Descriptor, source: str
    ) -> None:
        self._blob("mount", request, repository, descriptor, from_repository=source)

    def deleted(
        self, request: Request, repository: str, *, digest: str = "", tag: str = ""
    ) -> None:
        """A blob or manifest deleted by digest, or (distribution 3.0) a tag."""
        if self.senders:
            target = events.target(repository=repository, digest=digest, tag=tag or None)
            self._emit("delete", request, target)

    def manifest(
        self,
        action: str,
        request: Request,
        repository: str,
        descriptor: Descriptor,
        body: bytes,
        tag: str | None,
    ) -> None:
        """A manifest pushed or pulled (``action``), by ``tag`` or by digest (``None``)."""
        if not self.senders:
            return
        digest = str(descriptor.digest)
        media_type = descriptor.media_type
        if not media_type and body:
            with contextlib.suppress(ValueError, AttributeError):
                media_type = json.loads(body).get("mediaType")
        target = events.target(
            repository=repository,
            digest=digest,
            media_type=media_type,
            size=descriptor.size,
            url=event_url(request, f"/v2/{repository}/manifests/{digest}"),
            tag=tag,
            refs=events.references(body) if self.include_references else None,
        )
        self._emit(action, request, target)


__all__ = [
    "EVENTS_MEDIA_TYPE",
    "JOURNAL_DIRECTORY",
    "Notifier",
    "Source",
    "journal_directory",
    "source_addr",
]
