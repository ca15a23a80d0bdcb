"""``access``: distblob's access policy on its own, in the config, and in the gate in-process.

The patterns and principals are checked against the policy object; the config's errors name the
key at fault; the gate is driven through the app with a controller written here (the policy
takes whatever user any controller returns): anonymous served without the controller, 401 for
no or wrong credentials, 403 DENIED for a user not granted, ``/v2/`` still challenged, and the
user in the access log. ``tests/server/test_server_policy.py`` runs it in ``distblob serve``.
"""

from __future__ import annotations

import base64
import json
import logging
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from distblob.auth import CATALOG_ACCESS, Access, User, repository_access
from distblob.auth.policy import (
    ANONYMOUS,
    ANY_USER,
    Policy,
    PolicyError,
    compile_pattern,
    is_anonymous,
    principals,
)
from distblob.config import ConfigError, parse_config
from distblob.errors import AuthChallenge
from distblob.registry import Registry
from distblob.server import create_app

with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # starlette prefers httpx2; plain httpx works in-process
    from starlette.testclient import TestClient

EXAMPLE: list[dict[str, Any]] = [
    {"users": [ANONYMOUS, ANY_USER], "repositories": ["**"], "actions": ["pull"]},
    {"users": ["ci"], "repositories": ["team/*"], "actions": ["pull", "push"]},
]


def pull(name: str) -> tuple[Access, ...]:
    return repository_access(name, "GET")


def push(name: str) -> tuple[Access, ...]:
    return repository_access(name, "PUT")


# -- patterns ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("pattern", "matches", "misses"),
    [
        ("team/*", ["team/app", "team/a-b"], ["team", "team/a/b", "teams/app", "x/team/app"]),
        ("team/**", ["team/a", "team/a/b/c"], ["team", "teams/a"]),
        ("**", ["a", "a/b", "a/b/c"], []),
        ("a/**/b", ["a/b", "a/x/b", "a/x/y/b"], ["a/xb", "a/b/c", "b"]),
        ("**/app", ["app", "x/app", "x/y/app"], ["xapp", "app/x"]),
        ("lib/app-*", ["lib/app-1", "lib/app-"], ["lib/app", "lib/app-1/x"]),
        ("*/*", ["a/b"], ["a", "a/b/c"]),
        ("lib/app", ["lib/app"], ["lib/app2", "lib/ap", "lib"]),
        ("lib.v1/a_b", ["lib.v1/a_b"], ["libxv1/a_b"]),  # the dot is no wildcard
    ],
)
def test_patterns_match_component_by_component(
    pattern: str, matches: list[str], misses: list[str]
) -> None:
    compiled = compile_pattern(pattern)
    assert [name for name in matches if compiled.fullmatch(name)] == matches
    assert [name for name in misses if compiled.fullmatch(name)] == []


@pytest.mark.parametrize(
    "pattern", ["", "/a", "a/", "a//b", "Team/*", "a/***", "a/b**", "a?", "a/[b]", "a b", "**x"]
)
def test_a_pattern_that_names_nothing_is_refused(pattern: str) -> None:
    with pytest.raises(PolicyError) as caught:
        compile_pattern(pattern, "access[3].repositories")
    assert caught.value.key == "access[3].repositories"


# -- principals and grants -----------------------------------------------------------------------


def test_principals() -> None:
    assert principals(None) == {ANONYMOUS}
    assert principals("ci") == {"ci", ANY_USER, ANONYMOUS}
    # A user literally named anonymous is the anonymous principal and nothing more.
    assert principals(ANONYMOUS) == {ANONYMOUS}


def test_anyone_pulls_only_ci_pushes_to_team() -> None:
    policy = Policy.parse(EXAMPLE)
    for user in (None, "alice", "ci", ANONYMOUS):
        assert policy.allows(user, pull("lib/app"))
        assert policy.allows(user, pull("team/app"))
        assert not policy.allows(user, push("lib/app"))
        assert not policy.allows(user, repository_access("team/app", "DELETE"))
    assert policy.allows("ci", push("team/app"))
    assert not policy.allows("ci", push("team/a/b"))  # one component
    for user in (None, "alice", ANONYMOUS):
        assert not policy.allows(user, push("team/app"))
    assert not policy.allows("ci", (CATALOG_ACCESS,))
    assert policy.allows("ci", ())  # /v2/ needs nothing


