"""The storage, catalog, validation, middleware, 3.x redis and proxy keys: parsed as
distribution reads them, and each bad value refused naming its key."""

from __future__ import annotations

from typing import Any

import pytest

from distblob.config import ConfigError, parse_config
from distblob.config.build import redis_options
from distblob.config.tree import RedisTLS

pytestmark = pytest.mark.timeout(60)


def test_defaults_are_distributions() -> None:
    config = parse_config({})
    assert config.storage.maintenance.readonly.enabled is False
    assert config.storage.cache.blobdescriptorsize == 10_000
    assert config.storage.tag.concurrencylimit == 0
    assert config.catalog.maxentries == 1000
    assert config.validation.enabled is True
    assert config.validation.platforms == "all"
    assert config.middleware.redirect is None


def test_keys_are_read() -> None:
    config = parse_config(
        {
            "storage": {
                "maintenance": {"readonly": {"enabled": True}},
                "cache": {"blobdescriptorsize": 5},
                "tag": {"concurrencylimit": 3},
            },
            "catalog": {"maxentries": 0},
            "validation": {
                "disabled": True,
                "manifests": {
                    "urls": {"allow": ["^https://"], "deny": ["evil"]},
                    "indexes": {
                        "platforms": "List",
                        "platformlist": [{"architecture": "amd64", "os": "linux"}],
                    },
                },
            },
            "middleware": {
                "storage": [{"name": "redirect", "options": {"baseurl": "https://cdn.example/p"}}]
            },
            "proxy": {"remoteurl": "https://up.example", "cachewritetimeout": "30s"},
        }
    )
    assert config.storage.maintenance.readonly.enabled is True
    assert config.storage.cache.blobdescriptorsize == 5
    assert config.storage.tag.concurrencylimit == 3
    assert config.catalog.maxentries == 1000  # <= 0: distribution's default
    assert config.validation.enabled is False
    assert config.validation.allow == ("^https://",)
    assert config.validation.platforms == "list"
    assert config.validation.platformlist[0].architecture == "amd64"
    assert config.middleware.redirect == "https://cdn.example/p"
    assert config.proxy is not None and config.proxy.cachewritetimeout == 30.0
    assert not any(w.startswith("proxy.cachewritetimeout:") for w in config.warnings)


def test_redis_3x_form_maps_onto_the_client() -> None:
    config = parse_config(
        {
            "redis": {
                "addrs": ["localhost:6379"],
                "username": "u",
                "password": "p",
                "poolsize": 8,
                "maxidleconns": 2,
                "connmaxidletime": "300s",
                "dialtimeout": "10ms",
            }
        }
    )
    redis = config.redis
    assert redis is not None
    assert (redis.addr, redis.username, redis.password) == ("localhost:6379", "u", "p")
    assert (redis.pool.maxactive, redis.pool.maxidle, redis.pool.idletimeout) == (8, 2, 300.0)
    assert redis.dialtimeout == 0.01


@pytest.mark.parametrize(
    ("doc", "key"),
    [
        (
            {"storage": {"maintenance": {"readonly": {"enabled": "yes"}}}},
            "storage.maintenance.readonly.enabled",
        ),
        (
            {"storage": {"maintenance": {"readonly": {"on": True}}}},
            "storage.maintenance.readonly.on",
        ),
        ({"storage": {"cache": {"blobdescriptorsize": -1}}}, "storage.cache.blobdescriptorsize"),
        ({"storage": {"tag": {"concurrencylimit": -1}}}, "storage.tag.concurrencylimit"),
        ({"catalog": {"maxentries": "many"}}, "catalog.maxentries"),
        (
            {"validation": {"manifests": {"urls": {"allow": ["("]}}}},
            "validation.manifests.urls.allow",
        ),
        (
            {"validation": {"manifests": {"indexes": {"platforms": "some"}}}},
            "validation.manifests.indexes.platforms",
        ),
        (
            {"middleware": {"storage": [{"name": "cloudfront", "options": {}}]}},
            "middleware.storage[0]",
        ),
        (
            {"middleware": {"storage": [{"name": "redirect", "options": {"baseurl": "cdn"}}]}},
            "middleware.storage[0].options.baseurl",
        ),
        ({"redis": {"addrs": ["a:1", "b:2"]}}, "redis.addrs"),
        ({"redis": {"addrs": ["a:1"], "mastername": "m"}}, "redis.mastername"),
        ({"redis": {"addr": "a:1", "tls": {"enabled": 1}}}, "redis.tls.enabled"),
        ({"redis": {"addrs": ["a:1"], "tls": {"certificate": "c"}}}, "redis.tls"),
    ],
)
def test_bad_values_name_their_key(doc: dict[str, Any], key: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(doc)
    assert caught.value.key == key


def test_redis_tls_enabled_alone_is_tls_without_a_client_certificate() -> None:
    """2.8's ``redis.tls.enabled``: TLS to Redis, its certificate checked against the system's
    CAs; 3.x's ``certificate`` and ``key`` add a client certificate."""
    config = parse_config({"redis": {"addr": "a:1", "tls": {"enabled": True}}})
    assert config.redis is not None and config.redis.tls == RedisTLS(None, None, ())
    config = parse_config({"redis": {"addr": "a:1", "tls": {"enabled": False}}})
    assert config.redis is not None and config.redis.tls is None
    options = redis_options(parse_config({"redis": {"addr": "a:1", "tls": {"enabled": True}}}))
    assert options["ssl"] is True and options["ssl_certfile"] is None
