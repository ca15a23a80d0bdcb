"""distblob's configuration: a YAML file with distribution's keys, read into a tree of
dataclasses.

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

import importlib.util
import logging
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final

import yaml

from distblob._numbers import is_ascii_digits
from distblob.errors import DistblobError, DriverParameterError
from distblob.storage.cache import DEFAULT_DIAL_TIMEOUT as DEFAULT_REDIS_DIAL_TIMEOUT
from distblob.storage.cache import DEFAULT_TIMEOUT as DEFAULT_REDIS_TIMEOUT
from distblob.storage.driver import factory
from distblob.storage.driver.factory import STORAGE_DRIVERS
from distblob.storage.driver.filesystem import DEFAULT_ROOT_DIRECTORY

if TYPE_CHECKING:
    from distblob.auth import AccessController
    from distblob.auth.policy import Policy
    from distblob.registry import Registry
    from distblob.storage.cache import BlobDescriptorCache
    from distblob.storage.driver import StorageDriver
    from distblob.storage.leases import RedisUploadLeases

#: ``storage.filesystem.rootdirectory`` when unset (the filesystem driver's default).
DEFAULT_ROOT: Final = DEFAULT_ROOT_DIRECTORY
#: The storage driver of a config that names none.
DEFAULT_DRIVER: Final = "filesystem"
DEFAULT_ADDR: Final = "127.0.0.1:5000"
#: ``http.draintimeout`` when unset (distribution has no drain by default and stops at once).
DEFAULT_DRAIN_TIMEOUT: Final = 5.0
LOG_LEVELS: Final = ("panic", "fatal", "error", "warn", "info", "debug", "trace")
#: ``http.tls.minimumtls`` values served (distribution also takes tls1.0 and tls1.1).
TLS_VERSIONS: Final = ("tls1.2", "tls1.3")
#: ``http.tls.minimumtls`` when unset.
DEFAULT_MINIMUM_TLS: Final = "tls1.2"
BLOB_DESCRIPTOR_CACHES: Final = ("inmemory", "redis")
#: distribution's access controllers; an ``auth`` section names exactly one.
AUTH_CONTROLLERS: Final = ("htpasswd", "token", "silly")
#: Those distblob implements: all of them.
IMPLEMENTED_AUTH: Final = AUTH_CONTROLLERS
#: The keys of ``storage`` besides the driver's section.
_STORAGE_KEYS: Final = ("delete", "maintenance", "cache", "redirect")

_UNITS: Final = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
_DURATION_PART: Final = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)")


class ConfigError(DistblobError, ValueError):
    """A configuration that cannot be used; ``key`` is the dotted key at fault."""

    def __init__(self, key: str, reason: str) -> None:
        super().__init__(f"config: {key}: {reason}" if key else f"config: {reason}")
        self.key = key
        self.reason = reason


# -- the tree ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Log:
    """``log``."""

    level: str = "info"


@dataclass(frozen=True, slots=True)
class Delete:
    """``storage.delete``: whether blob and manifest DELETEs are served."""

    enabled: bool = False


@dataclass(frozen=True, slots=True)
class Redirect:
    """``storage.redirect``: ``disable`` serves blobs through the registry even where the
    driver offers a direct URL."""

    disable: bool = False


@dataclass(frozen=True, slots=True)
class Cache:
    """``storage.cache``: ``blobdescriptor`` is one of :data:`BLOB_DESCRIPTOR_CACHES`."""

    blobdescriptor: str = "inmemory"


@dataclass(frozen=True, slots=True)
class UploadPurging:
    """``storage.maintenance.uploadpurging``; durations in seconds."""

    enabled: bool = True
    age: float = 168 * 3600.0
    interval: float = 24 * 3600.0
    dryrun: bool = False


@dataclass(frozen=True, slots=True)
class Maintenance:
    """``storage.maintenance``."""

    uploadpurging: UploadPurging = field(default_factory=UploadPurging)


@dataclass(frozen=True, slots=True)
class Storage:
    """``storage``: the driver's name (the section that names it) and its ``parameters`` (that
    section's keys, as written and as the driver checked them), then the driver-independent
    sections. ``parameters`` is left out of the repr: it may hold credentials."""

    driver: str = DEFAULT_DRIVER
    parameters: Mapping[str, Any] = field(default_factory=dict, repr=False)
    delete: Delete = field(default_factory=Delete)
    redirect: Redirect = field(default_factory=Redirect)
    cache: Cache = field(default_factory=Cache)
    maintenance: Maintenance = field(default_factory=Maintenance)


@dataclass(frozen=True, slots=True)
class TLS:
    """``http.tls``: serve HTTPS with ``certificate`` (PEM, the chain after the leaf) and its
    unencrypted ``key``. With ``clientcas`` (PEM files of CA certificates) every client must
    present a certificate one of them signed. ``minimumtls`` is one of :data:`TLS_VERSIONS`;
    ``ciphersuites`` holds Go's names of the suites offered (empty: distribution's defaults).
    The files and names are checked when the config is parsed
    (:func:`distblob.server.tls.server_context`)."""

    certificate: str
    key: str
    clientcas: tuple[str, ...] = ()
    minimumtls: str = DEFAULT_MINIMUM_TLS
    ciphersuites: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class HTTP:
    """``http``. ``draintimeout``: seconds a stopping server waits for open requests before it
    cancels them (0: at once); then cold fetches are stopped and their uploads removed.
    ``tls``: HTTPS, or ``None`` for plain HTTP."""

    addr: str = DEFAULT_ADDR
    secret: str | None = field(default=None, repr=False)
    draintimeout: float = DEFAULT_DRAIN_TIMEOUT
    tls: TLS | None = None


@dataclass(frozen=True, slots=True)
class ProxyConfig:
    """``proxy``: the upstream of a pull-through cache (``ttl`` in seconds, 0 = never)."""

    remoteurl: str
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    ttl: float = 168 * 3600.0


@dataclass(frozen=True, slots=True)
class Htpasswd:
    """``auth.htpasswd``: HTTP Basic auth against the bcrypt entries of the htpasswd file at
    ``path``; ``realm`` is sent in the ``WWW-Authenticate`` challenge."""

    realm: str
    path: str


@dataclass(frozen=True, slots=True)
class TokenAuth:
    """``auth.token``: bearer tokens from the token server at ``realm``, for ``service``,
    issued by ``issuer`` and signed by a key of ``rootcertbundle`` (a chain to one of its
    certificates, or one named by ``kid``) or of ``jwks``; at least one of the two files.
    ``signingalgorithms`` empty: distribution 3.0's default (all it knows)."""

    realm: str
    service: str
    issuer: str
    rootcertbundle: str | None = None
    jwks: str | None = None
    autoredirect: bool = False
    autoredirectpath: str = "/auth/token"
    signingalgorithms: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Silly:
    """``auth.silly``: any request with an ``Authorization`` header passes (tests only)."""

    realm: str
    service: str


