"""``auth.token``: bearer tokens (JWTs) from a token server, verified as distribution does.

A client that gets the ``Bearer`` challenge asks the token server named by its ``realm`` for a
token for ``service`` and the ``scope`` the challenge names (Docker's token protocol), and
sends it back as ``Authorization: Bearer <jwt>``. The controller:

1. reads the header as distribution 2.8's ``strings.Split(header, " ")``: exactly two parts, the
   first ``bearer`` in any case; anything else (no header, ``Basic``, two spaces) is challenged
   without an ``error``;
2. parses the token as Go decodes it (:mod:`distblob.auth.tokenparse`): three base64url
   parts, a JSON header and claims whose known members must have Go's types;
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

import hashlib
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
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
from distblob.auth.tokenparse import Claims, Header, InvalidTokenError, Token, parse_token
from distblob.errors import AuthChallenge

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
