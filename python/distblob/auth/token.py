"""``auth.token``: bearer tokens (JWTs) from a token server, verified as distribution does.

A client that gets the ``Bearer`` challenge asks the token server named by its ``realm`` for a
token for ``service`` and the ``scope`` the challenge names (Docker's token protocol), and
sends it back as ``Authorization: Bearer <jwt>``. The controller:

1. reads the header as distribution 2.8's ``strings.Split(header, " ")``: exactly two parts, the
   first ``bearer`` in any case; anything else (no header, ``Basic``, two spaces) is challenged
   without an ``error``;
2. parses the token as Go decodes it (:func:`parse_token`): three base64url parts, a JSON
   header and claims whose known members must have Go's types (integers for ``exp`` and
   ``nbf``, strings, lists of strings) and are matched case-insensitively, as
   ``encoding/json`` matches them;
3. finds the signing key (:mod:`distblob.auth.tokenkeys`: an ``x5c`` chain to a root of the
   bundle, a ``jwk``, or a ``kid`` of a trusted key, in that order) and verifies the signature
   with PyJWT, for the algorithms ``signingalgorithms`` allows (distribution 3.0's set when
   unset);
4. checks the claims: ``iss`` is ``issuer``, ``aud`` is ``service`` or a list holding it,
   ``exp`` and ``nbf`` with :data:`LEEWAY` (an absent ``exp`` is 0, as Go reads it: expired);
5. grants the request when the ``access`` claim holds each record it needs: the same type and
   name, and the action or ``*`` among the actions.

Every failure of 2-4 is ``error="invalid_token"``, of 5 ``error="insufficient_scope"``, in the
challenge with the request's ``scope`` (:mod:`distblob.auth.bearer`). A verified token is
remembered for a few seconds (by a SHA-256 of it), so a client's run of requests with one token
costs one signature check; its times are checked on every request.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import logging
import re
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from cryptography.hazmat.primitives import serialization
from jwt.algorithms import get_default_algorithms
from jwt.exceptions import InvalidKeyError

from distblob.auth import Access, User
from distblob.auth.bearer import INSUFFICIENT_SCOPE, INVALID_TOKEN, challenge, merged_scope
from distblob.auth.tokenkeys import (
    PublicKey,
    TrustedKeys,
    libtrust_key_id,
    parse_x5c,
    public_key_of_jwk,
)
from distblob.errors import AuthChallenge

logger = logging.getLogger("distblob.auth")

#: Seconds of clock skew allowed on ``exp`` and ``nbf`` (distribution's ``Leeway``).
LEEWAY: Final = 60.0
#: The ``signingalgorithms`` distribution 3.0 knows, and its default: all of them. No
#: symmetric key is ever trusted (a bundle and a JWKS give public keys), so an ``HS*`` token
#: never verifies, here as there.
SIGNING_ALGORITHMS: Final = (
    "EdDSA",
    "HS256",
    "HS384",
    "HS512",
    "RS256",
    "RS384",
    "RS512",
    "ES256",
    "ES384",
    "ES512",
    "PS256",
    "PS384",
    "PS512",
)
#: ``autoredirectpath`` when unset (distribution 3.0's).
DEFAULT_AUTOREDIRECT_PATH: Final = "/auth/token"
#: Seconds a verified token is remembered, and how many are.
CACHE_TTL: Final = 10.0
CACHE_SIZE: Final = 1024

_ALGORITHMS: Final = get_default_algorithms()
_BASE64URL: Final = re.compile(r"[A-Za-z0-9_-]*={0,2}")
_INT64: Final = range(-(2**63), 2**63)


class InvalidTokenError(ValueError):
    """A token that is malformed or not verified (``error="invalid_token"``)."""


# -- reading a token as Go decodes it ----------------------------------------------------------


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


# -- verifying it --------------------------------------------------------------------------


@dataclass(frozen=True)
class TokenVerifier:
    """Verifies tokens for one ``issuer`` and ``service`` with the keys in ``keys``."""

    issuer: str
    service: str
    keys: TrustedKeys
    algorithms: frozenset[str] = frozenset(SIGNING_ALGORITHMS)
    clock: Callable[[], float] = time.time

    def verify(self, raw: str) -> Claims:
        """The claims of token ``raw`` once its signature and times are verified."""
        return self.check_times(self.verify_signature(raw))

    def verify_signature(self, raw: str) -> Claims:
        """The claims of ``raw`` once its signature, issuer and audience are verified (not its
        times: :meth:`check_times`)."""
        token = parse_token(raw)
        if not token.signature:
            raise InvalidTokenError("token has no signature")
        self._check_signature(token)
        claims = token.claims
        if claims.issuer != self.issuer:
            raise InvalidTokenError(f"token from untrusted issuer {claims.issuer!r}")
        if self.service not in claims.audience:
            raise InvalidTokenError(f"token intended for another audience {claims.audience!r}")
        return claims

    def check_times(self, claims: Claims) -> Claims:
        """``claims`` if the token may be used now (``exp`` and ``nbf``, with leeway)."""
        now = self.clock()
        if now > claims.expiration + LEEWAY:
            raise InvalidTokenError("token expired")
        if now < claims.not_before - LEEWAY:
            raise InvalidTokenError("token not valid yet")
        return claims

    def signing_key(self, header: Header) -> PublicKey:
        """The trusted key ``header`` names: by ``x5c``, else ``jwk``, else ``kid``."""
        if header.x5c:
            return self.keys.verify_chain(parse_x5c(header.x5c))
        if header.jwk is not None:
            return self._jwk_key(header.jwk)
        if header.kid:
            key = self.keys.key(header.kid)
            if key is None:
                raise ValueError(f"token signed by untrusted key {header.kid!r}")
            return key
        raise ValueError("token names no signing key")

    def _jwk_key(self, data: Mapping[str, Any]) -> PublicKey:
        """A header ``jwk``: with an ``x5c`` of its own, verified to a root and the leaf's key;
        else a trusted key, named by its ``kid`` member (3.0) or its libtrust id (2.8)."""
        chain = data.get("x5c")
        key = public_key_of_jwk({k: v for k, v in data.items() if k != "x5c"})
        if chain is not None:
            if not isinstance(chain, list) or not all(isinstance(c, str) and c for c in chain):
                raise ValueError("malformed jwk certificate chain")
            leaf = self.keys.verify_chain(parse_x5c(chain))
            if _spki(leaf) != _spki(key):
                raise ValueError("the jwk is not its certificate's key")
            return key
        kid = data.get("kid")
        trusted = self.keys.key(kid) if isinstance(kid, str) and kid else None
        if trusted is not None:
            return trusted
        key_id = libtrust_key_id(key)
        if key_id is not None and self.keys.key(key_id) is not None:
            return key
        raise ValueError("untrusted jwk without a certificate chain")

    def _check_signature(self, token: Token) -> None:
        alg = token.header.alg
        algorithm = _ALGORITHMS.get(alg) if alg in self.algorithms else None
        if algorithm is None:
            raise InvalidTokenError(f"signing algorithm {alg!r} not accepted")
        try:
            key = self.signing_key(token.header)
            prepared = algorithm.prepare_key(key)  # refuses a key of another kind or curve
        except (ValueError, TypeError, InvalidKeyError) as exc:
            raise InvalidTokenError(str(exc)) from None
        if not algorithm.verify(token.signing_input, prepared, token.signature):
            raise InvalidTokenError("bad signature")


def _spki(key: PublicKey) -> bytes:
    return key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


# -- the access controller -----------------------------------------------------------------


class TokenAccessController:
    """An :class:`~distblob.auth.AccessController` for bearer tokens (``auth.token``)."""

    def __init__(
        self,
        realm: str,
        service: str,
        verifier: TokenVerifier,
        *,
        autoredirect: bool = False,
        autoredirectpath: str = DEFAULT_AUTOREDIRECT_PATH,
        cache_ttl: float = CACHE_TTL,
        cache_size: int = CACHE_SIZE,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.realm = realm
        self.service = service
        self.verifier = verifier
        self.autoredirect = autoredirect
        path = autoredirectpath or DEFAULT_AUTOREDIRECT_PATH
        self.autoredirectpath = path if path.startswith("/") else "/" + path
        self.cache_ttl = cache_ttl
        self.cache_size = cache_size
        self._clock = clock
        # SHA-256 of a token -> (its claims, when the entry expires); verified tokens only.
        self._cache: dict[bytes, tuple[Claims, float]] = {}

    def challenge(self, access: Sequence[Access], error: str = "", *, host: str = "") -> str:
        """The ``WWW-Authenticate`` value for a request needing ``access`` (its ``Host`` is
        the realm's with ``autoredirect``, always over https, as distribution 2.8 builds it)."""
        realm = f"https://{host}{self.autoredirectpath}" if self.autoredirect else self.realm
        return challenge(realm, self.service, merged_scope(access), error)

    async def authorized(
        self, authorization: str | None, access: Sequence[Access], *, host: str = ""
    ) -> User:
        """The token's subject, if the ``Bearer`` token in ``authorization`` is verified and
        grants every record in ``access``."""
        # Go's header reader drops the value's surrounding spaces and tabs (RFC 9110 OWS).
        parts = (authorization or "").strip(" \t").split(" ")
        if len(parts) != 2 or parts[0].lower() != "bearer":
            raise self._refuse("authorization token required", access, "", host)
        try:
            claims = self._verified(parts[1])
        except InvalidTokenError as exc:
            raise self._refuse(f"invalid token: {exc}", access, INVALID_TOKEN, host) from None
        for record in access:
            if not claims.allows(record):
                raise self._refuse("insufficient scope", access, INSUFFICIENT_SCOPE, host)
        return User(claims.subject)

    def _refuse(
        self, reason: str, access: Sequence[Access], error: str, host: str
    ) -> AuthChallenge:
        headers = {"WWW-Authenticate": self.challenge(access, error, host=host)}
        return AuthChallenge(reason, access, headers)

    def _verified(self, raw: str) -> Claims:
        """The claims of ``raw``: its signature verified once every :attr:`cache_ttl` seconds,
        its times on every call."""
        key = hashlib.sha256(raw.encode("utf-8", "surrogateescape")).digest()
        now = self._clock()
        remembered = self._cache.get(key)
        if remembered is not None and remembered[1] > now:
            return self.verifier.check_times(remembered[0])
        self._cache.pop(key, None)
        claims = self.verifier.verify_signature(raw)
        if len(self._cache) >= self.cache_size:
            for stale in [k for k, (_, expires) in self._cache.items() if expires <= now]:
                del self._cache[stale]
            while len(self._cache) >= self.cache_size:
                del self._cache[next(iter(self._cache))]
        self._cache[key] = (claims, now + self.cache_ttl)
        return self.verifier.check_times(claims)


__all__ = [
    "CACHE_SIZE",
    "CACHE_TTL",
    "DEFAULT_AUTOREDIRECT_PATH",
    "LEEWAY",
    "SIGNING_ALGORITHMS",
    "Claims",
    "Header",
    "InvalidTokenError",
    "Token",
    "TokenAccessController",
    "TokenVerifier",
    "parse_token",
]
