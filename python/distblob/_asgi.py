"""What the streaming responses share (the server's blob responses, the proxy's)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Final

import anyio
from starlette.types import Receive, Scope

#: ASGI's zero-copy send extension, and its message type: the server sends a file region
#: itself (``distblob serve`` with ``sendfile``, :mod:`distblob.server.direct`).
ZEROCOPY_SEND: Final = "http.response.zerocopysend"


def zerocopy(scope: Scope) -> bool:
    """Whether the request's server takes ``http.response.zerocopysend`` messages."""
    return ZEROCOPY_SEND in scope.get("extensions", {})


async def until_disconnect(receive: Receive, body: Callable[[], Awaitable[None]]) -> None:
    """Run ``body`` (which sends a response), stopping it if the client disconnects first.

    uvicorn drops what is sent after a disconnect without telling the sender, so a response
    that reads a blob would otherwise read it to the end for nobody.
    """
    async with anyio.create_task_group() as group:

        async def watch() -> None:
            while (await receive())["type"] != "http.disconnect":
                pass
            group.cancel_scope.cancel()

        group.start_soon(watch)
        await body()
        group.cancel_scope.cancel()


__all__ = ["ZEROCOPY_SEND", "until_disconnect", "zerocopy"]