def test_every_record_must_be_granted_by_some_rule() -> None:
    policy = Policy.parse(
        [
            {"users": ["ci"], "repositories": ["team/*"], "actions": ["push"]},
            {"users": ["*"], "repositories": ["**"], "actions": ["pull"]},
        ]
    )
    # pull from one rule (via "*"), push from the other: granted.
    assert policy.allows("ci", push("team/app"))
    # A cross-repository mount also needs pull on its source.
    mount = push("team/app") + pull("other/base")
    assert policy.allows("ci", mount)
    only_push = Policy.parse([{"users": ["ci"], "repositories": ["**"], "actions": ["push"]}])
    assert not only_push.allows("ci", push("team/app"))  # a push needs pull too


def test_anonymous_grants_apply_to_every_user_and_star_not_to_anonymous() -> None:
    policy = Policy.parse(
        [
            {"users": [ANONYMOUS], "repositories": ["public/**"], "actions": ["pull"]},
            {"users": ["*"], "repositories": ["internal/**"], "actions": ["pull"]},
        ]
    )
    assert policy.allows("bob", pull("public/a"))
    assert policy.allows("bob", pull("internal/a"))
    assert not policy.allows(None, pull("internal/a"))
    assert not policy.allows(ANONYMOUS, pull("internal/a"))  # a user named anonymous


def test_catalog_and_delete_actions() -> None:
    policy = Policy.parse(
        [
            {"users": ["admin"], "actions": ["catalog"]},
            {"users": ["admin"], "repositories": ["**"], "actions": ["delete"]},
        ]
    )
    assert policy.allows("admin", (CATALOG_ACCESS,))
    assert policy.allows("admin", repository_access("a/b", "DELETE"))
    assert not policy.allows("admin", pull("a/b"))
    assert not policy.allows("other", (CATALOG_ACCESS,))
    assert not policy.allows("admin", (Access("registry", "other", "*"),))


def test_empty_basic_credentials_are_anonymous() -> None:
    assert is_anonymous(None)
    assert is_anonymous("Basic Og==")
    assert is_anonymous("basic Og==")
    for header in ("Basic " + base64.b64encode(b"a:").decode(), "Basic Og", "Bearer x", "Basic"):
        assert not is_anonymous(header)


# -- the config ----------------------------------------------------------------------------------


def htpasswd_auth(tmp_path: Path) -> dict[str, Any]:
    return {"htpasswd": {"realm": "r", "path": str(tmp_path / "htpasswd")}}


def test_the_config_reads_the_policy(tmp_path: Path) -> None:
    config = parse_config({"auth": htpasswd_auth(tmp_path), "access": EXAMPLE})
    assert config.access is not None and len(config.access.rules) == 2
    assert parse_config({}).access is None
    # Anonymous only stands without auth: a read-only registry.
    read_only = parse_config(
        {"access": [{"users": [ANONYMOUS], "repositories": ["**"], "actions": ["pull"]}]}
    )
    assert read_only.access is not None and read_only.access.anonymous_only()


