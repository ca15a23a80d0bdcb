"""distblob's configuration: a YAML file with distribution's keys, read into a tree of
dataclasses.

Every key of distribution's reference is in a class (:mod:`distblob.config.keys`): implemented,
accepted with a warning (:attr:`Config.warnings`), or refused with the reason; a key in no
version of distribution, or a value of the wrong type, raises :class:`ConfigError` naming the
dotted key (``storage.delete.enabled``), and several problems raise :class:`ConfigErrors`
listing them all. ``REGISTRY_*`` environment variables override the file
(:mod:`distblob.config.env`). A config that uses only the implemented keys::

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
    http:
      addr: 127.0.0.1:5000
      secret: a-long-random-string
      draintimeout: 5s
      tls:                                         # HTTPS (distblob.server.tls)
        certificate: /etc/registry/server.crt
        key: /etc/registry/server.key
        clientcas: [/etc/registry/clients-ca.crt]  # client certificates required
        minimumtls: tls1.2                         # or tls1.3
        ciphersuites: [TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256]
    proxy: {remoteurl: https://registry-1.docker.io, username: u, password: p, ttl: 168h}
    auth:
      htpasswd: {realm: basic-realm, path: /etc/distblob/htpasswd}
      # or token: {realm: https://auth.example.com/token, service: registry.example.com,
      #            issuer: auth-server, rootcertbundle: /etc/distblob/token-ca.pem}
      # or silly: {realm: https://auth.example.com/token, service: registry.example.com}
    access:                                        # distblob's own (distblob.auth.policy)
      - {users: [anonymous, "*"], repositories: ["**"], actions: [pull]}
      - {users: [ci], repositories: ["team/*"], actions: [pull, push]}

:func:`parse_config` returns a :class:`Config` shaped like the file (and like distribution's
configuration struct): each section is a frozen dataclass, each key a field of the same name,
durations in seconds, so ``storage.maintenance.uploadpurging.age`` is
``config.storage.maintenance.uploadpurging.age``. A few flat shorthands on :class:`Config`
(``config.root``, ``config.addr``, ``config.delete_enabled``, ...) read the same tree.

Exactly one storage driver: ``filesystem`` (the default, at ``./distblob-data``), ``inmemory``
or ``s3``, or any other the driver factory knows. The parser knows none of them: it takes their
names from :mod:`distblob.storage.driver.factory`, keeps the driver's section as
:attr:`Storage.parameters`, and has the driver check them (its errors name the parameter,
reported here as ``storage.<driver>.<key>``). ``storage.cache.blobdescriptor`` picks the blob
descriptor cache (:mod:`distblob.storage.cache`); ``redis`` needs the ``redis`` section, whose
keys are distribution 2.8's (a timeout left out is 1 s here, not none as in distribution, and
``0`` is none; the Python client has one socket timeout: the longer of ``readtimeout`` and
``writetimeout``; it keeps the connections it opened, so ``pool.maxidle`` is accepted and not
used, and ``pool.idletimeout`` checks a connection idle that long before reusing it). On a
driver several replicas share (S3) the ``redis`` section also gives uploads one writer at a time
across replicas (:mod:`distblob.storage.leases`, :func:`open_upload_leases`). ``proxy`` makes
the server a pull-through cache of ``remoteurl`` (:mod:`distblob.proxy`). :func:`build_registry`
turns a config into the :class:`~distblob.registry.Registry` ``distblob serve`` runs.

``auth`` names exactly one access controller, as in distribution: ``htpasswd``
(:mod:`distblob.auth.htpasswd`), ``token`` (:mod:`distblob.auth.token`, distribution 3.0's keys:
``realm``, ``service``, ``issuer``, ``rootcertbundle`` and/or ``jwks``, ``autoredirect``,
``autoredirectpath``, ``signingalgorithms``) or ``silly`` (:mod:`distblob.auth.silly`).
:func:`open_access_controller` builds it (reading the htpasswd file, the root certificate bundle
and the JWKS once, so that the server does not start without them).
``access`` is distblob's own access policy (:mod:`distblob.auth.policy`); it needs ``auth``
unless it grants only ``anonymous``.
"""

from __future__ import annotations

from distblob.config.build import (
    build_registry,
    open_access_controller,
    open_descriptor_cache,
    open_driver,
    open_notification_redis,
    open_upload_leases,
)
from distblob.config.parse import load_config, parse_config
from distblob.config.tree import (
    HTTP,
    TLS,
    AuthConfig,
    Cache,
    Config,
    Delete,
    GarbageCollect,
    Htpasswd,
    Log,
    Maintenance,
    ProxyConfig,
    Redirect,
    RedisConfig,
    RedisPool,
    Silly,
    Storage,
    TokenAuth,
    UploadPurging,
)
from distblob.config.values import (
    AUTH_CONTROLLERS,
    BLOB_DESCRIPTOR_CACHES,
    DEFAULT_ADDR,
    DEFAULT_DRAIN_TIMEOUT,
    DEFAULT_DRIVER,
    DEFAULT_MINIMUM_TLS,
    DEFAULT_ROOT,
    IMPLEMENTED_AUTH,
    LOG_LEVELS,
    TLS_VERSIONS,
    ConfigError,
    ConfigErrors,
    parse_addr,
    parse_duration,
)
from distblob.storage.driver.factory import STORAGE_DRIVERS

__all__ = [
    "AUTH_CONTROLLERS",
    "BLOB_DESCRIPTOR_CACHES",
    "DEFAULT_ADDR",
    "DEFAULT_DRAIN_TIMEOUT",
    "DEFAULT_DRIVER",
    "DEFAULT_MINIMUM_TLS",
    "DEFAULT_ROOT",
    "HTTP",
    "IMPLEMENTED_AUTH",
    "LOG_LEVELS",
    "STORAGE_DRIVERS",
    "TLS",
    "TLS_VERSIONS",
    "AuthConfig",
    "Cache",
    "Config",
    "ConfigError",
    "ConfigErrors",
    "Delete",
    "GarbageCollect",
    "Htpasswd",
    "Log",
    "Maintenance",
    "ProxyConfig",
    "Redirect",
    "RedisConfig",
    "RedisPool",
    "Silly",
    "Storage",
    "TokenAuth",
    "UploadPurging",
    "build_registry",
    "load_config",
    "open_access_controller",
    "open_descriptor_cache",
    "open_driver",
    "open_notification_redis",
    "open_upload_leases",
    "parse_addr",
    "parse_config",
    "parse_duration",
]
