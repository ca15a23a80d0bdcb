"""The blob descriptor caches (:mod:`distblob.storage.cache`) and the stores that use them.

One suite of cache semantics runs against both implementations (distribution's ``cachecheck``);
the Redis one against a real ``redis-server`` (Debian's) started on a free loopback port with no
persistence, and against the Go registry sharing it. Registries over each cache must serve what
storage holds and nothing else: a GET whose data is gone answers ``BLOB_UNKNOWN``, deletes are
never undone by an entry, and Redis going away degrades to storage instead of failing requests.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from distblob import Registry
from distblob.descriptor import DEFAULT_MEDIA_TYPE, Descriptor
from distblob.digest import Digest
from distblob.errors import BlobUnknownError, NameInvalidError, PathNotFoundError
from distblob.storage import paths
from distblob.storage.cache import (
    DEFAULT_DIAL_TIMEOUT,
    DEFAULT_TIMEOUT,
    BlobDescriptorCache,
    BlobDescriptorCacheScope,
    CacheUnavailableError,
    InMemoryBlobDescriptorCache,
    RedisBlobDescriptorCache,
)
from distblob.storage.clears import ClearJournal
from distblob.storage.driver import FilesystemDriver
from support.blobstore import payload, sha256
from support.goregistry import LOOPBACK, GoRegistry, free_port
from support.redisserver import RedisServer
from support.server import DistblobServer

pytestmark = pytest.mark.timeout(120)

DATA = payload(4000, seed=90)
DIGEST = sha256(DATA)
SHA512 = Digest("sha512:" + hashlib.sha512(DATA).hexdigest())
OTHER = payload(3000, seed=91)
OTHER_DIGEST = sha256(OTHER)
LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"
CONFIG = "application/vnd.oci.image.config.v1+json"


@pytest.fixture(scope="module")
def shared_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    with RedisServer(tmp_path_factory.mktemp("redis")) as server:
        yield server


@pytest.fixture
def redis_server(shared_redis: RedisServer) -> RedisServer:
    """The module's Redis, emptied for the test."""
    shared_redis.client().flushall()
    return shared_redis


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A Redis of the test's own, which it may stop and start."""
    directory = tmp_path / "redis"
    directory.mkdir()
    with RedisServer(directory) as server:
        yield server


@pytest.fixture(params=["inmemory", "redis"])
def make_cache(request: pytest.FixtureRequest) -> Iterator[Callable[[], BlobDescriptorCache]]:
    """Build caches of the parameter's kind; Redis ones share the test's (emptied) server."""
    made: list[BlobDescriptorCache] = []

    def make() -> BlobDescriptorCache:
        cache: BlobDescriptorCache
        if request.param == "redis":
            cache = request.getfixturevalue("redis_server").cache()
        else:
            cache = InMemoryBlobDescriptorCache()
        made.append(cache)
        return cache

    yield make
    for cache in made:
        cache.close()


@pytest.fixture
def cache(make_cache: Callable[[], BlobDescriptorCache]) -> BlobDescriptorCache:
    return make_cache()


def describe(digest: Digest = DIGEST, media_type: str = LAYER, size: int = len(DATA)) -> Descriptor:
    return Descriptor(media_type, size, digest)


# -- cache semantics, for both caches (distribution's cachecheck) -----------------------------


def test_scopes_follow_the_protocol(cache: BlobDescriptorCache) -> None:
    assert isinstance(cache, BlobDescriptorCache)
    assert isinstance(cache.repository_scoped("foo/bar"), BlobDescriptorCacheScope)
    assert cache.name in ("inmemory", "redis")


def test_an_empty_cache_misses(cache: BlobDescriptorCache) -> None:
    with pytest.raises(BlobUnknownError):
        cache.stat(DIGEST)
    scope = cache.repository_scoped("foo/bar")
    with pytest.raises(BlobUnknownError):
        scope.stat(DIGEST)
    # Clearing nothing is not an error.
    scope.clear(DIGEST)
    cache.clear(DIGEST)


@pytest.mark.parametrize("name", ["", "Foo", "a//b", "../x", "a/_uploads"])
def test_repository_names_are_validated(cache: BlobDescriptorCache, name: str) -> None:
    with pytest.raises(NameInvalidError):
        cache.repository_scoped(name)


@pytest.mark.parametrize(
    "descriptor",
    [
        Descriptor(LAYER, len(DATA)),
        Descriptor(LAYER, -1, DIGEST),
        Descriptor("", len(DATA), DIGEST),
    ],
)
def test_incomplete_descriptors_are_refused(
    cache: BlobDescriptorCache, descriptor: Descriptor
) -> None:
    for scope in (cache, cache.repository_scoped("foo/bar")):
        with pytest.raises(ValueError):
            scope.set_descriptor(DIGEST, descriptor)
        with pytest.raises(BlobUnknownError):
            scope.stat(DIGEST)


