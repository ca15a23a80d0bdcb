"""The config as a tree of frozen dataclasses, one per section, shaped like the YAML file (and
like distribution's configuration struct)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from distblob.config.catalog import Catalog
from distblob.config.middleware import Middleware
from distblob.config.notifications import Notifications
from distblob.config.observability import Debug, Health
from distblob.config.validation import Validation
from distblob.config.values import (
    DEFAULT_ADDR,
    DEFAULT_DRAIN_TIMEOUT,
    DEFAULT_DRIVER,
    DEFAULT_MINIMUM_TLS,
    DEFAULT_ROOT,
    parse_addr,
)
from distblob.storage.cache import DEFAULT_DIAL_TIMEOUT as DEFAULT_REDIS_DIAL_TIMEOUT
from distblob.storage.cache import DEFAULT_SIZE as DEFAULT_CACHE_SIZE
from distblob.storage.cache import DEFAULT_TIMEOUT as DEFAULT_REDIS_TIMEOUT

if TYPE_CHECKING:
    from distblob.auth.policy import Policy


@dataclass(frozen=True, slots=True)
class AccessLog:
    """``log.accesslog``: ``disabled`` drops the line per request (printed at any level)."""

    disabled: bool = False


@dataclass(frozen=True, slots=True)
class Log:
    """``log``: ``formatter`` is ``text``, ``json`` or ``logstash`` (:mod:`distblob.logs`);
    ``fields`` are added to every line."""

    level: str = "info"
    formatter: str = "text"
    fields: Mapping[str, Any] = field(default_factory=dict)
    accesslog: AccessLog = field(default_factory=AccessLog)


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
    """``storage.cache``: ``blobdescriptor`` is one of :data:`BLOB_DESCRIPTOR_CACHES`;
    ``blobdescriptorsize``: the in-memory cache's entries (distribution 3.x)."""

    blobdescriptor: str = "inmemory"
    blobdescriptorsize: int = DEFAULT_CACHE_SIZE


@dataclass(frozen=True, slots=True)
class ReadOnly:
    """``storage.maintenance.readonly``: every write answered 405, as in distribution."""

    enabled: bool = False


@dataclass(frozen=True, slots=True)
class Tag:
    """``storage.tag`` (distribution 3.x): ``concurrencylimit`` tags read at once when a
    manifest DELETE looks up the tags pointing at it (0: the number of CPUs)."""

    concurrencylimit: int = 0


@dataclass(frozen=True, slots=True)
class UploadPurging:
    """``storage.maintenance.uploadpurging``; durations in seconds."""

    enabled: bool = True
    age: float = 168 * 3600.0
    interval: float = 24 * 3600.0
    dryrun: bool = False


@dataclass(frozen=True, slots=True)
class GarbageCollect:
    """``storage.maintenance.garbagecollect`` (distblob's own): an online collection every
    ``interval`` seconds (:mod:`distblob.storage.online`), keeping what is younger than
    ``grace`` seconds; off by default."""

    enabled: bool = False
    interval: float = 24 * 3600.0
    grace: float = 3600.0
    deleteuntagged: bool = False
    manifestsonly: bool = False
    dryrun: bool = False


@dataclass(frozen=True, slots=True)
class Maintenance:
    """``storage.maintenance``."""

    uploadpurging: UploadPurging = field(default_factory=UploadPurging)
    readonly: ReadOnly = field(default_factory=ReadOnly)
    garbagecollect: GarbageCollect = field(default_factory=GarbageCollect)


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
    tag: Tag = field(default_factory=Tag)


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
    ``tls``: HTTPS, or ``None`` for plain HTTP. ``net`` is ``tcp`` or ``unix`` (``addr`` is
    then the socket's path). ``prefix``: the API's path prefix, without its trailing slash;
    ``host``: the ``scheme://host[/path]`` of absolute ``Location`` URLs; ``relativeurls``
    ``None`` when not given (distblob's relative Locations). ``headers``: added to every
    response of the API (:mod:`distblob.server.frontdoor`)."""

    addr: str = DEFAULT_ADDR
    secret: str | None = field(default=None, repr=False)
    draintimeout: float = DEFAULT_DRAIN_TIMEOUT
    tls: TLS | None = None
    net: str = "tcp"
    prefix: str = ""
    host: str | None = None
    relativeurls: bool | None = None
    headers: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    debug: Debug | None = None


@dataclass(frozen=True, slots=True)
class ProxyConfig:
    """``proxy``: the upstream of a pull-through cache (``ttl`` in seconds, 0 = never)."""

    remoteurl: str
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    ttl: float = 168 * 3600.0
    #: ``proxy.cachewritetimeout`` (3.x): seconds a cold blob's copy into the cache may take
    #: before it is abandoned (0: distribution's default, 5 minutes).
    cachewritetimeout: float = 0.0


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
class RedisTLS:
    """``redis.tls``: TLS to Redis (2.8's ``enabled``), with 3.x's client ``certificate`` and
    its ``key`` (``None``: no client certificate), and ``clientcas``, the CA files the
    server's certificate is checked against (empty: the system's)."""

    certificate: str | None = None
    key: str | None = None
    clientcas: tuple[str, ...] = ()


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
    #: 3.x's ``username`` and ``clientname``, and ``tls`` (PEM files), as redis-py takes them.
    username: str | None = None
    clientname: str | None = None
    tls: RedisTLS | None = None


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
    catalog: Catalog = field(default_factory=Catalog)
    validation: Validation = field(default_factory=Validation)
    middleware: Middleware = field(default_factory=Middleware)
    #: Keys accepted without effect (class 2 of :mod:`distblob.config.keys`), and ignored
    #: ``REGISTRY_*`` variables: one line each, logged once when the server starts.
    warnings: tuple[str, ...] = field(default=(), compare=False)
    health: Health = field(default_factory=Health)
    notifications: Notifications = field(default_factory=Notifications)

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
    def garbage_collect(self) -> GarbageCollect:
        """``storage.maintenance.garbagecollect``."""
        return self.storage.maintenance.garbagecollect

    @property
    def addr(self) -> str:
        """``http.addr``."""
        return self.http.addr

    @property
    def host_port(self) -> tuple[str, int]:
        """``http.addr`` as the host and port to listen on (:func:`parse_addr`); not for
        ``http.net: unix``, whose ``addr`` is a path."""
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


__all__ = [
    "HTTP",
    "TLS",
    "AccessLog",
    "AuthConfig",
    "Cache",
    "Config",
    "Delete",
    "Htpasswd",
    "Log",
    "Maintenance",
    "ProxyConfig",
    "ReadOnly",
    "Redirect",
    "RedisConfig",
    "RedisPool",
    "RedisTLS",
    "Silly",
    "Storage",
    "Tag",
    "TokenAuth",
    "UploadPurging",
]
