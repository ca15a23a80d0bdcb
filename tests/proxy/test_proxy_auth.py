"""A pull-through cache behind ``auth``: ``distblob serve`` and the Go registry 2.8.2 side by side.

distribution gates a cache's clients with the same ``auth`` section as a registry's; so does
distblob (the dispatcher gates every resource, whichever registry serves it). Both caches here
front one open Go registry and read one htpasswd file. A request matrix, credentials (none, a
wrong password, the right ones) by request (``/v2/``, a manifest and a blob pull, a push, the
catalog, the tags list, a DELETE), must get the same status, the same OCI error and the same
challenge from both. And what an attacker would try: a client that cannot log in must not make
the cache fetch anything from its upstream (bandwidth and rate limits are the operator's).
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Iterator
from typing import Any

import bcrypt
import pytest

from support.goregistry import (
    OCI_CONFIG,
    OCI_LAYER_TAR,
    OCI_MANIFEST,
    GoRegistry,
    RegistryClient,
    Response,
    sha256_digest,
)
from support.server import DistblobServer

pytestmark = pytest.mark.timeout(120)

REALM = "cache-realm"
USER, PASSWORD = "alice", "Cache-Pa55word"
REPO = "lib/app"
LAYER = b"a layer the cache fetches\n"
CONFIG = b'{"architecture":"amd64","os":"linux"}'
#: Pushed upstream and never pulled with good credentials: the cache must never fetch it.
UNTOUCHED = b"nobody may make the cache fetch this\n"
BLOB_GET = re.compile(r'"GET /v2/[^ "]+/blobs/(sha256:[0-9a-f]{64}) HTTP')


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def manifest() -> bytes:
    def descriptor(media_type: str, data: bytes) -> dict[str, Any]:
        return {"mediaType": media_type, "digest": sha256_digest(data), "size": len(data)}

    body = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": descriptor(OCI_CONFIG, CONFIG),
        "layers": [descriptor(OCI_LAYER_TAR, LAYER)],
    }
    return json.dumps(body, separators=(",", ":")).encode()


def ask(url: str, method: str, path: str, authorization: str | None) -> Response:
    headers = {"Accept": OCI_MANIFEST}
    if authorization is not None:
        headers["Authorization"] = authorization
    with RegistryClient(url) as client:
        return client.request(method, path, headers=headers)


def errors(response: Response) -> Any:
    try:
        body = json.loads(response.body)
    except ValueError:
        return None
    return body.get("errors") if isinstance(body, dict) else None


@pytest.fixture(scope="module")
def upstream(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GoRegistry]:
    with GoRegistry(tmp_path_factory.mktemp("upstream")) as go:
        with go.client() as client:
            for blob in (CONFIG, LAYER, UNTOUCHED):
                client.push_blob(REPO, blob)
            client.put_manifest(REPO, "v1", manifest(), OCI_MANIFEST)
        yield go


@pytest.fixture(scope="module")
def cache_config(tmp_path_factory: pytest.TempPathFactory, upstream: GoRegistry) -> dict[str, Any]:
    htpasswd = tmp_path_factory.mktemp("auth") / "htpasswd"
    hashed = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(4))
    htpasswd.write_bytes(USER.encode() + b":" + hashed + b"\n")
    return {
        "proxy": {"remoteurl": upstream.url},
        "auth": {"htpasswd": {"realm": REALM, "path": str(htpasswd)}},
    }


@pytest.fixture(scope="module")
def go_cache(
    tmp_path_factory: pytest.TempPathFactory, cache_config: dict[str, Any]
) -> Iterator[GoRegistry]:
    with GoRegistry(tmp_path_factory.mktemp("go-cache"), extra_config=cache_config) as go:
        yield go


@pytest.fixture(scope="module")
def our_cache(
    tmp_path_factory: pytest.TempPathFactory, cache_config: dict[str, Any]
) -> Iterator[DistblobServer]:
    with DistblobServer(tmp_path_factory.mktemp("ours"), extra_config=cache_config) as srv:
        yield srv
        assert "unexpected error" not in srv.log_text(), srv.log_text()


CREDENTIALS: dict[str, str | None] = {
    "none": None,
    "wrong password": basic(USER, "wrong"),
    "right": basic(USER, PASSWORD),
}

REQUESTS: dict[str, tuple[str, str]] = {
    "base": ("GET", "/v2/"),
    "manifest": ("GET", f"/v2/{REPO}/manifests/v1"),
    "manifest HEAD": ("HEAD", f"/v2/{REPO}/manifests/v1"),
    "blob": ("GET", f"/v2/{REPO}/blobs/{sha256_digest(LAYER)}"),
    "push": ("POST", f"/v2/{REPO}/blobs/uploads/"),
    "tags": ("GET", f"/v2/{REPO}/tags/list"),
    "catalog": ("GET", "/v2/_catalog"),
    "delete": ("DELETE", f"/v2/{REPO}/manifests/v1"),
}


@pytest.mark.parametrize("request_name", list(REQUESTS))
@pytest.mark.parametrize("credentials", list(CREDENTIALS))
def test_a_cache_behind_auth_answers_as_go(
    go_cache: GoRegistry, our_cache: DistblobServer, credentials: str, request_name: str
) -> None:
    method, path = REQUESTS[request_name]
    authorization = CREDENTIALS[credentials]
    theirs = ask(go_cache.url, method, path, authorization)
    mine = ask(our_cache.url, method, path, authorization)
    assert mine.status == theirs.status, (mine.body, theirs.body)
    assert mine.headers.get("WWW-Authenticate") == theirs.headers.get("WWW-Authenticate")
    if theirs.status == 401:
        assert theirs.headers.get("WWW-Authenticate") == f'Basic realm="{REALM}"'
        assert errors(mine) == errors(theirs)  # the access records in the detail too
    elif method != "HEAD":
        assert [e["code"] for e in errors(mine) or []] == [e["code"] for e in errors(theirs) or []]
    if theirs.status == 200 and request_name in ("manifest", "blob"):
        assert mine.body == theirs.body


def test_the_matrix_says_what_it_should(go_cache: GoRegistry, our_cache: DistblobServer) -> None:
    """The matrix compares, so it would pass if both caches were open: what they answer."""
    for url in (go_cache.url, our_cache.url):
        assert ask(url, "GET", f"/v2/{REPO}/manifests/v1", None).status == 401
        pulled = ask(url, "GET", f"/v2/{REPO}/manifests/v1", CREDENTIALS["right"])
        assert pulled.status == 200 and pulled.body == manifest()
        layer = ask(url, "GET", f"/v2/{REPO}/blobs/{sha256_digest(LAYER)}", CREDENTIALS["right"])
        assert layer.status == 200 and layer.body == LAYER


def test_a_client_that_cannot_log_in_makes_the_cache_fetch_nothing(
    upstream: GoRegistry, our_cache: DistblobServer
) -> None:
    digest = sha256_digest(UNTOUCHED)
    for authorization in (None, CREDENTIALS["wrong password"], "Bearer forged.token.here"):
        for method in ("GET", "HEAD"):
            refused = ask(our_cache.url, method, f"/v2/{REPO}/blobs/{digest}", authorization)
            assert refused.status == 401
        refused = ask(our_cache.url, "GET", f"/v2/{REPO}/manifests/{digest}", authorization)
        assert refused.status == 401
    assert digest not in BLOB_GET.findall(upstream.log_text())
    assert not list(our_cache.root.glob(f"**/blobs/sha256/{digest[7:9]}/{digest[7:]}"))
    # and the same blob is fetched at once for a client that can
    pulled = ask(our_cache.url, "GET", f"/v2/{REPO}/blobs/{digest}", CREDENTIALS["right"])
    assert pulled.status == 200 and pulled.body == UNTOUCHED
    assert digest in BLOB_GET.findall(upstream.log_text())
    assert PASSWORD not in our_cache.log_text()
