"""``auth.token``'s verification, path by path, with tokens signed here (PyJWT) by keys and
certificates made here (:mod:`support.tokenserver`'s PKI and a few more).

Every refusal distribution makes is one test or a row of one: the header (scheme, spaces), a
malformed token (parts, base64url, JSON, Go's types), the signature (tampered, missing, another
algorithm or curve, ``signingalgorithms``), the key (``x5c`` chains to the bundle or not,
``kid`` by libtrust id, RFC 7638 thumbprint or JWKS, a header ``jwk``), the claims (``iss``,
``aud``, ``exp`` and ``nbf`` at the edges of the leeway, an absent ``exp``) and the ``access``
claim; then the challenge each refusal carries, the configuration that builds the controller,
and ``auth.silly``.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import hmac
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import NameOID
from joserfc import jwk

from distblob.auth import CATALOG_ACCESS, Access, User, repository_access
from distblob.auth.bearer import go_quote
from distblob.auth.silly import SillyAccessController
from distblob.auth.token import LEEWAY, TokenAccessController, TokenVerifier, parse_token
from distblob.auth.tokenkeys import (
    TokenKeyError,
    TrustedKeys,
    libtrust_key_id,
    load_jwks,
    load_root_bundle,
    thumbprint,
)
from distblob.config import ConfigError, open_access_controller, parse_config
from distblob.errors import AuthChallenge
from support.tokenserver import ISSUER, SERVICE, TokenPKI, der_b64

NOW = 1_800_000_000
REALM = "https://auth.example.test/token"
PULL = repository_access("lib/app", "GET")
PUSH = repository_access("lib/app", "POST")
GRANT = [{"type": "repository", "name": "lib/app", "actions": ["pull", "push"]}]


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> TokenPKI:
    return TokenPKI.create(tmp_path_factory.mktemp("pki"), rsa_ca=True)


def controller(
    pki: TokenPKI,
    *,
    jwks: dict[str, Any] | None = None,
    algorithms: Sequence[str] = (),
    now: float = NOW,
    **options: Any,
) -> TokenAccessController:
    keys = TrustedKeys.build([pki.ca], jwks)
    verifier = TokenVerifier(ISSUER, SERVICE, keys, clock=lambda: now)
    if algorithms:
        verifier = TokenVerifier(ISSUER, SERVICE, keys, frozenset(algorithms), lambda: now)
    return TokenAccessController(REALM, SERVICE, verifier, **options)


def claims(**changes: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "iss": ISSUER,
        "sub": "alice",
        "aud": SERVICE,
        "exp": NOW + 300,
        "nbf": NOW - 10,
        "iat": NOW - 10,
        "access": GRANT,
    }
    base.update(changes)
    return {k: v for k, v in base.items() if v is not None}


def check(
    ctrl: TokenAccessController, authorization: str | None, access: Sequence[Access] = PULL
) -> User:
    return asyncio.run(ctrl.authorized(authorization, access, host="registry.test:5000"))


def refusal(
    ctrl: TokenAccessController, authorization: str | None, access: Sequence[Access] = PULL
) -> str:
    """The challenge ``authorization`` gets (it must be refused)."""
    with pytest.raises(AuthChallenge) as info:
        check(ctrl, authorization, access)
    assert info.value.access == tuple(access)
    return info.value.headers["WWW-Authenticate"]


def error_of(header: str) -> str:
    """The challenge's ``error`` (empty without one)."""
    _, found, rest = header.partition(',error="')
    return rest[:-1] if found else ""


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def raw_token(header: Any, payload: Any, signature: bytes = b"sig") -> str:
    """A token of any JSON (or bytes) parts, signed by nobody."""
    parts = [p if isinstance(p, bytes) else json.dumps(p).encode() for p in (header, payload)]
    return ".".join([b64url(parts[0]), b64url(parts[1]), b64url(signature)])


