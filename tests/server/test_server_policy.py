"""``access``: distblob's access policy in ``distblob serve``, with skopeo and a pull-through cache.

"Anyone pulls, only ``ci`` pushes to ``team/*``" with ``auth.htpasswd``: skopeo pulls without
credentials (it sends empty Basic credentials once ``/v2/`` has challenged it), an anonymous push
is 401, a push by a user outside the pattern is 403 DENIED and skopeo says so, a push by ``ci``
works. The same policy in front of a pull-through cache. The Go registry has no such policy;
without ``access`` the side-by-side matrix of ``test_server_auth.py`` holds unchanged.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from email.message import Message
from pathlib import Path
from typing import Any

import bcrypt
import pytest

from support.goregistry import (
    OciImage,
    RegistryClient,
    SkopeoError,
    check_pulled_dir,
    make_oci_image_layout,
    sha256_digest,
    skopeo_pull,
    skopeo_push,
)
from support.server import DistblobServer
from support.tokenserver import ISSUER, SERVICE, TokenPKI

pytestmark = pytest.mark.timeout(180)

USERS = {"ci": "ci-Secret-1", "alice": "alice-Secret-2"}
POLICY: list[dict[str, Any]] = [
    {"users": ["anonymous", "*"], "repositories": ["**"], "actions": ["pull"]},
    {"users": ["ci"], "repositories": ["team/*"], "actions": ["pull", "push"]},
]
BLOB = b"a blob behind a policy\n"
DIGEST = sha256_digest(BLOB)


def basic(user: str) -> dict[str, str]:
    token = base64.b64encode(f"{user}:{USERS[user]}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


@pytest.fixture
def htpasswd(tmp_path: Path) -> Path:
    path = tmp_path / "htpasswd"
    path.write_bytes(
        b"".join(
            user.encode() + b":" + bcrypt.hashpw(password.encode(), bcrypt.gensalt(5)) + b"\n"
            for user, password in USERS.items()
        )
    )
    return path


def policy_config(htpasswd: Path, access: list[dict[str, Any]] = POLICY) -> dict[str, Any]:
    return {"auth": {"htpasswd": {"realm": "policy", "path": str(htpasswd)}}, "access": access}


@pytest.fixture
def image(tmp_path: Path) -> OciImage:
    layers = [os.urandom(200_000), b"second layer\n" * 1000]
    return make_oci_image_layout(tmp_path / "layout", layers, tag="v1")


def ask(
    client: RegistryClient, method: str, path: str, headers: dict[str, str] | None = None
) -> tuple[int, Message, Any]:
    """The status, headers and body (decoded when it is JSON) of one request."""
    response = client.request(method, path, headers=headers or {})
    try:
        body = json.loads(response.body)
    except ValueError:
        body = response.body
    return response.status, response.headers, body


def test_skopeo_anonymous_pull_and_pushes_by_policy(
    htpasswd: Path, image: OciImage, tmp_path: Path
) -> None:
    with DistblobServer(tmp_path / "root", extra_config=policy_config(htpasswd)) as server:
        skopeo_push(image, server.host, "team/app:v1", creds=f"ci:{USERS['ci']}")

        skopeo_pull(server.host, "team/app:v1", tmp_path / "pulled")  # no credentials
        check_pulled_dir(tmp_path / "pulled", image)

        with pytest.raises(SkopeoError) as anonymous:
            skopeo_push(image, server.host, "team/other:v1")
        assert "authentication required" in anonymous.value.stderr.decode()

        with pytest.raises(SkopeoError) as outside:
            skopeo_push(image, server.host, "team/app:v2", creds=f"alice:{USERS['alice']}")
        assert "requested access to the resource is denied" in outside.value.stderr.decode()

        with pytest.raises(SkopeoError) as elsewhere:
            skopeo_push(image, server.host, "lib/app:v1", creds=f"ci:{USERS['ci']}")
        assert "requested access to the resource is denied" in elsewhere.value.stderr.decode()

        log = server.log_text()
    assert 'path="/v2/team/app/manifests/v1" status=201' in log
    assert "user=ci" in log and "user=alice" in log
    for password in USERS.values():
        assert password not in log


def test_the_answers_of_the_policy(htpasswd: Path, tmp_path: Path) -> None:
    with (
        DistblobServer(tmp_path / "root", extra_config=policy_config(htpasswd)) as server,
        server.client() as client,
    ):
        ci = basic("ci")
        for repo in ("team/app", "lib/app"):
            status, _, _ = ask(client, "POST", f"/v2/{repo}/blobs/uploads/", ci)
            assert status == (202 if repo == "team/app" else 403)
        started = client.request("POST", "/v2/team/app/blobs/uploads/", headers=ci)
        assert started.status == 202
        done = client.request(
            "PUT",
            client._with_query(started.headers["Location"], digest=DIGEST),
            headers={**ci, "Content-Type": "application/octet-stream"},
            body=BLOB,
        )
        assert done.status == 201

        status, _, body = ask(client, "GET", f"/v2/team/app/blobs/{DIGEST}")
        assert (status, body) == (200, BLOB)
        status, headers, _ = ask(client, "GET", "/v2/")
        assert status == 401 and headers.get("WWW-Authenticate") == 'Basic realm="policy"'
        status, headers, body = ask(client, "POST", "/v2/team/app/blobs/uploads/")
        assert status == 401 and "WWW-Authenticate" in headers
        assert [e["code"] for e in body["errors"]] == ["UNAUTHORIZED"]
        wrong = {"Authorization": "Basic " + base64.b64encode(b"ci:wrong").decode()}
        assert ask(client, "GET", f"/v2/team/app/blobs/{DIGEST}", wrong)[0] == 401
        status, headers, body = ask(client, "DELETE", f"/v2/team/app/blobs/{DIGEST}", ci)
        assert status == 403 and "WWW-Authenticate" not in headers
        assert body["errors"][0]["code"] == "DENIED"
        assert body["errors"][0]["detail"] == [
            {"Type": "repository", "Class": "", "Name": "team/app", "Action": "delete"}
        ]
        assert ask(client, "GET", "/v2/_catalog", basic("alice"))[0] == 403


def test_the_policy_holds_in_front_of_a_pull_through_cache(htpasswd: Path, tmp_path: Path) -> None:
    access = [
        {"users": ["anonymous"], "repositories": ["lib/**"], "actions": ["pull"]},
        {"users": ["ci"], "repositories": ["**"], "actions": ["pull"]},
    ]
    with DistblobServer(tmp_path / "upstream") as upstream:
        with upstream.client() as client:
            for repo in ("lib/app", "team/app"):
                assert client.push_blob(repo, BLOB) == DIGEST
        extra = {**policy_config(htpasswd, access), "proxy": {"remoteurl": upstream.url}}
        with (
            DistblobServer(tmp_path / "cache", extra_config=extra) as cache,
            cache.client() as client,
        ):
            status, _, body = ask(client, "GET", f"/v2/lib/app/blobs/{DIGEST}")
            assert (status, body) == (200, BLOB)
            status, headers, _ = ask(client, "GET", f"/v2/team/app/blobs/{DIGEST}")
            assert status == 401 and "WWW-Authenticate" in headers
            status, _, body = ask(client, "GET", f"/v2/team/app/blobs/{DIGEST}", basic("alice"))
            assert status == 403 and body["errors"][0]["code"] == "DENIED"
            status, _, body = ask(client, "GET", f"/v2/team/app/blobs/{DIGEST}", basic("ci"))
            assert (status, body) == (200, BLOB)


def test_the_policy_over_auth_token(tmp_path: Path) -> None:
    """Any controller: with ``auth.token`` the policy judges the token's subject, on top of what
    the token grants, and anonymous pulls need no token."""
    pki = TokenPKI.create(tmp_path / "pki")
    token = {
        "realm": "https://auth.example.com/token",
        "service": SERVICE,
        "issuer": ISSUER,
        "rootcertbundle": str(pki.bundle),
    }
    push = [{"type": "repository", "name": "team/app", "actions": ["pull", "push"]}]

    def bearer(subject: str) -> dict[str, str]:
        return {"Authorization": "Bearer " + pki.issue(push, subject=subject)}

    extra = {"auth": {"token": token}, "access": POLICY}
    with (
        DistblobServer(tmp_path / "root", extra_config=extra) as server,
        server.client() as client,
    ):
        started = client.request("POST", "/v2/team/app/blobs/uploads/", headers=bearer("ci"))
        assert started.status == 202
        location = client._with_query(started.headers["Location"], digest=DIGEST)
        assert client.request("PUT", location, headers=bearer("ci"), body=BLOB).status == 201
        status, _, body = ask(client, "GET", f"/v2/team/app/blobs/{DIGEST}")
        assert (status, body) == (200, BLOB)
        # The token grants alice the push; the policy does not.
        status, headers, body = ask(client, "POST", "/v2/team/app/blobs/uploads/", bearer("alice"))
        assert status == 403 and body["errors"][0]["code"] == "DENIED"
        status, headers, _ = ask(client, "POST", "/v2/team/app/blobs/uploads/")
        assert status == 401 and str(headers.get("WWW-Authenticate")).startswith("Bearer ")


def test_serve_refuses_a_policy_naming_users_without_auth(tmp_path: Path) -> None:
    config = tmp_path / "config.yml"
    config.write_text(json.dumps({"access": POLICY}))
    done = subprocess.run(
        [sys.executable, "-m", "distblob.cli", "serve", "--config", str(config)],
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    assert "config: access[0].users: names users, but there is no auth section" in (
        done.stderr.decode()
    )
