"""``auth.token`` and ``auth.silly``: ``distblob serve`` and the Go registry 2.8.2 side by side.

Both servers run one config: token auth whose ``rootcertbundle`` is the CA of the tests' token
service (:mod:`support.tokenserver`). A matrix of ``Authorization`` headers (none, Basic, a
malformed token, tokens for another repository, expired, not valid yet, for another audience or
issuer, signed by an untrusted key, a bad signature, and the right tokens by ``x5c``, ``kid``
and wildcard) by request (``/v2/``, pull, push, mount, delete, catalog) must get the same
status, the same OCI error (code, message, access records) and the same ``WWW-Authenticate``
challenge from both: parameters in the same order, the scope compared as sets of actions (Go
keeps them in a map, so their order varies). Then the same for ``auth.silly``, and the places
where distblob differs on purpose (a list ``aud``, taken as distribution 3.0 takes it).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from joserfc import jwk

from support.goregistry import GoRegistry, RegistryClient, Response, sha256_digest
from support.server import DistblobServer
from support.tokenserver import ISSUER, SERVICE, TokenPKI, der_b64

pytestmark = pytest.mark.timeout(120)

REALM = 'https://auth.example.test/token?x="q"'  # a quote: both quote it as Go's %q
REPO, OTHER = "lib/app", "lib/mounted"
BLOB = b"a blob behind token auth\n"
DIGEST = sha256_digest(BLOB)
UNKNOWN = sha256_digest(b"never pushed")

EVERYTHING = [
    {"type": "repository", "name": REPO, "actions": ["pull", "push", "delete"]},
    {"type": "repository", "name": OTHER, "actions": ["pull", "push"]},
    {"type": "registry", "name": "catalog", "actions": ["*"]},
]


def token_config(pki: TokenPKI) -> dict[str, Any]:
    return {
        "auth": {
            "token": {
                "realm": REALM,
                "service": SERVICE,
                "issuer": ISSUER,
                "rootcertbundle": str(pki.bundle),
            }
        }
    }


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> TokenPKI:
    return TokenPKI.create(tmp_path_factory.mktemp("pki"))


def bearer(token: str) -> str:
    return "Bearer " + token


@pytest.fixture(scope="module")
def go(tmp_path_factory: pytest.TempPathFactory, pki: TokenPKI) -> Iterator[GoRegistry]:
    root = tmp_path_factory.mktemp("go")
    with GoRegistry(root, delete_enabled=True, extra_config=token_config(pki)) as srv:
        with AuthClient(srv.url, bearer(pki.issue(EVERYTHING))) as client:
            assert client.push_blob(REPO, BLOB) == DIGEST
        yield srv


@pytest.fixture(scope="module")
def ours(tmp_path_factory: pytest.TempPathFactory, pki: TokenPKI) -> Iterator[DistblobServer]:
    root = tmp_path_factory.mktemp("ours")
    with DistblobServer(root, delete_enabled=True, extra_config=token_config(pki)) as srv:
        with AuthClient(srv.url, bearer(pki.issue(EVERYTHING))) as client:
            assert client.push_blob(REPO, BLOB) == DIGEST
        yield srv
        assert "unexpected error" not in srv.log_text(), srv.log_text()


class AuthClient(RegistryClient):
    """A :class:`RegistryClient` that sends one ``Authorization`` header with every request."""

    def __init__(self, base_url: str, authorization: str) -> None:
        super().__init__(base_url)
        self.authorization = authorization

    def request(self, method: str, location: str, **options: Any) -> Response:
        headers = {**(options.pop("headers", None) or {}), "Authorization": self.authorization}
        return super().request(method, location, headers=headers, **options)


def public_jwk(key: Any) -> dict[str, Any]:
    """A public key as a JWK (no ``kid``: distribution 2.8 names it by its libtrust id)."""
    return jwk.ECKey.import_key(key).as_dict(private=False)


def tampered(token: str) -> str:
    """``token`` with its claims changed (a longer subject) and its signature kept."""
    header, claims, signature = token.split(".")
    return f"{header}.{claims[:-4]}AAAA.{signature}"


def credentials(pki: TokenPKI, name: str) -> str | None:
    """The ``Authorization`` header a row of the matrix sends (tokens made now: their times
    are relative to the test's)."""
    pull_other = [{"type": "repository", "name": "lib/else", "actions": ["pull", "push"]}]
    wildcard = [
        {"type": "repository", "name": REPO, "actions": ["*"]},
        {"type": "repository", "name": OTHER, "actions": ["*"]},
        {"type": "registry", "name": "catalog", "actions": ["*"]},
    ]
    pull_only = [{"type": "repository", "name": n, "actions": ["pull"]} for n in (REPO, OTHER)]
    ca_jwk = public_jwk(pki.ca.public_key())
    signer_jwk = public_jwk(pki.signer.public_key()) | {"x5c": [der_b64(pki.signer)]}
    untrusted_jwk = public_jwk(pki.untrusted.public_key())
    rows: dict[str, Any] = {
        "none": lambda: None,
        "basic": lambda: "Basic YWxpY2U6YWxpY2UtcGFzc3dvcmQ=",
        "bearer, two spaces": lambda: "Bearer  " + pki.issue(EVERYTHING),
        "bearer, empty": lambda: "Bearer ",
        "malformed": lambda: "Bearer abc.def.ghi",
        "not a JWT": lambda: "Bearer not-a-token",
        "another repository": lambda: bearer(pki.issue(pull_other)),
        "pull only": lambda: bearer(pki.issue(pull_only)),
        "expired": lambda: bearer(pki.issue(EVERYTHING, lifetime=-120)),
        "expired within leeway": lambda: bearer(pki.issue(EVERYTHING, lifetime=-5)),
        "another audience": lambda: bearer(pki.issue(EVERYTHING, audience="elsewhere")),
        "another issuer": lambda: bearer(pki.issue(EVERYTHING, issuer="mallory")),
        "untrusted key": lambda: bearer(pki.issue(EVERYTHING, "untrusted")),
        "tampered": lambda: bearer(tampered(pki.issue(EVERYTHING))),
        "right, x5c": lambda: bearer(pki.issue(EVERYTHING)),
        "right, kid": lambda: bearer(pki.issue(EVERYTHING, "kid")),
        "right, lowercase scheme": lambda: "bearer " + pki.issue(EVERYTHING),
        "wildcard actions": lambda: bearer(pki.issue(wildcard)),
        "right, jwk": lambda: bearer(pki.sign(pki.claims(EVERYTHING), "kid", jwk=ca_jwk)),
        "right, jwk with x5c": lambda: bearer(
            pki.sign(pki.claims(EVERYTHING), "x5c", jwk=signer_jwk, x5c=[])
        ),
        "untrusted jwk": lambda: bearer(
            pki.sign(pki.claims(EVERYTHING), "untrusted", jwk=untrusted_jwk, x5c=[])
        ),
    }
    return rows[name]()  # type: ignore[no-any-return]


CREDENTIALS = [
    "none",
    "basic",
    "bearer, two spaces",
    "bearer, empty",
    "malformed",
    "not a JWT",
    "another repository",
    "pull only",
    "expired",
    "expired within leeway",
    "another audience",
    "another issuer",
    "untrusted key",
    "tampered",
    "right, x5c",
    "right, kid",
    "right, lowercase scheme",
    "wildcard actions",
    "right, jwk",
    "right, jwk with x5c",
    "untrusted jwk",
]

REQUESTS: dict[str, tuple[str, str]] = {
    "base": ("GET", "/v2/"),
    "pull": ("GET", f"/v2/{REPO}/blobs/{DIGEST}"),
    "pull HEAD": ("HEAD", f"/v2/{REPO}/blobs/{DIGEST}"),
    "push": ("POST", f"/v2/{REPO}/blobs/uploads/"),
    "mount": ("POST", f"/v2/{OTHER}/blobs/uploads/?mount={DIGEST}&from={REPO}"),
    "delete": ("DELETE", f"/v2/{REPO}/blobs/{UNKNOWN}"),
    "catalog": ("GET", "/v2/_catalog"),
}


def ask(url: str, method: str, path: str, authorization: str | None) -> Response:
    headers = {} if authorization is None else {"Authorization": authorization}
    with RegistryClient(url) as client:
        return client.request(method, path, headers=headers)


def errors(response: Response) -> Any:
    try:
        body = json.loads(response.body)
    except ValueError:
        return None
    return body.get("errors") if isinstance(body, dict) else None


_PARAM = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


def challenge(header: str | None) -> tuple[str, list[tuple[str, Any]]] | None:
    """A ``Bearer`` challenge as its scheme and parameters in order, the scope as a set of
    (type, name, set of actions)."""
    if header is None:
        return None
    scheme, _, rest = header.partition(" ")
    params: list[tuple[str, Any]] = []
    for name, value in _PARAM.findall(rest):
        if name == "scope":
            scopes = set()
            for item in value.split(" "):
                kind, _, tail = item.partition(":")
                resource, _, actions = tail.rpartition(":")
                scopes.add((kind, resource, frozenset(actions.split(","))))
            params.append((name, scopes))
        else:
            params.append((name, value))
    assert ",".join(f'{n}="{v}"' for n, v in _PARAM.findall(rest)) == rest, header
    return scheme, params


@pytest.mark.parametrize("request_name", list(REQUESTS))
@pytest.mark.parametrize("name", CREDENTIALS)
def test_the_token_matrix_is_answered_as_by_go(
    go: GoRegistry, ours: DistblobServer, pki: TokenPKI, name: str, request_name: str
) -> None:
    method, path = REQUESTS[request_name]
    authorization = credentials(pki, name)
    theirs = ask(go.url, method, path, authorization)
    mine = ask(ours.url, method, path, authorization)
    assert mine.status == theirs.status, (mine.body, theirs.body)
    assert challenge(mine.headers.get("WWW-Authenticate")) == challenge(
        theirs.headers.get("WWW-Authenticate")
    )
    if method == "HEAD":
        return
    if theirs.status == 401:
        assert errors(mine) == errors(theirs)
    else:
        assert [e["code"] for e in errors(mine) or []] == [e["code"] for e in errors(theirs) or []]
    if theirs.status == 200 and request_name in ("pull", "catalog"):
        assert mine.body == theirs.body or json.loads(mine.body) == json.loads(theirs.body)


def test_the_matrix_says_what_it_should(
    go: GoRegistry, ours: DistblobServer, pki: TokenPKI
) -> None:
    """What Go answers, so that the comparison above is not of two open registries."""
    push = REQUESTS["push"]
    for url in (go.url, ours.url):
        refused = ask(url, *push, None)
        assert refused.status == 401
        assert refused.headers["WWW-Authenticate"] == (
            'Bearer realm="https://auth.example.test/token?x=\\"q\\"",'
            f'service="{SERVICE}",scope="repository:{REPO}:'
            + refused.headers["WWW-Authenticate"].split(f"{REPO}:")[1]
        )
        expired = ask(url, *push, credentials(pki, "expired"))
        assert expired.headers["WWW-Authenticate"].endswith(',error="invalid_token"')
        scoped = ask(url, *push, credentials(pki, "pull only"))
        assert scoped.headers["WWW-Authenticate"].endswith(',error="insufficient_scope"')
        assert ask(url, *push, credentials(pki, "right, x5c")).status == 202
        assert ask(url, "GET", "/v2/", credentials(pki, "right, kid")).status == 200


def test_a_list_audience_is_taken_as_distribution_3_takes_it(
    go: GoRegistry, ours: DistblobServer, pki: TokenPKI
) -> None:
    """distribution 2.8 reads ``aud`` as a string (a list is a malformed token); 3.0 takes a
    string or a list holding the service. distblob does as 3.0 (documented)."""
    token = pki.issue(EVERYTHING, audience=["elsewhere", SERVICE])
    assert ask(go.url, "GET", "/v2/", bearer(token)).status == 401
    assert ask(ours.url, "GET", "/v2/", bearer(token)).status == 200
    token = pki.issue(EVERYTHING, audience=["elsewhere"])
    assert ask(ours.url, "GET", "/v2/", bearer(token)).status == 401


def test_a_thumbprint_kid_is_taken_as_distribution_3_takes_it(
    go: GoRegistry, ours: DistblobServer, pki: TokenPKI
) -> None:
    """distribution 2.8 names a bundle key by its libtrust id only; 3.0 also by its RFC 7638
    thumbprint, and so does distblob (documented)."""
    token = bearer(pki.issue(EVERYTHING, "thumbprint"))
    assert ask(go.url, "GET", "/v2/", token).status == 401
    assert ask(ours.url, "GET", "/v2/", token).status == 200


# -- auth.silly ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def silly_pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    config = {"auth": {"silly": {"realm": "silly-realm", "service": "silly-service"}}}
    go_root, our_root = tmp_path_factory.mktemp("silly-go"), tmp_path_factory.mktemp("silly")
    with (
        GoRegistry(go_root, extra_config=config) as go_srv,
        DistblobServer(our_root, extra_config=config) as our_srv,
    ):
        for url in (go_srv.url, our_srv.url):
            with AuthClient(url, "anything") as client:
                assert client.push_blob(REPO, BLOB) == DIGEST
        yield go_srv.url, our_srv.url


@pytest.mark.parametrize("request_name", ["base", "pull", "push", "mount", "catalog"])
@pytest.mark.parametrize("authorization", [None, "", "anything", "Bearer x"])
def test_silly_is_answered_as_by_go(
    silly_pair: tuple[str, str], authorization: str | None, request_name: str
) -> None:
    go_url, our_url = silly_pair
    method, path = REQUESTS[request_name]
    theirs = ask(go_url, method, path, authorization)
    mine = ask(our_url, method, path, authorization)
    assert mine.status == theirs.status
    # silly lists each record on its own: the order is the records', the same on both.
    assert mine.headers.get("WWW-Authenticate") == theirs.headers.get("WWW-Authenticate")
    if theirs.status == 401:
        assert errors(mine) == errors(theirs)
        assert theirs.headers["WWW-Authenticate"].startswith(
            'Bearer realm="silly-realm",service="silly-service"'
        )


def test_serve_refuses_a_bundle_it_cannot_use(tmp_path: Path) -> None:
    import subprocess
    import sys

    import yaml

    bundle = tmp_path / "empty.pem"
    bundle.write_text("no certificate here\n")
    config = tmp_path / "config.yml"
    token = {"realm": "r", "service": "s", "issuer": "i", "rootcertbundle": str(bundle)}
    config.write_text(yaml.safe_dump({"http": {"secret": "s"}, "auth": {"token": token}}))
    result = subprocess.run(
        [sys.executable, "-m", "distblob.cli", "serve", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "config: auth.token.rootcertbundle:" in result.stderr
