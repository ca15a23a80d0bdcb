"""``access``: distblob's own access policy, who may pull, push and delete which repositories.

distribution has no such thing: with ``auth.htpasswd`` any user who logs in may do everything,
and a per-repository rule needs a token server. distblob reads a list of grants under the
top-level key ``access`` (the Go registry ignores unknown top-level keys, so a config that has
one still starts there, without the policy)::

    access:
      - {users: [anonymous, "*"], repositories: ["**"], actions: [pull]}
      - {users: [ci], repositories: ["team/*"], actions: [pull, push]}

A request is allowed when every access record it needs (:mod:`distblob.auth`) is granted by
some rule whose ``users`` name its principal:

- a user's name, as the access controller authenticated it;
- ``"*"``: any authenticated user;
- ``anonymous``: a request without credentials. What anonymous may do, every authenticated user
  may do too. A user whose name is literally ``anonymous`` is that principal and nothing more:
  neither ``"*"`` nor a rule naming ``anonymous`` gives them more than a request without
  credentials has.

``repositories`` are patterns of repository names, compared component by component: ``*``
stands for any part of one component (``team/*`` matches ``team/app`` but not ``team/a/b``;
``lib/app-*`` matches ``lib/app-x``), and a component that is exactly ``**`` stands for one or
more whole components anywhere, or zero between two others (``team/**`` matches ``team/a`` and
``team/a/b`` but not ``team`` itself; ``**`` matches every name; ``a/**/b`` matches ``a/b`` and
``a/x/y/b``). Names are lowercase, so a pattern with another character than those of names and
``*`` can match nothing and is refused.

``actions``: ``pull``, ``push`` and ``delete`` grant the repository records of those names
(a push also needs ``pull``, as in distribution: grant both), and ``catalog`` grants the
catalog's ``registry:catalog:*`` (the whole list of names; a rule that grants only ``catalog``
needs no ``repositories``).

Nothing here knows about HTTP: :class:`Policy` answers whether a principal is granted a list of
records; the server's gate (:mod:`distblob.server.handlers.base`) asks it.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Final

from distblob.auth import CATALOG_ACCESS, DELETE, PULL, PUSH, Access

#: The principal of a request without credentials.
ANONYMOUS: Final = "anonymous"
#: The principal that names every authenticated user.
ANY_USER: Final = "*"
#: The action that grants the catalog.
CATALOG: Final = "catalog"
#: The actions a rule may grant.
ACTIONS: Final = (PULL, PUSH, DELETE, CATALOG)
#: The keys of a rule.
RULE_KEYS: Final = ("users", "repositories", "actions")

_COMPONENT: Final = re.compile(r"[a-z0-9._*-]+")


class PolicyError(ValueError):
    """A policy that cannot be used; ``key`` is the dotted key at fault
    (``access[1].repositories``); the config reports it as a ``ConfigError``."""

    def __init__(self, key: str, reason: str) -> None:
        super().__init__(f"{key}: {reason}")
        self.key = key
        self.reason = reason


def compile_pattern(pattern: str, key: str = "repositories") -> re.Pattern[str]:
    """The regular expression of a repository ``pattern`` (the rules in the module's
    docstring); :class:`PolicyError` naming ``key`` when it is not one."""
    components = pattern.split("/")
    parts: list[str] = []
    for index, component in enumerate(components):
        if component == "**":
            last = index == len(components) - 1
            # One or more components at the end, else zero or more followed by a slash.
            parts.append(".+" if last else "(?:.+/)?")
            continue
        if not _COMPONENT.fullmatch(component) or "**" in component:
            raise PolicyError(
                key,
                f"{pattern!r} is not a repository pattern: components of lowercase letters, "
                "digits, '.', '_', '-' and '*' (one component), or exactly '**' (any number "
                "of components), separated by '/'",
            )
        pieces = (re.escape(piece) for piece in component.split("*"))
        parts.append("[^/]*".join(pieces) + ("" if index == len(components) - 1 else "/"))
    return re.compile("".join(parts))


@dataclass(frozen=True, slots=True)
class Rule:
    """One grant: ``actions`` on the repositories ``repositories`` matches, to ``users``."""

    users: frozenset[str]
    repositories: tuple[str, ...]
    actions: frozenset[str]
    _patterns: tuple[re.Pattern[str], ...]

    def applies_to(self, principals: frozenset[str]) -> bool:
        """Whether the rule names one of ``principals``."""
        return not self.users.isdisjoint(principals)

    def grants(self, record: Access) -> bool:
        """Whether the rule grants ``record`` (to whoever it applies to)."""
        if record == CATALOG_ACCESS:
            return CATALOG in self.actions
        if record.type != "repository" or record.action not in self.actions:
            return False
        return any(pattern.fullmatch(record.name) for pattern in self._patterns)


def is_anonymous(authorization: str | None) -> bool:
    """Whether a request's ``Authorization`` header carries no credentials: none at all, or
    ``Basic`` with an empty user and password (``Basic Og==``), which containers/image (skopeo,
    podman, buildah) sends when it has no credentials for a registry that challenged it with
    ``Basic``."""
    if authorization is None:
        return True
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "basic":
        return False
    try:
        return base64.b64decode(token, validate=True) == b":"
    except (binascii.Error, ValueError):
        return False


def principals(user: str | None) -> frozenset[str]:
    """Whom a request acts as: ``None`` (no credentials) is anonymous; an authenticated user is
    themself, ``"*"`` and anonymous, except a user named ``anonymous``, who is only that."""
    if user is None or user == ANONYMOUS:
        return frozenset({ANONYMOUS})
    return frozenset({user, ANY_USER, ANONYMOUS})


@dataclass(frozen=True, slots=True)
class Policy:
    """The rules of an ``access`` section, in order (the order does not change what they
    grant: rules only add)."""

    rules: tuple[Rule, ...]

    def allows(self, user: str | None, records: Iterable[Access]) -> bool:
        """Whether ``user`` (``None``: a request without credentials) is granted every record
        in ``records`` by some rule (a request that needs none, ``/v2/``, is allowed)."""
        applicable = [rule for rule in self.rules if rule.applies_to(principals(user))]
        return all(any(rule.grants(record) for rule in applicable) for record in records)

    def anonymous_only(self) -> bool:
        """Whether every rule grants to ``anonymous`` alone (the only policy that can stand
        without an access controller: nobody else could authenticate)."""
        return all(rule.users == {ANONYMOUS} for rule in self.rules)

    @classmethod
    def parse(cls, doc: object, key: str = "access") -> Policy:
        """The policy of the decoded YAML ``doc`` (a list of rules); :class:`PolicyError`
        naming the key at fault (``access[0].actions``) when it is not one."""
        if not isinstance(doc, list):
            raise PolicyError(key, f"expected a list of rules, not {type(doc).__name__}")
        return cls(tuple(_rule(raw, f"{key}[{index}]") for index, raw in enumerate(doc)))


def _strings(rule: Mapping[str, object], name: str, key: str) -> list[str]:
    value = rule.get(name)
    if not isinstance(value, list) or not value:
        raise PolicyError(f"{key}.{name}", f"expected a non-empty list, not {value!r}")
    for item in value:
        if not isinstance(item, str) or not item:
            raise PolicyError(f"{key}.{name}", f"expected non-empty strings, not {item!r}")
    return value


def _rule(raw: object, key: str) -> Rule:
    if not isinstance(raw, Mapping):
        raise PolicyError(key, f"expected a mapping, not {type(raw).__name__}")
    for name in raw:
        if name not in RULE_KEYS:
            raise PolicyError(
                f"{key}.{name}", "unknown key (a rule has users, repositories and actions)"
            )
    users = _strings(raw, "users", key)
    actions = _strings(raw, "actions", key)
    for action in actions:
        if action not in ACTIONS:
            raise PolicyError(
                f"{key}.actions", f"unknown action {action!r}: expected {', '.join(ACTIONS)}"
            )
    repositories: Sequence[str] = ()
    if raw.get("repositories") is not None or set(actions) != {CATALOG}:
        repositories = _strings(raw, "repositories", key)
    patterns = tuple(compile_pattern(p, f"{key}.repositories") for p in repositories)
    return Rule(frozenset(users), tuple(repositories), frozenset(actions), patterns)


__all__ = [
    "ACTIONS",
    "ANONYMOUS",
    "ANY_USER",
    "CATALOG",
    "Policy",
    "PolicyError",
    "Rule",
    "compile_pattern",
    "is_anonymous",
    "principals",
]
