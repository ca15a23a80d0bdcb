"""``notifications``: the webhook endpoints events are sent to (distribution's
``Notifications`` and ``Endpoint``), and how manifest events are written
(``events.includereferences``).

Defaults are distribution's, applied here so the tree holds what is used: ``timeout`` 1s,
``threshold`` 10, ``backoff`` 1s. Unlike distribution, an ``ignore.actions`` entry that is no
event action is refused (it would ignore nothing), and an enabled endpoint needs ``name`` and
``url``.
"""

from __future__ import annotations

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
    get_str_list,
)

#: The actions events have (distribution's ``EventAction*``).
EVENT_ACTIONS: Final = ("pull", "push", "mount", "delete")
#: distribution's defaults for an endpoint's ``timeout``, ``threshold`` and ``backoff``.
DEFAULT_TIMEOUT: Final = 1.0
DEFAULT_THRESHOLD: Final = 10
DEFAULT_BACKOFF: Final = 1.0

_ENDPOINT_KEYS: Final = {
    "name",
    "disabled",
    "url",
    "headers",
    "timeout",
    "threshold",
    "backoff",
    "ignoredmediatypes",
    "ignore",
}


@dataclass(frozen=True, slots=True)
class Endpoint:
    """``notifications.endpoints[]``: where events are POSTed. ``headers`` maps a name to its
    values (Go's ``http.Header``); ``timeout`` and ``backoff`` in seconds; after ``threshold``
    failures in a row, each retry waits ``backoff``. ``ignoredmediatypes`` and
    ``ignore.mediatypes`` are merged into ``ignored_media_types``; ``ignore.actions`` is
    ``ignored_actions``."""

    name: str
    url: str
    disabled: bool = False
    headers: Mapping[str, tuple[str, ...]] = field(default_factory=dict, repr=False)
    timeout: float = DEFAULT_TIMEOUT
    threshold: int = DEFAULT_THRESHOLD
    backoff: float = DEFAULT_BACKOFF
    ignored_media_types: frozenset[str] = frozenset()
    ignored_actions: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class Notifications:
    """``notifications``: ``includereferences`` adds a manifest's references to its events."""

    includereferences: bool = False
    endpoints: tuple[Endpoint, ...] = ()

    @property
    def enabled(self) -> tuple[Endpoint, ...]:
        """The endpoints events are sent to (those not ``disabled``)."""
        return tuple(endpoint for endpoint in self.endpoints if not endpoint.disabled)


def _headers(doc: object, key: str) -> dict[str, tuple[str, ...]]:
    """Go's ``http.Header`` from YAML: each name maps to a list of strings."""
    section = checked_section(doc, key, set(doc) if isinstance(doc, Mapping) else set())
    headers: dict[str, tuple[str, ...]] = {}
    for name, values in section.items():
        if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
            raise ConfigError(f"{key}.{name}", f"expected a list of strings, not {values!r}")
        headers[name] = tuple(values)
    return headers


def _endpoint(doc: object, key: str) -> Endpoint:
    section = checked_section(doc, key, _ENDPOINT_KEYS)
    disabled = get_bool(section, "disabled", key, False)
    name = get_str(section, "name", key)
    url = get_str(section, "url", key)
    if not disabled:
        for value, field_name in ((name, "name"), (url, "url")):
            if value is None:
                raise ConfigError(f"{key}.{field_name}", "required")
        assert url is not None
        if not url.startswith(("http://", "https://")):
            raise ConfigError(f"{key}.url", f"expected an http or https URL, not {url!r}")
    ignore = checked_section(section.get("ignore"), f"{key}.ignore", {"mediatypes", "actions"})
    actions = get_str_list(ignore, "actions", f"{key}.ignore")
    for action in actions:
        if action not in EVENT_ACTIONS:
            raise ConfigError(
                f"{key}.ignore.actions", f"{action!r} is none of {', '.join(EVENT_ACTIONS)}"
            )
    media_types = get_str_list(section, "ignoredmediatypes", key)
    media_types += get_str_list(ignore, "mediatypes", f"{key}.ignore")
    return Endpoint(
        name=name or "",
        url=url or "",
        disabled=disabled,
        headers=_headers(section.get("headers"), f"{key}.headers"),
        timeout=get_duration(section, "timeout", key, 0.0) or DEFAULT_TIMEOUT,
        threshold=get_int(section, "threshold", key, 0) or DEFAULT_THRESHOLD,
        backoff=get_duration(section, "backoff", key, 0.0) or DEFAULT_BACKOFF,
        ignored_media_types=frozenset(media_types),
        ignored_actions=frozenset(actions),
    )


def parse_notifications(doc: object) -> Notifications:
    """``notifications`` (absent: no endpoints)."""
    top = checked_section(doc, "notifications", {"events", "endpoints"})
    events = checked_section(top.get("events"), "notifications.events", {"includereferences"})
    raw: Any = top.get("endpoints") or []
    if not isinstance(raw, list):
        raise ConfigError("notifications.endpoints", f"expected a list, not {raw!r}")
    endpoints = tuple(
        _endpoint(item, f"notifications.endpoints[{index}]") for index, item in enumerate(raw)
    )
    names = [endpoint.name for endpoint in endpoints if not endpoint.disabled]
    for name in names:
        if names.count(name) > 1:
            raise ConfigError(
                "notifications.endpoints", f"two endpoints named {name!r} (each has its queue)"
            )
    return Notifications(
        includereferences=get_bool(events, "includereferences", "notifications.events", False),
        endpoints=endpoints,
    )


__all__ = [
    "DEFAULT_BACKOFF",
    "DEFAULT_THRESHOLD",
    "DEFAULT_TIMEOUT",
    "EVENT_ACTIONS",
    "Endpoint",
    "Notifications",
    "parse_notifications",
]
