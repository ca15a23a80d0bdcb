"""``auth.htpasswd``: ``distblob serve`` and the Go registry 2.8.2 side by side, one config.

Both servers read one htpasswd file (bcrypt entries, written here) through the same ``auth``
section. A request matrix, credentials (none, a wrong password, an unknown user, the right
ones, and two malformed headers) by request (``/v2/``, a blob pull, an upload POST, a mount,
the catalog, a DELETE, a method the route does not take, the ``/v2`` redirect), must get the
same status, the same OCI error (code, message and the access records in ``detail``) and the
same ``WWW-Authenticate`` challenge from both. Then the file is changed under both servers
(picked up without a restart) and removed (both refuse every login). ``distblob serve`` refuses
to start without the file, where the Go registry writes one with a user of its own.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import bcrypt
import pytest
import yaml

from support.goregistry import GoRegistry, RegistryClient, Response, sha256_digest
from support.server import DistblobServer

pytestmark = pytest.mark.timeout(120)

REALM = 'registry "auth" realm'  # quotes: the challenge quotes them as Go does
USER, PASSWORD = "alice", "C0rrect-Horse"
COST = 5
REPO, OTHER = "lib/app", "lib/mounted"
BLOB = b"a blob behind htpasswd\n"
DIGEST = sha256_digest(BLOB)


def entry(user: str, password: str) -> bytes:
    return user.encode() + b":" + bcrypt.hashpw(password.encode(), bcrypt.gensalt(COST)) + b"\n"


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def auth_config(path: Path) -> dict[str, Any]:
    return {"auth": {"htpasswd": {"realm": REALM, "path": str(path)}}}


class AuthClient(RegistryClient):
    """A :class:`RegistryClient` that sends one ``Authorization`` header with every request."""

    def __init__(self, base_url: str, authorization: str) -> None:
        super().__init__(base_url)
        self.authorization = authorization

    def request(self, method: str, location: str, **options: Any) -> Response:
        headers = {**(options.pop("headers", None) or {}), "Authorization": self.authorization}
        return super().request(method, location, headers=headers, **options)


@pytest.fixture(scope="module")
def htpasswd(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("auth") / "htpasswd"
    path.write_bytes(entry(USER, PASSWORD) + b"bob:{SHA}W6ph5Mm5Pz8GgiULbPgzG37mj9g=\n")
    return path


@pytest.fixture(scope="module")
def go(tmp_path_factory: pytest.TempPathFactory, htpasswd: Path) -> Iterator[GoRegistry]:
    with GoRegistry(tmp_path_factory.mktemp("go"), extra_config=auth_config(htpasswd)) as srv:
        with AuthClient(srv.url, basic(USER, PASSWORD)) as client:
            assert client.push_blob(REPO, BLOB) == DIGEST
        yield srv


@pytest.fixture(scope="module")
def ours(tmp_path_factory: pytest.TempPathFactory, htpasswd: Path) -> Iterator[DistblobServer]:
    root = tmp_path_factory.mktemp("ours")
    with DistblobServer(root, extra_config=auth_config(htpasswd)) as srv:
        with AuthClient(srv.url, basic(USER, PASSWORD)) as client:
            assert client.push_blob(REPO, BLOB) == DIGEST
        yield srv
        assert "unexpected error" not in srv.log_text(), srv.log_text()


CREDENTIALS: dict[str, str | None] = {
    "none": None,
    "wrong password": basic(USER, "wrong"),
    "unknown user": basic("mallory", PASSWORD),
    "not bcrypt": basic("bob", "password"),  # bob's entry is {SHA}: skipped
    "right": basic(USER, PASSWORD),
    "bearer": "Bearer abc.def.ghi",
    "not base64": "Basic !!!",
}

REQUESTS: dict[str, tuple[str, str]] = {
    "base": ("GET", "/v2/"),
    "base HEAD": ("HEAD", "/v2/"),
    "pull": ("GET", f"/v2/{REPO}/blobs/{DIGEST}"),
    "pull HEAD": ("HEAD", f"/v2/{REPO}/blobs/{DIGEST}"),
    "push": ("POST", f"/v2/{REPO}/blobs/uploads/"),
    "mount": ("POST", f"/v2/{OTHER}/blobs/uploads/?mount={DIGEST}&from={REPO}"),
    "catalog": ("GET", "/v2/_catalog"),
    "delete": ("DELETE", f"/v2/{REPO}/blobs/{DIGEST}"),  # deletes are off on both
    "a method the route does not take": ("PUT", f"/v2/{REPO}/blobs/{DIGEST}"),
    "redirect": ("GET", "/v2"),
}


def errors(response: Response) -> Any:
    """The error list of an OCI error body; ``None`` for any other body."""
    try:
        body = json.loads(response.body)
    except ValueError:
        return None
    return body.get("errors") if isinstance(body, dict) else None


def codes(response: Response) -> list[str] | None:
    found = errors(response)
    return None if found is None else [e["code"] for e in found]


def ask(url: str, method: str, path: str, authorization: str | None) -> Response:
    headers = {} if authorization is None else {"Authorization": authorization}
    with RegistryClient(url) as client:
        return client.request(method, path, headers=headers)


@pytest.mark.parametrize("request_name", list(REQUESTS))
@pytest.mark.parametrize("credentials", list(CREDENTIALS))
def test_the_request_matrix_is_answered_as_by_go(
    go: GoRegistry, ours: DistblobServer, credentials: str, request_name: str
) -> None:
    method, path = REQUESTS[request_name]
    authorization = CREDENTIALS[credentials]
    theirs = ask(go.url, method, path, authorization)
    mine = ask(ours.url, method, path, authorization)
    assert mine.status == theirs.status, (mine.body, theirs.body)
    challenge = theirs.headers.get("WWW-Authenticate")
    assert mine.headers.get("WWW-Authenticate") == challenge
    if theirs.status == 401:
        assert challenge == 'Basic realm="registry \\"auth\\" realm"'
    if method == "HEAD" or theirs.status == 301:
        return
    if theirs.status == 405 and errors(theirs) is None:
        # Go's router answers a method the route does not take in plain text; ours is the
        # OCI error (tested in test_server.py). What matters here: after the gate.
        assert codes(mine) == ["UNSUPPORTED"]
        return
    if theirs.status == 401:
        # The same error, down to distribution's access records in its detail.
        assert errors(mine) == errors(theirs)
    else:  # past the gate: the same codes (the details of other errors are not auth's)
        assert codes(mine) == codes(theirs)
    if request_name == "pull" and theirs.status == 200:
        assert mine.body == theirs.body == BLOB
    if request_name == "catalog" and theirs.status == 200:
        assert json.loads(mine.body) == json.loads(theirs.body)


def test_the_matrix_says_what_it_should(go: GoRegistry, ours: DistblobServer) -> None:
    """The matrix compares, so it would pass if both servers were open: what Go answers."""
    for url in (go.url, ours.url):
        assert ask(url, "GET", "/v2/", None).status == 401
        assert ask(url, "POST", f"/v2/{REPO}/blobs/uploads/", None).status == 401
        assert ask(url, "GET", "/v2/", CREDENTIALS["right"]).status == 200
        pulled = ask(url, "GET", f"/v2/{REPO}/blobs/{DIGEST}", CREDENTIALS["right"])
        assert pulled.status == 200 and pulled.body == BLOB
        refused = ask(url, "GET", "/v2/_catalog", CREDENTIALS["wrong password"])
        assert errors(refused) == [
            {
                "code": "UNAUTHORIZED",
                "message": "authentication required",
                "detail": [{"Type": "registry", "Class": "", "Name": "catalog", "Action": "*"}],
            }
        ]


def test_no_credential_reaches_the_servers_log(ours: DistblobServer) -> None:
    tried = [basic(USER, "Wr0ng-Guess"), basic("mallory-user", "M4llory-Guess")]
    for authorization in [*tried, CREDENTIALS["right"]]:
        assert authorization is not None
        ask(ours.url, "GET", "/v2/", authorization)
        ask(ours.url, "POST", f"/v2/{REPO}/blobs/uploads/", authorization)
    log = ours.log_text()
    assert "authentication failed: invalid credentials" in log
    assert 'path="/v2/" status=401' in log  # the access log is in there
    for secret in (PASSWORD, "Wr0ng-Guess", "M4llory-Guess", "mallory-user"):
        assert secret not in log
    for authorization in tried:
        assert authorization.split()[1] not in log


def test_a_changed_or_removed_file_as_go(tmp_path: Path) -> None:
    """Both servers read the file again when it changes, and refuse every login while it is
    gone (400 without a body, as Go); requests without credentials are still challenged."""
    path = tmp_path / "htpasswd"
    path.write_bytes(entry(USER, PASSWORD))
    config = auth_config(path)
    with (
        GoRegistry(tmp_path / "go", extra_config=config) as go,
        DistblobServer(tmp_path / "ours", extra_config=config) as ours,
    ):

        def statuses(authorization: str | None) -> tuple[int, int]:
            theirs, mine = (ask(url, "GET", "/v2/", authorization) for url in (go.url, ours.url))
            if theirs.status == 400:
                assert mine.body == theirs.body == b""
            return theirs.status, mine.status

        assert statuses(basic(USER, PASSWORD)) == (200, 200)
        fresh = tmp_path / "htpasswd.new"
        fresh.write_bytes(entry(USER, "changed") + entry("carol", "new-user"))
        os.replace(fresh, path)
        assert statuses(basic(USER, PASSWORD)) == (401, 401)
        assert statuses(basic(USER, "changed")) == (200, 200)
        assert statuses(basic("carol", "new-user")) == (200, 200)
        saved = path.read_bytes()
        path.unlink()
        assert statuses(basic(USER, "changed")) == (400, 400)
        assert statuses(None) == (401, 401)
        path.write_bytes(saved)
        assert statuses(basic(USER, "changed")) == (200, 200)
    assert ours.log_text().count("every login fails") == 1


def test_serve_refuses_to_start_without_the_file(tmp_path: Path) -> None:
    config = tmp_path / "config.yml"
    missing = tmp_path / "htpasswd"
    config.write_text(yaml.safe_dump({"http": {"secret": "s"}, **auth_config(missing)}))
    result = subprocess.run(
        [sys.executable, "-m", "distblob.cli", "serve", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    assert result.returncode == 2
    assert "config: auth.htpasswd.path: cannot read" in result.stderr
    assert not missing.exists()  # nothing provisioned (Go writes a user and logs its password)