def test_an_alias_must_be_in_another_algorithm(cache: BlobDescriptorCache) -> None:
    with pytest.raises(ValueError):
        cache.repository_scoped("foo/bar").set_descriptor(OTHER_DIGEST, describe())


def test_set_and_stat(cache: BlobDescriptorCache) -> None:
    scope = cache.repository_scoped("foo/bar")
    scope.set_descriptor(DIGEST, describe())
    assert scope.stat(DIGEST) == describe()
    # A repository's entry records the global one too; other repositories know nothing.
    assert cache.stat(DIGEST) == describe()
    with pytest.raises(BlobUnknownError):
        cache.repository_scoped("foo/other").stat(DIGEST)
    # The global scope alone makes no repository entry.
    cache.set_descriptor(OTHER_DIGEST, describe(OTHER_DIGEST, size=len(OTHER)))
    assert cache.stat(OTHER_DIGEST).size == len(OTHER)
    with pytest.raises(BlobUnknownError):
        scope.stat(OTHER_DIGEST)


def test_an_alias_records_its_canonical_digest(cache: BlobDescriptorCache) -> None:
    scope = cache.repository_scoped("foo/bar")
    scope.set_descriptor(SHA512, describe())
    for digest in (SHA512, DIGEST):
        assert scope.stat(digest) == describe()
        assert cache.stat(digest) == describe()


def test_media_types_are_per_repository(cache: BlobDescriptorCache) -> None:
    first, second = cache.repository_scoped("foo/a"), cache.repository_scoped("foo/b")
    first.set_descriptor(DIGEST, describe(media_type=LAYER))
    first.set_descriptor(DIGEST, describe(media_type=CONFIG))
    second.set_descriptor(DIGEST, describe(media_type=DEFAULT_MEDIA_TYPE))
    assert first.stat(DIGEST).media_type == CONFIG
    assert second.stat(DIGEST).media_type == DEFAULT_MEDIA_TYPE
    # The global entry keeps the first media type it was given (distribution's HSETNX).
    assert cache.stat(DIGEST).media_type == LAYER


def test_clearing_a_repository_leaves_the_others(cache: BlobDescriptorCache) -> None:
    first, second = cache.repository_scoped("foo/a"), cache.repository_scoped("foo/b")
    first.set_descriptor(DIGEST, describe())
    second.set_descriptor(DIGEST, describe())
    first.clear(DIGEST)
    with pytest.raises(BlobUnknownError):
        first.stat(DIGEST)
    assert second.stat(DIGEST) == describe()
    assert cache.stat(DIGEST) == describe()


def test_clearing_a_blob_globally_clears_every_repository(cache: BlobDescriptorCache) -> None:
    first, second = cache.repository_scoped("foo/a"), cache.repository_scoped("foo/b")
    first.set_descriptor(SHA512, describe())
    second.set_descriptor(DIGEST, describe())
    cache.clear(DIGEST)
    for scope, digest in ((first, SHA512), (first, DIGEST), (second, DIGEST)):
        with pytest.raises(BlobUnknownError):
            scope.stat(digest)
    with pytest.raises(BlobUnknownError):
        cache.stat(DIGEST)


def test_two_caches_on_one_redis_share_entries(redis_server: RedisServer) -> None:
    writer, reader = redis_server.cache(), redis_server.cache()
    writer.repository_scoped("foo/bar").set_descriptor(DIGEST, describe())
    assert reader.repository_scoped("foo/bar").stat(DIGEST) == describe()
    reader.clear(DIGEST)
    with pytest.raises(BlobUnknownError):
        writer.repository_scoped("foo/bar").stat(DIGEST)


def test_the_in_memory_cache_is_bounded() -> None:
    cache = InMemoryBlobDescriptorCache(size=4)
    scope = cache.repository_scoped("foo/bar")
    scope.set_descriptor(DIGEST, describe())  # a global and a repository entry
    digests = [sha256(payload(10, seed)) for seed in range(10)]
    for digest in digests:
        cache.set_descriptor(digest, describe(digest, size=10))
        # Reading the repository's entry keeps the global one it needs from being evicted.
        assert scope.stat(DIGEST) == describe()
        assert len(cache) <= 4
    assert cache.stat(digests[-1]).size == 10
    with pytest.raises(BlobUnknownError):
        cache.stat(digests[0])
    with pytest.raises(ValueError):
        InMemoryBlobDescriptorCache(size=0)


# -- Redis: distribution's layout, shared with the Go registry --------------------------------


