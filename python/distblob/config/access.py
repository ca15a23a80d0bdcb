"""The ``auth`` and ``access`` sections: the access controller a config names, and distblob's
own access policy."""

from __future__ import annotations

from typing import TYPE_CHECKING

from distblob.config.tree import AuthConfig, Htpasswd, Silly, TokenAuth
from distblob.config.values import (
    AUTH_CONTROLLERS,
    ConfigError,
    checked_section,
    get_bool,
    get_str,
    get_str_list,
    required_str,
)

if TYPE_CHECKING:
    from distblob.auth.policy import Policy


def parse_auth(doc: object) -> AuthConfig:
    raw = checked_section(doc, "auth", set(AUTH_CONTROLLERS))
    named = [name for name in AUTH_CONTROLLERS if name in raw]
    if len(named) != 1:
        given = f", not {' and '.join(named)}" if named else ""
        raise ConfigError("auth", f"name exactly one of htpasswd, token or silly{given}")
    if named[0] == "token":
        return AuthConfig(token=parse_token_auth(raw["token"]))
    if named[0] == "silly":
        key = "auth.silly"
        section = checked_section(raw["silly"], key, {"realm", "service"})
        return AuthConfig(
            silly=Silly(required_str(section, "realm", key), required_str(section, "service", key))
        )
    key = "auth.htpasswd"
    section = checked_section(raw["htpasswd"], key, {"realm", "path"})
    realm = get_str(section, "realm", key)
    if realm is None:
        raise ConfigError(f"{key}.realm", "required: the realm clients are challenged with")
    if not (realm.isascii() and realm.isprintable()):
        raise ConfigError(f"{key}.realm", f"expected printable ASCII (a header), not {realm!r}")
    path = get_str(section, "path", key)
    if path is None:
        raise ConfigError(f"{key}.path", "required: the htpasswd file (bcrypt entries)")
    return AuthConfig(htpasswd=Htpasswd(realm=realm, path=path))


def parse_token_auth(doc: object) -> TokenAuth:
    """``auth.token``, distribution 3.0's keys (2.8's are a subset)."""
    key = "auth.token"
    names = {"realm", "service", "issuer", "rootcertbundle", "jwks", "autoredirect"}
    section = checked_section(doc, key, names | {"autoredirectpath", "signingalgorithms"})
    rootcertbundle, jwks = get_str(section, "rootcertbundle", key), get_str(section, "jwks", key)
    if rootcertbundle is None and jwks is None:
        raise ConfigError(
            f"{key}.rootcertbundle", "required (or auth.token.jwks): the keys that sign tokens"
        )
    from distblob.auth.token import SIGNING_ALGORITHMS

    algorithms = get_str_list(section, "signingalgorithms", key)
    for algorithm in algorithms:
        if algorithm not in SIGNING_ALGORITHMS:
            raise ConfigError(
                f"{key}.signingalgorithms",
                f"unsupported {algorithm!r}: expected some of {', '.join(SIGNING_ALGORITHMS)}",
            )
    return TokenAuth(
        realm=required_str(section, "realm", key),
        service=required_str(section, "service", key),
        issuer=required_str(section, "issuer", key),
        rootcertbundle=rootcertbundle,
        jwks=jwks,
        autoredirect=get_bool(section, "autoredirect", key, False),
        autoredirectpath=get_str(section, "autoredirectpath", key) or "/auth/token",
        signingalgorithms=algorithms,
    )


def parse_access(doc: object, auth: AuthConfig | None) -> Policy:
    """``access``: the policy, checked (:mod:`distblob.auth.policy`); without ``auth`` it may
    grant ``anonymous`` only, since nobody else could log in."""
    from distblob.auth.policy import Policy, PolicyError

    try:
        policy = Policy.parse(doc, "access")
    except PolicyError as exc:
        raise ConfigError(exc.key, exc.reason) from None
    if auth is None and not policy.anonymous_only():
        index = next(i for i, rule in enumerate(policy.rules) if rule.users != {"anonymous"})
        raise ConfigError(
            f"access[{index}].users",
            "names users, but there is no auth section to log them in: configure auth, "
            "or grant anonymous only",
        )
    return policy


__all__ = [
    "parse_access",
    "parse_auth",
    "parse_token_auth",
]
