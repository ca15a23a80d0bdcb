"""The catalogue of every key of distribution's configuration reference (2.8 and 3.x), each in
one class, and the pre-pass that checks a whole document against it.

1. :data:`IMPLEMENTED`: read by the section parsers (``distblob.config.sections``, ...).
2. :data:`WARNED`: accepted; one warning at start names it and says why it has no effect here.
3. :data:`REFUSED`: refused with the reason, where accepting it would lose data or security (or
   where distblob does not implement it yet).

A pattern is a dotted key; ``<name>`` stands for any one key of a map, ``[]`` for the items of a
list, and a final ``*`` for a whole subtree. A key a pattern of class 2 or 3 names covers its
subtree. A key in no version of distribution is refused with the nearest real key suggested.
A class-2 or class-3 key given its zero value (``false``, ``0``, ``""``, empty) is treated as
absent, as Go cannot tell the two apart; except under ``storage``, ``auth`` and ``middleware``,
maps where naming a key (a driver, a controller) is what counts.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Final

IMPLEMENTED: Final = 1
WARNED: Final = 2
REFUSED: Final = 3

NYI: Final = "not implemented yet"
_USE_S3: Final = "not supported; use s3"
_NO_ACME: Final = (
    "not supported: distblob runs no ACME client; get the certificate with one (certbot, "
    "lego, cert-manager) and give http.tls.certificate and http.tls.key"
)
_REPORTING: Final = "error reporting to Bugsnag and New Relic is not built into distblob"
_HTTP2: Final = "distblob serves HTTP/1.1 only (uvicorn), so there is no HTTP/2 to configure"
_SCHEMA1: Final = "schema 1 manifests are refused, as distribution 3 refuses them"
_HOOKS: Final = "logrus hooks (mail on error) are not run; alert from your log collector"
_SECTION: Final = "a section: see its keys"

_S3_DONE: Final = (
    "accesskey secretkey region regionendpoint bucket rootdirectory chunksize forcepathstyle "
    "secure skipverify v4auth encrypt keyid storageclass objectacl sessiontoken "
    "multipartcopychunksize multipartcopymaxconcurrency useragent usedualstack accelerate "
    "usefipsendpoint"
)
_ENDPOINT_KEYS: Final = (
    "name disabled url headers timeout threshold backoff ignoredmediatypes ignore"
)
_REDIS3_DONE: Final = (
    "addrs username clientname poolsize maxidleconns maxactiveconns connmaxidletime tls"
)
#: Keys ``distblob.config.redis`` accepts and warns about itself (no redis-py setting).
_REDIS3_WARNED: Final = (
    "protocol maxretries minretrybackoff maxretrybackoff contexttimeoutenabled poolfifo "
    "pooltimeout minidleconns connmaxlifetime maxredirects readonly routebylatency "
    "routerandomly disableindentity identitysuffix unstableresp3"
)
_SENTINEL: Final = "mastername sentinelusername sentinelpassword"

#: (pattern, class, why): every key of distribution 2.8.2 and 3.0.0's reference.
CATALOGUE: Final[tuple[tuple[str, int, str], ...]] = (
    ("version", IMPLEMENTED, "0.1"),
    ("log", IMPLEMENTED, ""),
    ("log.level", IMPLEMENTED, "any case, as Go"),
    ("log.formatter", IMPLEMENTED, "text, json or logstash"),
    ("log.fields", IMPLEMENTED, ""),
    ("log.accesslog", IMPLEMENTED, _SECTION),
    ("log.accesslog.disabled", IMPLEMENTED, ""),
    ("log.hooks", WARNED, _HOOKS),
    ("log.reportcaller", WARNED, "the calling function is not added to log lines"),
    ("loglevel", IMPLEMENTED, "deprecated in distribution: log.level wins"),
    ("storage", IMPLEMENTED, ""),
    ("storage.filesystem", IMPLEMENTED, ""),
    ("storage.filesystem.rootdirectory", IMPLEMENTED, ""),
    ("storage.filesystem.maxthreads", IMPLEMENTED, "bounds the storage verbs' worker threads"),
    (
        "storage.filesystem.directio",
        IMPLEMENTED,
        "distblob's own: auto (default), on or off; large uploads written past the page cache",
    ),
    ("storage.inmemory", IMPLEMENTED, ""),
    ("storage.s3", IMPLEMENTED, ""),
    *((f"storage.s3.{name}", IMPLEMENTED, "") for name in _S3_DONE.split()),
    (
        "storage.s3.multipartcopythresholdsize",
        IMPLEMENTED,
        "default 5 GiB (Go: 32 MiB): one CopyObject wherever S3 allows it",
    ),
    ("storage.s3.loglevel", IMPLEMENTED, "botocore's logger; an unknown level is refused"),
    ("storage.azure", REFUSED, _USE_S3),
    ("storage.gcs", REFUSED, _USE_S3),
    ("storage.swift", REFUSED, _USE_S3),
    ("storage.oss", REFUSED, _USE_S3),
    ("storage.delete", IMPLEMENTED, ""),
    ("storage.delete.enabled", IMPLEMENTED, ""),
    ("storage.redirect", IMPLEMENTED, ""),
    ("storage.redirect.disable", IMPLEMENTED, ""),
    ("storage.cache", IMPLEMENTED, ""),
    ("storage.cache.blobdescriptor", IMPLEMENTED, "inmemory or redis"),
    ("storage.cache.blobdescriptorsize", IMPLEMENTED, ""),
    ("storage.tag", IMPLEMENTED, _SECTION),
    ("storage.tag.concurrencylimit", IMPLEMENTED, ""),
    ("storage.maintenance", IMPLEMENTED, ""),
    ("storage.maintenance.uploadpurging", IMPLEMENTED, ""),
    ("storage.maintenance.uploadpurging.enabled", IMPLEMENTED, ""),
    ("storage.maintenance.uploadpurging.age", IMPLEMENTED, ""),
    ("storage.maintenance.uploadpurging.interval", IMPLEMENTED, ""),
    ("storage.maintenance.uploadpurging.dryrun", IMPLEMENTED, ""),
    (
        "storage.maintenance.garbagecollect",
        IMPLEMENTED,
        "distblob's own: online garbage collection on a schedule, off by default",
    ),
    ("storage.maintenance.garbagecollect.enabled", IMPLEMENTED, "distblob's own"),
    ("storage.maintenance.garbagecollect.interval", IMPLEMENTED, "distblob's own"),
    ("storage.maintenance.garbagecollect.grace", IMPLEMENTED, "distblob's own"),
    ("storage.maintenance.garbagecollect.deleteuntagged", IMPLEMENTED, "distblob's own"),
    ("storage.maintenance.garbagecollect.manifestsonly", IMPLEMENTED, "distblob's own"),
    ("storage.maintenance.garbagecollect.dryrun", IMPLEMENTED, "distblob's own"),
    ("storage.maintenance.readonly", IMPLEMENTED, _SECTION),
    ("storage.maintenance.readonly.enabled", IMPLEMENTED, ""),
    ("auth", IMPLEMENTED, "exactly one controller"),
    ("auth.silly", IMPLEMENTED, ""),
    ("auth.silly.realm", IMPLEMENTED, ""),
    ("auth.silly.service", IMPLEMENTED, ""),
    ("auth.htpasswd", IMPLEMENTED, ""),
    ("auth.htpasswd.realm", IMPLEMENTED, ""),
    ("auth.htpasswd.path", IMPLEMENTED, "bcrypt entries"),
    ("auth.token", IMPLEMENTED, ""),
    *(
        (f"auth.token.{name}", IMPLEMENTED, "")
        for name in [
            "realm",
            "service",
            "issuer",
            "rootcertbundle",
            "jwks",
            "autoredirect",
            "autoredirectpath",
            "signingalgorithms",
        ]
    ),
    ("middleware", IMPLEMENTED, "storage: by name, below"),
    ("middleware.registry", REFUSED, "not supported: Go middleware cannot be loaded"),
    ("middleware.repository", REFUSED, "not supported: Go middleware cannot be loaded"),
    ("middleware.storage[].redirect", IMPLEMENTED, "options.baseurl"),
    ("middleware.storage[].cloudfront", REFUSED, "not supported: needs CloudFront signing"),
    ("middleware.storage[].rewrite", REFUSED, "not supported: rewrites URLs for a CDN"),
    ("reporting", WARNED, _REPORTING),
    ("http", IMPLEMENTED, ""),
    ("http.addr", IMPLEMENTED, ""),
    ("http.net", IMPLEMENTED, "tcp or unix"),
    ("http.host", IMPLEMENTED, ""),
    ("http.prefix", IMPLEMENTED, ""),
    ("http.secret", IMPLEMENTED, ""),
    ("http.relativeurls", IMPLEMENTED, "relative by default (Go: absolute)"),
    ("http.draintimeout", IMPLEMENTED, "5s when unset (Go: none)"),
    ("http.tls", IMPLEMENTED, ""),
    ("http.tls.certificate", IMPLEMENTED, ""),
    ("http.tls.key", IMPLEMENTED, ""),
    ("http.tls.clientcas", IMPLEMENTED, "client certificates then required"),
    ("http.tls.clientauth", WARNED, "with http.tls.clientcas a certificate is always required"),
    ("http.tls.minimumtls", IMPLEMENTED, "tls1.2 or tls1.3"),
    ("http.tls.ciphersuites", IMPLEMENTED, ""),
    ("http.tls.letsencrypt", REFUSED, _NO_ACME),
    ("http.debug", IMPLEMENTED, _SECTION),
    ("http.debug.addr", IMPLEMENTED, ""),
    ("http.debug.prometheus", IMPLEMENTED, _SECTION),
    ("http.debug.prometheus.enabled", IMPLEMENTED, ""),
    ("http.debug.prometheus.path", IMPLEMENTED, ""),
    ("http.headers", IMPLEMENTED, ""),
    ("http.http2", WARNED, _HTTP2),
    ("http.h2c", WARNED, _HTTP2),
    ("notifications", IMPLEMENTED, _SECTION),
    ("notifications.events", IMPLEMENTED, _SECTION),
    ("notifications.events.includereferences", IMPLEMENTED, ""),
    ("notifications.endpoints", IMPLEMENTED, _SECTION),
    *((f"notifications.endpoints[].{name}", IMPLEMENTED, "") for name in _ENDPOINT_KEYS.split()),
    ("notifications.endpoints[].ignore.mediatypes", IMPLEMENTED, ""),
    ("notifications.endpoints[].ignore.actions", IMPLEMENTED, ""),
    ("redis", IMPLEMENTED, "2.8's form"),
    ("redis.addr", IMPLEMENTED, ""),
    ("redis.password", IMPLEMENTED, ""),
    ("redis.db", IMPLEMENTED, ""),
    ("redis.dialtimeout", IMPLEMENTED, ""),
    ("redis.readtimeout", IMPLEMENTED, ""),
    ("redis.writetimeout", IMPLEMENTED, ""),
    ("redis.pool", IMPLEMENTED, ""),
    ("redis.pool.maxidle", IMPLEMENTED, "accepted, not used"),
    ("redis.pool.maxactive", IMPLEMENTED, ""),
    ("redis.pool.idletimeout", IMPLEMENTED, ""),
    *((f"redis.{name}", IMPLEMENTED, "3.x form") for name in _REDIS3_DONE.split()),
    ("redis.tls.certificate", IMPLEMENTED, ""),
    ("redis.tls.key", IMPLEMENTED, ""),
    ("redis.tls.clientcas", IMPLEMENTED, "the first file only"),
    ("redis.tls.enabled", IMPLEMENTED, "2.8: TLS with the system's CAs"),
    *(
        (f"redis.{name}", IMPLEMENTED, "accepted; a warning at start")
        for name in _REDIS3_WARNED.split()
    ),
    *((f"redis.{name}", REFUSED, "not supported: Redis Sentinel") for name in _SENTINEL.split()),
    ("health", IMPLEMENTED, _SECTION),
    ("health.storagedriver", IMPLEMENTED, _SECTION),
    *(
        (f"health.storagedriver.{name}", IMPLEMENTED, "")
        for name in ("enabled", "interval", "threshold")
    ),
    ("health.file", IMPLEMENTED, _SECTION),
    *((f"health.file[].{name}", IMPLEMENTED, "") for name in ("file", "interval", "threshold")),
    ("health.http", IMPLEMENTED, _SECTION),
    *(
        (f"health.http[].{name}", IMPLEMENTED, "")
        for name in ("uri", "headers", "statuscode", "timeout", "interval", "threshold")
    ),
    ("health.tcp", IMPLEMENTED, _SECTION),
    *(
        (f"health.tcp[].{name}", IMPLEMENTED, "")
        for name in ("addr", "timeout", "interval", "threshold")
    ),
    ("catalog", IMPLEMENTED, _SECTION),
    ("catalog.maxentries", IMPLEMENTED, ""),
    ("proxy", IMPLEMENTED, ""),
    ("proxy.remoteurl", IMPLEMENTED, ""),
    ("proxy.username", IMPLEMENTED, ""),
    ("proxy.password", IMPLEMENTED, ""),
    ("proxy.ttl", IMPLEMENTED, ""),
    ("proxy.cachewritetimeout", IMPLEMENTED, "an overdue copy is abandoned, clients cut"),
    (
        "proxy.exec",
        REFUSED,
        "not supported: no credential helper is run; give proxy.username and proxy.password",
    ),
    ("compatibility", WARNED, _SCHEMA1),
    ("validation", IMPLEMENTED, _SECTION),
    ("validation.enabled", IMPLEMENTED, ""),
    ("validation.disabled", IMPLEMENTED, ""),
    ("validation.manifests", IMPLEMENTED, _SECTION),
    ("validation.manifests.urls", IMPLEMENTED, _SECTION),
    ("validation.manifests.urls.allow", IMPLEMENTED, "Python re, not RE2"),
    ("validation.manifests.urls.deny", IMPLEMENTED, "Python re, not RE2"),
    ("validation.manifests.indexes", IMPLEMENTED, _SECTION),
    ("validation.manifests.indexes.platforms", IMPLEMENTED, ""),
    ("validation.manifests.indexes.platformlist", IMPLEMENTED, ""),
    (
        "policy",
        REFUSED,
        "not supported: repository classes are not enforced, so accepting would allow more",
    ),
    ("access", IMPLEMENTED, "distblob's own access policy"),
)

_CLASSES: Final = {IMPLEMENTED: "implemented", WARNED: "warning", REFUSED: "refused"}
#: Maps of distribution's where naming a key is what counts (no zero-value leniency).
_PRESENCE_MAPS: Final = ("storage", "auth", "middleware")
#: Sections whose keys are all of class 2 or 3: the section parsers do not know them.
_UNPARSED: Final[tuple[str, ...]] = ()


@dataclass(frozen=True, slots=True)
class Finding:
    """One key of a document that is not simply implemented: ``kind`` is :data:`WARNED`,
    :data:`REFUSED`, or 0 for a key in no version of distribution."""

    key: str
    kind: int
    reason: str


_BY_KEY: Final = {pattern: (kind, why) for pattern, kind, why in CATALOGUE}


def lookup(key: str) -> tuple[int, str] | None:
    """The class and reason of a dotted key (list items written ``[]``), or ``None``."""
    return _BY_KEY.get(key)


def known_children(key: str) -> tuple[str, ...]:
    """The names the catalogue lists directly under ``key`` (``""``: the top level)."""
    prefix = f"{key}." if key else ""
    return tuple(
        dict.fromkeys(
            pattern[len(prefix) :].split(".")[0].removesuffix("[]")
            for pattern, _, _ in CATALOGUE
            if pattern.startswith(prefix) and pattern != key
        )
    )


def _suggest(key: str) -> str:
    parent, _, name = key.rpartition(".")
    near = difflib.get_close_matches(name, known_children(parent), n=1, cutoff=0.6)
    if not near:
        near = difflib.get_close_matches(key, list(_BY_KEY), n=1, cutoff=0.8)
        return f"unknown key (did you mean {near[0]}?)" if near else "unknown key"
    return f"unknown key (did you mean {parent + '.' if parent else ''}{near[0]}?)"


def _is_zero(value: object) -> bool:
    if isinstance(value, Mapping):
        return all(_is_zero(v) for v in value.values())
    if isinstance(value, list):
        return not value
    return value is None or value is False or value == "" or value == 0


def _all_disabled(value: object) -> bool:
    """Whether ``value`` is a list of items that each say ``disabled: true``."""
    return isinstance(value, list) and all(
        isinstance(item, Mapping) and item.get("disabled") is True for item in value
    )


def _middleware(value: object) -> Iterator[Finding]:
    for kind, entries in value.items() if isinstance(value, Mapping) else ():
        key = f"middleware.{kind}"
        if kind != "storage":
            found = lookup(key)
            yield Finding(key, *found) if found else Finding(key, 0, _suggest(key))
            continue
        if not isinstance(entries, list):
            yield Finding(key, REFUSED, "expected a list of {name, options}")
            continue
        for index, entry in enumerate(entries):
            name = entry.get("name") if isinstance(entry, Mapping) else None
            found = lookup(f"middleware.storage[].{name}")
            if found is not None and found[0] == IMPLEMENTED:
                continue  # checked by its parser (distblob.config.middleware)
            reason = found[1] if found else f"unknown storage middleware {name!r}"
            yield Finding(f"{key}[{index}]", REFUSED, f"{name}: {reason}")


def _walk(
    doc: Mapping[Any, Any], path: str, shown: str, drivers: tuple[str, ...]
) -> Iterator[Finding]:
    """The findings under ``doc``: ``path`` is its pattern (``[]`` for list items), ``shown``
    the key as reported (``[0]``)."""
    for name, value in doc.items():
        key = f"{path}.{name}" if path else str(name)
        at = f"{shown}.{name}" if shown else str(name)
        found = lookup(key)
        if found is None and path == "storage" and name in drivers:
            continue  # a driver registered with the factory checks its own parameters
        if found is None:
            reason = _suggest(key)
            yield Finding(at, 0, reason.replace(f"{path}.", f"{shown}.") if path else reason)
            continue
        kind, why = found
        if kind != IMPLEMENTED:
            if key == "log.hooks" and _all_disabled(value):
                continue  # hooks that are all disabled would do nothing in Go either
            if path.split(".")[0] in _PRESENCE_MAPS or not _is_zero(value):
                yield Finding(at, kind, why)
            continue
        if key == "middleware":
            yield from _middleware(value)
        elif isinstance(value, Mapping) and known_children(key):
            yield from _walk(value, key, at, drivers)
        elif isinstance(value, list) and known_children(f"{key}[]"):
            for index, item in enumerate(value):
                if isinstance(item, Mapping):
                    yield from _walk(item, f"{key}[]", f"{at}[{index}]", drivers)


def check_keys(doc: Mapping[Any, Any], drivers: tuple[str, ...] = ()) -> list[Finding]:
    """Every key of ``doc`` that is not implemented: warned, refused or unknown."""
    return list(_walk(doc, "", "", drivers))


def prune(doc: Mapping[Any, Any], findings: list[Finding]) -> dict[Any, Any]:
    """``doc`` without the keys of ``findings``, for the section parsers."""
    dropped = {finding.key for finding in findings}

    def keep(node: Mapping[Any, Any], path: str, shown: str) -> dict[Any, Any]:
        kept: dict[Any, Any] = {}
        for name, value in node.items():
            key = f"{path}.{name}" if path else str(name)
            at = f"{shown}.{name}" if shown else str(name)
            found = lookup(key)
            if at in dropped or key in _UNPARSED or (found and found[0] != IMPLEMENTED):
                continue
            if isinstance(value, Mapping):
                kept[name] = keep(value, key, at)
            elif isinstance(value, list):  # items flagged whole, or keys within them
                kept[name] = [
                    keep(item, f"{key}[]", f"{at}[{i}]") if isinstance(item, Mapping) else item
                    for i, item in enumerate(value)
                    if f"{at}[{i}]" not in dropped
                ]
            else:
                kept[name] = value
        return kept

    return keep(doc, "", "")


def markdown_table() -> str:
    """The docs' table of every key, its class and why (``docs/configuration.md``)."""
    rows = ["| key | class | distblob |", "|---|---|---|"]
    for pattern, kind, why in CATALOGUE:
        rows.append(f"| `{pattern}` | {_CLASSES[kind]} | {why} |")
    return "\n".join(rows) + "\n"


__all__ = [
    "CATALOGUE",
    "IMPLEMENTED",
    "NYI",
    "REFUSED",
    "WARNED",
    "Finding",
    "check_keys",
    "known_children",
    "lookup",
    "markdown_table",
    "prune",
]