def resign(pki: TokenPKI, header: dict[str, Any], payload: bytes) -> str:
    """``payload`` (raw JSON bytes) signed by the signer, with an ``x5c`` header."""
    head = b64url(json.dumps({"alg": "ES256", "x5c": [der_b64(pki.signer)], **header}).encode())
    signing_input = f"{head}.{b64url(payload)}".encode()
    algorithm = jwt.algorithms.get_default_algorithms()["ES256"]
    return f"{head}.{b64url(payload)}.{b64url(algorithm.sign(signing_input, pki.signer_key))}"


# -- the Authorization header ------------------------------------------------------------------


def test_a_right_token_passes_as_its_subject(pki: TokenPKI) -> None:
    token = pki.sign(claims())
    assert check(controller(pki), "Bearer " + token, PUSH) == User("alice")
    for scheme in ("bearer", "BEARER", "BeArEr"):
        assert check(controller(pki), f"{scheme} {token}") == User("alice")
    assert check(controller(pki), f" \tBearer {token}\t ") == User("alice")  # Go trims OWS


@pytest.mark.parametrize(
    "authorization",
    [None, "", "Basic YWxpY2U6cHc=", "Bearer", "Bearer  {t}", "Bearer {t} x", "Token {t}", "{t}"],
)
def test_without_a_bearer_token_the_challenge_has_no_error(
    pki: TokenPKI, authorization: str | None
) -> None:
    header = None if authorization is None else authorization.format(t=pki.sign(claims()))
    challenge = refusal(controller(pki), header)
    assert (
        challenge == f'Bearer realm="{REALM}",service="{SERVICE}",scope="repository:lib/app:pull"'
    )


# -- malformed tokens --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "token",
    [
        "abc",
        "a.b",
        "a.b.c.d",
        "abc.def.ghi",
        "e30.e30.a",  # a signature of one base64url character (length 1 mod 4)
        "e30.e30.a+b/",  # standard base64, not base64url
        "e30.e30.YQ=a",  # padding inside
        b64url(b"[]") + ".e30.c2ln",
        "e30." + b64url(b"not json") + ".c2ln",
        "e30." + b64url(b'{"exp": NaN}') + ".c2ln",
        "e30." + b64url(b'{"exp": 1.5e9}') + ".c2ln",
    ],
)
def test_a_malformed_token_is_invalid(pki: TokenPKI, token: str) -> None:
    assert error_of(refusal(controller(pki), "Bearer " + token)) == "invalid_token"


@pytest.mark.parametrize(
    "change",
    [
        {"exp": 1.8e9},  # Go reads exp into an int64
        {"exp": "1800000300"},
        {"exp": True},
        {"exp": 2**63},
        {"nbf": 1.0},
        {"iss": 5},
        {"sub": ["alice"]},
        {"aud": 5},
        {"aud": [SERVICE, 5]},
        {"iat": "now"},
        {"jti": 1},
        {"access": {"type": "repository"}},
        {"access": [None]},
        {"access": [{"type": "repository", "name": "lib/app", "actions": "pull"}]},
        {"access": [{"type": 1, "name": "lib/app", "actions": ["pull"]}]},
    ],
)
def test_claims_of_the_wrong_json_type_are_malformed(pki: TokenPKI, change: dict[str, Any]) -> None:
    payload = json.dumps(claims(**change)).encode()
    assert error_of(refusal(controller(pki), "Bearer " + resign(pki, {}, payload))) == (
        "invalid_token"
    )


def test_claims_are_read_as_go_decodes_them(pki: TokenPKI) -> None:
    """Keys match case-insensitively (Kelvin sign and long s included), the last one wins,
    ``null`` is an absent member, and unknown members are ignored."""
    members = [
        f'"ISS": "{ISSUER}"',
        '"sub": "mallory"',
        '"\u017fub": "alice"',  # long s
        f'"Aud": "{SERVICE}"',
        f'"exp": {NOW + 300}',
        '"nbf": null',
        '"iat": null',
        '"extra": {"any": [1, 2.5, null]}',
        '"access": [{"TYPE": "repository", "Name": "lib/app", "actions": ["pull"], '
        '"class": "image"}]',
    ]
    payload = ("{" + ", ".join(members) + "}").encode()
    assert check(controller(pki), "Bearer " + resign(pki, {}, payload)) == User("alice")
    payload = ("{" + ", ".join([*members, '"\u212aind": 1', '"sub": null']) + "}").encode()
    assert check(controller(pki), "Bearer " + resign(pki, {}, payload)) == User("")
    parsed = parse_token(resign(pki, {}, b"null"))  # a null document: every claim empty
    assert (parsed.claims.issuer, parsed.claims.expiration, parsed.claims.access) == ("", 0, {})


