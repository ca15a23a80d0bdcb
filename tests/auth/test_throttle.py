"""``distblob.auth.throttle``: failed logins slowed down per client address.

A clock and a sleep of the test's own stand in for time: the delays are read from what the
throttle asked to sleep, never measured. Then the gate in-process: wrong passwords from one
address are slowed, a right one from another is not, a success resets the count, and requests
without credentials are never counted. The figures against ``distblob serve`` are
``benches/login_slowing.py``'s.
"""

from __future__ import annotations

import base64
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import anyio
import pytest

from distblob.auth import Access, User
from distblob.auth.throttle import (
    FIRST_DELAY,
    FREE_FAILURES,
    MAX_DELAY,
    LoginThrottle,
)
from distblob.errors import AuthChallenge
from distblob.registry import Registry
from distblob.server import create_app

with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # starlette prefers httpx2; plain httpx works in-process
    from starlette.testclient import TestClient


class FakeTime:
    """A clock that moves only when the throttle sleeps (or the test says so)."""

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


async def attempt(limiter: LoginThrottle, address: str) -> None:
    async with limiter.turn(address):
        pass


def test_the_defaults_say_what_the_docs_say() -> None:
    assert (FREE_FAILURES, FIRST_DELAY, MAX_DELAY) == (30, 0.5, 8.0)
    limiter = LoginThrottle()
    for _ in range(FREE_FAILURES):
        assert limiter.delay("a") == 0
        limiter.failed("a")
    delays = []
    for _ in range(7):
        delays.append(limiter.delay("a"))
        limiter.failed("a")
    assert delays == [0.5, 1.0, 2.0, 4.0, 8.0, 8.0, 8.0]


def test_failures_beyond_the_free_ones_are_slowed_growing_to_the_cap() -> None:
    time = FakeTime()
    limiter = throttle(time, free_failures=3, first_delay=1.0, max_delay=5.0)

    async def main() -> None:
        for _ in range(8):
            await attempt(limiter, "10.0.0.1")
            limiter.failed("10.0.0.1")

    anyio.run(main)
    assert time.slept == [1.0, 2.0, 4.0, 5.0, 5.0]
    assert limiter.delay("10.0.0.2") == 0  # other addresses are not affected


def test_a_success_resets_the_address() -> None:
    time = FakeTime()
    limiter = throttle(time, free_failures=2, first_delay=1.0)
    for _ in range(4):
        limiter.failed("a")
    limiter.failed("b")
    assert limiter.delay("a") == 4.0
    limiter.succeeded("a")
    assert limiter.delay("a") == 0
    assert len(limiter) == 1  # b is still remembered


def test_an_address_is_forgotten_after_a_quiet_while() -> None:
    time = FakeTime()
    limiter = throttle(time, free_failures=1, forget_after=100.0)
    limiter.failed("a")
    limiter.failed("a")
    assert limiter.delay("a") > 0
    time.now += 99
    assert limiter.delay("a") > 0
    time.now += 1
    assert limiter.delay("a") == 0
    assert len(limiter) == 0


def test_memory_is_bounded() -> None:
    time = FakeTime()
    limiter = throttle(time, free_failures=1, max_addresses=3, forget_after=50.0)
    for address in ("a", "b", "c"):
        limiter.failed(address)
        limiter.failed(address)
        time.now += 1
    limiter.failed("a")  # a is now the newest failure
    limiter.failed("d")  # the table is full: b, whose last failure is oldest, goes
    assert len(limiter) == 3
    assert limiter.delay("b") == 0
    assert limiter.delay("a") > 0 and limiter.delay("c") > 0
    time.now += 50  # every address is stale: the next new one clears them all
    limiter.failed("e")
    assert len(limiter) == 1


