"""``REGISTRY_*`` environment variables over the config file, by distribution's rules.

``REGISTRY_HTTP_ADDR`` sets ``http.addr``: after the prefix, the name is split on ``_`` and each
part names a key, compared in upper case (so a key with ``_`` in its name cannot be set).
Variables are applied in the order of their names, after the file, so a shorter one such as
``REGISTRY_AUTH=htpasswd`` (a whole subtree; ``storage`` and ``auth`` take a bare name as
``{name: {}}``) comes before ``REGISTRY_AUTH_HTPASSWD_PATH`` that adds to it. The value is read as
YAML (``true`` a boolean, ``5`` a number, ``[a, b]`` a list, ``{...}`` a mapping), except for the
keys that are strings in distribution's configuration struct, which keep a scalar's text (``true``
stays ``"true"``) and refuse a list or a mapping, as Go's YAML decoder does. In a
list, a part is an index: the next free one appends an item (``..._ENDPOINTS_0_URL``).

Inside distribution's maps (``storage``, ``auth``, ``middleware``, ``*.headers``,
``log.fields``) any name is taken, lower-cased. Elsewhere the name must be a field of
distribution's struct (the Go field's name, which differs from the YAML key in a few places:
``NOTIFICATIONS_EVENTCONFIG`` is ``notifications.events``, ``HEALTH_FILECHECKERS`` is
``health.file``, ...); any other is ignored with a warning, as Go does (Kubernetes sets
``REGISTRY_PORT`` and the like for a service named registry). ``REGISTRY_CONFIGURATION_PATH``
names the file when the command line does not.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, Final

import yaml

from distblob.config.keys import known_children
from distblob.config.values import ConfigError, ConfigErrors

PREFIX: Final = "REGISTRY_"
CONFIGURATION_PATH: Final = "REGISTRY_CONFIGURATION_PATH"

#: (path, Go field name in upper case) -> YAML key, where the two differ; "" is an inline
#: struct (3.x ``redis.Options``), whose fields are the parent's.
_ALIASES: Final = {
    ("notifications", "EVENTCONFIG"): "events",
    ("health", "FILECHECKERS"): "file",
    ("health", "HTTPCHECKERS"): "http",
    ("health", "TCPCHECKERS"): "tcp",
    ("log.hooks[]", "MAILOPTIONS"): "options",
    ("compatibility.schema1", "TRUSTKEY"): "signingkeyfile",
    ("redis", "OPTIONS"): "",
}
#: Lists of structs: an index follows their name.
_LISTS: Final = frozenset(
    {"log.hooks", "notifications.endpoints", "health.file", "health.http", "health.tcp"}
)
#: Keys that are strings in distribution's struct: the value is the text, not YAML.
_STRINGS: Final = frozenset(
    [
        "version",
        "loglevel",
        "log.level",
        "log.formatter",
        "http.addr",
        "http.net",
        "http.host",
        "http.prefix",
        "http.secret",
        "http.tls.certificate",
        "http.tls.key",
        "http.tls.minimumtls",
        "http.tls.clientauth",
        "http.debug.addr",
        "http.debug.prometheus.path",
        "redis.addr",
        "redis.password",
        "redis.username",
        "proxy.remoteurl",
        "proxy.username",
        "proxy.password",
        "notifications.endpoints[].name",
        "notifications.endpoints[].url",
        "health.file[].file",
        "health.http[].uri",
        "health.tcp[].addr",
    ]
)


def _is_map(path: str) -> bool:
    """Whether ``path`` is one of distribution's maps (any name) rather than a struct."""
    last = path.rpartition(".")[2]
    return path.split(".")[0] in ("storage", "auth", "middleware") or last in (
        "fields",
        "headers",
    )


def _typed(key: str, text: str, variable: str) -> object:
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(variable, f"not valid YAML: {exc}") from None
    if key in _STRINGS:
        # Go decodes the value as YAML into its string field: a scalar keeps its text (a quoted
        # one without its quotes), a list or a mapping is refused.
        if isinstance(value, list | dict):
            kind = "a list" if isinstance(value, list) else "a mapping"
            raise ConfigError(variable, f"expected a string, not {kind}")
        return value if isinstance(value, str) else text
    if key in ("storage", "auth") and isinstance(value, str):
        return {value: {}}  # distribution's bare-name form: storage: s3
    return value


def _key(node: Mapping[Any, Any], path: str, part: str) -> str | None:
    """The key ``part`` (upper case) names in ``node`` at ``path``: ``""`` for an inline
    struct, ``None`` for no field of distribution's struct."""
    alias = _ALIASES.get((path, part))
    if alias is not None:
        return alias
    if _is_map(path) or not known_children(path):
        return next((str(k) for k in node if str(k).upper() == part), part.lower())
    return next((name for name in known_children(path) if name.upper() == part), None)


