"""The sections of the config but ``auth`` and ``access``: each a function from the YAML
mapping to its dataclass (:mod:`distblob.config.tree`), checking every key."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from distblob.config.httplog import (
    HTTP_KEYS,
    LOG_KEYS,
    parse_accesslog,
    parse_fields,
    parse_formatter,
    parse_headers,
    parse_host,
    parse_net,
    parse_prefix,
    parse_relativeurls,
)
from distblob.config.observability import parse_debug
from distblob.config.redis import parse_redis
from distblob.config.tree import (
    HTTP,
    TLS,
    Cache,
    Delete,
    GarbageCollect,
    Log,
    Maintenance,
    ProxyConfig,
    ReadOnly,
    Redirect,
    Storage,
    Tag,
    UploadPurging,
)
from distblob.config.values import (
    BLOB_DESCRIPTOR_CACHES,
    DEFAULT_ADDR,
    DEFAULT_DRAIN_TIMEOUT,
    DEFAULT_DRIVER,
    DEFAULT_MINIMUM_TLS,
    LOG_LEVELS,
    STORAGE_KEYS,
    TLS_VERSIONS,
    ConfigError,
    checked_section,
    get_bool,
    get_duration,
    get_int,
    get_str,
    get_str_list,
    parse_duration,
)
from distblob.errors import DriverParameterError
from distblob.storage.cache import DEFAULT_SIZE as DEFAULT_CACHE_SIZE
from distblob.storage.driver import factory


def _driver_parameters(driver: str, doc: object) -> dict[str, Any]:
    """``storage.<driver>``, checked by the driver itself (its errors name the parameter)."""
    key = f"storage.{driver}"
    if doc is None:
        doc = {}
    if not isinstance(doc, Mapping):
        raise ConfigError(key, f"expected a mapping, not {type(doc).__name__}")
    for name in doc:
        if not isinstance(name, str):
            raise ConfigError(f"{key}.{name}", "unknown key")
    parameters = dict(doc)
    try:
        factory.check(driver, parameters)
    except DriverParameterError as exc:
        raise ConfigError(f"{key}.{exc.key}" if exc.key else key, exc.reason) from None
    return parameters


def parse_storage(doc: object) -> Storage:
    drivers = factory.names()
    storage = checked_section(doc, "storage", {*drivers, *STORAGE_KEYS})
    named = [name for name in drivers if name in storage]
    if len(named) > 1:
        raise ConfigError("storage", f"one storage driver only, not {' and '.join(named)}")
    driver = named[0] if named else DEFAULT_DRIVER
    parameters = _driver_parameters(driver, storage.get(driver))
    redirect = checked_section(storage.get("redirect"), "storage.redirect", {"disable"})
    cache = checked_section(
        storage.get("cache"), "storage.cache", {"blobdescriptor", "blobdescriptorsize"}
    )
    blobdescriptor = cache.get("blobdescriptor", "inmemory")
    if blobdescriptor not in BLOB_DESCRIPTOR_CACHES:
        raise ConfigError(
            "storage.cache.blobdescriptor", f"expected inmemory or redis, not {blobdescriptor!r}"
        )
    delete = checked_section(storage.get("delete"), "storage.delete", {"enabled"})
    maintenance = checked_section(
        storage.get("maintenance"),
        "storage.maintenance",
        {"uploadpurging", "readonly", "garbagecollect"},
    )
    readonly = checked_section(
        maintenance.get("readonly"), "storage.maintenance.readonly", {"enabled"}
    )
    tag = checked_section(storage.get("tag"), "storage.tag", {"concurrencylimit"})
    size = get_int(cache, "blobdescriptorsize", "storage.cache", DEFAULT_CACHE_SIZE)
    if size < 1:
        raise ConfigError("storage.cache.blobdescriptorsize", "expected a number of entries >= 1")
    key = "storage.maintenance.uploadpurging"
    purging = checked_section(
        maintenance.get("uploadpurging"), key, {"enabled", "age", "interval", "dryrun"}
    )
    return Storage(
        driver=driver,
        parameters=parameters,
        delete=Delete(enabled=get_bool(delete, "enabled", "storage.delete", False)),
        redirect=Redirect(disable=get_bool(redirect, "disable", "storage.redirect", False)),
        cache=Cache(blobdescriptor=str(blobdescriptor), blobdescriptorsize=size),
        tag=Tag(concurrencylimit=get_int(tag, "concurrencylimit", "storage.tag", 0)),
        maintenance=Maintenance(
            uploadpurging=UploadPurging(
                enabled=get_bool(purging, "enabled", key, True),
                age=parse_duration(purging.get("age", "168h"), f"{key}.age"),
                interval=parse_duration(purging.get("interval", "24h"), f"{key}.interval"),
                dryrun=get_bool(purging, "dryrun", key, False),
            ),
            readonly=ReadOnly(
                enabled=get_bool(readonly, "enabled", "storage.maintenance.readonly", False)
            ),
            garbagecollect=_garbage_collect(maintenance.get("garbagecollect")),
        ),
    )


def _garbage_collect(doc: object) -> GarbageCollect:
    """``storage.maintenance.garbagecollect`` (distblob's own)."""
    key = "storage.maintenance.garbagecollect"
    flags = ("deleteuntagged", "manifestsonly", "dryrun")
    section = checked_section(doc, key, {"enabled", "interval", "grace", *flags})
    interval = get_duration(section, "interval", key, 24 * 3600.0)
    if interval < 60:
        raise ConfigError(f"{key}.interval", "expected at least 1m between collections")
    return GarbageCollect(
        enabled=get_bool(section, "enabled", key, False),
        interval=interval,
        grace=get_duration(section, "grace", key, 3600.0),
        deleteuntagged=get_bool(section, "deleteuntagged", key, False),
        manifestsonly=get_bool(section, "manifestsonly", key, False),
        dryrun=get_bool(section, "dryrun", key, False),
    )


def parse_tls(doc: object) -> TLS | None:
    """``http.tls``; ``None`` when the section is absent or empty (plain HTTP, as in
    distribution). The files and cipher suite names are checked by building the server's TLS
    context once (:func:`distblob.server.tls.server_context`), so a wrong path, a key that does
    not match its certificate or a suite OpenSSL cannot offer stops the server here."""
    key = "http.tls"
    raw = checked_section(
        doc, key, {"certificate", "key", "clientcas", "minimumtls", "ciphersuites", "letsencrypt"}
    )
    letsencrypt = raw.get("letsencrypt")
    if letsencrypt is not None and letsencrypt != {}:
        raise ConfigError(
            f"{key}.letsencrypt",
            "not supported: distblob does not run an ACME client; get the certificate with "
            "one (certbot, lego, cert-manager, ...) and give http.tls.certificate and "
            "http.tls.key",
        )
    given = {name for name, value in raw.items() if value is not None and name != "letsencrypt"}
    if not given:
        return None
    certificate = get_str(raw, "certificate", key)
    if certificate is None:
        raise ConfigError(f"{key}.certificate", "required with http.tls: a PEM certificate file")
    private_key = get_str(raw, "key", key)
    if private_key is None:
        raise ConfigError(f"{key}.key", "required with http.tls: the certificate's PEM key file")
    minimum = raw.get("minimumtls")
    if minimum is None:
        minimum = DEFAULT_MINIMUM_TLS
    if minimum in ("tls1.0", "tls1.1"):
        raise ConfigError(
            f"{key}.minimumtls",
            f"{minimum} is not offered: TLS 1.0 and 1.1 are deprecated (RFC 8996); "
            "use tls1.2 or tls1.3",
        )
    if minimum not in TLS_VERSIONS:
        raise ConfigError(
            f"{key}.minimumtls", f"expected one of {', '.join(TLS_VERSIONS)}, not {minimum!r}"
        )
    tls = TLS(
        certificate=certificate,
        key=private_key,
        clientcas=get_str_list(raw, "clientcas", key),
        minimumtls=str(minimum),
        ciphersuites=get_str_list(raw, "ciphersuites", key),
    )
    from distblob.server.tls import server_context

    server_context(tls)  # raises ConfigError naming the key at fault
    return tls


def parse_http(doc: object) -> HTTP:
    http = checked_section(
        doc, "http", {"addr", "secret", "draintimeout", "tls", *HTTP_KEYS, "debug"}
    )
    addr = get_str(http, "addr", "http") or DEFAULT_ADDR
    return HTTP(
        addr=addr,
        secret=get_str(http, "secret", "http"),
        draintimeout=get_duration(http, "draintimeout", "http", DEFAULT_DRAIN_TIMEOUT),
        tls=parse_tls(http.get("tls")),
        net=parse_net(http, addr),
        prefix=parse_prefix(http),
        host=parse_host(http),
        relativeurls=parse_relativeurls(http),
        headers=parse_headers(http),
        debug=parse_debug(http.get("debug")),
    )


def parse_log(doc: object) -> Log:
    log = checked_section(doc, "log", {"level", *LOG_KEYS})
    level = log.get("level") or "info"
    # Go lowercases the level before checking it (``INFO`` is info).
    level = level.lower() if isinstance(level, str) else level
    if level not in LOG_LEVELS:
        raise ConfigError("log.level", f"expected one of {', '.join(LOG_LEVELS)}, not {level!r}")
    return Log(
        level=str(level),
        formatter=parse_formatter(log),
        fields=parse_fields(log),
        accesslog=parse_accesslog(log),
    )


def parse_proxy(doc: object) -> ProxyConfig:
    raw = checked_section(
        doc, "proxy", {"remoteurl", "username", "password", "ttl", "cachewritetimeout"}
    )
    remote = get_str(raw, "remoteurl", "proxy")
    if remote is None or not remote.startswith(("http://", "https://")):
        raise ConfigError("proxy.remoteurl", "required: the upstream's parse_http(s) URL")
    return ProxyConfig(
        remoteurl=remote,
        username=get_str(raw, "username", "proxy"),
        password=get_str(raw, "password", "proxy"),
        # An empty ``ttl:`` is distribution's default, as an absent one.
        ttl=get_duration(raw, "ttl", "proxy", 168 * 3600.0),
        # distribution's default, 5 minutes, for an absent, empty or zero value.
        cachewritetimeout=get_duration(raw, "cachewritetimeout", "proxy", 0.0) or 300.0,
    )


__all__ = [
    "parse_http",
    "parse_log",
    "parse_proxy",
    "parse_redis",
    "parse_storage",
    "parse_tls",
]