def test_an_ipv6_client_is_counted_by_its_64() -> None:
    limiter = throttle(FakeTime(), free_failures=2, first_delay=1.0)
    limiter.failed("2001:db8:1:2::1")
    limiter.failed("2001:db8:1:2:ffff::9")  # the same /64
    assert limiter.delay("2001:db8:1:2::77") == 1.0
    assert limiter.delay("2001:db8:1:3::1") == 0  # another /64
    limiter.failed("::ffff:192.0.2.7")
    limiter.failed("192.0.2.7")  # the same IPv4 client, mapped or not
    assert limiter.delay("192.0.2.7") == 1.0
    limiter.succeeded("2001:db8:1:2::5")
    assert limiter.delay("2001:db8:1:2::1") == 0
    assert len(limiter) == 1


def test_slowed_requests_from_one_address_pass_one_at_a_time() -> None:
    time = FakeTime()
    limiter = throttle(time, free_failures=1, first_delay=1.0, max_delay=1.0)
    limiter.failed("a")
    inside: list[int] = []
    most = 0

    async def one() -> None:
        nonlocal most
        async with limiter.turn("a"):
            inside.append(1)
            most = max(most, len(inside))
            await anyio.lowlevel.checkpoint()
            inside.pop()
        limiter.failed("a")

    async def free() -> None:
        async with limiter.turn("other"):
            pass

    async def main() -> None:
        async with anyio.create_task_group() as group:
            for _ in range(5):
                group.start_soon(one)
            group.start_soon(free)

    anyio.run(main)
    assert most == 1
    assert time.slept == [1.0] * 5  # the other address never waited


# -- in the gate ---------------------------------------------------------------------------------

GOOD = "Basic " + base64.b64encode(b"alice:right").decode()
BAD = "Basic " + base64.b64encode(b"alice:wrong").decode()


class Controller:
    async def authorized(
        self, authorization: str | None, access: Sequence[Access], *, host: str = ""
    ) -> User:
        if authorization == GOOD:
            return User("alice")
        raise AuthChallenge("no", access, {"WWW-Authenticate": 'Basic realm="r"'})


def test_the_gate_slows_failed_logins_per_address(tmp_path: Path) -> None:
    time = FakeTime()
    limiter = throttle(time, free_failures=2, first_delay=1.0)
    app = create_app(
        Registry.filesystem(tmp_path),
        secret=b"s",
        access_controller=Controller(),
        login_throttle=limiter,
    )
    attacker = TestClient(app, client=("192.0.2.1", 1000))
    other = TestClient(app, client=("192.0.2.2", 1000))
    for _ in range(4):
        assert attacker.get("/v2/", headers={"Authorization": BAD}).status_code == 401
    assert time.slept == [1.0, 2.0]
    # Another address is served at once, and not counted against the attacker's.
    assert other.get("/v2/", headers={"Authorization": GOOD}).status_code == 200
    assert time.slept == [1.0, 2.0]
    # Requests without credentials are not logins, and a bearer token cannot be guessed:
    # neither is slowed nor counted.
    assert attacker.get("/v2/").status_code == 401
    assert attacker.get("/v2/", headers={"Authorization": "Bearer a.b.c"}).status_code == 401
    assert time.slept == [1.0, 2.0]
    assert limiter.delay("192.0.2.1") == 4.0
    # The right password from the attacker's address waits its turn, then resets the count.
    assert attacker.get("/v2/", headers={"Authorization": GOOD}).status_code == 200
    assert time.slept == [1.0, 2.0, 4.0]
    assert attacker.get("/v2/", headers={"Authorization": BAD}).status_code == 401
    assert time.slept == [1.0, 2.0, 4.0]


def test_every_access_controller_gets_the_default_throttle(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """create_app slows failed logins whenever there is an access controller, with the
    defaults (only the clock and the sleep are the test's here)."""
    time = FakeTime()
    monkeypatch.setattr(
        "distblob.server.app.LoginThrottle",
        lambda: LoginThrottle(clock=time.clock, sleep=time.sleep),
    )
    app = create_app(Registry.filesystem(tmp_path), secret=b"s", access_controller=Controller())
    client = TestClient(app, client=("192.0.2.3", 1000))
    for _ in range(FREE_FAILURES + 2):
        assert client.get("/v2/", headers={"Authorization": BAD}).status_code == 401
    assert time.slept == [FIRST_DELAY, FIRST_DELAY * 2]
