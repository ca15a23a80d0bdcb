"""A small token server for ``auth.token`` tests, on loopback, with a PKI made here.

:class:`TokenPKI` writes a throw-away CA (``bundle``: what a registry's ``rootcertbundle``
names), a signing certificate under it, and an untrusted CA with a signer of its own.
:meth:`TokenPKI.issue` signs a token (PyJWT) for any claims and any way of naming the key:
``x5c`` (the signer's chain, the usual way), ``kid`` (the CA key, by its libtrust id as
distribution 2.8 names it), ``thumbprint`` (the CA key, by its RFC 7638 thumbprint as 3.0 names
it), ``untrusted`` (the untrusted signer's chain).

:class:`TokenServer` answers Docker's token protocol, ``GET /token?service=…&scope=…`` with the
Basic credentials of a test user, with ``{"token": …, "access_token": …, "expires_in": …}``, over
plain HTTP (``tls``: HTTPS). By default it grants what is asked; tests change
:attr:`TokenServer.grant`, ``lifetime`` (negative: already expired) or ``signing`` to make it hand
out tokens a registry must refuse.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import json
import ssl
import threading
import time
import urllib.parse
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import jwt
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from distblob.auth.tokenkeys import libtrust_key_id, thumbprint

LOOPBACK = "127.0.0.1"
ISSUER = "distblob-test-issuer"
SERVICE = "distblob-test-registry"

Key = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey
Grant = Callable[[list[dict[str, Any]]], list[dict[str, Any]]]


def _certificate(
    subject: str, key: Key, issuer: tuple[x509.Certificate, Key] | None, *, ca: bool
) -> x509.Certificate:
    now = dt.datetime.now(dt.UTC)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(issuer[0].subject if issuer else name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        .sign(issuer[1] if issuer else key, hashes.SHA256())
    )


def der_b64(certificate: x509.Certificate) -> str:
    """A certificate as an ``x5c`` entry: standard base64 of its DER."""
    return base64.b64encode(certificate.public_bytes(serialization.Encoding.DER)).decode()


def parse_scope(scope: str) -> dict[str, Any]:
    """``repository:lib/app:pull,push`` as an ``access`` claim entry (the name may hold
    colons: type up to the first, actions after the last)."""
    kind, _, rest = scope.partition(":")
    name, _, actions = rest.rpartition(":")
    return {"type": kind, "name": name, "actions": [a for a in actions.split(",") if a]}


@dataclass
class TokenPKI:
    """The keys and certificates of the tests' token service, written under ``directory``."""

    directory: Path
    ca_key: Key
    ca: x509.Certificate
    signer_key: Key
    signer: x509.Certificate
    untrusted_key: Key
    untrusted: x509.Certificate

    @classmethod
    def create(cls, directory: Path, *, rsa_ca: bool = False) -> TokenPKI:
        directory.mkdir(parents=True, exist_ok=True)
        ca_key: Key = (
            rsa.generate_private_key(65537, 2048)
            if rsa_ca
            else ec.generate_private_key(ec.SECP384R1())
        )
        ca = _certificate("distblob test token CA", ca_key, None, ca=True)
        signer_key = ec.generate_private_key(ec.SECP256R1())
        signer = _certificate("distblob test token signer", signer_key, (ca, ca_key), ca=False)
        other_key = ec.generate_private_key(ec.SECP256R1())
        other = _certificate("untrusted CA", other_key, None, ca=True)
        untrusted_key = ec.generate_private_key(ec.SECP256R1())
        untrusted = _certificate("untrusted signer", untrusted_key, (other, other_key), ca=False)
        pki = cls(directory, ca_key, ca, signer_key, signer, untrusted_key, untrusted)
        pki.bundle.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
        return pki

    @property
    def bundle(self) -> Path:
        """The root certificate bundle: the CA alone."""
        return self.directory / "token-ca.pem"

    def claims(
        self,
        access: Sequence[dict[str, Any]],
        *,
        subject: str = "alice",
        lifetime: float = 300,
        issuer: str = ISSUER,
        audience: str | list[str] = SERVICE,
    ) -> dict[str, Any]:
        now = int(time.time())
        return {
            "iss": issuer,
            "sub": subject,
            "aud": audience,
            "exp": now + int(lifetime),
            "nbf": now - 1,
            "iat": now,
            "jti": base64.urlsafe_b64encode(now.to_bytes(8) + bytes(8)).decode(),
            "access": list(access),
        }

    def sign(self, claims: dict[str, Any], signing: str = "x5c", **headers: Any) -> str:
        """``claims`` signed as ``signing`` says (see the module's docstring)."""
        key: Key
        if signing == "x5c":
            key, headers = self.signer_key, {"x5c": [der_b64(self.signer)], **headers}
        elif signing == "untrusted":
            key, headers = self.untrusted_key, {"x5c": [der_b64(self.untrusted)], **headers}
        elif signing in ("kid", "thumbprint"):
            public = self.ca_key.public_key()
            kid = libtrust_key_id(public) if signing == "kid" else thumbprint(public)
            key, headers = self.ca_key, {"kid": kid, **headers}
        else:
            raise ValueError(f"unknown signing {signing!r}")
        if "alg" not in headers:
            headers["alg"] = _algorithm(key)
        return jwt.encode(claims, key, algorithm=headers.pop("alg"), headers=headers)

    def issue(self, access: Sequence[dict[str, Any]], signing: str = "x5c", **options: Any) -> str:
        """A token granting ``access`` (``options``: those of :meth:`claims`)."""
        return self.sign(self.claims(access, **options), signing)