@dataclass(frozen=True, slots=True)
class AuthConfig:
    """``auth``: the one access controller the config names (exactly one field is set)."""

    htpasswd: Htpasswd | None = None
    token: TokenAuth | None = None
    silly: Silly | None = None

    @property
    def controller(self) -> str:
        """The access controller's name, as the config's key: ``htpasswd``, ``token`` or
        ``silly``."""
        if self.token is not None:
            return "token"
        return "silly" if self.silly is not None else "htpasswd"


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
    """A validated config: the YAML's sections as fields (``Config()`` is every default).

    The properties below are flat shorthands for keys the server and the commands read most,
    taken from the tree; they cannot be assigned (replace the section instead, with
    :func:`dataclasses.replace`).
    """

    version: str = "0.1"
    log: Log = field(default_factory=Log)
    storage: Storage = field(default_factory=Storage)
    http: HTTP = field(default_factory=HTTP)
    redis: RedisConfig | None = None
    proxy: ProxyConfig | None = None
    auth: AuthConfig | None = None
    access: Policy | None = None

    @property
    def driver(self) -> str:
        """``storage.driver``: the storage driver's name."""
        return self.storage.driver

    @property
    def root(self) -> str:
        """``storage.filesystem.rootdirectory``: the filesystem driver's directory, and
        :data:`DEFAULT_ROOT` when unset or when the config names another driver."""
        root = self.storage.parameters.get("rootdirectory")
        if self.storage.driver != "filesystem" or not isinstance(root, str) or not root:
            return DEFAULT_ROOT
        return root

    @property
    def s3(self) -> Mapping[str, Any] | None:
        """``storage.s3``: the s3 driver's parameters, or ``None`` with another driver."""
        return self.storage.parameters if self.storage.driver == "s3" else None

    @property
    def delete_enabled(self) -> bool:
        """``storage.delete.enabled``."""
        return self.storage.delete.enabled

    @property
    def redirect(self) -> bool:
        """Not ``storage.redirect.disable``: whether blob GETs may redirect to the driver."""
        return not self.storage.redirect.disable

    @property
    def blob_descriptor_cache(self) -> str:
        """``storage.cache.blobdescriptor``."""
        return self.storage.cache.blobdescriptor

    @property
    def upload_purging(self) -> UploadPurging:
        """``storage.maintenance.uploadpurging``."""
        return self.storage.maintenance.uploadpurging

    @property
    def addr(self) -> str:
        """``http.addr``."""
        return self.http.addr

    @property
    def host_port(self) -> tuple[str, int]:
        """``http.addr`` as the host and port to listen on (:func:`parse_addr`)."""
        return parse_addr(self.http.addr)

    @property
    def secret(self) -> str | None:
        """``http.secret``."""
        return self.http.secret

    @property
    def drain_timeout(self) -> float:
        """``http.draintimeout``, in seconds."""
        return self.http.draintimeout

    @property
    def tls(self) -> TLS | None:
        """``http.tls``: HTTPS settings, or ``None`` for plain HTTP."""
        return self.http.tls

    @property
    def log_level(self) -> str:
        """``log.level``."""
        return self.log.level


