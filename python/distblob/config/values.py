"""The config's values: :class:`ConfigError`, the defaults, and how a key's value is read
(Go durations, ``host:port`` addresses, and the typed getters every section uses, each naming
the dotted key at fault)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, Final

from distblob._numbers import is_ascii_digits
from distblob.errors import DistblobError
from distblob.storage.driver.filesystem import DEFAULT_ROOT_DIRECTORY

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
STORAGE_KEYS: Final = ("delete", "maintenance", "cache", "redirect", "tag")

_UNITS: Final = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
_DURATION_PART: Final = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)")


class ConfigError(DistblobError, ValueError):
    """A configuration that cannot be used; ``key`` is the dotted key at fault."""

    def __init__(self, key: str, reason: str) -> None:
        super().__init__(f"config: {key}: {reason}" if key else f"config: {reason}")
        self.key = key
        self.reason = reason
        #: Warnings of the same config (variables ignored), for a report that stops on errors.
        self.warnings: tuple[str, ...] = ()


class ConfigErrors(ConfigError):
    """Every problem of a config at once: ``errors`` in document order; ``key`` and
    ``reason`` are the first one's, and the message lists them all, one per line."""

    def __init__(self, errors: list[ConfigError]) -> None:
        super().__init__(errors[0].key, errors[0].reason)
        self.errors = errors
        self.args = ("\n".join(str(error) for error in errors),)

    @classmethod
    def raise_if_any(cls, errors: list[ConfigError]) -> None:
        """Raise nothing for no error, the error itself for one, :class:`ConfigErrors` for
        more."""
        if len(errors) == 1:
            raise errors[0]
        if errors:
            raise cls(errors)


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


def checked_section(doc: object, key: str, allowed: set[str]) -> Mapping[str, Any]:
    if doc is None:
        return {}
    if not isinstance(doc, Mapping):
        raise ConfigError(key, f"expected a mapping, not {type(doc).__name__}")
    for name in doc:
        if not isinstance(name, str) or name not in allowed:
            dotted = f"{key}.{name}" if key else str(name)
            raise ConfigError(dotted, "unknown key")
    return doc


def get_bool(section: Mapping[str, Any], name: str, key: str, default: bool) -> bool:
    value = section.get(name, default)
    if not isinstance(value, bool):
        raise ConfigError(f"{key}.{name}", f"expected true or false, not {value!r}")
    return value


def get_str(section: Mapping[str, Any], name: str, key: str) -> str | None:
    value = section.get(name)
    if value is None:
        return None
    if not isinstance(value, str) or not value:
        raise ConfigError(f"{key}.{name}", f"expected a non-empty string, not {value!r}")
    return value


def get_int(section: Mapping[str, Any], name: str, key: str, default: int) -> int:
    value = section.get(name, default)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ConfigError(f"{key}.{name}", f"expected a whole number >= 0, not {value!r}")
    return value


def get_duration(section: Mapping[str, Any], name: str, key: str, default: float) -> float:
    """``<key>.<name>`` in seconds: ``default`` when the config does not give it (or leaves it
    empty, ``name:`` alone in YAML)."""
    value = section.get(name)
    return default if value is None else parse_duration(value, f"{key}.{name}")


def get_str_list(section: Mapping[str, Any], name: str, key: str) -> tuple[str, ...]:
    """``<key>.<name>``: a list of non-empty strings (empty when not given)."""
    value = section.get(name)
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise ConfigError(f"{key}.{name}", f"expected a list of non-empty strings, not {value!r}")
    return tuple(value)


def required_str(section: Mapping[str, Any], name: str, key: str) -> str:
    value = get_str(section, name, key)
    if value is None:
        raise ConfigError(f"{key}.{name}", "required")
    return value


__all__ = [
    "AUTH_CONTROLLERS",
    "BLOB_DESCRIPTOR_CACHES",
    "DEFAULT_ADDR",
    "DEFAULT_DRAIN_TIMEOUT",
    "DEFAULT_DRIVER",
    "DEFAULT_MINIMUM_TLS",
    "DEFAULT_ROOT",
    "IMPLEMENTED_AUTH",
    "LOG_LEVELS",
    "TLS_VERSIONS",
    "ConfigError",
    "ConfigErrors",
    "checked_section",
    "get_bool",
    "get_duration",
    "get_int",
    "get_str",
    "get_str_list",
    "parse_addr",
    "parse_duration",
    "required_str",
]