# -- signatures --------------------------------------------------------------------------------


def test_a_tampered_token_is_invalid(pki: TokenPKI) -> None:
    head, payload, signature = pki.sign(claims()).split(".")
    forged = b64url(json.dumps(claims(sub="root", access=[{"type": "registry"}])).encode())
    bad = base64.urlsafe_b64decode(signature + "==")
    flipped = b64url(bytes([bad[0] ^ 1]) + bad[1:])
    for token in (
        f"{head}.{forged}.{signature}",
        f"{head}.{payload}.{flipped}",
        f"{head}.{payload}.",
    ):
        assert error_of(refusal(controller(pki), "Bearer " + token)) == "invalid_token"


def test_algorithms(pki: TokenPKI) -> None:
    payload = json.dumps(claims()).encode()
    head = b64url(json.dumps({"alg": "none", "x5c": [der_b64(pki.signer)]}).encode())
    unsigned = f"{head}.{b64url(payload)}."
    assert error_of(refusal(controller(pki), "Bearer " + unsigned)) == "invalid_token"
    # The header's alg must be the key's: RS256 over an EC key, ES384 over a P-256 key, HS256
    # with the public key as the secret (the classic confusion) all fail.
    for alg in ("RS256", "ES384", "HS256", "PS256", "EdDSA"):
        token = resign(pki, {"alg": alg}, payload)
        assert error_of(refusal(controller(pki), "Bearer " + token)) == "invalid_token", alg
    public_pem = pki.signer.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    head = b64url(json.dumps({"alg": "HS256", "x5c": [der_b64(pki.signer)]}).encode())
    signing_input = f"{head}.{b64url(payload)}"
    mac = hmac.digest(public_pem, signing_input.encode(), "sha256")
    hmac_token = f"{signing_input}.{b64url(mac)}"
    assert error_of(refusal(controller(pki), "Bearer " + hmac_token)) == "invalid_token"
    # signingalgorithms limits what is accepted.
    es256 = pki.sign(claims())
    assert check(controller(pki, algorithms=["ES256"]), "Bearer " + es256)
    refused = refusal(controller(pki, algorithms=["RS256", "PS256"]), "Bearer " + es256)
    assert error_of(refused) == "invalid_token"
    rs = pki.sign(claims(), "kid")  # the RSA CA key: RS256, and PS256 as 3.0 allows
    assert check(controller(pki), "Bearer " + rs)
    ps = pki.sign(claims(), "kid", alg="PS384")
    assert check(controller(pki), "Bearer " + ps)
    assert error_of(refusal(controller(pki, algorithms=["RS256"]), "Bearer " + ps))


# -- signing keys ------------------------------------------------------------------------------


def _cert(
    subject: str,
    key: Any,
    issuer: tuple[x509.Certificate, Any] | None,
    *,
    ca: bool | None,
    days: float = 1,
) -> x509.Certificate:
    now = dt.datetime.now(dt.UTC)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(issuer[0].subject if issuer else name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=2))
        .not_valid_after(now + dt.timedelta(days=days))
    )
    if ca is not None:
        builder = builder.add_extension(x509.BasicConstraints(ca=ca, path_length=None), True)
    return builder.sign(issuer[1] if issuer else key, hashes.SHA256())


