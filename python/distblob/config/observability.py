"""``health`` and ``http.debug``: the periodic health checks and the debug listener (its
``/debug/health`` and, with ``prometheus``, its metrics), as distribution configures them.

Every check has distribution's ``interval`` (10 s when unset or 0) and, but ``file``, its
``threshold``: that many failures in a row before the check reports unhealthy (0: the first).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from distblob.config.values import (
    ConfigError,
    checked_section,
    get_bool,
    get_duration,
    get_int,
    get_str,
    parse_addr,
)

#: A check's ``interval`` when unset or 0 (distribution's ``defaultCheckInterval``).
DEFAULT_CHECK_INTERVAL: Final = 10.0
#: ``http.debug.prometheus.path`` when unset.
DEFAULT_METRICS_PATH: Final = "/metrics"


@dataclass(frozen=True, slots=True)
class StorageDriverCheck:
    """``health.storagedriver``: ``stat /`` on the storage driver (a missing root passes)."""

    enabled: bool = False
    interval: float = DEFAULT_CHECK_INTERVAL
    threshold: int = 0


@dataclass(frozen=True, slots=True)
class FileCheck:
    """``health.file[]``: unhealthy while ``file`` exists (a way to take a registry out of
    rotation)."""

    file: str
    interval: float = DEFAULT_CHECK_INTERVAL


@dataclass(frozen=True, slots=True)
class HTTPCheck:
    """``health.http[]``: a ``HEAD`` of ``uri`` (with ``headers``) must answer ``statuscode``
    within ``timeout`` seconds (0: the interval)."""

    uri: str
    headers: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    statuscode: int = 200
    timeout: float = 0.0
    interval: float = DEFAULT_CHECK_INTERVAL
    threshold: int = 0


@dataclass(frozen=True, slots=True)
class TCPCheck:
    """``health.tcp[]``: a TCP connection to ``addr`` (``host:port``) must open within
    ``timeout`` seconds (0: the interval)."""

    addr: str
    timeout: float = 0.0
    interval: float = DEFAULT_CHECK_INTERVAL
    threshold: int = 0


@dataclass(frozen=True, slots=True)
class Health:
    """``health``: the checks the server runs (none by default)."""

    storagedriver: StorageDriverCheck = field(default_factory=StorageDriverCheck)
    file: tuple[FileCheck, ...] = ()
    http: tuple[HTTPCheck, ...] = ()
    tcp: tuple[TCPCheck, ...] = ()

    @property
    def any(self) -> bool:
        """Whether any check is configured."""
        return self.storagedriver.enabled or bool(self.file or self.http or self.tcp)


@dataclass(frozen=True, slots=True)
class Prometheus:
    """``http.debug.prometheus``: metrics served at ``path`` on the debug listener."""

    enabled: bool = False
    path: str = DEFAULT_METRICS_PATH


@dataclass(frozen=True, slots=True)
class Debug:
    """``http.debug``: the debug listener at ``addr`` (``/debug/health``, the metrics)."""

    addr: str
    prometheus: Prometheus = field(default_factory=Prometheus)


def _interval(section: Mapping[str, Any], key: str) -> float:
    return get_duration(section, "interval", key, DEFAULT_CHECK_INTERVAL) or DEFAULT_CHECK_INTERVAL


def _list(doc: object, key: str) -> list[object]:
    if doc is None:
        return []
    if not isinstance(doc, list):
        raise ConfigError(key, f"expected a list, not {type(doc).__name__}")
    return doc


def _required(section: Mapping[str, Any], name: str, key: str) -> str:
    value = get_str(section, name, key)
    if value is None:
        raise ConfigError(f"{key}.{name}", "required")
    return value


def _headers(doc: object, key: str) -> dict[str, tuple[str, ...]]:
    """``headers``: each name to a list of values (distribution's ``http.Header``)."""
    if doc is None:
        return {}
    if not isinstance(doc, Mapping):
        raise ConfigError(key, f"expected a mapping, not {type(doc).__name__}")
    headers: dict[str, tuple[str, ...]] = {}
    for name, values in doc.items():
        if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
            raise ConfigError(f"{key}.{name}", f"expected a list of strings, not {values!r}")
        headers[str(name)] = tuple(values)
    return headers


def _file_check(doc: object, key: str) -> FileCheck:
    # ``threshold`` is in distribution's struct and used by none of its versions.
    raw = checked_section(doc, key, {"file", "interval", "threshold"})
    get_int(raw, "threshold", key, 0)
    return FileCheck(file=_required(raw, "file", key), interval=_interval(raw, key))


def _http_check(doc: object, key: str) -> HTTPCheck:
    raw = checked_section(
        doc, key, {"uri", "headers", "statuscode", "timeout", "interval", "threshold"}
    )
    uri = _required(raw, "uri", key)
    if not uri.startswith(("http://", "https://")):
        raise ConfigError(f"{key}.uri", f"expected an http(s) URL, not {uri!r}")
    return HTTPCheck(
        uri=uri,
        headers=_headers(raw.get("headers"), f"{key}.headers"),
        statuscode=get_int(raw, "statuscode", key, 0) or 200,
        timeout=get_duration(raw, "timeout", key, 0.0),
        interval=_interval(raw, key),
        threshold=get_int(raw, "threshold", key, 0),
    )


def _tcp_check(doc: object, key: str) -> TCPCheck:
    raw = checked_section(doc, key, {"addr", "timeout", "interval", "threshold"})
    addr = _required(raw, "addr", key)
    parse_addr(addr, f"{key}.addr")
    return TCPCheck(
        addr=addr,
        timeout=get_duration(raw, "timeout", key, 0.0),
        interval=_interval(raw, key),
        threshold=get_int(raw, "threshold", key, 0),
    )


def parse_health(doc: object) -> Health:
    raw = checked_section(doc, "health", {"storagedriver", "file", "http", "tcp"})
    key = "health.storagedriver"
    driver = checked_section(raw.get("storagedriver"), key, {"enabled", "interval", "threshold"})
    return Health(
        storagedriver=StorageDriverCheck(
            enabled=get_bool(driver, "enabled", key, False),
            interval=_interval(driver, key),
            threshold=get_int(driver, "threshold", key, 0),
        ),
        file=tuple(
            _file_check(item, f"health.file[{i}]")
            for i, item in enumerate(_list(raw.get("file"), "health.file"))
        ),
        http=tuple(
            _http_check(item, f"health.http[{i}]")
            for i, item in enumerate(_list(raw.get("http"), "health.http"))
        ),
        tcp=tuple(
            _tcp_check(item, f"health.tcp[{i}]")
            for i, item in enumerate(_list(raw.get("tcp"), "health.tcp"))
        ),
    )


def parse_debug(doc: object) -> Debug | None:
    """``http.debug``; ``None`` without an ``addr`` (no debug listener, as in distribution,
    which then serves neither ``/debug/health`` nor the metrics)."""
    raw = checked_section(doc, "http.debug", {"addr", "prometheus"})
    key = "http.debug.prometheus"
    prometheus = checked_section(raw.get("prometheus"), key, {"enabled", "path"})
    enabled = get_bool(prometheus, "enabled", key, False)
    path = get_str(prometheus, "path", key) or DEFAULT_METRICS_PATH
    if not path.startswith("/") or path.startswith("/debug/health"):
        raise ConfigError(f"{key}.path", f"expected a path such as /metrics, not {path!r}")
    addr = get_str(raw, "addr", "http.debug")
    if addr is None:
        if enabled:
            logging.getLogger("distblob.config").warning(
                "http.debug.prometheus.enabled has no effect without http.debug.addr"
            )
        return None
    parse_addr(addr, "http.debug.addr")
    return Debug(addr=addr, prometheus=Prometheus(enabled=enabled, path=path))


__all__ = [
    "DEFAULT_CHECK_INTERVAL",
    "DEFAULT_METRICS_PATH",
    "Debug",
    "FileCheck",
    "HTTPCheck",
    "Health",
    "Prometheus",
    "StorageDriverCheck",
    "TCPCheck",
    "parse_debug",
    "parse_health",
]
