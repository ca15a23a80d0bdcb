"""``distblob serve``'s configuration: a YAML file with distribution's keys.

Only the keys distblob implements are accepted; any other key, or a value of the wrong type,
raises :class:`ConfigError` naming the dotted key (``storage.delete.enabled``), so a typo stops
the server before it starts instead of being silently ignored. A Go registry config that uses
only these keys is a valid distblob config::

    version: 0.1
    log: {level: info}
    storage:
      filesystem: {rootdirectory: /srv/registry}   # or inmemory: {}, or s3: {bucket: ...}
      delete: {enabled: false}
      redirect: {disable: false}
      cache: {blobdescriptor: redis}               # or inmemory (the default)
      maintenance:
        uploadpurging: {enabled: true, age: 168h, interval: 24h, dryrun: false}
    redis:
      addr: 127.0.0.1:6379
      password: p
      db: 0
      dialtimeout: 10ms
      readtimeout: 10ms
      writetimeout: 10ms
      pool: {maxidle: 16, maxactive: 64, idletimeout: 300s}
    http: {addr: 127.0.0.1:5000, secret: a-long-random-string}
    proxy: {remoteurl: https://registry-1.docker.io, username: u, password: p, ttl: 168h}

Exactly one storage driver: ``filesystem`` (the default, at ``./distblob-data``), ``inmemory``
or ``s3`` (distribution's parameters, checked by
:meth:`~distblob.storage.driver.s3.S3Driver.from_parameters`). ``storage.cache.blobdescriptor``
picks the blob descriptor cache (:mod:`distblob.storage.cache`); ``redis`` needs the ``redis``
section, whose keys are distribution 2.8's (a timeout left out is 1 s here, not none as in
distribution, and ``0`` is none; the Python client has one socket timeout: the longer of
``readtimeout`` and ``writetimeout``; it keeps the connections it opened, so
``pool.maxidle`` is accepted and not used, and ``pool.idletimeout`` checks a connection idle that
long before reusing it). On S3 the ``redis`` section also gives uploads one writer at a time
across replicas (:mod:`distblob.storage.leases`, :func:`open_upload_leases`).
``proxy`` makes the server a pull-through cache of ``remoteurl``
(:mod:`distblob.proxy`). :func:`build_registry` turns a config into a
:class:`~distblob.registry.Registry`.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final

import yaml

from distblob._numbers import is_ascii_digits
from distblob.errors import DistblobError
from distblob.storage.cache import DEFAULT_DIAL_TIMEOUT as DEFAULT_REDIS_DIAL_TIMEOUT
from distblob.storage.cache import DEFAULT_TIMEOUT as DEFAULT_REDIS_TIMEOUT

if TYPE_CHECKING:
    from distblob.registry import Registry
    from distblob.storage.cache import BlobDescriptorCache
    from distblob.storage.driver import StorageDriver
    from distblob.storage.leases import RedisUploadLeases

DEFAULT_ROOT: Final = "./distblob-data"
DEFAULT_ADDR: Final = "127.0.0.1:5000"
#: ``http.draintimeout`` when unset (distribution has no drain by default and stops at once).
DEFAULT_DRAIN_TIMEOUT: Final = 5.0
LOG_LEVELS: Final = ("panic", "fatal", "error", "warn", "info", "debug", "trace")
STORAGE_DRIVERS: Final = ("filesystem", "inmemory", "s3")
BLOB_DESCRIPTOR_CACHES: Final = ("inmemory", "redis")

_UNITS: Final = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
_DURATION_PART: Final = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)")


class ConfigError(DistblobError, ValueError):
    """A configuration that cannot be used; ``key`` is the dotted key at fault."""

    def __init__(self, key: str, reason: str) -> None:
        super().__init__(f"config: {key}: {reason}" if key else f"config: {reason}")
        self.key = key
        self.reason = reason


@dataclass(frozen=True, slots=True)
class UploadPurging:
    """``storage.maintenance.uploadpurging``; durations in seconds."""

    enabled: bool = True
    age: float = 168 * 3600.0
    interval: float = 24 * 3600.0
    dryrun: bool = False


@dataclass(frozen=True, slots=True)
class ProxyConfig:
    """``proxy``: the upstream of a pull-through cache (``ttl`` in seconds, 0 = never)."""

    remoteurl: str
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    ttl: float = 168 * 3600.0


@dataclass(frozen=True, slots=True)
class RedisPool:
    """``redis.pool``; ``idletimeout`` in seconds, 0 = none; ``maxactive`` 0 = unbounded."""

    maxidle: int = 0
    maxactive: int = 0
    idletimeout: float = 0.0


@dataclass(frozen=True, slots=True)
class RedisConfig:
    """``redis``: the server the ``redis`` blob descriptor cache uses; timeouts in seconds,
    0 = none (as in distribution). Unlike distribution, a timeout the config does not give is
    not none but :data:`~distblob.storage.cache.DEFAULT_DIAL_TIMEOUT` or
    :data:`~distblob.storage.cache.DEFAULT_TIMEOUT`: a hung Redis must not hold requests."""

    addr: str
    password: str | None = field(default=None, repr=False)
    db: int = 0
    dialtimeout: float = DEFAULT_REDIS_DIAL_TIMEOUT
    readtimeout: float = DEFAULT_REDIS_TIMEOUT
    writetimeout: float = DEFAULT_REDIS_TIMEOUT
    pool: RedisPool = field(default_factory=RedisPool)


@dataclass(frozen=True, slots=True)
class Config:
    """A validated config. ``driver`` is the storage driver's section name; ``root`` is the
    filesystem driver's directory and ``s3`` the s3 driver's parameters."""

    version: str = "0.1"
    root: str = DEFAULT_ROOT
    delete_enabled: bool = False
    upload_purging: UploadPurging = field(default_factory=UploadPurging)
    addr: str = DEFAULT_ADDR
    secret: str | None = field(default=None, repr=False)
    log_level: str = "info"
    proxy: ProxyConfig | None = None
    driver: str = "filesystem"
    s3: Mapping[str, Any] | None = field(default=None, repr=False)
    redirect: bool = True
    blob_descriptor_cache: str = "inmemory"
    redis: RedisConfig | None = None
    #: ``http.draintimeout``: seconds a stopping server waits for open requests before it
    #: cancels them (0: at once); then cold fetches are stopped and their uploads removed.
    drain_timeout: float = DEFAULT_DRAIN_TIMEOUT

    @property
    def host_port(self) -> tuple[str, int]:
        return parse_addr(self.addr)


def parse_duration(text: object, key: str = "") -> float:
    """A Go duration (``168h``, ``1h30m``, ``90s``, ``0``) in seconds."""
    if text == 0 or text == "0":
        return 0.0
    if not isinstance(text, str) or not text:
        raise ConfigError(key, f"expected a duration such as 168h, not {text!r}")
    position, total = 0, 0.0
    while position < len(text):
        match = _DURATION_PART.match(text, position)
        if match is None:
            raise ConfigError(key, f"expected a duration such as 168h, not {text!r}")
        total += float(match.group(1)) * _UNITS[match.group(2)]
        position = match.end()
    return total


def parse_addr(addr: str, key: str = "http.addr") -> tuple[str, int]:
    """``host:port`` (``[v6]:port``; an empty host listens on every interface, as in Go)."""
    host, sep, port_text = addr.rpartition(":")
    if not sep or not is_ascii_digits(port_text) or int(port_text) > 65535:
        raise ConfigError(key, f"expected host:port, not {addr!r}")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return host or "0.0.0.0", int(port_text)


def _section(doc: object, key: str, allowed: set[str]) -> Mapping[str, Any]:
    if doc is None:
        return {}
    if not isinstance(doc, Mapping):
        raise ConfigError(key, f"expected a mapping, not {type(doc).__name__}")
    for name in doc:
        if not isinstance(name, str) or name not in allowed:
            dotted = f"{key}.{name}" if key else str(name)
            raise ConfigError(dotted, "unknown key")
    return doc


def _bool(section: Mapping[str, Any], name: str, key: str, default: bool) -> bool:
    value = section.get(name, default)
    if not isinstance(value, bool):
        raise ConfigError(f"{key}.{name}", f"expected true or false, not {value!r}")
    return value


def _str(section: Mapping[str, Any], name: str, key: str) -> str | None:
    value = section.get(name)
    if value is None:
        return None
    if not isinstance(value, str) or not value:
        raise ConfigError(f"{key}.{name}", f"expected a non-empty string, not {value!r}")
    return value


def _int(section: Mapping[str, Any], name: str, key: str, default: int) -> int:
    value = section.get(name, default)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ConfigError(f"{key}.{name}", f"expected a whole number >= 0, not {value!r}")
    return value


def _s3_parameters(doc: object) -> dict[str, Any]:
    """``storage.s3``, checked by the s3 driver itself (its errors name the parameter)."""
    if doc is None:
        doc = {}
    if not isinstance(doc, Mapping):
        raise ConfigError("storage.s3", f"expected a mapping, not {type(doc).__name__}")
    for name in doc:
        if not isinstance(name, str):
            raise ConfigError(f"storage.s3.{name}", "unknown key")
    from distblob.storage.driver.s3 import S3Driver, S3ParameterError

    parameters = dict(doc)
    try:
        # Building the driver checks every parameter; it connects to nothing yet.
        S3Driver.from_parameters(parameters)
    except S3ParameterError as exc:
        raise ConfigError(f"storage.s3.{exc.key}", exc.reason) from None
    except ImportError as exc:
        reason = f"needs boto3 ({exc}): pip install 'distblob[s3]'"
        raise ConfigError("storage.s3", reason) from None
    return parameters


def _timeout(raw: Mapping[str, Any], key: str, default: float) -> float:
    """``redis.<key>`` in seconds: ``default`` when the config does not give it."""
    value = raw.get(key)
    return default if value is None else parse_duration(value, f"redis.{key}")


def _redis(doc: object) -> RedisConfig:
    raw = _section(
        doc,
        "redis",
        {"addr", "password", "db", "dialtimeout", "readtimeout", "writetimeout", "pool"},
    )
    addr = _str(raw, "addr", "redis")
    if addr is None:
        raise ConfigError("redis.addr", "required: the Redis server's host:port")
    parse_addr(addr, "redis.addr")
    pool = _section(raw.get("pool"), "redis.pool", {"maxidle", "maxactive", "idletimeout"})
    return RedisConfig(
        addr=addr,
        password=_str(raw, "password", "redis"),
        db=_int(raw, "db", "redis", 0),
        dialtimeout=_timeout(raw, "dialtimeout", DEFAULT_REDIS_DIAL_TIMEOUT),
        readtimeout=_timeout(raw, "readtimeout", DEFAULT_REDIS_TIMEOUT),
        writetimeout=_timeout(raw, "writetimeout", DEFAULT_REDIS_TIMEOUT),
        pool=RedisPool(
            maxidle=_int(pool, "maxidle", "redis.pool", 0),
            maxactive=_int(pool, "maxactive", "redis.pool", 0),
            idletimeout=parse_duration(pool.get("idletimeout", 0), "redis.pool.idletimeout"),
        ),
    )


def _or(value: object, default: str) -> object:
    """``value``, or ``default`` when it is ``None`` (an empty YAML value)."""
    return default if value is None else value


def parse_config(doc: object) -> Config:
    """Validate a decoded YAML document and return the :class:`Config` it describes."""
    top = _section(doc, "", {"version", "storage", "http", "log", "proxy", "redis"})
    version = top.get("version", "0.1")
    if str(version) != "0.1":
        raise ConfigError("version", f"only version 0.1 is supported, not {version!r}")

    storage = _section(
        top.get("storage"),
        "storage",
        {*STORAGE_DRIVERS, "delete", "maintenance", "cache", "redirect"},
    )
    drivers = [name for name in STORAGE_DRIVERS if name in storage]
    if len(drivers) > 1:
        raise ConfigError("storage", f"one storage driver only, not {' and '.join(drivers)}")
    driver = drivers[0] if drivers else "filesystem"
    filesystem = _section(storage.get("filesystem"), "storage.filesystem", {"rootdirectory"})
    root = _str(filesystem, "rootdirectory", "storage.filesystem") or DEFAULT_ROOT
    _section(storage.get("inmemory"), "storage.inmemory", set())
    s3 = _s3_parameters(storage["s3"]) if driver == "s3" else None
    redirect = _section(storage.get("redirect"), "storage.redirect", {"disable"})
    redirect_disabled = _bool(redirect, "disable", "storage.redirect", False)
    cache = _section(storage.get("cache"), "storage.cache", {"blobdescriptor"})
    blob_descriptor_cache = cache.get("blobdescriptor", "inmemory")
    if blob_descriptor_cache not in BLOB_DESCRIPTOR_CACHES:
        raise ConfigError(
            "storage.cache.blobdescriptor",
            f"expected inmemory or redis, not {blob_descriptor_cache!r}",
        )
    redis = _redis(top["redis"]) if top.get("redis") is not None else None
    if blob_descriptor_cache == "redis":
        if redis is None:
            raise ConfigError("redis.addr", "required by storage.cache.blobdescriptor: redis")
        if importlib.util.find_spec("redis") is None:
            raise ConfigError(
                "storage.cache.blobdescriptor",
                "redis needs the redis package: pip install 'distblob[redis]'",
            )
    delete = _section(storage.get("delete"), "storage.delete", {"enabled"})
    delete_enabled = _bool(delete, "enabled", "storage.delete", False)
    maintenance = _section(storage.get("maintenance"), "storage.maintenance", {"uploadpurging"})
    key = "storage.maintenance.uploadpurging"
    purging = _section(
        maintenance.get("uploadpurging"), key, {"enabled", "age", "interval", "dryrun"}
    )
    upload_purging = UploadPurging(
        enabled=_bool(purging, "enabled", key, True),
        age=parse_duration(purging.get("age", "168h"), f"{key}.age"),
        interval=parse_duration(purging.get("interval", "24h"), f"{key}.interval"),
        dryrun=_bool(purging, "dryrun", key, False),
    )

    http = _section(top.get("http"), "http", {"addr", "secret", "draintimeout"})
    addr = _str(http, "addr", "http") or DEFAULT_ADDR
    parse_addr(addr)
    secret = _str(http, "secret", "http")
    drain_timeout = (
        parse_duration(http["draintimeout"], "http.draintimeout")
        if http.get("draintimeout") is not None
        else DEFAULT_DRAIN_TIMEOUT
    )

    log = _section(top.get("log"), "log", {"level"})
    level = log.get("level", "info")
    if level not in LOG_LEVELS:
        raise ConfigError("log.level", f"expected one of {', '.join(LOG_LEVELS)}, not {level!r}")

    proxy: ProxyConfig | None = None
    if top.get("proxy") is not None:
        raw = _section(top["proxy"], "proxy", {"remoteurl", "username", "password", "ttl"})
        remote = _str(raw, "remoteurl", "proxy")
        if remote is None or not remote.startswith(("http://", "https://")):
            raise ConfigError("proxy.remoteurl", "required: the upstream's http(s) URL")
        proxy = ProxyConfig(
            remoteurl=remote,
            username=_str(raw, "username", "proxy"),
            password=_str(raw, "password", "proxy"),
            # An empty ``ttl:`` is distribution's default, as an absent one.
            ttl=parse_duration(
                raw.get("ttl") if raw.get("ttl") is not None else "168h", "proxy.ttl"
            ),
        )
    return Config(
        version="0.1",
        root=root,
        delete_enabled=delete_enabled,
        upload_purging=upload_purging,
        addr=addr,
        secret=secret,
        log_level=str(level),
        proxy=proxy,
        driver=driver,
        s3=s3,
        redirect=not redirect_disabled,
        blob_descriptor_cache=str(blob_descriptor_cache),
        redis=redis,
        drain_timeout=drain_timeout,
    )


def load_config(path: str | os.PathLike[str] | None) -> Config:
    """Read and validate a YAML config file (``None``: the defaults)."""
    if path is None:
        return Config()
    try:
        with open(path, encoding="utf-8") as source:
            doc = yaml.safe_load(source)
    except OSError as exc:
        raise ConfigError("", f"cannot read {os.fspath(path)!r}: {exc.strerror or exc}") from None
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise ConfigError("", f"{os.fspath(path)!r} is not valid YAML: {exc}") from None
    return parse_config(doc)


def open_driver(config: Config) -> StorageDriver:
    """The storage driver ``config`` names."""
    from distblob.storage.driver import FilesystemDriver, InMemoryDriver

    if config.driver == "s3":
        from distblob.storage.driver.s3 import S3Driver

        assert config.s3 is not None
        return S3Driver.from_parameters(config.s3)
    if config.driver == "inmemory":
        return InMemoryDriver()
    return FilesystemDriver(config.root)


def open_descriptor_cache(
    config: Config, driver: StorageDriver | None = None
) -> BlobDescriptorCache:
    """The blob descriptor cache ``config`` names (a Redis one connects on first use). A Redis
    cache keeps the clears it cannot apply in ``driver``'s storage (the registry's), so that no
    replica, and no restart of this one, loses them (:mod:`distblob.storage.clears`)."""
    from distblob.storage.cache import InMemoryBlobDescriptorCache, RedisBlobDescriptorCache
    from distblob.storage.clears import ClearJournal

    if config.blob_descriptor_cache != "redis":
        return InMemoryBlobDescriptorCache()
    redis = config.redis
    assert redis is not None
    host, port = parse_addr(redis.addr, "redis.addr")
    if redis.addr.startswith(":"):
        host = "localhost"  # Go dials the local system for an empty host
    timeouts = [t for t in (redis.readtimeout, redis.writetimeout) if t > 0]
    idle = redis.pool.idletimeout
    return RedisBlobDescriptorCache.connect(
        host,
        port,
        password=redis.password,
        db=redis.db,
        dial_timeout=redis.dialtimeout or None,
        timeout=max(timeouts) if timeouts else None,
        max_connections=redis.pool.maxactive or None,
        health_check_interval=max(1, round(idle)) if idle > 0 else 0,
        journal=ClearJournal(driver) if driver is not None else None,
    )


def build_registry(config: Config) -> Registry:
    """The :class:`~distblob.registry.Registry` ``distblob serve`` runs for ``config``."""
    from distblob.registry import Registry

    driver = open_driver(config)
    return Registry(
        driver,
        delete_enabled=config.delete_enabled,
        resumable_digests=config.proxy is None,  # off in proxy mode, as in distribution
        redirect=config.redirect,
        descriptor_cache=open_descriptor_cache(config, driver),
        upload_leases=open_upload_leases(config, driver),
    )


def open_upload_leases(config: Config, driver: StorageDriver) -> RedisUploadLeases | None:
    """Upload leases in the configured Redis, for a driver replicas share (an object store);
    ``None`` without a ``redis`` section or on a local filesystem (``flock`` serves there)."""
    from distblob.storage.leases import DEFAULT_TIMEOUT, RedisUploadLeases

    if config.driver != "s3":
        return None
    redis = config.redis
    if redis is None:
        logging.getLogger("distblob.storage").info(
            "storage.s3: uploads are locked within this process only; with several replicas, "
            "configure redis for upload leases (commits check what they store either way)"
        )
        return None
    host, port = parse_addr(redis.addr, "redis.addr")
    if redis.addr.startswith(":"):
        host = "localhost"
    timeouts = [t for t in (redis.dialtimeout, redis.readtimeout, redis.writetimeout) if t > 0]
    try:
        import redis as _redis_package  # noqa: F401
    except ImportError:
        logging.getLogger("distblob.config").warning(
            "redis: the redis package is missing (pip install 'distblob[redis]'): uploads are "
            "not leased across replicas"
        )
        return None
    return RedisUploadLeases.connect(
        host,
        port,
        password=redis.password,
        db=redis.db,
        timeout=max(timeouts) if timeouts else DEFAULT_TIMEOUT,
    )


__all__ = [
    "BLOB_DESCRIPTOR_CACHES",
    "DEFAULT_ADDR",
    "DEFAULT_ROOT",
    "STORAGE_DRIVERS",
    "Config",
    "ConfigError",
    "ProxyConfig",
    "RedisConfig",
    "RedisPool",
    "UploadPurging",
    "build_registry",
    "load_config",
    "open_descriptor_cache",
    "open_driver",
    "open_upload_leases",
    "parse_addr",
    "parse_config",
    "parse_duration",
]
