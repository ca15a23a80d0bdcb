"""``distblob serve``'s configuration: a YAML file with distribution's keys.

Only the keys distblob implements are accepted; any other key, or a value of the wrong type,
raises :class:`ConfigError` naming the dotted key (``storage.delete.enabled``), so a typo stops
the server before it starts instead of being silently ignored. A Go registry config that uses
only these keys is a valid distblob config::

    version: 0.1
    log: {level: info}
    storage:
      filesystem: {rootdirectory: /srv/registry}
      delete: {enabled: false}
      maintenance:
        uploadpurging: {enabled: true, age: 168h, interval: 24h, dryrun: false}
    http: {addr: 127.0.0.1:5000, secret: a-long-random-string}
    proxy: {remoteurl: https://registry-1.docker.io, username: u, password: p, ttl: 168h}

``proxy`` makes the server a pull-through cache of ``remoteurl`` (:mod:`distblob.proxy`).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

import yaml

from distblob.errors import DistblobError

DEFAULT_ROOT: Final = "./distblob-data"
DEFAULT_ADDR: Final = "127.0.0.1:5000"
LOG_LEVELS: Final = ("panic", "fatal", "error", "warn", "info", "debug", "trace")

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
class Config:
    version: str = "0.1"
    root: str = DEFAULT_ROOT
    delete_enabled: bool = False
    upload_purging: UploadPurging = field(default_factory=UploadPurging)
    addr: str = DEFAULT_ADDR
    secret: str | None = field(default=None, repr=False)
    log_level: str = "info"
    proxy: ProxyConfig | None = None

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
    if not sep or not port_text.isdigit() or int(port_text) > 65535:
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


def parse_config(doc: object) -> Config:
    """Validate a decoded YAML document and return the :class:`Config` it describes."""
    top = _section(doc, "", {"version", "storage", "http", "log", "proxy"})
    version = top.get("version", "0.1")
    if str(version) != "0.1":
        raise ConfigError("version", f"only version 0.1 is supported, not {version!r}")

    storage = _section(top.get("storage"), "storage", {"filesystem", "delete", "maintenance"})
    filesystem = _section(storage.get("filesystem"), "storage.filesystem", {"rootdirectory"})
    root = _str(filesystem, "rootdirectory", "storage.filesystem") or DEFAULT_ROOT
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

    http = _section(top.get("http"), "http", {"addr", "secret"})
    addr = _str(http, "addr", "http") or DEFAULT_ADDR
    parse_addr(addr)
    secret = _str(http, "secret", "http")

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
            ttl=parse_duration(raw.get("ttl", "168h"), "proxy.ttl"),
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


__all__ = [
    "DEFAULT_ADDR",
    "DEFAULT_ROOT",
    "Config",
    "ConfigError",
    "ProxyConfig",
    "UploadPurging",
    "load_config",
    "parse_addr",
    "parse_config",
    "parse_duration",
]