def test_redis_keys_follow_distribution(redis_server: RedisServer) -> None:
    cache = redis_server.cache()
    cache.repository_scoped("foo/bar").set_descriptor(SHA512, describe())
    raw = redis_server.client()
    global_entry = {"digest": DIGEST, "size": str(len(DATA)), "mediatype": LAYER}
    assert raw.hgetall(f"blobs::{DIGEST}") == global_entry
    assert raw.hgetall(f"blobs::{SHA512}") == global_entry
    assert raw.smembers("repository::foo/bar::blobs") == {DIGEST, SHA512}
    for digest in (DIGEST, SHA512):
        assert raw.hgetall(f"repository::foo/bar::blobs::{digest}") == {"mediatype": LAYER}
    assert set(raw.keys()) == {
        f"blobs::{DIGEST}",
        f"blobs::{SHA512}",
        "repository::foo/bar::blobs",
        f"repository::foo/bar::blobs::{DIGEST}",
        f"repository::foo/bar::blobs::{SHA512}",
    }
    cache.repository_scoped("foo/bar").clear(SHA512)
    assert raw.smembers("repository::foo/bar::blobs") == {DIGEST}
    assert not raw.exists(f"repository::foo/bar::blobs::{SHA512}")
    cache.clear(DIGEST)
    assert not raw.exists(f"blobs::{DIGEST}")


def test_redis_reads_entries_written_as_distribution_writes_them(
    redis_server: RedisServer,
) -> None:
    raw = redis_server.client()
    raw.hset(f"blobs::{DIGEST}", mapping={"digest": DIGEST, "size": len(DATA)})
    raw.hsetnx(f"blobs::{DIGEST}", "mediatype", DEFAULT_MEDIA_TYPE)
    raw.sadd("repository::foo/bar::blobs", DIGEST)
    raw.hset(f"repository::foo/bar::blobs::{DIGEST}", "mediatype", LAYER)
    cache = redis_server.cache()
    assert cache.repository_scoped("foo/bar").stat(DIGEST) == describe(media_type=LAYER)
    assert cache.stat(DIGEST) == describe(media_type=DEFAULT_MEDIA_TYPE)
    # distribution renamed "length" to "size": a hash without a size is a miss, as there.
    raw.hdel(f"blobs::{DIGEST}", "size")
    raw.hset(f"blobs::{DIGEST}", "length", len(DATA))
    with pytest.raises(BlobUnknownError):
        cache.stat(DIGEST)
    # Garbage is a miss too, never an error.
    raw.hset(f"blobs::{DIGEST}", mapping={"size": "many", "digest": DIGEST})
    with pytest.raises(BlobUnknownError):
        cache.repository_scoped("foo/bar").stat(DIGEST)


def test_the_go_registry_shares_the_cache(redis_server: RedisServer, tmp_path: Path) -> None:
    registry = Registry.filesystem(
        tmp_path, delete_enabled=True, descriptor_cache=redis_server.cache()
    )
    registry.repository("shared/a").blobs.put(DATA, "application/x-distblob-test")
    with GoRegistry(tmp_path, extra_config=redis_server.config()) as go, go.client() as client:
        # Storage knows no media types: this one can only come from distblob's Redis entry.
        head = client.head_blob("shared/a", DIGEST, expect=(200,))
        assert head.headers["Content-Type"] == "application/x-distblob-test"
        # And what Go records, distblob reads.
        pushed = Digest(client.push_blob("shared/b", OTHER))
        scope = registry.descriptor_cache.repository_scoped("shared/b")
        assert scope.stat(pushed) == Descriptor(DEFAULT_MEDIA_TYPE, len(OTHER), pushed)
        # An unlink through distblob is an unlink for Go too.
        registry.repository("shared/a").blobs.delete(DIGEST)
        assert client.head_blob("shared/a", DIGEST).status == 404


# -- outages ---------------------------------------------------------------------------------


def test_an_unreachable_redis_raises_cache_unavailable(
    caplog: pytest.LogCaptureFixture,
) -> None:
    cache = RedisBlobDescriptorCache.connect(LOOPBACK, free_port(), retry_after=0)
    with caplog.at_level(logging.WARNING, logger="distblob.cache"):
        for call in (
            lambda: cache.stat(DIGEST),
            lambda: cache.set_descriptor(DIGEST, describe()),
            lambda: cache.repository_scoped("foo/bar").stat(DIGEST),
        ):
            with pytest.raises(CacheUnavailableError):
                call()
    # One warning for the outage, not one per call.
    assert [r.levelname for r in caplog.records] == ["WARNING"]
    assert "redis cache unavailable" in caplog.records[0].getMessage()


def test_after_a_failure_only_the_probe_asks_redis(own_redis: RedisServer) -> None:
    cache = RedisBlobDescriptorCache.connect(LOOPBACK, own_redis.port, retry_after=3600)
    own_redis.stop(save=True)
    with pytest.raises(CacheUnavailableError):
        cache.stat(DIGEST)
    own_redis.start()
    # Back, but calls do not ask it: the background probe (not due for an hour) does.
    with pytest.raises(CacheUnavailableError, match="probing in the background"):
        cache.stat(DIGEST)
    assert not cache.available
    assert cache.probe()
    with pytest.raises(BlobUnknownError):
        cache.stat(DIGEST)  # a miss from Redis, not an outage
    cache.close()


