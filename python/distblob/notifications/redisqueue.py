"""An endpoint's queue of events in Redis, shared by the replicas of one registry: delivered
at least once, in order, across restarts and crashes of any replica.

For storage the replicas share (S3) with a ``redis`` section, where no replica has a local
journal (:mod:`~distblob.notifications.journal`) the others could read. Per endpoint, under
``distblob::notifications::<storage>::<endpoint>::`` (``<storage>`` names the bucket and root
directory, so registries sharing one Redis keep apart):

- ``events``, a list of ``"<seq> <event JSON>"``, appended (``RPUSH``, by a script that also
  takes the sequence number from ``seq``, an ``INCR`` counter, and trims the list to
  ``max_events``, dropping the oldest) before the request that made the event is answered;
  ``appended``, a sorted set of the last ``max_events`` appends' random tokens, so an append
  whose answer timed out but that Redis carried out is not made twice when it is repeated;
- ``lease``, ``SET NX PX`` with a random token: only its holder delivers, so one replica at a
  time sends the endpoint's events and their order holds across replicas. The holder renews it
  every third of :data:`LEASE_TTL` from a background thread while it runs (delivering or
  waiting), releases it when it stops, and a replica that dies leaves it to expire: another
  takes it over within :data:`LEASE_TTL`.

The holder reads the list's head, POSTs it and, once the endpoint took it (2xx or 3xx), pops
every event up to its sequence number (a script, so an acknowledgement is idempotent). A crash
between a POST and its acknowledgement sends that one event again (the sender posts one event
at a time); so does a holder stalled longer than the lease (it checks its lease before each
event, so at most the event in flight overlaps with the replica that took over).

Redis down or hung: an append costs at most the ``redis`` timeouts once, then the events wait
in this process's memory (bounded too, with a warning) and the sender, not the requests, asks
Redis again every :data:`RETRY_AFTER`; when it answers, the events in memory are moved to the
list in their order, and delivery resumes. Events still in memory when the process stops are
lost (a warning says how many).
"""

from __future__ import annotations

import logging
import secrets
import threading
import time
from collections import deque
from typing import TYPE_CHECKING, Final

from distblob.notifications.journal import MAX_EVENTS, _Drops
from distblob.storage.leases import RELEASE_SCRIPT, RENEW_SCRIPT

if TYPE_CHECKING:
    import redis

logger = logging.getLogger("distblob.notifications")

#: The key prefix of every notification queue.
KEY_PREFIX: Final = "distblob::notifications::"
#: How long a delivery lease lives without being renewed (seconds): the longest an endpoint's
#: events wait after the replica delivering them died. Renewed every third of it.
LEASE_TTL: Final = 10.0
#: After Redis failed, it is asked again (by the sender, never by a request) this often.
RETRY_AFTER: Final = 1.0
#: How long a replica that does not hold an endpoint's lease waits before asking again.
FOLLOWER_WAIT: Final = 1.0

_APPEND: Final = """
for i = 2, #ARGV, 2 do
    if redis.call('zadd', KEYS[3], 'NX', 0, ARGV[i]) == 1 then
        local seq = redis.call('incr', KEYS[2])
        redis.call('zadd', KEYS[3], seq, ARGV[i])
        redis.call('rpush', KEYS[1], seq .. ' ' .. ARGV[i + 1])
    end
end
redis.call('zremrangebyrank', KEYS[3], 0, -1 - tonumber(ARGV[1]))
local length = redis.call('llen', KEYS[1])
local limit = tonumber(ARGV[1])
local dropped = 0
if length > limit then
    dropped = length - limit
    redis.call('ltrim', KEYS[1], dropped, -1)
    length = limit
end
return {dropped, length}
"""
_ACK: Final = """
local seq = tonumber(ARGV[1])
while true do
    local head = redis.call('lindex', KEYS[1], 0)
    if not head then break end
    local first = tonumber(string.match(head, '^(%d+) '))
    if first ~= nil and first > seq then break end
    redis.call('lpop', KEYS[1])
end
return redis.call('llen', KEYS[1])
"""


def queue_prefix(storage: str, name: str) -> str:
    """The prefix of endpoint ``name``'s keys for the registry on ``storage``."""
    return f"{KEY_PREFIX}{storage}::{name}::"