def test_x5c_chains(pki: TokenPKI) -> None:
    """A chain through an intermediate verifies; a chain to another root, an intermediate that
    is no CA, an expired leaf, or garbage do not; nor does the leaf's key if it did not sign."""
    inter_key = ec.generate_private_key(ec.SECP256R1())
    inter = _cert("intermediate", inter_key, (pki.ca, pki.ca_key), ca=True)
    leaf_key = ec.generate_private_key(ec.SECP256R1())
    leaf = _cert("leaf", leaf_key, (inter, inter_key), ca=False)
    ctrl = controller(pki)

    def token(chain: list[str], key: Any = leaf_key) -> str:
        return "Bearer " + jwt.encode(claims(), key, algorithm="ES256", headers={"x5c": chain})

    assert check(ctrl, token([der_b64(leaf), der_b64(inter)]))
    not_ca = _cert("not a CA", inter_key, (pki.ca, pki.ca_key), ca=False)
    expired = _cert("leaf", leaf_key, (inter, inter_key), ca=False, days=-1)
    refused = [
        token([der_b64(leaf)]),  # the intermediate missing
        token([der_b64(leaf), der_b64(not_ca)]),
        token([der_b64(expired), der_b64(inter)]),
        token([der_b64(pki.untrusted)], pki.untrusted_key),
        token([der_b64(leaf), der_b64(inter)], pki.signer_key),  # signed by another key
        token(["bm90IGEgY2VydA=="]),
        token(["!!"]),
    ]
    for authorization in refused:
        assert error_of(refusal(ctrl, authorization)) == "invalid_token"


def test_a_self_signed_signer_in_the_bundle_verifies_itself(tmp_path: Path) -> None:
    """docker_auth's setup: the bundle holds the token server's own certificate."""
    key = ec.generate_private_key(ec.SECP256R1())
    own = _cert("token server", key, None, ca=None)
    verifier = TokenVerifier(ISSUER, SERVICE, TrustedKeys.build([own]), clock=lambda: NOW)
    ctrl = TokenAccessController(REALM, SERVICE, verifier)
    by_x5c = jwt.encode(claims(), key, algorithm="ES256", headers={"x5c": [der_b64(own)]})
    public = key.public_key()
    by_kid = jwt.encode(claims(), key, algorithm="ES256", headers={"kid": libtrust_key_id(public)})
    assert check(ctrl, "Bearer " + by_x5c) == check(ctrl, "Bearer " + by_kid) == User("alice")


def test_kid_names_a_bundle_key_by_libtrust_id_or_thumbprint(pki: TokenPKI) -> None:
    ctrl = controller(pki)
    assert check(ctrl, "Bearer " + pki.sign(claims(), "kid"))
    assert check(ctrl, "Bearer " + pki.sign(claims(), "thumbprint"))
    key_id = libtrust_key_id(pki.ca.public_key())  # type: ignore[arg-type]
    assert key_id is not None and len(key_id.split(":")) == 12
    assert all(len(group) == 4 for group in key_id.split(":"))
    unknown = jwt.encode(claims(), pki.ca_key, algorithm="RS256", headers={"kid": "ABCD:EFGH"})
    assert error_of(refusal(ctrl, "Bearer " + unknown)) == "invalid_token"
    # The kid of a bundle key, signed by another key.
    other = rsa.generate_private_key(65537, 2048)
    forged = jwt.encode(claims(), other, algorithm="RS256", headers={"kid": key_id})
    assert error_of(refusal(ctrl, "Bearer " + forged)) == "invalid_token"
    nothing = jwt.encode(claims(), pki.ca_key, algorithm="RS256")
    assert error_of(refusal(ctrl, "Bearer " + nothing)) == "invalid_token"