# -- values ------------------------------------------------------------------------------------


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


def _duration(section: Mapping[str, Any], name: str, key: str, default: float) -> float:
    """``<key>.<name>`` in seconds: ``default`` when the config does not give it (or leaves it
    empty, ``name:`` alone in YAML)."""
    value = section.get(name)
    return default if value is None else parse_duration(value, f"{key}.{name}")


# -- sections ----------------------------------------------------------------------------------


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


def _storage(doc: object) -> Storage:
    drivers = factory.names()
    storage = _section(doc, "storage", {*drivers, *_STORAGE_KEYS})
    named = [name for name in drivers if name in storage]
    if len(named) > 1:
        raise ConfigError("storage", f"one storage driver only, not {' and '.join(named)}")
    driver = named[0] if named else DEFAULT_DRIVER
    parameters = _driver_parameters(driver, storage.get(driver))
    redirect = _section(storage.get("redirect"), "storage.redirect", {"disable"})
    cache = _section(storage.get("cache"), "storage.cache", {"blobdescriptor"})
    blobdescriptor = cache.get("blobdescriptor", "inmemory")
    if blobdescriptor not in BLOB_DESCRIPTOR_CACHES:
        raise ConfigError(
            "storage.cache.blobdescriptor", f"expected inmemory or redis, not {blobdescriptor!r}"
        )
    delete = _section(storage.get("delete"), "storage.delete", {"enabled"})
    maintenance = _section(storage.get("maintenance"), "storage.maintenance", {"uploadpurging"})
    key = "storage.maintenance.uploadpurging"
    purging = _section(
        maintenance.get("uploadpurging"), key, {"enabled", "age", "interval", "dryrun"}
    )
    return Storage(
        driver=driver,
        parameters=parameters,
        delete=Delete(enabled=_bool(delete, "enabled", "storage.delete", False)),
        redirect=Redirect(disable=_bool(redirect, "disable", "storage.redirect", False)),
        cache=Cache(blobdescriptor=str(blobdescriptor)),
        maintenance=Maintenance(
            uploadpurging=UploadPurging(
                enabled=_bool(purging, "enabled", key, True),
                age=parse_duration(purging.get("age", "168h"), f"{key}.age"),
                interval=parse_duration(purging.get("interval", "24h"), f"{key}.interval"),
                dryrun=_bool(purging, "dryrun", key, False),
            )
        ),
    )


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
        dialtimeout=_duration(raw, "dialtimeout", "redis", DEFAULT_REDIS_DIAL_TIMEOUT),
        readtimeout=_duration(raw, "readtimeout", "redis", DEFAULT_REDIS_TIMEOUT),
        writetimeout=_duration(raw, "writetimeout", "redis", DEFAULT_REDIS_TIMEOUT),
        pool=RedisPool(
            maxidle=_int(pool, "maxidle", "redis.pool", 0),
            maxactive=_int(pool, "maxactive", "redis.pool", 0),
            idletimeout=parse_duration(pool.get("idletimeout", 0), "redis.pool.idletimeout"),
        ),
    )


