"""Failed logins slowed down, per client address.

A remembered successful check (:mod:`distblob.auth.htpasswd`) makes right passwords cheap; a
wrong one always costs a full bcrypt, but a client with many connections could still try
several per second per core. So the server counts the failed logins of each client address
(a request with ``Basic`` credentials, a user and a password, that the access controller
refused; a bearer token cannot be guessed, and one refused for its scope is no failed login),
and once an address has had :data:`FREE_FAILURES` of them, its requests with ``Basic``
credentials are slowed down:

- they pass one at a time (concurrent connections from that address do not help it), each
  after a delay of :data:`FIRST_DELAY` seconds that doubles with each further failure up to
  :data:`MAX_DELAY`. Checks still under way count as failures until they are done: a burst of
  concurrent guesses sent before the count is reached gets :data:`FREE_FAILURES` of them
  checked at once, the rest one at a time;
- a successful login from the address forgets the failures of the user it logged in as (up to
  :data:`MAX_USERS` user names are told apart per address; failures under other names are
  kept): a client that logs in with an account of its own does not reset the count of the
  guesses it made at another user's password;
- an address with no failure for :data:`FORGET_AFTER` seconds is forgotten too;
- at most :data:`MAX_ADDRESSES` addresses are remembered (the one whose last failure is oldest
  goes first), so memory stays bounded whatever the number of addresses trying.

What bounds guessing is the steady rate, one guess per :data:`MAX_DELAY` seconds per address
(about 10 800 a day), whatever the free failures; those spare clients that retry with stale
credentials (a CI job, a client that sends each layer's request with the same wrong password).
An IPv6 client is counted by its /64 network, the block one host is usually given, so it
cannot start afresh by changing the address's last bits. Other addresses are not affected, nor
are requests without credentials (they cost nothing). A server behind a reverse proxy sees the
proxy's address: every client then shares one count. The waits are ``anyio`` sleeps, never
blocking the event loop; the clock and the sleep are injectable, for tests.
"""

from __future__ import annotations

import collections
import contextlib
import ipaddress
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Final

import anyio

#: Failed logins an address has before its requests are slowed down.
FREE_FAILURES: Final = 30
#: Seconds the first slowed request waits; each further failure doubles it.
FIRST_DELAY: Final = 0.5
#: The longest wait, in seconds (reached after five slowed failures).
MAX_DELAY: Final = 8.0
#: Seconds after its last failure that an address is forgotten.
FORGET_AFTER: Final = 900.0
#: Most addresses remembered at once.
MAX_ADDRESSES: Final = 10_000
#: Most user names whose failures are told apart per address (a success forgives only its
#: own user's failures; failures under further names are never forgiven, only forgotten).
MAX_USERS: Final = 16


def client_key(address: str) -> str:
    """What failures are counted by: an IPv4 address as it is, an IPv6 one by its /64 (an
    IPv4-mapped one as its IPv4 address); anything else (a Unix socket's name) as it is."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, 64), strict=False))
    return str(ip)


@dataclass(slots=True)
class _Address:
    failures: int
    last: float
    #: The failures counted under each user name tried (at most :data:`MAX_USERS` names).
    by_user: dict[str, int] = field(default_factory=dict)


@dataclass(slots=True)
class _InFlight:
    """The checks under way for one address (kept only while there are some)."""

    count: int = 0
    #: Slowed requests pass one at a time: each holds this while it waits and is checked.
    turn: anyio.Lock = field(default_factory=anyio.Lock)


class LoginThrottle:
    """The failed logins of each client address, and the delay they earn (see the module's
    docstring). Use it from one event loop."""

    def __init__(
        self,
        *,
        free_failures: int = FREE_FAILURES,
        first_delay: float = FIRST_DELAY,
        max_delay: float = MAX_DELAY,
        forget_after: float = FORGET_AFTER,
        max_addresses: int = MAX_ADDRESSES,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[object]] = anyio.sleep,
    ) -> None:
        self.free_failures = free_failures
        self.first_delay = first_delay
        self.max_delay = max_delay
        self.forget_after = forget_after
        self.max_addresses = max_addresses
        self._clock = clock
        self._sleep = sleep
        # Ordered by last failure, oldest first.
        self._addresses: collections.OrderedDict[str, _Address] = collections.OrderedDict()
        # Checks under way, by address: as many entries as requests being checked, no more.
        self._in_flight: dict[str, _InFlight] = {}

    def __len__(self) -> int:
        """How many addresses are remembered."""
        return len(self._addresses)

    def delay(self, address: str) -> float:
        """Seconds the next request with credentials from ``address`` waits (0: none)."""
        entry = self._entry(client_key(address))
        if entry is None or entry.failures < self.free_failures:
            return 0.0
        doublings = min(entry.failures - self.free_failures, 32)
        return float(min(self.first_delay * 2**doublings, self.max_delay))

    @contextlib.asynccontextmanager
    async def turn(self, address: str) -> AsyncIterator[None]:
        """Around checking a request's credentials: nothing for an address that is not slowed
        down; else the address's turn (one request at a time) and its delay. A check under way
        counts as a failure until it is done, so concurrent requests cannot all be checked
        before the failures they would add are counted."""
        key = client_key(address)
        entry = self._entry(key)
        flight = self._in_flight.setdefault(key, _InFlight())
        free = (entry.failures if entry is not None else 0) + flight.count < self.free_failures
        flight.count += 1
        try:
            if free:
                yield
                return
            async with flight.turn:
                wait = self.delay(address)
                if wait > 0:
                    await self._sleep(wait)
                yield
        finally:
            flight.count -= 1
            if flight.count == 0:
                del self._in_flight[key]

    def failed(self, address: str, user: str | None = None) -> None:
        """A login from ``address`` failed (as ``user``, when known)."""
        address = client_key(address)
        now = self._clock()
        entry = self._entry(address)
        if entry is None:
            self._expire(now)
            while len(self._addresses) >= self.max_addresses:
                self._addresses.popitem(last=False)
            entry = self._addresses[address] = _Address(0, now)
        entry.failures += 1
        entry.last = now
        if user is not None and (user in entry.by_user or len(entry.by_user) < MAX_USERS):
            entry.by_user[user] = entry.by_user.get(user, 0) + 1
        self._addresses.move_to_end(address)

    def succeeded(self, address: str, user: str | None = None) -> None:
        """A login from ``address`` succeeded as ``user``: the failures tried as that user are
        forgotten, not the others (``None``: every failure of the address is forgotten)."""
        key = client_key(address)
        entry = self._addresses.get(key)
        if entry is None:
            return
        if user is not None:
            entry.failures -= entry.by_user.pop(user, 0)
            if entry.failures > 0:
                return
        del self._addresses[key]

    def _entry(self, address: str) -> _Address | None:
        entry = self._addresses.get(address)
        if entry is not None and self._clock() - entry.last >= self.forget_after:
            del self._addresses[address]
            return None
        return entry

    def _expire(self, now: float) -> None:
        """Forget the addresses whose last failure is too old (the oldest are first)."""
        while self._addresses:
            oldest = next(iter(self._addresses.values()))
            if now - oldest.last < self.forget_after:
                return
            self._addresses.popitem(last=False)


__all__ = [
    "FIRST_DELAY",
    "FORGET_AFTER",
    "FREE_FAILURES",
    "MAX_ADDRESSES",
    "MAX_DELAY",
    "MAX_USERS",
    "LoginThrottle",
    "client_key",
]
