"""Attacks on the slowing of failed logins (``distblob.auth.throttle``), unit level.

- A client with an account of its own must not reset the count of its guesses at another
  user's password by logging in between them (a success forgives only its own user's failures).
- A burst of concurrent guesses sent before the count is reached must not all be checked at
  once: checks under way count until they are done.

A clock and a sleep of the test's own stand in for time, as in ``test_throttle.py``.
"""

from __future__ import annotations

from typing import Any

import anyio

from distblob.auth.throttle import LoginThrottle


class FakeTime:
    """A clock that moves only when the throttle sleeps."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.slept: list[float] = []

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds
        await anyio.lowlevel.checkpoint()


def throttle(time: FakeTime, **options: Any) -> LoginThrottle:
    return LoginThrottle(clock=time.clock, sleep=time.sleep, **options)


def test_a_success_as_another_user_does_not_forgive_guesses() -> None:
    time = FakeTime()
    limiter = throttle(time, free_failures=3, first_delay=1.0, max_delay=8.0)
    for _ in range(3):
        limiter.failed("10.0.0.9", "ci")
    assert limiter.delay("10.0.0.9") == 1.0
    limiter.succeeded("10.0.0.9", "mallory")  # the attacker's own account
    assert limiter.delay("10.0.0.9") == 1.0
    limiter.succeeded("10.0.0.9", "ci")  # the right password for ci: its failures go
    assert limiter.delay("10.0.0.9") == 0.0
    assert len(limiter) == 0


def test_a_success_forgives_its_own_failures_and_keeps_the_others() -> None:
    time = FakeTime()
    limiter = throttle(time, free_failures=3, first_delay=1.0)
    for user in ("ci", "ci", "root", "admin", None):
        limiter.failed("a", user)
    limiter.succeeded("a", "ci")
    assert limiter.delay("a") == 1.0  # root, admin and an unreadable header: three left


def test_concurrent_guesses_are_not_all_checked_before_they_are_counted() -> None:
    time = FakeTime()
    free = 3
    limiter = throttle(time, free_failures=free, first_delay=1.0, max_delay=64.0)
    guesses = 20
    inside = 0
    most = 0

    async def guess() -> None:
        nonlocal inside, most
        async with limiter.turn("192.0.2.1"):
            inside += 1
            most = max(most, inside)
            for _ in range(5):  # a bcrypt in a worker thread: the loop runs the others
                await anyio.lowlevel.checkpoint()
            inside -= 1
        limiter.failed("192.0.2.1")

    async def main() -> None:
        async with anyio.create_task_group() as group:
            for _ in range(guesses):
                group.start_soon(guess)

    anyio.run(main)
    # At most the free failures run at once, plus the one whose turn it is.
    assert most <= free + 1
    # Every guess past the free ones and the first turn waited.
    assert len(time.slept) >= guesses - free - 1


def test_in_flight_bookkeeping_is_dropped() -> None:
    limiter = LoginThrottle()

    async def main() -> None:
        async with anyio.create_task_group() as group:
            for _ in range(50):
                group.start_soon(lambda: _one(limiter))

    anyio.run(main)
    assert limiter._in_flight == {}
    assert len(limiter) == 0


async def _one(limiter: LoginThrottle) -> None:
    async with limiter.turn("198.51.100.7"):
        await anyio.lowlevel.checkpoint()
    limiter.succeeded("198.51.100.7", "ci")