def _str_list(section: Mapping[str, Any], name: str, key: str) -> tuple[str, ...]:
    """``<key>.<name>``: a list of non-empty strings (empty when not given)."""
    value = section.get(name)
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise ConfigError(f"{key}.{name}", f"expected a list of non-empty strings, not {value!r}")
    return tuple(value)


def _tls(doc: object) -> TLS | None:
    """``http.tls``; ``None`` when the section is absent or empty (plain HTTP, as in
    distribution). The files and cipher suite names are checked by building the server's TLS
    context once (:func:`distblob.server.tls.server_context`), so a wrong path, a key that does
    not match its certificate or a suite OpenSSL cannot offer stops the server here."""
    key = "http.tls"
    raw = _section(
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
    certificate = _str(raw, "certificate", key)
    if certificate is None:
        raise ConfigError(f"{key}.certificate", "required with http.tls: a PEM certificate file")
    private_key = _str(raw, "key", key)
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
        clientcas=_str_list(raw, "clientcas", key),
        minimumtls=str(minimum),
        ciphersuites=_str_list(raw, "ciphersuites", key),
    )
    from distblob.server.tls import server_context

    server_context(tls)  # raises ConfigError naming the key at fault
    return tls


def _http(doc: object) -> HTTP:
    http = _section(doc, "http", {"addr", "secret", "draintimeout", "tls"})
    addr = _str(http, "addr", "http") or DEFAULT_ADDR
    parse_addr(addr)
    return HTTP(
        addr=addr,
        secret=_str(http, "secret", "http"),
        draintimeout=_duration(http, "draintimeout", "http", DEFAULT_DRAIN_TIMEOUT),
        tls=_tls(http.get("tls")),
    )


def _log(doc: object) -> Log:
    log = _section(doc, "log", {"level"})
    level = log.get("level", "info")
    if level not in LOG_LEVELS:
        raise ConfigError("log.level", f"expected one of {', '.join(LOG_LEVELS)}, not {level!r}")
    return Log(level=str(level))


def _proxy(doc: object) -> ProxyConfig:
    raw = _section(doc, "proxy", {"remoteurl", "username", "password", "ttl"})
    remote = _str(raw, "remoteurl", "proxy")
    if remote is None or not remote.startswith(("http://", "https://")):
        raise ConfigError("proxy.remoteurl", "required: the upstream's http(s) URL")
    return ProxyConfig(
        remoteurl=remote,
        username=_str(raw, "username", "proxy"),
        password=_str(raw, "password", "proxy"),
        # An empty ``ttl:`` is distribution's default, as an absent one.
        ttl=_duration(raw, "ttl", "proxy", 168 * 3600.0),
    )


def _auth(doc: object) -> AuthConfig:
    raw = _section(doc, "auth", set(AUTH_CONTROLLERS))
    named = [name for name in AUTH_CONTROLLERS if name in raw]
    if len(named) != 1:
        given = f", not {' and '.join(named)}" if named else ""
        raise ConfigError("auth", f"name exactly one of htpasswd, token or silly{given}")
    if named[0] == "token":
        return AuthConfig(token=_token_auth(raw["token"]))
    if named[0] == "silly":
        key = "auth.silly"
        section = _section(raw["silly"], key, {"realm", "service"})
        return AuthConfig(
            silly=Silly(_required(section, "realm", key), _required(section, "service", key))
        )
    key = "auth.htpasswd"
    section = _section(raw["htpasswd"], key, {"realm", "path"})
    realm = _str(section, "realm", key)
    if realm is None:
        raise ConfigError(f"{key}.realm", "required: the realm clients are challenged with")
    if not (realm.isascii() and realm.isprintable()):
        raise ConfigError(f"{key}.realm", f"expected printable ASCII (a header), not {realm!r}")
    path = _str(section, "path", key)
    if path is None:
        raise ConfigError(f"{key}.path", "required: the htpasswd file (bcrypt entries)")
    return AuthConfig(htpasswd=Htpasswd(realm=realm, path=path))