def test_jwks_keys_by_their_kid(pki: TokenPKI, tmp_path: Path) -> None:
    ed_key = ed25519.Ed25519PrivateKey.generate()
    rsa_key = rsa.generate_private_key(65537, 2048)
    entries = [
        jwk.OKPKey.import_key(ed_key.public_key()).as_dict(private=False) | {"kid": "ed"},
        jwk.RSAKey.import_key(rsa_key.public_key()).as_dict(private=False) | {"kid": "rsa"},
        {"kty": "oct", "k": "c2VjcmV0", "kid": "hmac"},  # skipped: verifies nothing
        jwk.RSAKey.import_key(rsa_key.public_key()).as_dict(private=False),  # no kid: skipped
    ]
    path = tmp_path / "jwks.json"
    path.write_text(json.dumps({"keys": entries}))
    keys = load_jwks(path)
    assert sorted(keys) == ["ed", "rsa"]
    ctrl = controller(pki, jwks=keys)
    ed = jwt.encode(claims(), ed_key, algorithm="EdDSA", headers={"kid": "ed"})
    assert check(ctrl, "Bearer " + ed)
    assert check(ctrl, "Bearer " + jwt.encode(claims(), rsa_key, "RS512", headers={"kid": "rsa"}))
    swapped = jwt.encode(claims(), rsa_key, algorithm="RS256", headers={"kid": "ed"})
    assert error_of(refusal(ctrl, "Bearer " + swapped)) == "invalid_token"
    secret = jwt.encode(claims(), "c2VjcmV0" * 4, algorithm="HS256", headers={"kid": "hmac"})
    assert error_of(refusal(ctrl, "Bearer " + secret)) == "invalid_token"


def test_a_header_jwk(pki: TokenPKI) -> None:
    """A trusted key (by libtrust id, or named by its kid member), or one with a chain of its
    own to the bundle whose leaf is that key; any other is refused."""
    ctrl = controller(pki)
    ca_jwk = jwk.RSAKey.import_key(pki.ca.public_key()).as_dict(private=False)  # type: ignore[arg-type]
    assert check(ctrl, "Bearer " + pki.sign(claims(), "kid", jwk=ca_jwk))
    signer_jwk = jwk.ECKey.import_key(pki.signer.public_key()).as_dict(private=False)  # type: ignore[arg-type]
    chained = signer_jwk | {"x5c": [der_b64(pki.signer)]}

    def by(header_jwk: dict[str, Any], key: Any = pki.signer_key) -> str:
        alg = "RS256" if isinstance(key, rsa.RSAPrivateKey) else "ES256"
        return "Bearer " + jwt.encode(claims(), key, algorithm=alg, headers={"jwk": header_jwk})

    assert check(ctrl, by(chained))
    assert check(ctrl, by(ca_jwk, pki.ca_key))
    other = ec.generate_private_key(ec.SECP256R1())
    other_jwk = jwk.ECKey.import_key(other.public_key()).as_dict(private=False)
    named = other_jwk | {"kid": thumbprint(pki.ca.public_key())}  # type: ignore[arg-type]
    for authorization in (
        by(other_jwk, other),  # untrusted, no chain
        by(other_jwk | {"x5c": [der_b64(pki.signer)]}, other),  # a chain of another key
        by(named, other),  # names a trusted key: that key verifies, and it did not sign
        by({"kty": "EC"}),
    ):
        assert error_of(refusal(ctrl, authorization)) == "invalid_token"


# -- claims ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("change", "now", "accepted"),
    [
        ({}, NOW, True),
        ({"iss": "mallory"}, NOW, False),
        ({"aud": "elsewhere"}, NOW, False),
        ({"aud": ["elsewhere", SERVICE]}, NOW, True),  # distribution 3.0's list
        ({"aud": []}, NOW, False),
        ({"aud": None}, NOW, False),
        ({"exp": None}, NOW, False),  # absent: 0 to Go, long expired
        ({"exp": NOW}, NOW + 60, True),
        ({"exp": NOW}, NOW + 60.001, False),
        ({"nbf": NOW}, NOW - 60, True),
        ({"nbf": NOW}, NOW - 60.001, False),
        ({"nbf": None}, NOW, True),
    ],
)
def test_issuer_audience_and_times(
    pki: TokenPKI, change: dict[str, Any], now: float, accepted: bool
) -> None:
    ctrl = controller(pki, now=now)
    token = "Bearer " + pki.sign(claims(**change))
    if accepted:
        assert check(ctrl, token) == User("alice")
    else:
        assert error_of(refusal(ctrl, token)) == "invalid_token"


