"""Attacks on access control against a real ``distblob serve`` on loopback.

The guide's policy ("anyone pulls, only ``ci`` pushes to ``team/*``") with ``auth.htpasswd``,
plus ``alice``, who may push only to ``alice/*``. An attacker with an account of their own
(``mallory``) guesses ``ci``'s password: logging in as themself between guesses must not reset
the slowing of failed logins. Then the requests the policy refuses, with names spelled to make
the policy judge one repository and the handler act on another (``%2F``, ``%2e%2e``, double and
trailing slashes, case), a cross-repository mount from a repository the user may not pull, and
another repository's upload Location: each is refused and leaves storage as it was.
"""

from __future__ import annotations

import base64
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import bcrypt
import pytest

from support.goregistry import sha256_digest
from support.server import DistblobServer

pytestmark = pytest.mark.timeout(180)

USERS = {"ci": "ci-Secret-1", "alice": "alice-Secret-2", "mallory": "mallory-Secret-3"}
POLICY: list[dict[str, Any]] = [
    {"users": ["anonymous", "*"], "repositories": ["team/**"], "actions": ["pull"]},
    {"users": ["ci"], "repositories": ["team/*", "secret/*"], "actions": ["pull", "push"]},
    {"users": ["alice"], "repositories": ["alice/*"], "actions": ["pull", "push", "delete"]},
]
SECRET = b"only ci may read this\n"
SECRET_DIGEST = sha256_digest(SECRET)


def basic(user: str, password: str | None = None) -> dict[str, str]:
    token = base64.b64encode(f"{user}:{password or USERS[user]}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


@pytest.fixture
def server(tmp_path: Path) -> Iterator[DistblobServer]:
    htpasswd = tmp_path / "htpasswd"
    htpasswd.write_bytes(
        b"".join(
            user.encode() + b":" + bcrypt.hashpw(password.encode(), bcrypt.gensalt(4)) + b"\n"
            for user, password in USERS.items()
        )
    )
    config = {
        "auth": {"htpasswd": {"realm": "registry", "path": str(htpasswd)}},
        "access": POLICY,
    }
    with DistblobServer(tmp_path / "root", delete_enabled=True, extra_config=config) as srv:
        yield srv


def snapshot(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


def test_logging_in_as_oneself_does_not_reset_the_slowing_of_guesses(
    server: DistblobServer,
) -> None:
    with server.client() as client:
        for i in range(31):  # the 30 free failures, then one slowed
            wrong = client.request("GET", "/v2/team/app/tags/list", headers=basic("ci", f"x{i}"))
            assert wrong.status == 401
        mine = client.request("GET", "/v2/team/app/tags/list", headers=basic("mallory"))
        assert mine.status == 404  # mallory logged in: the repository is just empty
        started = time.monotonic()
        wrong = client.request("GET", "/v2/team/app/tags/list", headers=basic("ci", "again"))
        assert wrong.status == 401
        assert time.monotonic() - started >= 0.9  # still slowed (1 s, the second doubling)
        # ci's own right password is still accepted, after its wait, and forgives ci's guesses.
        assert client.request("GET", "/v2/", headers=basic("ci")).status == 200
        started = time.monotonic()
        assert client.request("GET", "/v2/", headers=basic("alice")).status == 200
        assert time.monotonic() - started < 0.5


@pytest.mark.parametrize(
    "name",
    [
        "secret%2Fapp",
        "alice/x/../../secret/app",
        "alice/%2e%2e/secret/app",
        "alice//x",
        "alice/x/",
        "ALICE/x",
        "alice%2Fx%2F..%2F..%2Fsecret%2Fapp",
    ],
)
def test_spelled_names_are_judged_as_the_handler_acts(server: DistblobServer, name: str) -> None:
    root = server.root
    with server.client() as client:
        pushed = client.request(
            "POST",
            f"/v2/secret/app/blobs/uploads/?digest={SECRET_DIGEST}",
            body=SECRET,
            headers=basic("ci"),
        )
        assert pushed.status == 201
        before = snapshot(root)
        post = client.request(
            "POST",
            f"/v2/{name}/blobs/uploads/?digest={SECRET_DIGEST}",
            body=SECRET,
            headers=basic("alice"),
        )
        assert post.status in (400, 403, 404), post
        mount = client.request(
            "POST",
            f"/v2/alice/x/blobs/uploads/?mount={SECRET_DIGEST}&from={name}",
            headers=basic("alice"),
        )
        assert mount.status in (202, 403), mount  # never 201: nothing mounted
        got = client.request("GET", f"/v2/{name}/blobs/{SECRET_DIGEST}", headers=basic("alice"))
        assert got.status in (400, 403, 404), got
        assert SECRET not in got.body
        mounted = client.request(
            "GET", f"/v2/alice/x/blobs/{SECRET_DIGEST}", headers=basic("alice")
        )
        assert mounted.status == 404
    # Only alice's own upload sessions (a mount that cannot be done opens one) were added.
    added = set(snapshot(root)) - set(before)
    assert all(p.startswith("docker/registry/v2/repositories/alice/x") for p in added), added
    assert not any("_layers" in p or "_manifests" in p for p in added), added


def test_another_repositorys_upload_location_is_refused(server: DistblobServer) -> None:
    with server.client() as client:
        started = client.request("POST", "/v2/secret/app/blobs/uploads/", headers=basic("ci"))
        assert started.status == 202
        location = started.headers["Location"]
        before = snapshot(server.root)
        stolen = location.replace("/v2/secret/app/", "/v2/alice/x/")
        for method, body in (("PATCH", SECRET), ("PUT", SECRET), ("GET", None), ("DELETE", None)):
            target = stolen + (f"&digest={SECRET_DIGEST}" if method == "PUT" else "")
            answer = client.request(method, target, body=body, headers=basic("alice"))
            assert answer.status in (400, 404), (method, answer)
            as_is = location + (f"&digest={SECRET_DIGEST}" if method == "PUT" else "")
            answer = client.request(method, as_is, body=body, headers=basic("alice"))
            assert answer.status == 403, (method, answer)
        assert snapshot(server.root) == before
