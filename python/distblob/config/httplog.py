"""The keys of ``http`` that shape what a client sees (``net``, ``prefix``, ``host``,
``relativeurls``, ``headers``) and those of ``log`` beyond its level (``formatter``,
``fields``, ``accesslog``), each read and checked as distribution reads it."""

from __future__ import annotations

import urllib.parse
from collections.abc import Mapping
from typing import Any, Final

from distblob.config.tree import AccessLog
from distblob.config.values import (
    ConfigError,
    checked_section,
    get_bool,
    get_str,
    parse_addr,
)

#: ``http.net`` values (distribution's listener: an empty one is ``tcp``).
NETS: Final = ("tcp", "unix")
#: ``log.formatter`` values (:mod:`distblob.logs`).
FORMATTERS: Final = ("text", "json", "logstash")
#: The keys of ``http`` read here.
HTTP_KEYS: Final = ("net", "prefix", "host", "relativeurls", "headers")
#: The keys of ``log`` read here.
LOG_KEYS: Final = ("formatter", "fields", "accesslog")


def parse_net(http: Mapping[str, Any], addr: str) -> str:
    """``http.net``; with ``tcp`` (the default) ``addr`` must be ``host:port``, with ``unix``
    it is the socket's path."""
    net = http.get("net") or "tcp"
    if net not in NETS:
        raise ConfigError("http.net", f"expected tcp or unix, not {net!r}")
    if net == "tcp":
        parse_addr(addr)
    return str(net)


def parse_prefix(http: Mapping[str, Any]) -> str:
    """``http.prefix`` without its trailing slash (``/registry/`` serves
    ``/registry/v2/``, as distribution's router joins them); empty for none."""
    prefix = get_str(http, "prefix", "http") or ""
    if prefix and not prefix.startswith("/"):
        raise ConfigError("http.prefix", f"expected a path such as /registry/, not {prefix!r}")
    return prefix.rstrip("/")


def parse_host(http: Mapping[str, Any]) -> str | None:
    """``http.host``: a URL with a scheme and a host (distribution ignores one without;
    distblob refuses it, as it can only be a mistake)."""
    host = get_str(http, "host", "http")
    if host is None:
        return None
    parts = urllib.parse.urlsplit(host)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ConfigError(
            "http.host", f"expected a URL such as https://registry.example.com, not {host!r}"
        )
    return host


def parse_relativeurls(http: Mapping[str, Any]) -> bool | None:
    """``http.relativeurls``, ``None`` when the config does not give it."""
    if http.get("relativeurls") is None:
        return None
    return get_bool(http, "relativeurls", "http", False)


def parse_headers(http: Mapping[str, Any]) -> dict[str, tuple[str, ...]]:
    """``http.headers``: each name to a list of values (sent as one header line each, as Go
    adds them)."""
    raw = http.get("headers")
    if raw is None:
        return {}
    if not isinstance(raw, Mapping):
        raise ConfigError("http.headers", f"expected a mapping, not {type(raw).__name__}")
    headers: dict[str, tuple[str, ...]] = {}
    for name, values in raw.items():
        key = f"http.headers.{name}"
        if not isinstance(name, str) or not name or not name.isascii() or " " in name:
            raise ConfigError(key, "expected a header name")
        if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
            raise ConfigError(key, f"expected a list of strings, not {values!r}")
        if any("\r" in v or "\n" in v for v in values):
            raise ConfigError(key, "a value cannot hold a line break")
        headers[name] = tuple(values)
    return headers


def parse_formatter(log: Mapping[str, Any]) -> str:
    """``log.formatter``: ``text`` (the default), ``json`` or ``logstash``."""
    formatter = log.get("formatter") or "text"
    if formatter not in FORMATTERS:
        raise ConfigError("log.formatter", f"expected text, json or logstash, not {formatter!r}")
    return str(formatter)


def parse_fields(log: Mapping[str, Any]) -> dict[str, Any]:
    """``log.fields``: names to values added to every line."""
    fields = log.get("fields")
    if fields is None:
        return {}
    if not isinstance(fields, Mapping) or not all(isinstance(k, str) for k in fields):
        raise ConfigError("log.fields", "expected a mapping of names to values")
    return dict(fields)


def parse_accesslog(log: Mapping[str, Any]) -> AccessLog:
    """``log.accesslog``."""
    section = checked_section(log.get("accesslog"), "log.accesslog", {"disabled"})
    return AccessLog(disabled=get_bool(section, "disabled", "log.accesslog", False))


__all__ = [
    "FORMATTERS",
    "HTTP_KEYS",
    "LOG_KEYS",
    "NETS",
    "parse_accesslog",
    "parse_fields",
    "parse_formatter",
    "parse_headers",
    "parse_host",
    "parse_net",
    "parse_prefix",
    "parse_relativeurls",
]
