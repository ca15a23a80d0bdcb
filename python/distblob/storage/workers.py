"""The worker threads that run a local filesystem's storage verbs for the event loop.

A verb is a handful of system calls: on a 4 KiB blob the hand-off to a thread and back costs
as much as the work. anyio's ``to_thread.run_sync`` spends about 40 µs of event-loop time per
call on this (a checkpoint, a capacity limiter, a cancel scope, a context copy, the async
library's detection) and two extra turns of the loop; :class:`WorkerPool` puts the call on a
queue its threads wait on and is answered with one ``call_soon_threadsafe``: about a quarter of
that, measured on the 2-core benchmark VM.

The rules are anyio's, as the server used them:

- at most ``limit`` verbs run at once (``storage.filesystem.maxthreads``), each in a thread of
  its own; further calls wait, first come first served;
- threads are started when needed and end after :data:`IDLE` seconds without work;
- a call that has started is not abandoned: if the awaiting task is cancelled, it waits for the
  call to end before the cancellation goes on (the caller's next step, closing a writer, say,
  must not overlap it); a call not yet started is dropped.

One thing anyio has no word for: :meth:`WorkerPool.run` may be given a continuation, which the
same thread runs with the call's result after handing it back. The caller answers its client
meanwhile, and the cleanup (removing a committed upload's directory) needs no second hand-off.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import queue
import threading
import weakref
from collections.abc import Callable
from typing import Any, Final, Generic, TypeVar

T = TypeVar("T")

#: Seconds a thread waits for work before it ends.
IDLE: Final = 10.0

logger = logging.getLogger("distblob.storage")


class _Call(Generic[T]):
    """One call: made in a worker thread, settled on the caller's loop."""

    __slots__ = ("after", "dropped", "finished", "fn", "future", "loop", "started", "waiter")

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        fn: Callable[[], T],
        after: Callable[[T], object] | None,
    ) -> None:
        self.loop = loop
        self.fn = fn
        self.after = after
        self.future: asyncio.Future[T] = loop.create_future()
        self.started = False  # taken by a thread (under the pool's lock)
        self.dropped = False  # cancelled before a thread took it (under the pool's lock)
        self.finished = False  # settled (on the loop)
        self.waiter: asyncio.Future[None] | None = None  # a cancelled caller waiting for the end

    def run(self) -> None:
        """In a worker thread: the call, its answer to the loop, then the continuation."""
        try:
            result = self.fn()
        except BaseException as error:
            self._answer(self._fail, error)
            return
        self._answer(self._succeed, result)
        if self.after is not None:
            try:
                self.after(result)
            except Exception:
                logger.exception("a storage call's continuation failed")

    def _answer(self, settle: Callable[[Any], None], value: object) -> None:
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits any more
            self.loop.call_soon_threadsafe(settle, value)

    def _succeed(self, result: T) -> None:
        self.finished = True
        if not self.future.done():
            self.future.set_result(result)
        self._wake()

    def _fail(self, error: BaseException) -> None:
        self.finished = True
        if not self.future.done():
            self.future.set_exception(error)
        self._wake()

    def _wake(self) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(None)


class WorkerPool:
    """Up to ``limit`` threads running blocking calls for event loops (see the module)."""

    def __init__(self, limit: int, *, name: str = "distblob-storage") -> None:
        if limit < 1:
            raise ValueError(f"a pool needs at least one thread, not {limit}")
        self.limit = limit
        self.name = name
        self._calls: queue.SimpleQueue[_Call[Any]] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._threads = 0  # started and not ended
        self._idle = 0  # waiting on the queue
        self._queued = 0  # calls on the queue that no thread took yet
        self._busy = 0  # calls running (their continuations included)
        _pools.add(self)

    @property
    def threads(self) -> int:
        """The threads the pool has now."""
        return self._threads

    @property
    def busy(self) -> int:
        """The calls started or waiting to start, continuations included."""
        return self._busy + self._queued

    async def idle(self, timeout: float) -> bool:
        """Wait until no call runs or waits (continuations included), up to ``timeout``
        seconds; whether it came to that."""
        deadline = asyncio.get_running_loop().time() + timeout
        while self.busy:
            if asyncio.get_running_loop().time() >= deadline:
                return False
            await asyncio.sleep(0.005)
        return True

    def _forget_threads(self) -> None:
        """In a forked child: the parent's threads do not exist there."""
        self._calls = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._threads = self._idle = self._queued = self._busy = 0

    async def run(self, fn: Callable[[], T], after: Callable[[T], object] | None = None) -> T:
        """``fn()`` in a worker thread; then, with ``after``, ``after(fn())`` in the same
        thread once the result is handed back (errors it raises are logged)."""
        call = _Call(asyncio.get_running_loop(), fn, after)
        self._submit(call)
        try:
            return await call.future
        except asyncio.CancelledError:
            with self._lock:
                call.dropped = not call.started
            if not call.dropped:
                await _wait_for_end(call)
            raise

    def _submit(self, call: _Call[Any]) -> None:
        with self._lock:
            self._queued += 1
            start = self._queued > self._idle and self._threads < self.limit
            if start:
                self._threads += 1
        self._calls.put(call)
        if not start:
            return
        try:
            threading.Thread(target=self._work, name=self.name, daemon=True).start()
        except RuntimeError:  # no new threads (the interpreter is shutting down)
            with self._lock:
                self._threads -= 1
                alone = self._threads == 0
            if alone:
                self._work(once=True)  # nobody else will take it: run it here

    def _work(self, once: bool = False) -> None:
        while True:
            with self._lock:
                self._idle += 1
            try:
                call: _Call[Any] | None = self._calls.get(timeout=0 if once else IDLE)
            except queue.Empty:
                call = None
            with self._lock:
                self._idle -= 1
                if call is not None:
                    self._queued -= 1
                    call.started = not call.dropped
                    self._busy += call.started
                elif self._queued <= self._idle or once:
                    # No call is waiting that the other idle threads will not take.
                    if not once:
                        self._threads -= 1
                    return
            if call is not None and call.started:
                try:
                    call.run()
                finally:
                    with self._lock:
                        self._busy -= 1
            if once:
                return


_pools: weakref.WeakSet[WorkerPool] = weakref.WeakSet()


def _forget_pool_threads() -> None:
    for pool in list(_pools):
        pool._forget_threads()


os.register_at_fork(after_in_child=_forget_pool_threads)


async def _wait_for_end(call: _Call[Any]) -> None:
    """Wait until a started call is settled, whatever cancellations come meanwhile."""
    while not call.finished:
        call.waiter = call.loop.create_future()
        with contextlib.suppress(asyncio.CancelledError):
            await call.waiter


__all__ = ["IDLE", "WorkerPool"]