def _required(section: Mapping[str, Any], name: str, key: str) -> str:
    value = _str(section, name, key)
    if value is None:
        raise ConfigError(f"{key}.{name}", "required")
    return value


def _token_auth(doc: object) -> TokenAuth:
    """``auth.token``, distribution 3.0's keys (2.8's are a subset)."""
    key = "auth.token"
    names = {"realm", "service", "issuer", "rootcertbundle", "jwks", "autoredirect"}
    section = _section(doc, key, names | {"autoredirectpath", "signingalgorithms"})
    rootcertbundle, jwks = _str(section, "rootcertbundle", key), _str(section, "jwks", key)
    if rootcertbundle is None and jwks is None:
        raise ConfigError(
            f"{key}.rootcertbundle", "required (or auth.token.jwks): the keys that sign tokens"
        )
    from distblob.auth.token import SIGNING_ALGORITHMS

    algorithms = _str_list(section, "signingalgorithms", key)
    for algorithm in algorithms:
        if algorithm not in SIGNING_ALGORITHMS:
            raise ConfigError(
                f"{key}.signingalgorithms",
                f"unsupported {algorithm!r}: expected some of {', '.join(SIGNING_ALGORITHMS)}",
            )
    return TokenAuth(
        realm=_required(section, "realm", key),
        service=_required(section, "service", key),
        issuer=_required(section, "issuer", key),
        rootcertbundle=rootcertbundle,
        jwks=jwks,
        autoredirect=_bool(section, "autoredirect", key, False),
        autoredirectpath=_str(section, "autoredirectpath", key) or "/auth/token",
        signingalgorithms=algorithms,
    )


def _access(doc: object, auth: AuthConfig | None) -> Policy:
    """``access``: the policy, checked (:mod:`distblob.auth.policy`); without ``auth`` it may
    grant ``anonymous`` only, since nobody else could log in."""
    from distblob.auth.policy import Policy, PolicyError

    try:
        policy = Policy.parse(doc, "access")
    except PolicyError as exc:
        raise ConfigError(exc.key, exc.reason) from None
    if auth is None and not policy.anonymous_only():
        index = next(i for i, rule in enumerate(policy.rules) if rule.users != {"anonymous"})
        raise ConfigError(
            f"access[{index}].users",
            "names users, but there is no auth section to log them in: configure auth, "
            "or grant anonymous only",
        )
    return policy


def parse_config(doc: object) -> Config:
    """Validate a decoded YAML document and return the :class:`Config` it describes."""
    top = _section(
        doc, "", {"version", "storage", "http", "log", "proxy", "redis", "auth", "access"}
    )
    version = top.get("version", "0.1")
    if str(version) != "0.1":
        raise ConfigError("version", f"only version 0.1 is supported, not {version!r}")
    storage = _storage(top.get("storage"))
    redis = _redis(top["redis"]) if top.get("redis") is not None else None
    if storage.cache.blobdescriptor == "redis":
        if redis is None:
            raise ConfigError("redis.addr", "required by storage.cache.blobdescriptor: redis")
        if importlib.util.find_spec("redis") is None:
            raise ConfigError(
                "storage.cache.blobdescriptor",
                "redis needs the redis package: pip install 'distblob[redis]'",
            )
    http = _http(top.get("http"))
    log = _log(top.get("log"))
    proxy = _proxy(top["proxy"]) if top.get("proxy") is not None else None
    auth = _auth(top["auth"]) if top.get("auth") is not None else None
    access = _access(top["access"], auth) if top.get("access") is not None else None
    return Config(
        version="0.1",
        log=log,
        storage=storage,
        http=http,
        redis=redis,
        proxy=proxy,
        auth=auth,
        access=access,
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


# -- what a config builds ----------------------------------------------------------------------


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

    driver = open_driver(config)
    return Registry(
        driver,
        delete_enabled=config.storage.delete.enabled,
        resumable_digests=config.proxy is None,  # off in proxy mode, as in distribution
        redirect=not config.storage.redirect.disable,
        descriptor_cache=open_descriptor_cache(config, driver),
        upload_leases=open_upload_leases(config, driver),
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
    )


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
    "Delete",
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
    "open_upload_leases",
    "parse_addr",
    "parse_config",
    "parse_duration",
]
