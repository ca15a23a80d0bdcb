"""The storage verbs' worker threads (:class:`~distblob.storage.workers.WorkerPool`): the bound,
the order, threads that come and go, a continuation run by the call's own thread after its
answer, and cancellation as anyio's threads had it (a started call is waited for, a waiting
one dropped)."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from distblob.storage import workers
from distblob.storage.workers import WorkerPool

pytestmark = pytest.mark.timeout(60)


def _wait(event: threading.Event) -> str:
    assert event.wait(10)
    return threading.current_thread().name


def test_a_call_runs_in_a_worker_thread_and_gives_its_result_or_error() -> None:
    pool = WorkerPool(4)

    def fail() -> None:
        raise KeyError("no such thing")

    async def main() -> None:
        assert await pool.run(lambda: threading.current_thread().name) == "distblob-storage"
        assert await pool.run(lambda: 6 * 7) == 42
        with pytest.raises(KeyError, match="no such thing"):
            await pool.run(fail)

    asyncio.run(main())
    assert 1 <= pool.threads <= 4


def test_no_more_than_limit_calls_run_at_once_and_the_rest_wait_in_order() -> None:
    pool = WorkerPool(3)
    release = threading.Event()
    lock = threading.Lock()
    running = most = 0
    order: list[int] = []

    def call(index: int) -> int:
        nonlocal running, most
        with lock:
            running += 1
            most = max(most, running)
            order.append(index)
        release.wait(10)
        with lock:
            running -= 1
        return index

    async def main() -> list[int]:
        tasks = [asyncio.create_task(pool.run(lambda i=i: call(i))) for i in range(10)]
        while running < 3:
            await asyncio.sleep(0.005)
        await asyncio.sleep(0.1)  # time for a fourth call to start, were it allowed to
        assert running == 3 and pool.threads == 3
        release.set()
        return await asyncio.gather(*tasks)

    assert asyncio.run(main()) == list(range(10))
    assert most == 3
    assert order[3:] == list(range(3, 10))  # the waiting calls started first come, first served


def test_idle_threads_end_and_new_ones_start(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(workers, "IDLE", 0.05)
    pool = WorkerPool(2)
    gate = threading.Event()

    async def main() -> None:
        busy = [asyncio.create_task(pool.run(lambda: _wait(gate))) for _ in range(2)]
        while pool.threads < 2:
            await asyncio.sleep(0.005)
        gate.set()
        await asyncio.gather(*busy)
        deadline = time.monotonic() + 5
        while pool.threads and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        assert pool.threads == 0
        assert await pool.run(lambda: "again") == "again"

    asyncio.run(main())


def test_after_runs_in_the_same_thread_once_the_result_is_handed_back() -> None:
    pool = WorkerPool(1)
    answered = threading.Event()
    seen: list[tuple[int, str, bool]] = []

    def after(result: int) -> None:
        # The caller has its result before the continuation ends: it waits on that here.
        seen.append((result, threading.current_thread().name, answered.wait(10)))

    async def main() -> None:
        result = await pool.run(lambda: 7, after)
        answered.set()
        assert result == 7
        assert await pool.idle(10)

    asyncio.run(main())
    assert seen == [(7, "distblob-storage", True)]


def test_after_is_skipped_on_failure_and_its_own_failure_is_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    pool = WorkerPool(1)
    calls: list[str] = []

    def fail() -> int:
        raise OSError("disk gone")

    def broken(result: int) -> None:
        calls.append("broken")
        raise RuntimeError("cleanup failed")

    async def main() -> None:
        with pytest.raises(OSError, match="disk gone"):
            await pool.run(fail, lambda result: calls.append("after a failure"))
        assert await pool.run(lambda: 1, broken) == 1
        assert await pool.idle(10)
        assert await pool.run(lambda: 2) == 2  # the thread goes on after a failed continuation

    asyncio.run(main())
    assert calls == ["broken"]
    assert "continuation failed" in caplog.text and "cleanup failed" in caplog.text


def test_a_cancelled_caller_waits_for_its_started_call_and_drops_a_waiting_one() -> None:
    pool = WorkerPool(1)
    gate = threading.Event()
    ran: list[str] = []

    def first() -> None:
        gate.wait(10)
        ran.append("first")

    async def main() -> None:
        started = asyncio.create_task(pool.run(first))
        while pool.threads < 1 or not pool.busy:
            await asyncio.sleep(0.005)
        waiting = asyncio.create_task(pool.run(lambda: ran.append("second")))
        await asyncio.sleep(0.05)
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting
        started.cancel()
        await asyncio.sleep(0.05)
        assert not started.done()  # still waiting for the call that runs
        threading.Timer(0.1, gate.set).start()
        with pytest.raises(asyncio.CancelledError):
            await started
        assert ran == ["first"]  # the cancellation came only once the call had ended
        assert await pool.idle(10)

    asyncio.run(main())
    assert ran == ["first"]  # the dropped call never ran


def test_idle_waits_for_calls_and_continuations() -> None:
    pool = WorkerPool(2)
    gate = threading.Event()

    async def main() -> None:
        await pool.run(lambda: None, lambda result: _wait(gate))
        assert pool.busy == 1
        assert not await pool.idle(0.05)
        gate.set()
        assert await pool.idle(10)
        assert pool.busy == 0

    asyncio.run(main())
