"""Long blocking transfers in threads of their own (upstream fetches, request bodies)."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable
from typing import TypeVar

R = TypeVar("R")


def in_own_thread(
    fn: Callable[..., R], *args: object, name: str = "distblob-transfer"
) -> asyncio.Future[R]:
    """Run ``fn(*args)`` in a daemon thread of its own; a future on the running loop.

    For transfers that may take minutes or stall until a timeout (an upstream fetch, a large
    request body): they must neither hold one of the shared worker threads the rest of the
    server needs (a few dozen stalled transfers would starve every other request), nor keep the
    process alive at exit. Awaiting the future may be cancelled; the thread then runs on until
    its own call returns.
    """
    loop = asyncio.get_running_loop()
    future: asyncio.Future[R] = loop.create_future()

    def settle(outcome: Callable[[], None]) -> None:
        if not future.done():
            outcome()

    def run() -> None:
        try:
            result = fn(*args)
        except BaseException as exc:  # handed to the awaiting task
            error = exc
            call = lambda: settle(lambda: future.set_exception(error))  # noqa: E731
        else:
            call = lambda: settle(lambda: future.set_result(result))  # noqa: E731
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits any more
            loop.call_soon_threadsafe(call)

    threading.Thread(target=run, name=name, daemon=True).start()
    return future


__all__ = ["in_own_thread"]