class RedisQueue:
    """Endpoint ``name``'s queue in Redis (see the module's docstring); the
    :class:`~distblob.notifications.journal.Queue` the sender reads.

    Thread-safe: handlers append on the event loop, the sender reads and acknowledges from
    worker threads, a background thread renews the lease.
    """

    def __init__(
        self,
        client: redis.Redis,
        name: str,
        *,
        storage: str = "",
        max_events: int = MAX_EVENTS,
        lease_ttl: float = LEASE_TTL,
        retry_after: float = RETRY_AFTER,
        follower_wait: float = FOLLOWER_WAIT,
    ) -> None:
        self.name = name
        self.max_events = max_events
        self.lease_ttl = lease_ttl
        self.retry_after = retry_after
        self.follower_wait = follower_wait
        self._client = client
        prefix = queue_prefix(storage, name)
        self.events_key = prefix + "events"
        self.seq_key = prefix + "seq"
        self.appended_key = prefix + "appended"
        self.lease_key = prefix + "lease"
        self._append_script = client.register_script(_APPEND)
        self._ack_script = client.register_script(_ACK)
        self._renew_script = client.register_script(RENEW_SCRIPT)
        self._release_script = client.register_script(RELEASE_SCRIPT)
        self.drops = _Drops(name, max_events)
        self._lock = threading.Lock()
        #: Events appended while Redis could not be reached, oldest first, with their tokens.
        self._memory: deque[tuple[str, bytes]] = deque()
        self._outage = False
        self._retry_at = 0.0
        self._length = 0  # the list's length when last seen
        self._unacked = -1  # a delivered event whose acknowledgement Redis did not take
        self._token = secrets.token_hex(16)
        self._held_until = 0.0  # monotonic: the lease is ours until then
        self._stop = threading.Event()
        self._renewer: threading.Thread | None = None
        self._closed = False
        import redis

        try:
            self._length = int(client.llen(self.events_key))
        except redis.RedisError as error:
            self._went_away(error)

    # -- Redis's availability -----------------------------------------------------------------

    def _went_away(self, error: Exception) -> None:
        """Redis failed: events go to memory, and Redis is asked again later (by the sender)."""
        self._retry_at = time.monotonic() + self.retry_after
        if not self._outage:
            self._outage = True
            logger.warning(
                "notifications: endpoint %s: redis unavailable (%s): new events wait in this "
                "process's memory until it is back (lost if the process stops first)",
                self.name,
                error,
            )

    def _push(self, events: list[tuple[str, bytes]]) -> None:
        """Append ``events`` (token, payload) to the list (the lock held); raises
        ``redis.RedisError``. An event whose token is among the list's last ``max_events`` is
        not appended again: a call that timed out may have been carried out, and is repeated
        from memory without a duplicate."""
        args: list[str | bytes | int] = [self.max_events]
        for token, payload in events:
            args += [token, payload]
        dropped, length = self._append_script(
            keys=[self.events_key, self.seq_key, self.appended_key], args=args
        )
        self._length = int(length)
        if int(dropped) > 0:
            self.drops.add(int(dropped))

    def _keep(self, event: tuple[str, bytes]) -> None:
        """Keep ``event`` in memory (the lock held), bounded as the list is."""
        self._memory.append(event)
        if len(self._memory) > self.max_events:
            self._memory.popleft()
            self.drops.add(1)

    def _flush(self) -> bool:
        """Move the events kept in memory to Redis (the lock held; in a worker thread): whether
        Redis answered."""
        import redis

        if not self._outage and not self._memory:
            return True
        if self._outage and time.monotonic() < self._retry_at:
            return False
        try:
            if self._memory:
                self._push(list(self._memory))
                moved = len(self._memory)
                self._memory.clear()
            else:
                moved = 0
                self._length = int(self._client.llen(self.events_key))
        except redis.RedisError as error:
            self._went_away(error)
            return False
        if self._outage:
            self._outage = False
            logger.info(
                "notifications: endpoint %s: redis available again; %d events kept in memory "
                "moved to it",
                self.name,
                moved,
            )
        return True

    # -- the queue ----------------------------------------------------------------------------

    def append(self, payload: bytes) -> None:
        """Add an event at the end of the list, before the request is answered; during an
        outage (or while events from one wait in memory, to keep their order) in memory,
        without asking Redis."""
        import redis

        event = (secrets.token_hex(8), payload)
        with self._lock:
            if self._outage or self._memory:
                self._keep(event)
                return
            try:
                self._push([event])
            except redis.RedisError as error:
                self._went_away(error)
                self._keep(event)

    def read(self, limit: int) -> list[tuple[int, bytes]]:
        """Up to ``limit`` events from the list's head, each with its sequence number: none
        unless this process holds the endpoint's lease (it waits a little first, so a sender
        does not spin) or while Redis is down."""
        import redis

        with self._lock:
            flushed = self._flush()
        if not flushed:
            self._pause(max(self._retry_at - time.monotonic(), 0.05))
            return []
        if not self._lead():
            self._pause(self.follower_wait)
            return []
        try:
            if self._unacked >= 0:
                self.ack(self._unacked)
                if self._unacked >= 0:
                    return []
            with self._client.pipeline(transaction=True) as pipe:
                pipe.llen(self.events_key)
                pipe.lrange(self.events_key, 0, limit - 1)
                length, items = pipe.execute()
        except redis.RedisError as error:
            with self._lock:
                self._went_away(error)
            return []
        self._length = int(length)
        events: list[tuple[int, bytes]] = []
        for item in items:
            seq, _, body = str(item).partition(" ")
            if seq.isdigit():
                events.append((int(seq), body.encode()))
        return events

    def ack(self, seq: int) -> None:
        """Event ``seq`` (and every one before it) was delivered: popped from the list. If
        Redis does not answer, it is popped before the next read (and not sent again unless
        this process stops first)."""
        import redis

        try:
            self._length = int(self._ack_script(keys=[self.events_key], args=[seq]))
        except redis.RedisError as error:
            self._unacked = max(self._unacked, seq)
            with self._lock:
                self._went_away(error)
            return
        if self._unacked <= seq:
            self._unacked = -1

    def sync(self) -> None:
        """Move events kept in memory during an outage to Redis, if it answers again."""
        if self._memory:
            with self._lock:
                self._flush()

    @property
    def pending(self) -> int:
        """Events not yet delivered, as last seen: those in the list (when this process
        delivers the endpoint) and those in memory."""
        return (self._length if self.leading else 0) + len(self._memory)

    @property
    def waiting(self) -> int:
        """Events waiting, as last seen: the list's length and the events in memory."""
        return self._length + len(self._memory)

    # -- the lease ----------------------------------------------------------------------------

    @property
    def leading(self) -> bool:
        """Whether this process holds the endpoint's lease (with a third of it left)."""
        return self._held_until - time.monotonic() > self.lease_ttl / 3

    def _lead(self) -> bool:
        """Hold the lease, taking it if it is free: whether this process may deliver."""
        import redis

        if self.leading:
            return True
        ttl = int(self.lease_ttl * 1000)
        asked = time.monotonic()
        try:
            taken = self._client.set(self.lease_key, self._token, nx=True, px=ttl)
            if not taken:
                taken = bool(self._renew_script(keys=[self.lease_key], args=[self._token, ttl]))
        except redis.RedisError as error:
            with self._lock:
                self._went_away(error)
            return False
        if not taken:
            return False
        was = self._held_until
        self._held_until = asked + self.lease_ttl
        if was == 0.0 or was < asked - self.lease_ttl:
            logger.info("notifications: endpoint %s: this process delivers its events", self.name)
        if self._renewer is None:
            self._renewer = threading.Thread(
                target=self._renew_loop, name=f"distblob-notify-{self.name}", daemon=True
            )
            self._renewer.start()
        return True

    def _renew_loop(self) -> None:
        import redis

        ttl = int(self.lease_ttl * 1000)
        while not self._stop.wait(self.lease_ttl / 3):
            if self._held_until == 0.0:
                continue
            asked = time.monotonic()
            try:
                kept = self._renew_script(keys=[self.lease_key], args=[self._token, ttl])
            except redis.RedisError:
                continue  # unknown: the lease runs out unless a later renewal works
            if kept:
                self._held_until = asked + self.lease_ttl
            elif self._held_until > 0.0:
                self._held_until = 0.0
                logger.warning(
                    "notifications: endpoint %s: its delivery lease was lost (this process "
                    "stalled past %gs): another replica delivers",
                    self.name,
                    self.lease_ttl,
                )

    def _pause(self, seconds: float) -> None:
        self._stop.wait(seconds)

    def close(self) -> None:
        """Stop renewing and release the lease (another replica takes over at once); events
        still in memory are moved to Redis if it answers, else counted lost."""
        import redis

        if self._closed:
            return
        self._closed = True
        self._stop.set()
        with self._lock:
            self._retry_at = 0.0
            self._flush()
            lost = len(self._memory)
        if lost:
            logger.warning(
                "notifications: endpoint %s: redis unavailable at stop: %d events kept in memory "
                "are lost",
                self.name,
                lost,
            )
        if self._held_until:
            try:
                self._release_script(keys=[self.lease_key], args=[self._token])
            except redis.RedisError as error:
                logger.debug("notifications: lease %s not released: %s", self.lease_key, error)
            self._held_until = 0.0


__all__ = ["FOLLOWER_WAIT", "KEY_PREFIX", "LEASE_TTL", "RETRY_AFTER", "RedisQueue", "queue_prefix"]
