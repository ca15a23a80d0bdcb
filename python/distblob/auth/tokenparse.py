"""Reading a bearer token as distribution reads it: the compact JWS form, and the JSON of its
header and claims as Go's ``encoding/json`` decodes them into distribution's structs.

Nothing here verifies anything (:mod:`distblob.auth.token` does): :func:`parse_token` turns a
token into a :class:`Token` or raises :class:`InvalidTokenError` for what distribution calls a
malformed token. What Go's decoder accepts is accepted and what it refuses is refused, where
that decides whether a token is used: three base64url parts (padding optional); member names
matched exactly or case-insensitively (Go's folding), the last of duplicates winning, ``null``
as absent; integers where Go has ``int64`` (``1.5e9`` and ``"1"`` are not), strings where it
has strings; unknown members ignored.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from distblob.auth import Access

_BASE64URL: Final = re.compile(r"[A-Za-z0-9_-]*={0,2}")
_INT64: Final = range(-(2**63), 2**63)


class InvalidTokenError(ValueError):
    """A token that is malformed or not verified (``error="invalid_token"``)."""


class _Pairs(list[tuple[str, Any]]):
    """A JSON object's members in order (duplicates kept, as Go's decoder sees them)."""


def _refuse_constant(name: str) -> None:
    raise ValueError(f"{name} is not JSON")


def _decode_part(part: str) -> bytes:
    """One part of the compact form: base64url, its padding added as Go's
    ``joseBase64UrlDecode`` adds it (a length of 1 modulo 4 cannot be)."""
    padding = {0: "", 2: "==", 3: "="}.get(len(part) % 4)
    if padding is None or not _BASE64URL.fullmatch(part + padding):
        raise InvalidTokenError("malformed token: bad base64url")
    try:
        return base64.urlsafe_b64decode(part + padding)
    except (binascii.Error, ValueError):
        raise InvalidTokenError("malformed token: bad base64url") from None


def _document(data: bytes) -> _Pairs:
    """JSON object ``data`` as its members in order (``null``: none)."""
    try:
        document = json.loads(
            data.decode("utf-8", "replace"),
            object_pairs_hook=_Pairs,
            parse_constant=_refuse_constant,
        )
    except ValueError:
        raise InvalidTokenError("malformed token: not JSON") from None
    if document is None:
        return _Pairs()
    if not isinstance(document, _Pairs):
        raise InvalidTokenError("malformed token: not a JSON object")
    return document


def _members(document: _Pairs, names: Collection[str]) -> dict[str, Any]:
    """The members of ``document`` Go would decode into a struct with fields ``names``: keys
    matched exactly or case-insensitively, the last one winning; ``null`` is an absent
    member."""
    found: dict[str, Any] = {}
    for key, value in document:
        name = key if key in names else key.translate(_GO_FOLD).lower()
        if name in names:
            if value is None:
                found.pop(name, None)
            else:
                found[name] = value
    return found


#: The two non-ASCII letters Go's case folding maps to ASCII (Kelvin sign, long s).
_GO_FOLD: Final = {0x212A: "k", 0x17F: "s"}


def _string(members: Mapping[str, Any], name: str) -> str:
    value = members.get(name, "")
    if not isinstance(value, str):
        raise InvalidTokenError(f"malformed token: {name} is not a string")
    return value


def _strings(members: Mapping[str, Any], name: str) -> tuple[str, ...]:
    value = members.get(name, [])
    if not isinstance(value, list) or not all(v is None or isinstance(v, str) for v in value):
        raise InvalidTokenError(f"malformed token: {name} is not a list of strings")
    return tuple(v or "" for v in value)


def _int64(members: Mapping[str, Any], name: str) -> int:
    value = members.get(name, 0)
    if isinstance(value, bool) or not isinstance(value, int) or value not in _INT64:
        raise InvalidTokenError(f"malformed token: {name} is not an integer")
    return value


def _plain(value: Any) -> Any:
    """A decoded value with its objects as dicts (a ``jwk`` member)."""
    if isinstance(value, _Pairs):
        return {key: _plain(item) for key, item in value}
    if isinstance(value, list):
        return [_plain(item) for item in value]
    return value


@dataclass(frozen=True, slots=True)
class Header:
    """A token's JOSE header: what says which key signed it, and how."""

    alg: str
    kid: str = ""
    x5c: tuple[str, ...] = ()
    jwk: Mapping[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class Claims:
    """A token's claims, as distribution's ``ClaimSet``: ``access`` maps each resource (type,
    name) to the actions granted on it."""

    issuer: str = ""
    subject: str = ""
    audience: tuple[str, ...] = ()
    expiration: int = 0
    not_before: int = 0
    access: Mapping[tuple[str, str], frozenset[str]] = field(default_factory=dict)

    def allows(self, record: Access) -> bool:
        """Whether the token grants ``record``: its action, or ``*``, on its resource."""
        actions = self.access.get((record.type, record.name), frozenset())
        return "*" in actions or record.action in actions


@dataclass(frozen=True, slots=True)
class Token:
    """A parsed, unverified token: its header, claims, signed part and signature."""

    header: Header
    claims: Claims
    signing_input: bytes
    signature: bytes


def _header(data: bytes) -> Header:
    members = _members(_document(data), ("typ", "alg", "kid", "x5c", "jwk"))
    _string(members, "typ")
    jwk = _plain(members["jwk"]) if "jwk" in members else None
    if jwk is not None and not isinstance(jwk, dict):
        raise InvalidTokenError("malformed token: jwk is not an object")
    return Header(_string(members, "alg"), _string(members, "kid"), _strings(members, "x5c"), jwk)


def _access(value: Any) -> dict[tuple[str, str], frozenset[str]]:
    if value is None:
        return {}
    if not isinstance(value, list):
        raise InvalidTokenError("malformed token: access is not a list")
    granted: dict[tuple[str, str], frozenset[str]] = {}
    for entry in value:
        if not isinstance(entry, _Pairs):  # a null entry panics distribution: refused here
            raise InvalidTokenError("malformed token: an access entry is not an object")
        members = _members(entry, ("type", "class", "name", "actions"))
        _string(members, "class")
        resource = (_string(members, "type"), _string(members, "name"))
        granted[resource] = granted.get(resource, frozenset()) | set(_strings(members, "actions"))
    return granted


def _claims(data: bytes) -> Claims:
    names = ("iss", "sub", "aud", "exp", "nbf", "iat", "jti", "access")
    members = _members(_document(data), names)
    # distribution 3.0's AudienceList: a string or a list of strings (2.8 takes a string).
    audience = members.get("aud")
    audiences = (audience,) if isinstance(audience, str) else _strings(members, "aud")
    _int64(members, "iat")
    _string(members, "jti")
    return Claims(
        issuer=_string(members, "iss"),
        subject=_string(members, "sub"),
        audience=audiences,
        expiration=_int64(members, "exp"),
        not_before=_int64(members, "nbf"),
        access=_access(members.get("access")),
    )


def parse_token(raw: str) -> Token:
    """The token ``raw`` (the compact form) says it is; :class:`InvalidTokenError` when it
    is malformed."""
    parts = raw.split(".")
    if len(parts) != 3:
        raise InvalidTokenError("malformed token: not three parts")
    header, claims, signature = (_decode_part(part) for part in parts)
    signing_input = f"{parts[0]}.{parts[1]}".encode("ascii")
    return Token(_header(header), _claims(claims), signing_input, signature)


__all__ = ["Claims", "Header", "InvalidTokenError", "Token", "parse_token"]
