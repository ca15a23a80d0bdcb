"""No blob descriptor cache outlives a delete, with three ``distblob serve`` replicas on one bucket.

Each test pushes a blob through replica A, reads it through B and C (which fills their caches),
deletes it through A and then asks every replica for it: 404 everywhere, with the default
(in-memory) cache and with Redis, including Redis going away during the delete (stopped, or
hung with SIGSTOP) and A restarting before it is back. The replicas share nothing but the bucket
(``rclone serve s3`` in memory), the ``http.secret`` and, with Redis, the Redis.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from typing import Any

import pytest
from test_s3_replicas import S3Replica

from distblob.errors import PathNotFoundError
from distblob.storage import paths
from distblob.storage.driver.s3 import S3Driver
from support.goregistry import LOOPBACK
from support.redisserver import RedisServer
from support.s3server import RcloneS3

pytestmark = pytest.mark.timeout(120)

Replicas = tuple[S3Replica, S3Replica, S3Replica]


def start_replicas(
    tmp_path_factory: pytest.TempPathFactory, parameters: dict[str, Any], extra: dict[str, Any]
) -> Iterator[Replicas]:
    storage = {"delete": {"enabled": True}, "redirect": {"disable": True}}
    config = {**extra, "storage": {**storage, **extra.get("storage", {})}}
    a, b, c = (
        S3Replica(tmp_path_factory.mktemp(name), parameters, extra_config=config) for name in "abc"
    )
    with a, b, c:
        yield a, b, c
        for replica in (a, b, c):
            log = replica.log_text()
            assert "unexpected error" not in log and "status=500" not in log, log


@pytest.fixture(scope="module")
def memory_replicas(
    tmp_path_factory: pytest.TempPathFactory, s3_server: RcloneS3
) -> Iterator[Replicas]:
    """Three replicas with the default cache (none configured, as in docs/guide/s3.md's example)."""
    parameters = s3_server.parameters(s3_server.new_bucket("memcache"), rootdirectory="/registry")
    yield from start_replicas(tmp_path_factory, parameters, {})


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    with RedisServer(tmp_path_factory.mktemp("redis")) as server:
        yield server


@pytest.fixture(scope="module")
def redis_parameters(s3_server: RcloneS3) -> dict[str, Any]:
    return s3_server.parameters(s3_server.new_bucket("rediscache"), rootdirectory="/registry")


@pytest.fixture(scope="module")
def redis_replicas(
    tmp_path_factory: pytest.TempPathFactory,
    redis_parameters: dict[str, Any],
    redis_server: RedisServer,
) -> Iterator[Replicas]:
    """Three replicas on one Redis, with no Redis timeouts configured (the defaults)."""
    extra = {
        "storage": {"cache": {"blobdescriptor": "redis"}},
        "redis": {"addr": f"{LOOPBACK}:{redis_server.port}"},
    }
    yield from start_replicas(tmp_path_factory, redis_parameters, extra)


def push_and_read_everywhere(replicas: Replicas, repo: str, data: bytes) -> str:
    """Push ``data`` through A and read it through every replica (filling their caches)."""
    a = replicas[0]
    with a.client() as client:
        digest = client.push_blob(repo, data)
    for replica in replicas:
        with replica.client() as client:
            assert client.head_blob(repo, digest).status == 200
            assert client.get_blob(repo, digest).body == data
    return digest


def assert_unknown_everywhere(replicas: Replicas, repo: str, digest: str) -> None:
    for replica in replicas:
        with replica.client() as client:
            head, get = client.head_blob(repo, digest), client.get_blob(repo, digest)
        assert (head.status, get.status) == (404, 404), (replica.url, head, get)
        assert b"BLOB_UNKNOWN" in get.body


def delete(replica: S3Replica, repo: str, digest: str) -> None:
    with replica.client() as client:
        client.delete_blob(repo, digest)


def wait_for_log(replica: S3Replica, text: str, count: int = 1) -> None:
    """Wait (up to the test's timeout) until ``text`` is in the replica's log ``count`` times."""
    while replica.log_text().count(text) < count:
        time.sleep(0.05)


def clear_records(parameters: dict[str, Any]) -> list[str]:
    try:
        return S3Driver.from_parameters(parameters).list(paths.CACHE_CLEARS_ROOT)
    except PathNotFoundError:
        return []


def test_in_memory_caches_see_a_delete_made_by_another_replica(
    memory_replicas: Replicas,
) -> None:
    digest = push_and_read_everywhere(memory_replicas, "mem/app", os.urandom(70_000))
    delete(memory_replicas[0], "mem/app", digest)
    assert_unknown_everywhere(memory_replicas, "mem/app", digest)


def test_redis_caches_see_a_delete_made_by_another_replica(
    redis_replicas: Replicas, redis_server: RedisServer
) -> None:
    digest = push_and_read_everywhere(redis_replicas, "redis/app", os.urandom(70_000))
    assert redis_server.client().sismember("repository::redis/app::blobs", digest)
    delete(redis_replicas[0], "redis/app", digest)
    assert_unknown_everywhere(redis_replicas, "redis/app", digest)


def test_a_hung_redis_degrades_to_storage(
    redis_replicas: Replicas, redis_server: RedisServer
) -> None:
    kept = push_and_read_everywhere(redis_replicas, "redis/hung", os.urandom(50_000))
    gone = push_and_read_everywhere(redis_replicas, "redis/hung", os.urandom(60_000))
    a, b, c = redis_replicas
    before = [replica.log_text().count("redis cache available again") for replica in (a, b)]
    redis_server.pause()
    try:
        # The defaults time the first call out; storage answers, and answers right.
        with b.client(timeout=30) as client:
            assert client.head_blob("redis/hung", kept).status == 200
        delete(a, "redis/hung", gone)
        assert_unknown_everywhere((b, b, b), "redis/hung", gone)
    finally:
        redis_server.resume()
    for replica, seen in zip((a, b), before, strict=True):
        wait_for_log(replica, "redis cache available again", seen + 1)
    assert not redis_server.client().sismember("repository::redis/hung::blobs", gone)
    assert_unknown_everywhere(redis_replicas, "redis/hung", gone)
    with c.client() as client:
        assert client.head_blob("redis/hung", kept).status == 200


def test_a_delete_during_a_redis_outage_survives_a_restart_of_the_deleting_replica(
    redis_replicas: Replicas, redis_server: RedisServer, redis_parameters: dict[str, Any]
) -> None:
    digest = push_and_read_everywhere(redis_replicas, "redis/outage", os.urandom(80_000))
    a, b, _ = redis_replicas
    seen = [replica.log_text().count("redis cache available again") for replica in (a, b)]
    redis_server.stop(save=True)
    try:
        delete(a, "redis/outage", digest)
        assert len(clear_records(redis_parameters)) == 1  # kept in the bucket
        # B asks during the outage (storage answers); C does not ask at all.
        assert_unknown_everywhere((b, b, b), "redis/outage", digest)
        a.stop()  # A goes, and what it held in memory with it
        a.start()  # and comes back while Redis is still down
        with a.client() as client:
            assert client.head_blob("redis/outage", digest).status == 404
    finally:
        redis_server.start()  # same port, with the entries of the deleted blob
    # A (its records) and B (which saw the outage) apply the clear before trusting Redis.
    for replica, count in zip((a, b), seen, strict=True):
        wait_for_log(replica, "redis cache available again", count + 1)
    assert clear_records(redis_parameters) == []
    assert not redis_server.client().sismember("repository::redis/outage::blobs", digest)
    assert_unknown_everywhere(redis_replicas, "redis/outage", digest)
