"""The keys ``auth.token`` trusts, and the certificate chains it accepts.

A token's signing key is found one of three ways (:mod:`distblob.auth.token` picks which):

- an ``x5c`` certificate chain in its header, verified up to a certificate of
  ``rootcertbundle`` (:meth:`TrustedKeys.verify_chain`, with ``cryptography``'s X.509
  verifier): the key is the leaf's;
- a ``kid`` naming a trusted key (:meth:`TrustedKeys.key`): each certificate of the bundle is
  named by its libtrust key id (distribution 2.8's, ``ABCD:EFGH:…``, what docker_auth and
  other token servers send) and by its RFC 7638 thumbprint (distribution 3.0's), and each key
  of the ``jwks`` file by its own ``kid``;
- a ``jwk`` in its header: a trusted key (by its ``kid`` member or its libtrust id), or one
  with an ``x5c`` chain of its own.

Both files are read once, when the controller is built; :class:`TokenKeyError` says why one
cannot be used, and the config reports it under the key that names the file.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import hashlib
import json
import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa
from cryptography.x509 import verification
from joserfc import jwk
from joserfc.errors import JoseError

logger = logging.getLogger("distblob.auth")

PublicKey = (
    rsa.RSAPublicKey | ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey | ed448.Ed448PublicKey
)
_PUBLIC_KEY_TYPES: Final = (
    rsa.RSAPublicKey,
    ec.EllipticCurvePublicKey,
    ed25519.Ed25519PublicKey,
    ed448.Ed448PublicKey,
)
#: What a JWK that cannot be read raises, in joserfc or in cryptography under it.
_JWK_ERRORS: Final = (JoseError, ValueError, TypeError, KeyError, binascii.Error)


class TokenKeyError(ValueError):
    """A root certificate bundle or a JWKS file that cannot be used."""


def libtrust_key_id(key: PublicKey) -> str | None:
    """distribution 2.8's key id (libtrust's): the SHA-256 of the key's DER
    SubjectPublicKeyInfo, its first 240 bits in base32, in twelve groups of four joined by
    colons. ``None`` for a key libtrust does not take (only RSA and EC keys)."""
    if not isinstance(key, (rsa.RSAPublicKey, ec.EllipticCurvePublicKey)):
        return None
    der = key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    encoded = base64.b32encode(hashlib.sha256(der).digest()[:30]).decode("ascii")
    return ":".join(encoded[i : i + 4] for i in range(0, len(encoded), 4))


def thumbprint(key: PublicKey) -> str:
    """The key's RFC 7638 thumbprint (SHA-256, base64url): distribution 3.0's key id."""
    imported: jwk.RSAKey | jwk.ECKey | jwk.OKPKey
    if isinstance(key, rsa.RSAPublicKey):
        imported = jwk.RSAKey.import_key(key)
    elif isinstance(key, ec.EllipticCurvePublicKey):
        imported = jwk.ECKey.import_key(key)
    else:
        imported = jwk.OKPKey.import_key(key)
    return imported.thumbprint()


def public_key_of_jwk(data: Mapping[str, Any]) -> PublicKey:
    """The public key a JWK (a header's ``jwk`` or a JWKS entry) describes; ``ValueError``
    unless it is an RSA, EC or OKP key joserfc and cryptography can read."""
    try:
        key = jwk.import_key(dict(data)).public_key
    except _JWK_ERRORS as exc:
        raise ValueError(f"unusable JWK: {exc}") from None
    if not isinstance(key, _PUBLIC_KEY_TYPES):
        raise ValueError("unusable JWK: not an asymmetric key")
    return key


def _read(path: str) -> bytes:
    try:
        with open(path, "rb") as source:
            return source.read()
    except OSError as exc:
        raise TokenKeyError(f"cannot read {path!r}: {exc.strerror or exc}") from None


def load_root_bundle(path: str | os.PathLike[str]) -> list[x509.Certificate]:
    """The certificates of the PEM bundle at ``path`` (other PEM blocks are skipped, as by
    distribution); :class:`TokenKeyError` when it cannot be read or holds none."""
    path = os.fspath(path)
    data = _read(path)
    try:
        certificates = x509.load_pem_x509_certificates(data)
    except ValueError as exc:
        raise TokenKeyError(f"{path!r} holds no PEM certificate ({exc})") from None
    for certificate in certificates:
        if not isinstance(certificate.public_key(), _PUBLIC_KEY_TYPES):
            raise TokenKeyError(f"{path!r}: a certificate's key cannot sign tokens")
    return certificates


def load_jwks(path: str | os.PathLike[str]) -> dict[str, PublicKey]:
    """The keys of the JWKS file at ``path`` by their ``kid``; :class:`TokenKeyError` when it
    cannot be read or parsed. A key without a ``kid``, or a symmetric one, can verify nothing
    (a token names its key): it is skipped with a warning."""
    path = os.fspath(path)
    try:
        document = json.loads(_read(path))
        entries = document["keys"]
        if not isinstance(entries, list):
            raise TypeError("keys is not a list")
    except (ValueError, TypeError, KeyError) as exc:
        raise TokenKeyError(f"{path!r} is not a JSON Web Key Set: {exc}") from None
    keys: dict[str, PublicKey] = {}
    for number, entry in enumerate(entries):
        if not isinstance(entry, dict):
            raise TokenKeyError(f"{path!r}: key {number} is not a JSON object")
        kid = entry.get("kid")
        if entry.get("kty") == "oct" or not isinstance(kid, str) or not kid:
            logger.warning(
                "auth.token.jwks: %s: key %d skipped: only asymmetric keys with a kid verify "
                "tokens",
                path,
                number,
            )
            continue
        try:
            keys[kid] = public_key_of_jwk(entry)
        except ValueError as exc:
            raise TokenKeyError(f"{path!r}: key {number} ({kid!r}): {exc}") from None
    return keys


@dataclass(frozen=True)
class TrustedKeys:
    """The roots of ``rootcertbundle`` and every key a ``kid`` may name."""

    roots: Sequence[x509.Certificate] = ()
    by_id: Mapping[str, PublicKey] = field(default_factory=dict)

    @classmethod
    def build(
        cls, roots: Sequence[x509.Certificate], jwks: Mapping[str, PublicKey] | None = None
    ) -> TrustedKeys:
        by_id: dict[str, PublicKey] = {}
        for certificate in roots:
            key = certificate.public_key()
            assert isinstance(key, _PUBLIC_KEY_TYPES)  # load_root_bundle checked it
            key_id = libtrust_key_id(key)
            if key_id is not None:
                by_id[key_id] = key
            by_id[thumbprint(key)] = key
        by_id.update(jwks or {})
        return cls(tuple(roots), by_id)

    def key(self, key_id: str) -> PublicKey | None:
        """The trusted key ``key_id`` names, if any."""
        return self.by_id.get(key_id)

    def verify_chain(self, chain: Sequence[x509.Certificate]) -> PublicKey:
        """The key of ``chain``'s leaf (the rest: intermediates, in any order), once the chain
        is verified up to one of the roots at the current time; ``ValueError`` when it is not.

        As distribution (Go's ``x509.Verify`` with any extended key usage): no key usage, name
        or extended key usage of the leaf is required, a leaf that is itself a root verifies,
        and intermediates must be CAs. cryptography's policies are otherwise RFC 5280's, which
        are a little stricter than Go's (a root must carry basicConstraints).
        """
        if not chain:
            raise ValueError("empty certificate chain")
        if not self.roots:
            raise ValueError("no root certificate to verify a chain against")
        policies = verification.ExtensionPolicy.permit_all()
        ca_policy = policies.require_present(
            x509.BasicConstraints, verification.Criticality.AGNOSTIC, None
        )
        verifier = (
            verification.PolicyBuilder()
            .store(verification.Store(list(self.roots)))
            .time(dt.datetime.now(dt.UTC))
            .extension_policies(ca_policy=ca_policy, ee_policy=policies)
            .build_client_verifier()
        )
        try:
            verifier.verify(chain[0], list(chain[1:]))
        except verification.VerificationError as exc:
            raise ValueError(f"certificate chain not verified: {exc}") from None
        key = chain[0].public_key()
        if not isinstance(key, _PUBLIC_KEY_TYPES):
            raise ValueError("the leaf certificate's key cannot sign tokens")
        return key


def parse_x5c(values: Sequence[str]) -> list[x509.Certificate]:
    """An ``x5c`` header's certificates (standard, padded base64 DER); ``ValueError`` unless
    every one decodes."""
    try:
        return [x509.load_der_x509_certificate(base64.b64decode(v, validate=True)) for v in values]
    except (ValueError, binascii.Error) as exc:
        raise ValueError(f"unreadable x5c certificate: {exc}") from None


__all__ = [
    "PublicKey",
    "TokenKeyError",
    "TrustedKeys",
    "libtrust_key_id",
    "load_jwks",
    "load_root_bundle",
    "parse_x5c",
    "public_key_of_jwk",
    "thumbprint",
]
