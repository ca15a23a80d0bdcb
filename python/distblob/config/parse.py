"""A decoded YAML document, or a file, into a checked :class:`~distblob.config.tree.Config`."""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import yaml

from distblob.config.access import parse_access, parse_auth
from distblob.config.catalog import parse_catalog
from distblob.config.env import apply_env, name_variables
from distblob.config.keys import WARNED, check_keys, prune
from distblob.config.middleware import parse_middleware
from distblob.config.notifications import parse_notifications
from distblob.config.observability import parse_health
from distblob.config.sections import parse_http, parse_log, parse_proxy, parse_redis, parse_storage
from distblob.config.tree import Config
from distblob.config.validation import parse_validation
from distblob.config.values import ConfigError, ConfigErrors
from distblob.storage.driver import factory


def _named(doc: Mapping[str, Any]) -> dict[str, Any]:
    """``doc`` with distribution's bare-name forms read as mappings: ``storage: s3`` and
    ``auth: htpasswd`` name a driver or a controller with no parameters."""
    top = dict(doc)
    for section in ("storage", "auth"):
        if isinstance(top.get(section), str):
            top[section] = {top[section]: {}}
    return top


def _sections(top: Mapping[str, Any], errors: list[ConfigError]) -> dict[str, Any]:
    """Each section parsed in turn, its :class:`ConfigError` collected in ``errors`` rather
    than stopping the others."""
    parsed: dict[str, Any] = {}

    def run(name: str, parse: Callable[[Any], object], *, optional: bool = False) -> None:
        if optional and top.get(name) is None:
            parsed[name] = None
            return
        try:
            parsed[name] = parse(top.get(name))
        except ConfigErrors as exc:
            errors.extend(exc.errors)
        except ConfigError as exc:
            errors.append(exc)

    version = top.get("version", "0.1")
    if str(version) != "0.1":
        errors.append(ConfigError("version", f"only version 0.1 is supported, not {version!r}"))
    run("storage", parse_storage)
    run("redis", parse_redis, optional=True)
    run("http", parse_http)
    # distribution: the deprecated top-level loglevel counts when log.level is not given.
    log = top.get("log")
    if top.get("loglevel") is not None and not (isinstance(log, Mapping) and log.get("level")):
        log = {**(log if isinstance(log, Mapping) else {}), "level": top["loglevel"]}
    run("log", lambda _: parse_log(log))
    run("proxy", parse_proxy, optional=True)
    run("auth", parse_auth, optional=True)
    if "auth" in parsed:  # the policy's check needs to know whether auth is configured
        run("access", lambda doc: parse_access(doc, parsed["auth"]), optional=True)
    run("catalog", parse_catalog)
    run("validation", parse_validation)
    run("middleware", parse_middleware)
    run("health", parse_health)
    run("notifications", parse_notifications)
    storage, redis = parsed.get("storage"), parsed.get("redis")
    if storage is not None and storage.cache.blobdescriptor == "redis" and "redis" in parsed:
        if redis is None:
            errors.append(
                ConfigError("redis.addr", "required by storage.cache.blobdescriptor: redis")
            )
        elif importlib.util.find_spec("redis") is None:
            errors.append(
                ConfigError(
                    "storage.cache.blobdescriptor",
                    "redis needs the redis package: pip install 'distblob[redis]'",
                )
            )
    return parsed


def parse_config(
    doc: object, *, warnings: Sequence[str] = (), errors: Sequence[ConfigError] = ()
) -> Config:
    """Validate a decoded YAML document and return the :class:`Config` it describes.

    Every problem is reported at once: the keys the catalogue (:mod:`distblob.config.keys`)
    refuses or does not know, then each section's. One problem raises its
    :class:`ConfigError`; more raise :class:`ConfigErrors`, listing them all. ``warnings`` (the
    environment's) come first in :attr:`Config.warnings`, before the keys accepted without
    effect; ``errors`` (the variables that could not be applied) come first in the report.
    """
    if doc is None:
        doc = {}
    if not isinstance(doc, Mapping):
        kind = ConfigError("", f"expected a mapping, not {type(doc).__name__}")
        raise ConfigErrors([*errors, kind]) if errors else kind
    top = _named(doc)
    findings = check_keys(top, factory.names())
    problems = [*errors, *(ConfigError(f.key, f.reason) for f in findings if f.kind != WARNED)]
    notes = [f"{f.key}: accepted without effect: {f.reason}" for f in findings if f.kind == WARNED]
    parsed = _sections(prune(top, findings), problems)
    ConfigErrors.raise_if_any(problems)
    return Config(
        version="0.1",
        log=parsed["log"],
        storage=parsed["storage"],
        http=parsed["http"],
        redis=parsed["redis"],
        proxy=parsed["proxy"],
        auth=parsed["auth"],
        access=parsed["access"],
        catalog=parsed["catalog"],
        validation=parsed["validation"],
        middleware=parsed["middleware"],
        health=parsed["health"],
        notifications=parsed["notifications"],
        warnings=(*warnings, *notes),
    )


def load_config(
    path: str | os.PathLike[str] | None, environ: Mapping[str, str] | None = None
) -> Config:
    """Read and validate a YAML config file (``None``: none, the defaults), with the
    ``REGISTRY_*`` variables of ``environ`` (:data:`os.environ` by default) over it
    (:mod:`distblob.config.env`)."""
    doc: object = None
    if path is not None:
        try:
            with open(path, encoding="utf-8") as source:
                doc = yaml.safe_load(source)
        except OSError as exc:
            reason = f"cannot read {os.fspath(path)!r}: {exc.strerror or exc}"
            raise ConfigError("", reason) from None
        except (yaml.YAMLError, UnicodeDecodeError) as exc:
            raise ConfigError("", f"{os.fspath(path)!r} is not valid YAML: {exc}") from None
        if doc is None:
            # As distribution ("unsupported version"): a file named but holding nothing is more
            # likely a mount or a template gone wrong than a wish for every default.
            reason = f"{os.fspath(path)!r} is empty: give at least 'version: 0.1'"
            raise ConfigError("", reason)
    env_errors: list[ConfigError] = []
    origins: dict[str, str] = {}
    environment = os.environ if environ is None else environ
    doc, warnings = apply_env(doc, environment, env_errors, origins)
    try:
        return parse_config(doc, warnings=warnings, errors=env_errors)
    except ConfigError as exc:
        # Name the variable behind a key no file holds; and keep the warnings of variables
        # ignored, which are often the same mistake (a misspelt REGISTRY_* name).
        found = exc.errors if isinstance(exc, ConfigErrors) else [exc]
        named = [name_variables(error, origins) for error in found]
        refused = named[0] if len(named) == 1 else ConfigErrors(named)
        refused.warnings = tuple(warnings)
        raise refused from None


__all__ = [
    "load_config",
    "parse_config",
]
