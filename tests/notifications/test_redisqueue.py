"""The Redis queue (:mod:`distblob.notifications.redisqueue`) on a real ``redis-server``: in
order, kept across a reopen, acknowledged by sequence number, bounded with a warning, delivered
by one lease holder at a time (taken over when it dies), and appends that neither fail nor
hang while Redis is down, moved to Redis in order when it is back."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from distblob.notifications.redisqueue import RedisQueue
from distblob.storage.redisclient import redis_client
from support.goregistry import LOOPBACK
from support.redisserver import RedisServer

pytestmark = pytest.mark.timeout(60)

TIMEOUT = 0.5  # the client's redis timeouts


def payloads(count: int, start: int = 0) -> list[bytes]:
    return [f'{{"n":{n}}}'.encode() for n in range(start, start + count)]


def client(server: RedisServer) -> redis.Redis:
    return redis_client(LOOPBACK, server.port, dial_timeout=TIMEOUT, timeout=TIMEOUT, retries=1)


def queue(server: RedisServer, **options: Any) -> RedisQueue:
    options = {"lease_ttl": 0.6, "retry_after": 0.1, "follower_wait": 0.01, **options}
    return RedisQueue(client(server), "hook", storage="s3:bucket/root", **options)


def drain(q: RedisQueue, limit: int = 7) -> list[bytes]:
    """Read and acknowledge everything, as the sender does."""
    got: list[bytes] = []
    while batch := q.read(limit):
        got += [payload for _, payload in batch]
        q.ack(batch[-1][0])
    return got


@pytest.fixture(scope="module")
def shared_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    with RedisServer(tmp_path_factory.mktemp("redis")) as server:
        yield server


@pytest.fixture
def server(shared_redis: RedisServer) -> RedisServer:
    shared_redis.client().flushall()
    return shared_redis


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A Redis of the test's own, which it may stop, pause and start."""
    directory = tmp_path / "redis"
    directory.mkdir()
    with RedisServer(directory) as started:
        yield started


def test_events_come_back_in_order_after_a_reopen(server: RedisServer) -> None:
    q = queue(server)
    for p in payloads(10):
        q.append(p)
    batch = q.read(3)
    assert [p for _, p in batch] == payloads(3)
    q.ack(batch[-1][0])
    q.close()
    # The list's keys are the endpoint's under the storage's prefix.
    assert server.client().llen("distblob::notifications::s3:bucket/root::hook::events") == 7
    reopened = queue(server)
    assert reopened.waiting == 7
    assert drain(reopened) == payloads(7, 3)
    assert reopened.pending == 0
    reopened.close()


def test_unacknowledged_events_are_read_again_and_acks_are_idempotent(
    server: RedisServer,
) -> None:
    q = queue(server)
    for p in payloads(4):
        q.append(p)
    first = q.read(2)
    assert q.read(2) == first  # not acknowledged: the same again
    q.ack(first[0][0])
    q.ack(first[0][0])  # twice: nothing more popped
    assert [p for _, p in q.read(10)] == payloads(3, 1)
    q.ack(first[1][0] + 100)  # past the end: everything up to it
    assert q.read(10) == []
    q.close()


def test_bound_drops_the_oldest_with_a_warning(
    server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    q = queue(server, max_events=5)
    with caplog.at_level(logging.WARNING, "distblob.notifications"):
        for p in payloads(12):
            q.append(p)
    assert drain(q) == payloads(5, 7)
    assert q.drops.total == 7
    assert "more than 5 events waiting: the oldest dropped, 1 so far" in caplog.text
    q.close()


def test_one_replica_delivers_and_another_takes_over_when_it_dies(server: RedisServer) -> None:
    first, second = queue(server), queue(server)
    for n, p in enumerate(payloads(6)):
        (first if n % 2 else second).append(p)  # both replicas append to one list
    batch = first.read(2)
    assert [p for _, p in batch] == payloads(2)
    assert first.leading
    assert second.read(2) == []  # the lease is first's
    first.ack(batch[-1][0])
    assert [p for _, p in first.read(1)] == payloads(1, 2)  # in flight when it dies:
    first._stop.set()  # its renewals stop, as in a SIGKILL: no release
    deadline = time.monotonic() + 5
    while not (taken := second.read(10)):
        assert time.monotonic() < deadline, "the lease was never taken over"
    # The event in flight is sent again (at least once), then the rest, in order.
    assert [p for _, p in taken] == payloads(4, 2)
    assert not first.leading
    assert first.read(10) == []  # the lease is second's now
    second.ack(taken[-1][0])
    # A replica that stops releases its lease: the other delivers at once.
    second.append(b'{"n":6}')
    second.close()
    assert [p for _, p in first.read(10)] == [b'{"n":6}']
    first.close()


def test_appends_while_redis_is_down_wait_in_memory_and_move_back_in_order(
    own_redis: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    q = queue(own_redis)
    for p in payloads(3):
        q.append(p)
    own_redis.stop(save=True)
    with caplog.at_level(logging.INFO, "distblob.notifications"):
        started = time.monotonic()
        for p in payloads(4, 3):
            q.append(p)  # no error
        assert time.monotonic() - started < 2 * TIMEOUT
        assert "redis unavailable" in caplog.text
        assert q.read(10) == []  # nothing to deliver while Redis is down
        assert q.pending == 4  # in memory
        own_redis.start()
        q.append(b'{"n":7}')  # after the others, though Redis is back
        assert drain(q) == payloads(8)
        assert "redis available again; 5 events kept in memory moved to it" in caplog.text
    q.close()


def test_a_hung_redis_costs_one_append_the_timeout(own_redis: RedisServer) -> None:
    q = queue(own_redis, retry_after=5.0)
    q.append(b'{"n":0}')
    own_redis.pause()
    try:
        started = time.monotonic()
        q.append(b'{"n":1}')  # waits for the timeout
        first = time.monotonic() - started
        started = time.monotonic()
        for p in payloads(50, 2):
            q.append(p)  # in memory at once
        rest = time.monotonic() - started
    finally:
        own_redis.resume()
    assert first < 3 * TIMEOUT
    assert rest < 0.1
    q._retry_at = 0.0  # as if RETRY_AFTER had passed
    assert drain(q) == payloads(52)
    q.close()


def test_events_in_memory_at_stop_are_counted_lost(
    own_redis: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    q = queue(own_redis)
    own_redis.stop()
    q.append(b'{"n":0}')
    with caplog.at_level(logging.WARNING, "distblob.notifications"):
        q.close()
    assert "1 events kept in memory are lost" in caplog.text
