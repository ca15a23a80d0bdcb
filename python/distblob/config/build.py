"""What a config builds: the storage driver, the blob descriptor cache, the access controller,
the upload leases, and the :class:`~distblob.registry.Registry` ``distblob serve`` runs."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from distblob.config.tree import Config, TokenAuth
from distblob.config.values import ConfigError, parse_addr
from distblob.storage.driver import factory

if TYPE_CHECKING:
    import redis

    from distblob.auth import AccessController
    from distblob.registry import Registry
    from distblob.storage.cache import BlobDescriptorCache
    from distblob.storage.driver import StorageDriver
    from distblob.storage.leases import RedisUploadLeases


def open_driver(config: Config) -> StorageDriver:
    """The storage driver ``config`` names, built by its factory entry."""
    return factory.create(config.storage.driver, config.storage.parameters)


def open_descriptor_cache(
    config: Config, driver: StorageDriver | None = None
) -> BlobDescriptorCache:
    """The blob descriptor cache ``config`` names (a Redis one connects on first use). A Redis
    cache keeps the clears it cannot apply in ``driver``'s storage (the registry's), so that no
    replica, and no restart of this one, loses them (:mod:`distblob.storage.clears`)."""
    from distblob.storage.cache import InMemoryBlobDescriptorCache, RedisBlobDescriptorCache
    from distblob.storage.clears import ClearJournal

    if config.storage.cache.blobdescriptor != "redis":
        return InMemoryBlobDescriptorCache(config.storage.cache.blobdescriptorsize)
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
        client_options=redis_options(config),
        journal=ClearJournal(driver) if driver is not None else None,
    )


def redis_options(config: Config) -> dict[str, Any]:
    """redis-py's settings for 3.x's ``redis.username``, ``clientname`` and ``tls``."""
    redis = config.redis
    options: dict[str, Any] = {}
    if redis is None:
        return options
    if redis.username:
        options["username"] = redis.username
    if redis.clientname:
        options["client_name"] = redis.clientname
    if redis.tls is not None:
        options.update(
            ssl=True,
            ssl_certfile=redis.tls.certificate,
            ssl_keyfile=redis.tls.key,
            ssl_ca_certs=redis.tls.clientcas[0] if redis.tls.clientcas else None,
        )
    return options


def open_notification_redis(config: Config) -> tuple[redis.Redis, str] | None:
    """The Redis client of the notification queues, and the name of the storage their keys
    carry (bucket and root directory: registries sharing one Redis keep apart), for storage
    that is not the filesystem driver's when ``redis`` is configured; ``None`` otherwise (or
    without the redis package, with a warning). The ``redis`` timeouts bound every call, so
    a hung Redis holds a request at most that long."""
    from distblob.storage.cache import DEFAULT_DIAL_TIMEOUT, DEFAULT_TIMEOUT
    from distblob.storage.redisclient import redis_client

    redis = config.redis
    if redis is None or config.storage.driver == "filesystem":
        return None
    host, port = parse_addr(redis.addr, "redis.addr")
    if redis.addr.startswith(":"):
        host = "localhost"
    timeouts = [t for t in (redis.readtimeout, redis.writetimeout) if t > 0]
    try:
        client = redis_client(
            host,
            port,
            password=redis.password,
            db=redis.db,
            dial_timeout=redis.dialtimeout or DEFAULT_DIAL_TIMEOUT,
            timeout=max(timeouts) if timeouts else DEFAULT_TIMEOUT,
            retries=1,  # replaces a pooled connection Redis closed (every call may be repeated)
            max_connections=redis.pool.maxactive or None,
            needed_by="notification queues in redis",
            client_options=redis_options(config),
        )
    except ImportError as error:
        logging.getLogger("distblob.notifications").warning("notifications: %s", error)
        return None
    parameters = config.storage.parameters
    storage = f"{config.storage.driver}:{parameters.get('bucket', '')}"
    storage += "/" + str(parameters.get("rootdirectory") or "").strip("/")
    return client, storage


def open_access_controller(config: Config) -> AccessController | None:
    """The access controller ``config``'s ``auth`` names, its files read once (a
    :class:`ConfigError` naming the key of a file that cannot be read or used); ``None``
    without an ``auth`` section. distribution 2.8 starts without the htpasswd file: it writes
    one with a user ``docker`` and logs that user's password; distblob logs no password and
    does not start."""
    if config.auth is None:
        return None
    if config.auth.token is not None:
        return _open_token_controller(config.auth.token)
    if config.auth.silly is not None:
        from distblob.auth.silly import SillyAccessController

        return SillyAccessController(config.auth.silly.realm, config.auth.silly.service)
    from distblob.auth.htpasswd import HtpasswdAccessController

    htpasswd = config.auth.htpasswd
    assert htpasswd is not None
    try:
        return HtpasswdAccessController.open(htpasswd.realm, htpasswd.path)
    except OSError as exc:
        reason = f"cannot read {htpasswd.path!r}: {exc.strerror or exc}"
        raise ConfigError("auth.htpasswd.path", reason) from None


def _open_token_controller(token: TokenAuth) -> AccessController:
    """The token controller, its bundle and JWKS read once."""
    from distblob.auth.token import SIGNING_ALGORITHMS, TokenAccessController, TokenVerifier
    from distblob.auth.tokenkeys import TokenKeyError, TrustedKeys, load_jwks, load_root_bundle

    try:
        roots = load_root_bundle(token.rootcertbundle) if token.rootcertbundle else []
    except TokenKeyError as exc:
        raise ConfigError("auth.token.rootcertbundle", str(exc)) from None
    try:
        jwks = load_jwks(token.jwks) if token.jwks else {}
    except TokenKeyError as exc:
        raise ConfigError("auth.token.jwks", str(exc)) from None
    if not roots and not jwks:
        raise ConfigError("auth.token.jwks", f"{token.jwks!r} holds no key that can verify tokens")
    verifier = TokenVerifier(
        issuer=token.issuer,
        service=token.service,
        keys=TrustedKeys.build(roots, jwks),
        algorithms=frozenset(token.signingalgorithms or SIGNING_ALGORITHMS),
    )
    return TokenAccessController(
        token.realm,
        token.service,
        verifier,
        autoredirect=token.autoredirect,
        autoredirectpath=token.autoredirectpath,
    )


def build_registry(config: Config) -> Registry:
    """The :class:`~distblob.registry.Registry` ``distblob serve`` runs for ``config``."""
    from distblob.registry import Registry
    from distblob.storage.validation import ManifestValidation

    driver = open_driver(config)
    validation = config.validation
    return Registry(
        driver,
        delete_enabled=config.storage.delete.enabled,
        resumable_digests=config.proxy is None,  # off in proxy mode, as in distribution
        redirect=not config.storage.redirect.disable,
        descriptor_cache=open_descriptor_cache(config, driver),
        upload_leases=open_upload_leases(config, driver),
        read_only=config.storage.maintenance.readonly.enabled,
        validation=ManifestValidation.build(
            enabled=validation.enabled,
            allow=validation.allow,
            deny=validation.deny,
            index_platforms=validation.platforms,
            platform_list=[(p.architecture, p.os) for p in validation.platformlist],
        ),
        tag_concurrency=config.storage.tag.concurrencylimit,
        redirect_base=config.middleware.redirect,
    )


def open_upload_leases(config: Config, driver: StorageDriver) -> RedisUploadLeases | None:
    """Upload leases in the configured Redis, for a driver replicas share (an object store:
    :attr:`~distblob.storage.driver.base.StorageDriver.shared_by_replicas`); ``None`` without a
    ``redis`` section or on a local filesystem (``flock`` serves there)."""
    from distblob.storage.leases import DEFAULT_TIMEOUT, RedisUploadLeases

    if not driver.shared_by_replicas:
        return None
    redis = config.redis
    if redis is None:
        logging.getLogger("distblob.storage").info(
            "storage.%s: uploads are locked within this process only; with several replicas, "
            "configure redis for upload leases (commits check what they store either way)",
            config.storage.driver,
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
        client_options=redis_options(config),
    )


__all__ = [
    "build_registry",
    "open_access_controller",
    "open_descriptor_cache",
    "open_driver",
    "open_notification_redis",
    "open_upload_leases",
    "redis_options",
]