def _set(
    doc: dict[str, Any],
    variable: str,
    text: str,
    warnings: list[str],
    origins: dict[str, str],
) -> None:
    created: list[tuple[dict[str, Any], str]] = []  # undone for a variable not applied
    try:
        shown = _apply(doc, variable, text, warnings, created)
        if shown:
            origins[shown] = variable
    except ConfigError:
        for parent, name in reversed(created):
            del parent[name]
        raise


def _apply(
    doc: dict[str, Any],
    variable: str,
    text: str,
    warnings: list[str],
    created: list[tuple[dict[str, Any], str]],
) -> str:
    """Apply one variable; the key it set as errors name it (``a.b[0].c``), or ``""``."""
    parts = variable[len(PREFIX) :].split("_")
    node: Any = doc
    path = ""
    shown = ""
    for index, part in enumerate(parts):
        last = index == len(parts) - 1
        if isinstance(node, list):
            if not part.isdigit():
                raise ConfigError(variable, f"{part!r} is not an index of the list {path}")
            position = int(part)
            if position > len(node):
                raise ConfigError(variable, f"index {position} is past the end of {path}")
            if position == len(node):
                node.append({})
            path += "[]"
            shown += f"[{position}]"
            if last:
                node[position] = _typed(path, text, variable)
                return shown
            if not isinstance(node[position], dict):
                node[position] = {}
            node = node[position]
            continue
        key = _key(node, path, part)
        if key is None:
            for parent, name in reversed(created):
                del parent[name]
            warnings.append(f"ignoring unrecognized environment variable {variable}")
            return ""
        if key == "":
            continue
        dotted = f"{path}.{key}" if path else key
        shown = f"{shown}.{key}" if shown else key
        if last:
            node[key] = _typed(dotted, text, variable)
            return shown
        child = node.get(key)
        if key not in node:
            created.append((node, key))
        if dotted in _LISTS:
            child = child if isinstance(child, list) else []
        elif isinstance(child, str) and dotted in ("storage", "auth"):
            child = {child: {}}
        elif not isinstance(child, dict):
            child = {}
        node[key] = child
        node, path = child, dotted
    return ""


def apply_env(
    doc: object,
    environ: Mapping[str, str],
    errors: list[ConfigError] | None = None,
    origins: dict[str, str] | None = None,
) -> tuple[object, list[str]]:
    """``doc`` (a decoded YAML document, ``None`` for none) with the ``REGISTRY_*`` variables of
    ``environ`` applied, and a warning for each variable ignored.

    A variable that cannot be applied (a list for a string, an index past a list's end, ...) is
    a :class:`ConfigError` named after it, and changes nothing; the other variables are still
    applied. With ``errors`` they are appended to it (so that the caller reports them with the
    file's); without, all of them are raised at once (:class:`ConfigErrors` for several).
    ``origins``, when given, receives each key a variable set and the variable's name, so that
    a problem with that key can name the variable (:func:`name_variables`)."""
    problems: list[ConfigError] = [] if errors is None else errors
    warnings: list[str] = []
    variables = sorted(
        (name, value)
        for name, value in environ.items()
        if name.startswith(PREFIX) and name != CONFIGURATION_PATH
    )
    if not variables:
        return doc, warnings
    if doc is None:
        doc = {}
    if not isinstance(doc, dict):
        return doc, warnings  # parse_config reports a document that is not a mapping
    found: dict[str, str] = {} if origins is None else origins
    for name, value in variables:
        try:
            _set(doc, name, value, warnings, found)
        except ConfigError as exc:
            problems.append(exc)
    if errors is None:
        ConfigErrors.raise_if_any(problems)
    return doc, warnings


def variable_name(key: str) -> str:
    """The ``REGISTRY_*`` variable that would set the dotted ``key`` (``a.b[0].c``), with Go's
    field names where they differ from the YAML keys (``notifications.events`` is
    ``REGISTRY_NOTIFICATIONS_EVENTCONFIG``)."""
    parts: list[str] = []
    path = ""
    for token in re.findall(r"\[\d+\]|[^.\[\]]+", key):
        if token.startswith("["):
            parts.append(token[1:-1])
            path += "[]"
            continue
        go = next((g for (p, g), y in _ALIASES.items() if p == path and y == token), None)
        parts.append(go or token.upper())
        path = f"{path}.{token}" if path else token
    return PREFIX + "_".join(parts)


def name_variables(error: ConfigError, origins: Mapping[str, str]) -> ConfigError:
    """``error``, its reason naming the variable that set its key (or a key above it), and
    the variable a suggested key would take: a key in no file is otherwise hard to find."""
    key = error.key
    variable = next(
        (origins[k] for k in origins if key == k or key.startswith((k + ".", k + "["))), None
    )
    if variable is None:
        return error
    reason = error.reason
    suggested = re.search(r"did you mean ([\w.\[\]]+)\?", reason)
    if suggested:
        reason += f"; as a variable, {variable_name(suggested.group(1))}"
    return ConfigError(key, f"{reason} (set by {variable})")


__all__ = ["CONFIGURATION_PATH", "PREFIX", "apply_env", "name_variables", "variable_name"]
