"""A decoded YAML document, or a file, into a checked :class:`~distblob.config.tree.Config`."""

from __future__ import annotations

import importlib.util
import os

import yaml

from distblob.config.access import parse_access, parse_auth
from distblob.config.notifications import parse_notifications
from distblob.config.sections import parse_http, parse_log, parse_proxy, parse_redis, parse_storage
from distblob.config.tree import Config
from distblob.config.values import ConfigError, checked_section


def parse_config(doc: object) -> Config:
    """Validate a decoded YAML document and return the :class:`Config` it describes."""
    top = checked_section(
        doc,
        "",
        {"version", "storage", "http", "log", "proxy", "redis", "auth", "access", "notifications"},
    )
    version = top.get("version", "0.1")
    if str(version) != "0.1":
        raise ConfigError("version", f"only version 0.1 is supported, not {version!r}")
    storage = parse_storage(top.get("storage"))
    redis = parse_redis(top["redis"]) if top.get("redis") is not None else None
    if storage.cache.blobdescriptor == "redis":
        if redis is None:
            raise ConfigError("redis.addr", "required by storage.cache.blobdescriptor: redis")
        if importlib.util.find_spec("redis") is None:
            raise ConfigError(
                "storage.cache.blobdescriptor",
                "redis needs the redis package: pip install 'distblob[redis]'",
            )
    http = parse_http(top.get("http"))
    log = parse_log(top.get("log"))
    proxy = parse_proxy(top["proxy"]) if top.get("proxy") is not None else None
    auth = parse_auth(top["auth"]) if top.get("auth") is not None else None
    access = parse_access(top["access"], auth) if top.get("access") is not None else None
    return Config(
        version="0.1",
        log=log,
        storage=storage,
        http=http,
        redis=redis,
        proxy=proxy,
        auth=auth,
        access=access,
        notifications=parse_notifications(top.get("notifications")),
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
    "load_config",
    "parse_config",
]
