"""``redis``, in distribution 2.8's form (``addr``, ``pool``) and 3.x's (go-redis's
``UniversalOptions`` inline: ``addrs``, ``username``, ``poolsize``, ``tls``...), both mapped
onto one :class:`~distblob.config.tree.RedisConfig` (redis-py's settings)."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any, Final

from distblob.config.tree import RedisConfig, RedisPool, RedisTLS
from distblob.config.values import (
    ConfigError,
    checked_section,
    get_bool,
    get_duration,
    get_int,
    get_str,
    get_str_list,
    parse_addr,
    parse_duration,
)
from distblob.storage.cache import DEFAULT_DIAL_TIMEOUT as DEFAULT_REDIS_DIAL_TIMEOUT
from distblob.storage.cache import DEFAULT_TIMEOUT as DEFAULT_REDIS_TIMEOUT

#: 3.x keys accepted with a warning: redis-py has no such setting, or it only matters for a
#: cluster or Sentinel, which a single address never is.
NO_EFFECT: Final = frozenset(
    {
        "protocol",
        "maxretries",
        "minretrybackoff",
        "maxretrybackoff",
        "contexttimeoutenabled",
        "poolfifo",
        "pooltimeout",
        "minidleconns",
        "connmaxlifetime",
        "maxredirects",
        "readonly",
        "routebylatency",
        "routerandomly",
        "disableindentity",
        "disableidentity",
        "identitysuffix",
        "unstableresp3",
    }
)
#: 3.x keys refused: they ask for Sentinel, which distblob does not speak.
SENTINEL: Final = frozenset({"mastername", "sentinelusername", "sentinelpassword"})
_V2: Final = frozenset({"addr", "password", "db", "dialtimeout", "readtimeout", "writetimeout"})
_V3: Final = frozenset(
    {"addrs", "username", "clientname", "poolsize", "maxidleconns", "maxactiveconns"}
    | {"connmaxidletime", "tls"}
)


def _addr(raw: Mapping[str, Any]) -> str:
    addr = get_str(raw, "addr", "redis")
    addrs = get_str_list(raw, "addrs", "redis")
    if len(addrs) > 1:
        raise ConfigError(
            "redis.addrs", "one address only: a Redis Cluster is not supported (use one server)"
        )
    if addrs and addr is not None and addrs[0] != addr:
        raise ConfigError("redis.addrs", f"names {addrs[0]!r}, but redis.addr names {addr!r}")
    found = addr or (addrs[0] if addrs else None)
    if found is None:
        raise ConfigError("redis.addr", "required: the Redis server's host:port (or redis.addrs)")
    parse_addr(found, "redis.addrs" if addrs else "redis.addr")
    return found


def _tls(doc: object) -> RedisTLS | None:
    """``redis.tls``: 2.8's ``enabled`` (TLS, the server checked against the system's CAs) or
    3.x's client ``certificate`` and ``key`` with ``clientcas``; ``None``: no TLS."""
    raw = checked_section(doc, "redis.tls", {"enabled", "certificate", "key", "clientcas"})
    enabled = get_bool(raw, "enabled", "redis.tls", False)
    certificate = get_str(raw, "certificate", "redis.tls")
    key = get_str(raw, "key", "redis.tls")
    clientcas = get_str_list(raw, "clientcas", "redis.tls")
    if (certificate is None) != (key is None):
        raise ConfigError("redis.tls", "certificate and key go together: give both or neither")
    if not enabled and certificate is None and not clientcas:
        return None
    return RedisTLS(certificate, key, clientcas)


def _pool(raw: Mapping[str, Any]) -> RedisPool:
    pool = checked_section(raw.get("pool"), "redis.pool", {"maxidle", "maxactive", "idletimeout"})
    maxactive = get_int(pool, "maxactive", "redis.pool", 0)
    for name in ("poolsize", "maxactiveconns"):  # 3.x: either bounds the open connections
        value = get_int(raw, name, "redis", 0)
        if value:
            maxactive = min(maxactive, value) if maxactive else value
    idle = parse_duration(pool.get("idletimeout", 0), "redis.pool.idletimeout")
    return RedisPool(
        maxidle=get_int(raw, "maxidleconns", "redis", 0)
        or get_int(pool, "maxidle", "redis.pool", 0),
        maxactive=maxactive,
        idletimeout=get_duration(raw, "connmaxidletime", "redis", idle),
    )


def parse_redis(doc: object) -> RedisConfig:
    raw = checked_section(doc, "redis", set(_V2 | _V3 | NO_EFFECT | SENTINEL | {"pool"}))
    for name in sorted(SENTINEL & raw.keys()):
        raise ConfigError(f"redis.{name}", "not supported: distblob does not speak Sentinel")
    ignored = sorted(NO_EFFECT & raw.keys())
    if ignored:
        logging.getLogger("distblob.config").warning(
            "redis: %s accepted with no effect (redis-py has no such setting, or it concerns a "
            "cluster)",
            ", ".join(f"redis.{name}" for name in ignored),
        )
    return RedisConfig(
        addr=_addr(raw),
        password=get_str(raw, "password", "redis"),
        db=get_int(raw, "db", "redis", 0),
        dialtimeout=get_duration(raw, "dialtimeout", "redis", DEFAULT_REDIS_DIAL_TIMEOUT),
        readtimeout=get_duration(raw, "readtimeout", "redis", DEFAULT_REDIS_TIMEOUT),
        writetimeout=get_duration(raw, "writetimeout", "redis", DEFAULT_REDIS_TIMEOUT),
        pool=_pool(raw),
        username=get_str(raw, "username", "redis"),
        clientname=get_str(raw, "clientname", "redis"),
        tls=_tls(raw.get("tls")),
    )


__all__ = ["NO_EFFECT", "SENTINEL", "parse_redis"]