@pytest.mark.parametrize(
    ("granted", "access", "allowed"),
    [
        ([{"type": "repository", "name": "lib/app", "actions": ["pull"]}], PULL, True),
        ([{"type": "repository", "name": "lib/app", "actions": ["pull"]}], PUSH, False),
        ([{"type": "repository", "name": "lib/app", "actions": ["*"]}], PUSH, True),
        ([{"type": "repository", "name": "lib/app", "actions": ["*"]}], [CATALOG_ACCESS], False),
        ([{"type": "registry", "name": "catalog", "actions": ["*"]}], [CATALOG_ACCESS], True),
        ([{"type": "registry", "name": "catalog", "actions": ["pull"]}], [CATALOG_ACCESS], False),
        ([{"type": "repository", "name": "lib/App", "actions": ["pull"]}], PULL, False),
        ([{"type": "repository", "name": "lib/other", "actions": ["*"]}], PULL, False),
        # Entries of one resource add up; a class does not separate them (as Go's set).
        (
            [
                {"type": "repository", "name": "lib/app", "actions": ["pull"]},
                {"type": "repository", "class": "image", "name": "lib/app", "actions": ["push"]},
            ],
            PUSH,
            True,
        ),
        ([], [], True),  # /v2/: a valid token is enough
        (None, PULL, False),
    ],
)
def test_the_access_claim(
    pki: TokenPKI, granted: Any, access: Sequence[Access], allowed: bool
) -> None:
    ctrl = controller(pki)
    token = "Bearer " + pki.sign(claims(access=granted))
    if allowed:
        assert check(ctrl, token, access) == User("alice")
    else:
        assert error_of(refusal(ctrl, token, access)) == "insufficient_scope"


def test_a_remembered_token_still_expires(pki: TokenPKI) -> None:
    clock = [float(NOW)]
    verifier = TokenVerifier(ISSUER, SERVICE, TrustedKeys.build([pki.ca]), clock=lambda: clock[0])
    ctrl = TokenAccessController(REALM, SERVICE, verifier)
    token = "Bearer " + pki.sign(claims())
    assert check(ctrl, token) == User("alice")
    clock[0] = NOW + 300 + LEEWAY + 1
    assert error_of(refusal(ctrl, token)) == "invalid_token"


# -- challenges --------------------------------------------------------------------------------


def test_challenges_carry_the_scope_merged_by_resource(pki: TokenPKI) -> None:
    mount = [*repository_access("lib/app", "POST"), *repository_access("lib/src", "GET")]
    assert refusal(controller(pki), None, mount) == (
        f'Bearer realm="{REALM}",service="{SERVICE}",'
        'scope="repository:lib/app:pull,push repository:lib/src:pull"'
    )
    assert refusal(controller(pki), None, []) == f'Bearer realm="{REALM}",service="{SERVICE}"'
    token = "Bearer " + pki.sign(claims(access=[]))
    assert refusal(controller(pki), token, [CATALOG_ACCESS]).endswith(
        ',scope="registry:catalog:*",error="insufficient_scope"'
    )


def test_autoredirect_builds_the_realm_from_the_host(pki: TokenPKI) -> None:
    header = refusal(controller(pki, autoredirect=True), None)
    assert header.startswith('Bearer realm="https://registry.test:5000/auth/token",')
    header = refusal(controller(pki, autoredirect=True, autoredirectpath="/v2/token"), None)
    assert header.startswith('Bearer realm="https://registry.test:5000/v2/token",')


def test_go_quote() -> None:
    assert go_quote('a "b" \\c') == '"a \\"b\\" \\\\c"'
    assert go_quote("tab\there\n\x1f\x7f") == '"tab\\there\\n\\x1f\\x7f"'
    assert go_quote("régistre\u00a0\u200b😀") == '"régistre\\u00a0\\u200b😀"'


# -- configuration -----------------------------------------------------------------------------


def token_section(**changes: Any) -> dict[str, Any]:
    section = {"realm": REALM, "service": SERVICE, "issuer": ISSUER, **changes}
    return {"auth": {"token": {k: v for k, v in section.items() if v is not None}}}


