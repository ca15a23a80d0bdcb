"""A helper the streaming responses share (the server's blob responses, the proxy's)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import anyio
from starlette.types import Receive


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


__all__ = ["until_disconnect"]