def test_clears_made_during_an_outage_are_applied_before_redis_is_trusted(
    own_redis: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    cache = RedisBlobDescriptorCache.connect(LOOPBACK, own_redis.port, retry_after=3600)
    scope = cache.repository_scoped("foo/bar")
    scope.set_descriptor(DIGEST, describe())
    scope.set_descriptor(OTHER_DIGEST, describe(OTHER_DIGEST, size=len(OTHER)))
    own_redis.stop(save=True)
    with pytest.raises(CacheUnavailableError):
        scope.clear(DIGEST)
    with pytest.raises(CacheUnavailableError):
        cache.clear(OTHER_DIGEST)
    assert cache.pending == 2
    own_redis.start()
    # Redis came back with both entries; the probe applies the clears before trusting it.
    assert own_redis.client().exists(f"blobs::{OTHER_DIGEST}")
    with caplog.at_level(logging.INFO, logger="distblob.cache"):
        assert cache.probe()
    assert cache.pending == 0
    assert "available again (2 waiting clears applied)" in caplog.text
    assert not own_redis.client().exists(f"blobs::{OTHER_DIGEST}")
    for cleared in (lambda: scope.stat(DIGEST), lambda: scope.stat(OTHER_DIGEST)):
        with pytest.raises(BlobUnknownError):
            cleared()
    assert cache.stat(DIGEST) == describe()
    cache.close()


def test_the_probe_brings_redis_back_by_itself(own_redis: RedisServer) -> None:
    cache = own_redis.cache()  # probes as often as it may
    cache.repository_scoped("foo/bar").set_descriptor(DIGEST, describe())
    own_redis.stop(save=True)
    with pytest.raises(CacheUnavailableError):
        cache.repository_scoped("foo/bar").clear(DIGEST)
    own_redis.start()
    assert cache.wait_available(timeout=30)
    assert cache.pending == 0
    assert not own_redis.client().sismember("repository::foo/bar::blobs", DIGEST)
    cache.close()


def test_a_hung_redis_fails_like_a_down_one(
    own_redis: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    # The default timeouts: nothing is configured.
    cache = RedisBlobDescriptorCache.connect(LOOPBACK, own_redis.port, retry_after=3600)
    cache.repository_scoped("foo/bar").set_descriptor(DIGEST, describe())
    own_redis.pause()
    try:
        with caplog.at_level(logging.WARNING, logger="distblob.cache"):
            with pytest.raises(CacheUnavailableError, match=r"[Tt]imeout"):
                cache.repository_scoped("foo/bar").stat(DIGEST)
            # From now on calls do not wait on it at all.
            with pytest.raises(CacheUnavailableError, match="probing in the background"):
                cache.stat(DIGEST)
            with pytest.raises(CacheUnavailableError):
                cache.clear(DIGEST)
        assert "redis cache unavailable" in caplog.text
        assert not cache.probe()  # still hung: the probe times out too
    finally:
        own_redis.resume()
    assert cache.probe()
    with pytest.raises(BlobUnknownError):
        cache.repository_scoped("foo/bar").stat(DIGEST)  # cleared: the global entry is gone
    cache.close()


def test_redis_has_timeouts_by_default(own_redis: RedisServer) -> None:
    cache = RedisBlobDescriptorCache.connect(LOOPBACK, own_redis.port)
    kwargs = cache.client.connection_pool.connection_kwargs
    assert kwargs["socket_connect_timeout"] == DEFAULT_DIAL_TIMEOUT > 0
    assert kwargs["socket_timeout"] == DEFAULT_TIMEOUT > 0
    cache.close()


# -- clears kept in storage (distblob.storage.clears) -------------------------------------------


def records(driver: FilesystemDriver) -> list[str]:
    try:
        return driver.list(paths.CACHE_CLEARS_ROOT)
    except PathNotFoundError:
        return []


def test_a_failed_clear_is_kept_in_storage_and_applied_by_another_replica(
    own_redis: RedisServer, tmp_path: Path
) -> None:
    driver = FilesystemDriver(tmp_path / "root")

    def replica() -> RedisBlobDescriptorCache:
        cache = RedisBlobDescriptorCache.connect(
            LOOPBACK,
            own_redis.port,
            retry_after=3600,
            journal=ClearJournal(driver),
            sweep_every=None,
        )
        assert cache.wait_available(timeout=30)  # the (empty) journal is applied first
        return cache

    a, b = replica(), replica()
    a.repository_scoped("foo/bar").set_descriptor(DIGEST, describe())
    own_redis.stop(save=True)
    with pytest.raises(CacheUnavailableError):
        a.repository_scoped("foo/bar").clear(DIGEST)
    assert len(records(driver)) == 1
    with pytest.raises(CacheUnavailableError):
        b.stat(DIGEST)  # B sees the outage too
    own_redis.start()
    assert own_redis.client().sismember("repository::foo/bar::blobs", DIGEST)
    # B applies A's clear before it trusts Redis again, and removes the record.
    assert b.probe()
    assert records(driver) == []
    with pytest.raises(BlobUnknownError):
        b.repository_scoped("foo/bar").stat(DIGEST)
    assert a.pending == 1  # A applies its own when its probe comes: no harm done twice
    assert a.probe() and a.pending == 0
    a.close()
    b.close()


def test_a_restart_during_an_outage_loses_no_clear(
    own_redis: RedisServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    driver = FilesystemDriver(tmp_path / "root")
    cache = RedisBlobDescriptorCache.connect(
        LOOPBACK, own_redis.port, retry_after=3600, journal=ClearJournal(driver), sweep_every=None
    )
    cache.repository_scoped("foo/bar").set_descriptor(DIGEST, describe())
    own_redis.stop(save=True)
    with pytest.raises(CacheUnavailableError):
        cache.clear(DIGEST)
    cache.close()  # the process goes, and what it held in memory with it
    # It starts again while Redis is still down: storage only, until Redis is back.
    cache = RedisBlobDescriptorCache.connect(
        LOOPBACK, own_redis.port, retry_after=0, journal=ClearJournal(driver), sweep_every=None
    )
    with pytest.raises(CacheUnavailableError):
        cache.repository_scoped("foo/bar").stat(DIGEST)
    assert not cache.available
    with caplog.at_level(logging.INFO, logger="distblob.cache"):
        own_redis.start()
        assert cache.wait_available(timeout=30)
    assert "available again (1 waiting clears applied)" in caplog.text
    assert records(driver) == []
    assert not own_redis.client().exists(f"blobs::{DIGEST}")
    with pytest.raises(BlobUnknownError):
        cache.repository_scoped("foo/bar").stat(DIGEST)
    cache.close()


def test_a_new_replica_applies_what_it_finds_before_its_first_answer(
    own_redis: RedisServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    driver = FilesystemDriver(tmp_path / "root")
    own_redis.cache().repository_scoped("foo/bar").set_descriptor(DIGEST, describe())
    # A record left by a replica that died during an outage, and one that is not a record.
    ClearJournal(driver).record([("foo/bar", DIGEST)])
    driver.put_content(f"{paths.CACHE_CLEARS_ROOT}/00000000000000000001-{'0' * 32}", b"{")
    with caplog.at_level(logging.INFO, logger="distblob.cache"):
        cache = RedisBlobDescriptorCache.connect(
            LOOPBACK,
            own_redis.port,
            retry_after=3600,
            journal=ClearJournal(driver),
            sweep_every=None,
        )
        # The first call waits for the journal instead of answering from the stale entry.
        with pytest.raises(BlobUnknownError):
            cache.repository_scoped("foo/bar").stat(DIGEST)
    assert cache.available
    assert "1 clears left by an outage applied" in caplog.text
    assert "unreadable clear record" in caplog.text
    assert records(driver) == []
    assert cache.stat(DIGEST) == describe()  # a repository's clear leaves the global entry
    cache.close()


def test_a_replica_that_missed_an_outage_sweeps_the_clears_left_in_storage(
    own_redis: RedisServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    driver = FilesystemDriver(tmp_path / "root")
    cache = RedisBlobDescriptorCache.connect(
        LOOPBACK, own_redis.port, journal=ClearJournal(driver), sweep_every=0
    )
    assert cache.wait_available(timeout=30)
    cache.repository_scoped("foo/bar").set_descriptor(DIGEST, describe())
    with caplog.at_level(logging.INFO, logger="distblob.cache"):
        # Left by a replica that died during an outage this one never saw.
        ClearJournal(driver).record([("", DIGEST)])
        while records(driver):
            time.sleep(0.01)
    assert "1 clears found in storage applied" in caplog.text
    assert cache.available
    with pytest.raises(BlobUnknownError):
        cache.repository_scoped("foo/bar").stat(DIGEST)
    assert not own_redis.client().exists(f"blobs::{DIGEST}")
    cache.close()


def test_journal_records_round_trip(tmp_path: Path) -> None:
    journal = ClearJournal(FilesystemDriver(tmp_path))
    assert journal.load() == []
    first = journal.record([("", DIGEST), ("foo/bar", SHA512)])
    second = journal.record([("a/b", OTHER_DIGEST)])
    assert first.startswith(paths.CACHE_CLEARS_ROOT + "/")
    assert journal.load() == [
        (first, [("", DIGEST), ("foo/bar", SHA512)]),
        (second, [("a/b", OTHER_DIGEST)]),
    ]
    journal.remove(first)
    journal.remove(first)  # gone already: fine
    assert [path for path, _ in journal.load()] == [second]
    # Outside distribution's tree: the Go registry never reads it.
    assert not paths.CACHE_CLEARS_ROOT.startswith(paths.ROOT)


# -- registries over each cache ----------------------------------------------------------------


@pytest.fixture
def make_registry(
    make_cache: Callable[[], BlobDescriptorCache], tmp_path: Path
) -> Callable[..., Registry]:
    """Registries over one filesystem root, each with a cache of the parameter's kind."""

    def make(**options: Any) -> Registry:
        driver = FilesystemDriver(tmp_path / "root")
        return Registry(driver, descriptor_cache=make_cache(), **options)

    return make


def test_stats_are_answered_from_the_cache(make_registry: Callable[..., Registry]) -> None:
    registry = make_registry()
    repo = registry.repository("cache/repo")
    repo.blobs.put(DATA, LAYER)
    # Remove the data behind the registry's back: only the cache still knows the blob's size.
    registry.driver.delete(paths.blob_dir_path(DIGEST))
    assert repo.blobs.stat(DIGEST) == describe()
    if registry.descriptor_cache.shared:
        assert registry.blobs.stat(DIGEST).size == len(DATA)
    else:
        # This process's cache alone never says a blob is stored (gc elsewhere cannot clear it).
        with pytest.raises(BlobUnknownError):
            registry.blobs.stat(DIGEST)


def test_only_a_shared_cache_answers_for_a_link(make_registry: Callable[..., Registry]) -> None:
    registry = make_registry()
    repo = registry.repository("cache/repo")
    repo.blobs.put(DATA, LAYER)
    # Remove the link behind the registry's back, as another replica's delete would.
    registry.driver.delete(paths.layer_link_path(repo.name, DIGEST).rsplit("/", 1)[0])
    if registry.descriptor_cache.shared:
        # Every replica's deletes clear a shared cache: its entry is the answer.
        assert repo.blobs.stat(DIGEST) == describe()
        return
    # An in-memory entry answers only while the link is there, and goes with it.
    for method in ("HEAD", "GET"):
        with pytest.raises(BlobUnknownError):
            repo.blobs.serve_blob(DIGEST, method=method)
    with pytest.raises(BlobUnknownError):
        registry.descriptor_cache.repository_scoped(repo.name).stat(DIGEST)


def test_in_memory_replicas_see_each_others_deletes(tmp_path: Path) -> None:
    def replica() -> Registry:
        return Registry(FilesystemDriver(tmp_path / "root"), delete_enabled=True)

    a, b, c = replica(), replica(), replica()
    a.repository("cache/repo").blobs.put(DATA, LAYER)
    for other in (b, c):
        blobs = other.repository("cache/repo").blobs
        assert blobs.stat(DIGEST).size == len(DATA)
        assert blobs.serve_blob(DIGEST).status == 200  # their caches hold the blob now
        assert other.descriptor_cache.repository_scoped("cache/repo").stat(DIGEST).size
    a.repository("cache/repo").blobs.delete(DIGEST)
    for other in (b, c):
        blobs = other.repository("cache/repo").blobs
        for method in ("HEAD", "GET"):
            with pytest.raises(BlobUnknownError):
                blobs.serve_blob(DIGEST, method=method)
        assert not blobs.exists(DIGEST)
    # The data is still stored (a repository delete only unlinks), yet nobody serves it.
    assert FilesystemDriver(tmp_path / "root").stat(paths.blob_data_path(DIGEST)).size


def test_a_get_whose_data_is_gone_is_blob_unknown(make_registry: Callable[..., Registry]) -> None:
    registry = make_registry()
    repo = registry.repository("cache/repo")
    repo.blobs.put(DATA, LAYER)
    assert repo.blobs.stat(DIGEST) == describe()
    registry.driver.delete(paths.blob_dir_path(DIGEST))  # behind the registry's back
    # A HEAD may answer from the cache, as distribution's does; a GET asks storage ...
    assert repo.blobs.serve_blob(DIGEST, method="HEAD").status == 200
    with pytest.raises(BlobUnknownError):
        repo.blobs.serve_blob(DIGEST)
    with pytest.raises(BlobUnknownError):
        registry.blobs.serve_blob(DIGEST)
    # ... and what it finds missing is cleared, for HEADs too.
    with pytest.raises(BlobUnknownError):
        repo.blobs.stat(DIGEST)
    with pytest.raises(BlobUnknownError):
        registry.blobs.stat(DIGEST)


def test_a_get_through_a_stale_global_entry_is_blob_unknown(
    make_registry: Callable[..., Registry],
) -> None:
    registry = make_registry()
    registry.repository("cache/repo").blobs.put(DATA)
    registry.driver.delete(paths.blob_dir_path(DIGEST))
    # Another repository links the blob; it has no entry of its own, the global one is stale.
    other = registry.repository("cache/other")
    other.blobs.link(DIGEST)
    with pytest.raises(BlobUnknownError):
        other.blobs.serve_blob(DIGEST)
    with pytest.raises(BlobUnknownError):
        other.blobs.stat(DIGEST)


def test_a_stale_entry_never_stops_a_commit(make_registry: Callable[..., Registry]) -> None:
    registry = make_registry()
    repo = registry.repository("cache/repo")
    repo.blobs.put(DATA)
    registry.driver.delete(paths.blob_dir_path(DIGEST))
    assert repo.blobs.stat(DIGEST).size == len(DATA)  # stale, from the cache
    # Storing the blob again must store it, whatever the cache says.
    with repo.blobs.create() as writer:
        writer.write(DATA)
        writer.commit(Descriptor(digest=DIGEST))
    assert repo.blobs.get(DIGEST) == DATA
    registry.driver.delete(paths.blob_dir_path(DIGEST))
    repo.blobs.put(DATA)
    assert registry.repository("cache/other").blobs.mount(repo.name, DIGEST).size == len(DATA)
    assert registry.repository("cache/other").blobs.get(DIGEST) == DATA


def test_mount_refuses_a_blob_whose_data_is_gone(make_registry: Callable[..., Registry]) -> None:
    registry = make_registry()
    repo = registry.repository("cache/repo")
    repo.blobs.put(DATA)
    registry.driver.delete(paths.blob_dir_path(DIGEST))
    target = registry.repository("cache/target")
    with pytest.raises(BlobUnknownError):
        target.blobs.mount(repo.name, DIGEST)
    with pytest.raises(BlobUnknownError):
        target.blobs.stat(DIGEST)


def test_deletes_clear_the_cache(make_registry: Callable[..., Registry]) -> None:
    registry = make_registry(delete_enabled=True)
    first, second = registry.repository("cache/a"), registry.repository("cache/b")
    first.blobs.put(DATA, LAYER)
    second.blobs.put(DATA)
    assert first.blobs.stat(DIGEST).media_type == LAYER
    first.blobs.delete(DIGEST)
    with pytest.raises(BlobUnknownError):
        first.blobs.stat(DIGEST)
    assert second.blobs.stat(DIGEST).size == len(DATA)
    registry.blobs.delete(DIGEST)
    with pytest.raises(BlobUnknownError):
        second.blobs.stat(DIGEST)
    with pytest.raises(BlobUnknownError):
        registry.blobs.stat(DIGEST)


def test_an_alias_goes_with_its_blob(make_registry: Callable[..., Registry]) -> None:
    registry = make_registry(delete_enabled=True)
    repo = registry.repository("cache/alias")
    with repo.blobs.create() as writer:
        writer.write(DATA)
        writer.commit(Descriptor(LAYER, digest=SHA512))
    # The alias is described as the blob it names, with the media type it was pushed with.
    assert repo.blobs.stat(SHA512) == describe()
    with pytest.raises(BlobUnknownError):
        registry.blobs.stat(SHA512)  # blobs/ has the blob under its sha256 digest only
    registry.blobs.delete(DIGEST)
    with pytest.raises(BlobUnknownError):
        repo.blobs.stat(SHA512)


def test_replicas_on_one_redis_see_each_others_entries(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    def replica() -> Registry:
        return Registry(
            FilesystemDriver(tmp_path), delete_enabled=True, descriptor_cache=redis_server.cache()
        )

    a, b = replica(), replica()
    a.repository("cache/repo").blobs.put(DATA, LAYER)
    # B never stat'ed the blob: the media type comes from A's entry.
    assert b.repository("cache/repo").blobs.stat(DIGEST) == describe()
    b.repository("cache/repo").blobs.delete(DIGEST)
    with pytest.raises(BlobUnknownError):
        a.repository("cache/repo").blobs.stat(DIGEST)


def test_a_registry_survives_redis_going_away(
    own_redis: RedisServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    driver = FilesystemDriver(tmp_path)
    cache = RedisBlobDescriptorCache.connect(
        LOOPBACK, own_redis.port, retry_after=3600, journal=ClearJournal(driver), sweep_every=None
    )
    registry = Registry(driver, delete_enabled=True, descriptor_cache=cache)
    repo = registry.repository("cache/repo")
    repo.blobs.put(DATA, LAYER)
    own_redis.stop(save=True)
    with caplog.at_level(logging.INFO, logger="distblob.cache"):
        # Everything works from storage meanwhile (media types are what storage knows).
        assert repo.blobs.stat(DIGEST) == describe(media_type=DEFAULT_MEDIA_TYPE)
        assert repo.blobs.serve_blob(DIGEST).status == 200
        assert repo.blobs.put(OTHER).digest == OTHER_DIGEST
        with repo.blobs.create() as writer:
            writer.write(OTHER)
            writer.commit(Descriptor(digest=OTHER_DIGEST))
        assert repo.blobs.get(OTHER_DIGEST) == OTHER
        repo.blobs.delete(DIGEST)
        with pytest.raises(BlobUnknownError):
            repo.blobs.stat(DIGEST)
        assert "redis cache unavailable" in caplog.text
        # Redis comes back with its old entry for the deleted blob: it must not serve it.
        own_redis.start()
        assert own_redis.client().sismember("repository::cache/repo::blobs", DIGEST)
        with pytest.raises(BlobUnknownError):
            repo.blobs.stat(DIGEST)  # storage, until the probe
        assert cache.probe()
        with pytest.raises(BlobUnknownError):
            repo.blobs.stat(DIGEST)  # Redis, with the clear applied
        assert "redis cache available again" in caplog.text
    assert not own_redis.client().sismember("repository::cache/repo::blobs", DIGEST)
    assert repo.blobs.stat(OTHER_DIGEST).size == len(OTHER)
    assert cache.repository_scoped(repo.name).stat(OTHER_DIGEST).size == len(OTHER)
    cache.close()


# -- distblob serve ----------------------------------------------------------------------------


@pytest.fixture(params=["inmemory", "redis"])
def serve_config(request: pytest.FixtureRequest) -> dict[str, Any]:
    if request.param == "inmemory":
        return {"storage": {"cache": {"blobdescriptor": "inmemory"}}}
    server: RedisServer = request.getfixturevalue("own_redis")
    return server.config()


def test_served_gets_of_data_gone_answer_blob_unknown(
    serve_config: dict[str, Any], tmp_path: Path
) -> None:
    root = tmp_path / "root"
    with (
        DistblobServer(root, extra_config=serve_config) as server,
        server.client() as client,
    ):
        digest = client.push_blob("serve/repo", DATA)
        assert client.head_blob("serve/repo", digest).status == 200  # cached now
        FilesystemDriver(root).delete(paths.blob_dir_path(Digest(digest)))
        resp = client.get_blob("serve/repo", digest)
        assert resp.status == 404, resp
        assert b"BLOB_UNKNOWN" in resp.body
        assert client.head_blob("serve/repo", digest).status == 404
        log = server.log_text()
    assert "unexpected error" not in log and "status=500" not in log, log


def test_a_server_on_redis_survives_redis_stopping(own_redis: RedisServer, tmp_path: Path) -> None:
    with (
        DistblobServer(tmp_path, delete_enabled=True, extra_config=own_redis.config()) as server,
        server.client() as client,
    ):
        digest = client.push_blob("serve/repo", DATA)
        assert client.head_blob("serve/repo", digest).status == 200
        assert own_redis.client().sismember("repository::serve/repo::blobs", digest)
        own_redis.stop()
        assert client.head_blob("serve/repo", digest).status == 200
        assert client.get_blob("serve/repo", digest).body == DATA
        other = client.push_blob("serve/repo", OTHER, chunks=2)
        assert client.get_blob("serve/repo", other).body == OTHER
        client.delete_blob("serve/repo", digest)
        assert client.get_blob("serve/repo", digest).status == 404
        log = server.log_text()
    assert "redis cache unavailable" in log
    assert "unexpected error" not in log and "status=500" not in log, log


@pytest.mark.timeout(60)
def test_a_server_degrades_to_storage_when_redis_hangs(
    own_redis: RedisServer, tmp_path: Path
) -> None:
    # No timeouts in the config: the defaults must keep a hung Redis from holding requests.
    config = {
        "storage": {"cache": {"blobdescriptor": "redis"}},
        "redis": {"addr": f"{LOOPBACK}:{own_redis.port}"},
    }
    with (
        DistblobServer(tmp_path / "root", delete_enabled=True, extra_config=config) as server,
        server.client() as client,
    ):
        kept = client.push_blob("serve/repo", DATA)
        gone = client.push_blob("serve/repo", OTHER)
        for digest in (kept, gone):
            assert client.head_blob("serve/repo", digest).status == 200  # cached
        own_redis.pause()
        try:
            assert client.head_blob("serve/repo", kept).status == 200
            client.delete_blob("serve/repo", gone)
            assert client.head_blob("serve/repo", gone).status == 404
            assert client.get_blob("serve/repo", gone).status == 404
            assert client.get_blob("serve/repo", kept).body == DATA
        finally:
            own_redis.resume()
        # The clear made while Redis hung reaches it before the server trusts it again.
        while "redis cache available again" not in server.log_text():
            time.sleep(0.05)
        assert not own_redis.client().sismember("repository::serve/repo::blobs", gone)
        assert client.head_blob("serve/repo", gone).status == 404
        assert client.head_blob("serve/repo", kept).status == 200
        log = server.log_text()
    assert "redis cache unavailable" in log
    assert "unexpected error" not in log and "status=500" not in log, log
