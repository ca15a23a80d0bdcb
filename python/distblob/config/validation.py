"""``validation``: which foreign-layer URLs a pushed manifest may name (``manifests.urls``,
regular expressions) and which children of an image index must exist (3.x
``manifests.indexes``). The storage layer applies them
(:class:`distblob.storage.validation.ManifestValidation`)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from distblob.config.values import ConfigError, checked_section, get_bool, get_str_list

#: ``validation.manifests.indexes.platforms`` values (distribution lowercases them).
INDEX_PLATFORMS: Final = ("all", "none", "list")


@dataclass(frozen=True, slots=True)
class Platform:
    """One entry of ``validation.manifests.indexes.platformlist``."""

    architecture: str
    os: str


@dataclass(frozen=True, slots=True)
class Validation:
    """``validation``. ``enabled`` is distribution's rule: ``enabled: true``, or not
    ``disabled: true``. Enabled with neither ``allow`` nor ``deny``, no URL is allowed;
    disabled, any http(s) URL is. ``platforms``: ``all`` (every child of an index must be in
    the repository), ``none``, or ``list`` (those of ``platformlist``)."""

    enabled: bool = True
    allow: tuple[str, ...] = ()
    deny: tuple[str, ...] = ()
    platforms: str = "all"
    platformlist: tuple[Platform, ...] = ()


def _patterns(section: Mapping[str, Any], name: str) -> tuple[str, ...]:
    key = "validation.manifests.urls"
    patterns = get_str_list(section, name, key)
    for pattern in patterns:
        try:
            re.compile(pattern)
        except re.error as exc:
            reason = f"{pattern!r} is not a regular expression: {exc}"
            raise ConfigError(f"{key}.{name}", reason) from None
    return patterns


def _platform_list(value: object) -> tuple[Platform, ...]:
    key = "validation.manifests.indexes.platformlist"
    if value is None:
        return ()
    if not isinstance(value, list):
        raise ConfigError(key, f"expected a list of {{architecture, os}}, not {value!r}")
    found = []
    for i, item in enumerate(value):
        entry = checked_section(item, f"{key}[{i}]", {"architecture", "os"})
        architecture, os_name = entry.get("architecture", ""), entry.get("os", "")
        if not isinstance(architecture, str) or not isinstance(os_name, str):
            raise ConfigError(f"{key}[{i}]", "architecture and os are strings")
        found.append(Platform(architecture, os_name))
    return tuple(found)


def parse_validation(doc: object) -> Validation:
    raw = checked_section(doc, "validation", {"enabled", "disabled", "manifests"})
    enabled = get_bool(raw, "enabled", "validation", False) or not get_bool(
        raw, "disabled", "validation", False
    )
    manifests = checked_section(raw.get("manifests"), "validation.manifests", {"urls", "indexes"})
    urls = checked_section(manifests.get("urls"), "validation.manifests.urls", {"allow", "deny"})
    key = "validation.manifests.indexes"
    indexes = checked_section(manifests.get("indexes"), key, {"platforms", "platformlist"})
    platforms = indexes.get("platforms") or "all"
    if not isinstance(platforms, str) or platforms.lower() not in INDEX_PLATFORMS:
        raise ConfigError(f"{key}.platforms", f"expected one of all, none, list, not {platforms!r}")
    return Validation(
        enabled=enabled,
        allow=_patterns(urls, "allow"),
        deny=_patterns(urls, "deny"),
        platforms=platforms.lower(),
        platformlist=_platform_list(indexes.get("platformlist")),
    )


__all__ = ["INDEX_PLATFORMS", "Platform", "Validation", "parse_validation"]