@pytest.mark.parametrize(
    ("access", "key"),
    [
        ({"users": ["a"]}, "access"),
        (
            [{"users": ["a"], "repositories": ["**"], "actions": ["pull"], "who": 1}],
            "access[0].who",
        ),
        (
            [EXAMPLE[0], {"users": ["a"], "repositories": ["**"], "actions": ["pul"]}],
            "access[1].actions",
        ),
        ([{"users": ["a"], "repositories": ["**"], "actions": []}], "access[0].actions"),
        ([{"users": [], "repositories": ["**"], "actions": ["pull"]}], "access[0].users"),
        ([{"users": [""], "repositories": ["**"], "actions": ["pull"]}], "access[0].users"),
        ([{"users": ["a"], "actions": ["pull"]}], "access[0].repositories"),
        ([{"users": ["a"], "repositories": "**", "actions": ["pull"]}], "access[0].repositories"),
        (
            [{"users": ["a"], "repositories": ["A/*"], "actions": ["pull"]}],
            "access[0].repositories",
        ),
        (["pull"], "access[0]"),
    ],
)
def test_config_errors_name_the_key(tmp_path: Path, access: object, key: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config({"auth": htpasswd_auth(tmp_path), "access": access})
    assert caught.value.key == key


def test_users_without_auth_are_refused() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config({"access": EXAMPLE})
    assert caught.value.key == "access[0].users"
    assert "auth" in caught.value.reason


# -- the gate, in-process ------------------------------------------------------------------------

REALM_HEADER = {"WWW-Authenticate": 'Basic realm="test"'}
PASSWORDS = {"ci": "ci-secret", "alice": "alice-secret", ANONYMOUS: "anon-secret"}


class Controller:
    """Any access controller: it knows users by a password and counts its calls."""

    def __init__(self) -> None:
        self.calls = 0

    async def authorized(
        self, authorization: str | None, access: Sequence[Access], *, host: str = ""
    ) -> User:
        self.calls += 1
        for user, password in PASSWORDS.items():
            if authorization == basic(user, password):
                return User(user)
        raise AuthChallenge("no", access, REALM_HEADER)


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


@pytest.fixture
def served(tmp_path: Path) -> tuple[TestClient, Controller, str]:
    registry = Registry.filesystem(tmp_path)
    digest = str(registry.repository("lib/app").blobs.put(b"layer").digest)
    registry.repository("team/app").blobs.put(b"layer")
    controller = Controller()
    app = create_app(
        registry, secret=b"s", access_controller=controller, access_policy=Policy.parse(EXAMPLE)
    )
    return TestClient(app, client=("127.0.0.9", 4000)), controller, digest


def test_anonymous_pull_is_served_without_the_controller(
    served: tuple[TestClient, Controller, str],
) -> None:
    client, controller, digest = served
    for headers in ({}, {"Authorization": "Basic Og=="}):
        response = client.get(f"/v2/lib/app/blobs/{digest}", headers=headers)
        assert response.status_code == 200 and response.content == b"layer"
    assert controller.calls == 0


def test_refusals(served: tuple[TestClient, Controller, str]) -> None:
    client, _, digest = served
    # No credentials, not granted: the controller's challenge.
    refused = client.post("/v2/team/app/blobs/uploads/")
    assert refused.status_code == 401
    assert refused.headers["WWW-Authenticate"] == 'Basic realm="test"'
    assert refused.json()["errors"][0]["code"] == "UNAUTHORIZED"
    # Wrong credentials never fall back to anonymous, even for what anonymous may do.
    wrong = client.get(f"/v2/lib/app/blobs/{digest}", headers={"Authorization": basic("ci", "x")})
    assert wrong.status_code == 401
    # /v2/ challenges a request without credentials, though anonymous may pull.
    for headers in ({}, {"Authorization": "Basic Og=="}):
        base = client.get("/v2/", headers=headers)
        assert base.status_code == 401 and "WWW-Authenticate" in base.headers
    # The right credentials of a user not granted: 403 DENIED with the records.
    alice = {"Authorization": basic("alice", PASSWORDS["alice"])}
    denied = client.post("/v2/team/app/blobs/uploads/", headers=alice)
    assert denied.status_code == 403
    assert "WWW-Authenticate" not in denied.headers
    assert denied.json()["errors"] == [
        {
            "code": "DENIED",
            "message": "requested access to the resource is denied",
            "detail": [
                {"Type": "repository", "Class": "", "Name": "team/app", "Action": "pull"},
                {"Type": "repository", "Class": "", "Name": "team/app", "Action": "push"},
            ],
        }
    ]
    assert client.head(f"/v2/team/app/blobs/{digest}", headers=alice).status_code == 200
    assert client.get("/v2/_catalog", headers=alice).status_code == 403
    assert client.get("/v2/", headers=alice).status_code == 200
    # A user named anonymous logs in and has what anonymous has, no more.
    anon = {"Authorization": basic(ANONYMOUS, PASSWORDS[ANONYMOUS])}
    assert client.get(f"/v2/lib/app/blobs/{digest}", headers=anon).status_code == 200
    assert client.post("/v2/team/app/blobs/uploads/", headers=anon).status_code == 403


def test_ci_pushes_to_team(served: tuple[TestClient, Controller, str]) -> None:
    client, _, _ = served
    ci = {"Authorization": basic("ci", PASSWORDS["ci"])}
    assert client.post("/v2/team/app/blobs/uploads/", headers=ci).status_code == 202
    assert client.post("/v2/lib/app/blobs/uploads/", headers=ci).status_code == 403
    # A method the route does not take is still refused after the policy.
    assert client.put("/v2/lib/app/blobs/sha256:" + "0" * 64).status_code == 401


def test_the_access_log_names_the_user(
    served: tuple[TestClient, Controller, str], caplog: pytest.LogCaptureFixture
) -> None:
    client, _, digest = served
    ci = basic("ci", PASSWORDS["ci"])
    with caplog.at_level(logging.INFO, logger="distblob.access"):
        client.post("/v2/team/app/blobs/uploads/", headers={"Authorization": ci})
        client.get(f"/v2/lib/app/blobs/{digest}")
        client.get("/v2/", headers={"Authorization": basic("ci", "wrong-guess")})
        client.post(
            "/v2/team/app/blobs/uploads/",
            headers={"Authorization": basic("alice", PASSWORDS["alice"])},
        )
    lines = [r.getMessage() for r in caplog.records if r.name == "distblob.access"]
    assert len(lines) == 4
    assert "status=202" in lines[0] and lines[0].endswith(" user=ci")
    assert "status=200" in lines[1] and lines[1].endswith(" user=-")
    assert "status=401" in lines[2] and lines[2].endswith(" user=-")
    assert "status=403" in lines[3] and lines[3].endswith(" user=alice")
    text = "\n".join(r.getMessage() for r in caplog.records)
    for secret in ("ci-secret", "wrong-guess", "alice-secret", ci.split()[1]):
        assert secret not in text


def test_a_user_name_cannot_forge_a_log_field(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    class Odd(Controller):
        async def authorized(
            self, authorization: str | None, access: Sequence[Access], *, host: str = ""
        ) -> User:
            return User('eve status=200 "x"')

    app = create_app(Registry.filesystem(tmp_path), secret=b"s", access_controller=Odd())
    with caplog.at_level(logging.INFO, logger="distblob.access"):
        TestClient(app).get("/v2/", headers={"Authorization": "Basic eDp5"})
    (line,) = [r.getMessage() for r in caplog.records if r.name == "distblob.access"]
    assert line.endswith(" user=" + json.dumps('eve status=200 "x"'))


def test_anonymous_only_policy_without_auth(tmp_path: Path) -> None:
    """A read-only registry: anyone pulls, nothing else; nobody can log in, so no challenge."""
    registry = Registry.filesystem(tmp_path)
    digest = str(registry.repository("lib/app").blobs.put(b"layer").digest)
    policy = Policy.parse([{"users": [ANONYMOUS], "repositories": ["lib/*"], "actions": ["pull"]}])
    client = TestClient(create_app(registry, secret=b"s", access_policy=policy))
    assert client.get("/v2/").status_code == 200
    assert client.get(f"/v2/lib/app/blobs/{digest}").status_code == 200
    pushed = client.post("/v2/lib/app/blobs/uploads/", headers={"Authorization": basic("x", "y")})
    assert pushed.status_code == 403 and "WWW-Authenticate" not in pushed.headers
    assert pushed.json()["errors"][0]["code"] == "DENIED"
    assert client.get(f"/v2/other/app/blobs/{digest}").status_code == 403