def _algorithm(key: Key) -> str:
    if isinstance(key, rsa.RSAPrivateKey):
        return "RS256"
    return {256: "ES256", 384: "ES384", 521: "ES512"}[key.curve.key_size]


@dataclass
class TokenServer:
    """Docker's token endpoint for ``users`` (name: password), signing with ``pki``."""

    pki: TokenPKI
    users: dict[str, str] = field(default_factory=lambda: {"alice": "alice-password"})
    #: What a request for some access gets (default: what it asked for).
    grant: Grant = field(default=lambda requested: requested)
    lifetime: float = 300
    signing: str = "x5c"
    #: Every token request served: (user, service, scopes).
    requests: list[tuple[str, str, list[str]]] = field(default_factory=list)
    #: HTTPS with this context (python-dxf asks a realm over HTTPS only).
    tls: ssl.SSLContext | None = None
    _server: ThreadingHTTPServer | None = None

    @property
    def realm(self) -> str:
        assert self._server is not None
        scheme = "https" if self.tls else "http"
        return f"{scheme}://{LOOPBACK}:{self._server.server_address[1]}/token"

    def __enter__(self) -> Self:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                server._answer(self)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer((LOOPBACK, 0), Handler)
        if self.tls is not None:
            self._server.socket = self.tls.wrap_socket(self._server.socket, server_side=True)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def _user(self, authorization: str) -> str | None:
        scheme, _, encoded = authorization.partition(" ")
        if scheme.lower() != "basic":
            return None
        try:
            user, _, password = base64.b64decode(encoded, validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return None
        return user if self.users.get(user) == password else None

    def _answer(self, request: BaseHTTPRequestHandler) -> None:
        url = urllib.parse.urlsplit(request.path)
        query = urllib.parse.parse_qs(url.query)
        user = self._user(request.headers.get("Authorization", ""))
        if url.path != "/token" or user is None:
            request.send_response(404 if url.path != "/token" else 401)
            request.send_header("WWW-Authenticate", 'Basic realm="token"')
            request.send_header("Content-Length", "0")
            request.end_headers()
            return
        scopes = [s for value in query.get("scope", []) for s in value.split(" ") if s]
        service = query.get("service", [""])[0]
        self.requests.append((user, service, scopes))
        access = self.grant([parse_scope(scope) for scope in scopes])
        token = self.pki.issue(access, self.signing, subject=user, lifetime=self.lifetime)
        issued = dt.datetime.now(dt.UTC).isoformat().replace("+00:00", "Z")
        body = json.dumps(
            {
                "token": token,
                "access_token": token,
                "expires_in": int(self.lifetime),
                "issued_at": issued,
            }
        ).encode()
        request.send_response(200)
        request.send_header("Content-Type", "application/json")
        request.send_header("Content-Length", str(len(body)))
        request.end_headers()
        request.wfile.write(body)


__all__ = ["ISSUER", "SERVICE", "TokenPKI", "TokenServer", "der_b64", "parse_scope"]
