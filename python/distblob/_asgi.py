"""What the streaming responses share (the server's blob responses, the proxy's)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Final, TypeVar

import anyio
from starlette.types import Receive, Scope

T = TypeVar("T")

#: The status logged for a request whose client left before it was answered (nginx's code); the
#: client never sees it.
CLIENT_CLOSED: Final = 499

#: ASGI's zero-copy send extension, and its message type: the server sends a file region
#: itself (``distblob serve`` with ``sendfile``, :mod:`distblob.server.direct`).
ZEROCOPY_SEND: Final = "http.response.zerocopysend"
#: A key of distblob's own in a zerocopysend message: whether a cold region may be read past
#: the page cache (``FileRegion.direct``); other servers ignore it.
DIRECT_READS: Final = "distblob.direct"


def zerocopy(scope: Scope) -> bool:
    """Whether the request's server takes ``http.response.zerocopysend`` messages."""
    return ZEROCOPY_SEND in scope.get("extensions", {})


async def until_disconnect(receive: Receive, body: Callable[[], Awaitable[None]]) -> None:
    """Run ``body`` (which sends a response), stopping it if the client disconnects first.

    uvicorn drops what is sent after a disconnect without telling the sender, so a response
    that reads a blob would otherwise read it to the end for nobody.
    """
    await unless_disconnected(receive, body)


async def unless_disconnected(receive: Receive, work: Callable[[], Awaitable[T]]) -> T | None:
    """Run ``work``, or give up and return ``None`` if the client disconnects first.

    For requests that wait on something slow before they can answer, such as an upstream's
    headers: without it, a request whose client left would hold its task (and a stopping
    server) until the wait ends. Exceptions of ``work`` are raised as they are."""
    outcome: list[tuple[T | None, BaseException | None]] = []
    async with anyio.create_task_group() as group:

        async def watch() -> None:
            while (await receive())["type"] != "http.disconnect":
                pass
            group.cancel_scope.cancel()

        group.start_soon(watch)
        try:
            outcome.append((await work(), None))
        except Exception as error:  # re-raised below, outside the task group
            outcome.append((None, error))
        group.cancel_scope.cancel()
    if not outcome:
        return None
    value, failure = outcome[0]
    if failure is not None:
        raise failure
    return value


__all__ = [
    "CLIENT_CLOSED",
    "DIRECT_READS",
    "ZEROCOPY_SEND",
    "unless_disconnected",
    "until_disconnect",
    "zerocopy",
]