def test_the_config_builds_the_controller(pki: TokenPKI, tmp_path: Path) -> None:
    config = parse_config(token_section(rootcertbundle=str(pki.bundle), autoredirect=True))
    assert config.auth is not None and config.auth.controller == "token"
    ctrl = open_access_controller(config)
    assert isinstance(ctrl, TokenAccessController)
    assert check(ctrl, "Bearer " + pki.issue(GRANT)) == User("alice")
    assert refusal(ctrl, None).startswith('Bearer realm="https://registry.test:5000/auth/token"')
    jwks = tmp_path / "jwks.json"
    entry = jwk.RSAKey.import_key(pki.ca.public_key()).as_dict(private=False) | {"kid": "k1"}  # type: ignore[arg-type]
    jwks.write_text(json.dumps({"keys": [entry]}))
    config = parse_config(token_section(jwks=str(jwks), signingalgorithms=["RS256"]))
    ctrl = open_access_controller(config)
    assert isinstance(ctrl, TokenAccessController)
    token = jwt.encode(pki.claims(GRANT), pki.ca_key, algorithm="RS256", headers={"kid": "k1"})
    assert check(ctrl, "Bearer " + token) == User("alice")
    assert ctrl.verifier.algorithms == frozenset({"RS256"})


@pytest.mark.parametrize(
    ("files", "key", "reason"),
    [
        ({"rootcertbundle": "missing.pem"}, "auth.token.rootcertbundle", "cannot read"),
        ({"rootcertbundle": "empty.pem"}, "auth.token.rootcertbundle", "no PEM certificate"),
        ({"rootcertbundle": "key.pem"}, "auth.token.rootcertbundle", "no PEM certificate"),
        ({"jwks": "missing.json"}, "auth.token.jwks", "cannot read"),
        ({"jwks": "bad.json"}, "auth.token.jwks", "not a JSON Web Key Set"),
        ({"jwks": "hmac.json"}, "auth.token.jwks", "holds no key"),
        ({"jwks": "broken.json"}, "auth.token.jwks", "key 0"),
    ],
)
def test_files_that_cannot_be_used_stop_the_server(
    tmp_path: Path, files: dict[str, str], key: str, reason: str
) -> None:
    (tmp_path / "empty.pem").write_text("")
    key_pem = ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    (tmp_path / "key.pem").write_bytes(key_pem)
    (tmp_path / "bad.json").write_text('{"keys": 5}')
    (tmp_path / "hmac.json").write_text('{"keys": [{"kty": "oct", "k": "c2VjcmV0", "kid": "h"}]}')
    (tmp_path / "broken.json").write_text('{"keys": [{"kty": "EC", "kid": "e", "crv": "P-256"}]}')
    config = parse_config(token_section(**{k: str(tmp_path / v) for k, v in files.items()}))
    with pytest.raises(ConfigError) as info:
        open_access_controller(config)
    assert info.value.key == key
    assert reason in info.value.reason


def test_a_bundle_skips_other_pem_blocks(pki: TokenPKI, tmp_path: Path) -> None:
    key_pem = pki.signer_key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    path = tmp_path / "mixed.pem"
    path.write_bytes(key_pem + pki.bundle.read_bytes())
    assert load_root_bundle(path) == [pki.ca]
    with pytest.raises(TokenKeyError):
        load_root_bundle(tmp_path / "nothing.pem")


# -- auth.silly --------------------------------------------------------------------------------


def test_silly_lets_in_any_authorization() -> None:
    silly = SillyAccessController('realm "r"', "svc")
    for header in ("x", "Basic nonsense", "Bearer  a b"):
        assert asyncio.run(silly.authorized(header, PUSH)) == User("silly")
    for header in (None, "", " \t "):
        with pytest.raises(AuthChallenge) as info:
            asyncio.run(silly.authorized(header, PUSH))
        assert info.value.headers == {
            "WWW-Authenticate": 'Bearer realm="realm \\"r\\"",service="svc",'
            'scope="repository:lib/app:pull repository:lib/app:push"'
        }
    with pytest.raises(AuthChallenge) as info:
        asyncio.run(silly.authorized(None, []))
    assert info.value.headers["WWW-Authenticate"] == 'Bearer realm="realm \\"r\\"",service="svc"'
    config = parse_config({"auth": {"silly": {"realm": "r", "service": "s"}}})
    assert isinstance(open_access_controller(config), SillyAccessController)
