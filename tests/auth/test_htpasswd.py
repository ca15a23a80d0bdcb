"""``distblob.auth.htpasswd``: the controller on its own, and in-process behind the app.

What cannot be seen from outside or takes a clock, a counter or a log to see: the file is
re-read when it changes without a restart, a successful check is remembered (and forgotten when
the file changes), a failed one never is, bcrypt runs off the event loop, an entry that is not
bcrypt is skipped with one warning, and no credential reaches a log (the access log captured).
The Go registry side by side is ``tests/server/test_server_auth.py``.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import os
import threading
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import bcrypt
import pytest

from distblob.auth import CATALOG_ACCESS, Access, User, repository_access
from distblob.auth.htpasswd import (
    BCRYPT_MAX_PASSWORD,
    HtpasswdAccessController,
    HtpasswdTable,
    basic_credentials,
    challenge_header,
)
from distblob.errors import AuthChallenge, AuthUnavailableError
from distblob.registry import Registry
from distblob.server import create_app

with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # starlette prefers httpx2; plain httpx works in-process
    from starlette.testclient import TestClient

pytestmark = [pytest.mark.timeout(60), pytest.mark.anyio]

COST = 4  # bcrypt's lowest: these tests count checks, not time them
RIGHT = "R1ght-Passw0rd"  # alice's: distinctive, so that a log holding it would show
PULL = repository_access("lib/app", "GET")


def entry(user: str, password: str | bytes, cost: int = COST) -> bytes:
    secret = password.encode() if isinstance(password, str) else password
    return user.encode() + b":" + bcrypt.hashpw(secret, bcrypt.gensalt(cost)) + b"\n"


def basic(user: str, password: str | bytes) -> str:
    secret = password.encode() if isinstance(password, str) else password
    return "Basic " + base64.b64encode(user.encode() + b":" + secret).decode()


def rewrite(path: Path, data: bytes) -> None:
    """Replace the file as an editor does (a new inode, renamed over the old one)."""
    fresh = path.with_suffix(".new")
    fresh.write_bytes(data)
    os.replace(fresh, path)


@pytest.fixture
def htpasswd(tmp_path: Path) -> Path:
    path = tmp_path / "htpasswd"
    path.write_bytes(entry("alice", RIGHT))
    return path


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"  # the server's event loop


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def checks(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[int]]:
    """The thread of every bcrypt check, in order (the real check still runs)."""
    threads: list[int] = []
    real: Callable[[bytes, bytes], bool] = bcrypt.checkpw

    def counted(password: bytes, hashed: bytes) -> bool:
        threads.append(threading.get_ident())
        return real(password, hashed)

    monkeypatch.setattr(bcrypt, "checkpw", counted)
    yield threads


async def refused(controller: HtpasswdAccessController, authorization: str | None) -> str:
    with pytest.raises(AuthChallenge) as info:
        await controller.authorized(authorization, PULL)
    assert info.value.headers == {"WWW-Authenticate": 'Basic realm="r"'}
    assert info.value.access == PULL
    return info.value.reason


# -- the access records ------------------------------------------------------------------------


def test_access_records_are_distributions() -> None:
    assert repository_access("a/b", "GET") == (Access("repository", "a/b", "pull"),)
    assert repository_access("a/b", "HEAD") == (Access("repository", "a/b", "pull"),)
    for method in ("POST", "PUT", "PATCH"):
        assert [a.action for a in repository_access("a/b", method)] == ["pull", "push"]
    assert repository_access("a/b", "DELETE") == (Access("repository", "a/b", "delete"),)
    assert repository_access("a/b", "OPTIONS") == ()
    assert CATALOG_ACCESS.scope == "registry:catalog:*"
    assert CATALOG_ACCESS.detail() == {
        "Type": "registry",
        "Class": "",
        "Name": "catalog",
        "Action": "*",
    }


# -- parsing -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (None, None),
        ("", None),
        (basic("alice", "pw"), ("alice", b"pw")),
        (basic("alice", "p:w:"), ("alice", b"p:w:")),  # the user ends at the first colon
        (basic("", ""), ("", b"")),
        ("basic " + base64.b64encode(b"alice:pw").decode(), ("alice", b"pw")),  # any case
        ("Basic " + base64.b64encode(b"alice:pw12").decode().rstrip("="), None),  # padding
        ("Basic  " + base64.b64encode(b"alice:pw").decode(), None),  # one space only
        ("Basic " + base64.b64encode(b"alice").decode(), None),  # no colon
        ("Basic !!!!", None),
        ("Bearer abc", None),
        ("Basic", None),
    ],
)
def test_basic_credentials_as_go_reads_them(
    header: str | None, expected: tuple[str, bytes] | None
) -> None:
    assert basic_credentials(header) == expected


def test_the_realm_is_quoted_as_go_quotes_it() -> None:
    assert challenge_header('my "quoted" \\ realm') == 'Basic realm="my \\"quoted\\" \\\\ realm"'


def test_only_bcrypt_entries_are_used() -> None:
    good = entry("alice", "pw")
    table = HtpasswdTable.parse(
        b"# a comment\n\n   \n"
        + b"bob:{SHA}W6ph5Mm5Pz8GgiULbPgzG37mj9g=\n"  # line 4
        + b"carol:$apr1$abcdefgh$0123456789abcdefghijkl\n"
        + b"dave:plaintext\n"
        + b"no colon here\n"  # line 7
        + good
        + b"alice:$2y$"  # line 9: bcrypt's shape cut short, and it is alice's last word
        + b"\r\n"
    )
    assert table.entries == {}
    assert table.skipped == (4, 5, 6, 7, 9)
    table = HtpasswdTable.parse(b"alice:{SHA}x\n" + good + b"  \r\n")
    assert list(table.entries) == ["alice"]
    assert table.skipped == (1,)
    assert table.check("alice", b"pw") and not table.check("alice", b"PW")


def test_a_password_is_read_to_bcrypts_72_bytes_as_go_reads_it() -> None:
    long = b"x" * BCRYPT_MAX_PASSWORD
    table = HtpasswdTable.parse(entry("alice", long))
    assert table.check("alice", long + b"ignored by bcrypt")
    assert not table.check("alice", long[:-1])


def test_an_unknown_user_costs_a_bcrypt(checks: list[int]) -> None:
    table = HtpasswdTable.parse(entry("alice", "pw", cost=5))
    assert not table.check("mallory", b"pw")
    assert len(checks) == 1  # against a hash of the file's cost, so it takes as long


# -- the controller ----------------------------------------------------------------------------


async def test_right_wrong_unknown_and_missing_credentials(htpasswd: Path) -> None:
    controller = HtpasswdAccessController.open("r", htpasswd)
    assert await controller.authorized(basic("alice", RIGHT), PULL) == User("alice")
    assert await refused(controller, None) == "no basic credentials"
    assert await refused(controller, "Bearer x") == "no basic credentials"
    assert await refused(controller, basic("alice", "wrong")) == "invalid credentials"
    assert await refused(controller, basic("mallory", RIGHT)) == "invalid credentials"


async def test_bcrypt_runs_in_a_worker_thread(htpasswd: Path, checks: list[int]) -> None:
    controller = HtpasswdAccessController.open("r", htpasswd)
    await controller.authorized(basic("alice", RIGHT), PULL)
    await refused(controller, basic("alice", "wrong"))
    assert len(checks) == 2
    assert threading.get_ident() not in checks


async def test_a_success_is_remembered_a_failure_never(htpasswd: Path, checks: list[int]) -> None:
    clock = Clock()
    controller = HtpasswdAccessController("r", htpasswd, cache_ttl=60, clock=clock)
    for _ in range(3):
        assert await controller.authorized(basic("alice", RIGHT), PULL) == User("alice")
    assert len(checks) == 1
    for _ in range(3):
        await refused(controller, basic("alice", "wrong"))
        await refused(controller, basic("mallory", RIGHT))
    assert len(checks) == 7  # every failure is a bcrypt of its own
    assert len(controller._cache) == 1
    # What is remembered is a keyed hash: neither the password nor the header is kept.
    (key,) = controller._cache
    assert len(key) == 32 and RIGHT.encode() not in key
    assert RIGHT not in repr(vars(controller)) and basic("alice", RIGHT) not in repr(
        vars(controller)
    )
    # Until it expires.
    clock.now += 61
    await controller.authorized(basic("alice", RIGHT), PULL)
    assert len(checks) == 8


async def test_the_cache_is_bounded(htpasswd: Path) -> None:
    htpasswd.write_bytes(b"".join(entry(f"user{i}", "pw") for i in range(5)))
    controller = HtpasswdAccessController("r", htpasswd, cache_size=3)
    for i in range(5):
        await controller.authorized(basic(f"user{i}", "pw"), PULL)
    assert len(controller._cache) == 3
    assert sorted(user for user, _ in controller._cache.values()) == ["user2", "user3", "user4"]


async def test_a_changed_file_is_read_again_without_a_restart(
    htpasswd: Path, checks: list[int]
) -> None:
    controller = HtpasswdAccessController.open("r", htpasswd)
    await controller.authorized(basic("alice", RIGHT), PULL)
    await controller.authorized(basic("alice", RIGHT), PULL)
    assert len(checks) == 1  # remembered
    # An editor's rename: the remembered success goes with the old file.
    rewrite(htpasswd, entry("alice", "changed") + entry("bob", "pw"))
    await refused(controller, basic("alice", RIGHT))
    assert await controller.authorized(basic("alice", "changed"), PULL) == User("alice")
    assert await controller.authorized(basic("bob", "pw"), PULL) == User("bob")
    # An in-place rewrite (same inode), even one that keeps the size and the mtime.
    stat = htpasswd.stat()
    data = entry("alice", "samesize") + entry("bob", "pw")
    assert len(data) == stat.st_size
    with htpasswd.open("r+b") as file:
        file.write(data)
    os.utime(htpasswd, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    await refused(controller, basic("alice", "changed"))
    assert await controller.authorized(basic("alice", "samesize"), PULL) == User("alice")


async def test_a_check_that_outlives_its_file_is_not_remembered(
    htpasswd: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    controller = HtpasswdAccessController.open("r", htpasswd)
    real = bcrypt.checkpw

    def slow(password: bytes, hashed: bytes) -> bool:
        rewrite(htpasswd, entry("alice", "other"))  # the file changes during the check
        controller.table()
        return real(password, hashed)

    monkeypatch.setattr(bcrypt, "checkpw", slow)
    await controller.authorized(basic("alice", RIGHT), PULL)
    assert controller._cache == {}


async def test_an_unreadable_file_refuses_every_login_until_it_is_back(
    htpasswd: Path, caplog: pytest.LogCaptureFixture
) -> None:
    controller = HtpasswdAccessController.open("r", htpasswd)
    await controller.authorized(basic("alice", RIGHT), PULL)
    saved = htpasswd.read_bytes()
    htpasswd.unlink()
    with caplog.at_level(logging.INFO, logger="distblob.auth"):
        for _ in range(3):
            with pytest.raises(AuthUnavailableError):
                await controller.authorized(basic("alice", RIGHT), PULL)
        assert await refused(controller, None) == "no basic credentials"
        htpasswd.write_bytes(saved)
        assert await controller.authorized(basic("alice", RIGHT), PULL) == User("alice")
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1 and "every login fails" in errors[0].getMessage()
    assert "readable again" in caplog.text
    with pytest.raises(FileNotFoundError):
        HtpasswdAccessController.open("r", htpasswd.with_name("absent"))


async def test_a_non_bcrypt_entry_is_skipped_with_one_warning(
    htpasswd: Path, caplog: pytest.LogCaptureFixture
) -> None:
    htpasswd.write_bytes(
        entry("alice", RIGHT) + b"bob:{SHA}W6ph5Mm5Pz8GgiULbPgzG37mj9g=\ncarol:plain\n"
    )
    with caplog.at_level(logging.WARNING, logger="distblob.auth"):
        controller = HtpasswdAccessController.open("r", htpasswd)
        for _ in range(3):
            await controller.authorized(basic("alice", RIGHT), PULL)
            await refused(controller, basic("bob", "password"))
            await refused(controller, basic("carol", "plain"))
    (warning,) = caplog.records
    assert warning.levelno == logging.WARNING
    assert "2 entries skipped (lines 2, 3)" in warning.getMessage()
    assert "W6ph5" not in caplog.text and "carol" not in caplog.text


# -- in process, behind the app ----------------------------------------------------------------


def test_no_credential_reaches_a_log(
    htpasswd: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    controller = HtpasswdAccessController.open("r", htpasswd)
    registry = Registry.filesystem(tmp_path / "root")
    app = create_app(registry, secret="s", access_controller=controller)
    tried = {
        "right": basic("alice", RIGHT),
        "wrong": basic("alice", "Wr0ng-Passw0rd"),
        "unknown": basic("mallory-the-user", "M4ll0ry-Passw0rd"),
        "garbled": "Basic not-base64-Passw0rd",
    }
    answers: dict[str, Any] = {}
    with caplog.at_level(logging.DEBUG), TestClient(app) as client:
        for name, header in tried.items():
            for path in ("/v2/", "/v2/lib/app/blobs/sha256:" + "0" * 64, "/v2/_catalog"):
                answers[name, path] = client.get(path, headers={"Authorization": header})
            answers[name, "push"] = client.post(
                "/v2/lib/app/blobs/uploads/", headers={"Authorization": header}
            )
    assert answers["right", "/v2/"].status_code == 200
    assert answers["right", "push"].status_code == 202
    assert all(r.status_code == 401 for (name, _), r in answers.items() if name != "right")
    access = [r for r in caplog.records if r.name == "distblob.access"]
    assert len(access) == len(answers)  # the access log was captured
    assert "authentication failed: invalid credentials" in caplog.text
    for secret in (
        RIGHT,
        "Wr0ng-Passw0rd",
        "M4ll0ry-Passw0rd",
        "mallory-the-user",
        "not-base64",
        *(header.split(" ", 1)[1] for header in tried.values()),
    ):
        assert secret not in caplog.text, secret


def test_the_gate_comes_before_the_read_only_refusal(htpasswd: Path, tmp_path: Path) -> None:
    """A pull-through cache honours ``auth`` for its own clients (as distribution's does):
    an anonymous write is 401 before it is 405 UNSUPPORTED."""
    controller = HtpasswdAccessController.open("r", htpasswd)
    from distblob.config import ProxyConfig

    app = create_app(
        Registry.filesystem(tmp_path / "cache"),
        secret="s",
        proxy=ProxyConfig(remoteurl="http://127.0.0.1:9"),
        access_controller=controller,
    )
    right = {"Authorization": basic("alice", RIGHT)}
    with TestClient(app) as client:
        assert client.get("/v2/").status_code == 401
        assert client.get("/v2/", headers=right).status_code == 200
        assert client.post("/v2/lib/app/blobs/uploads/").status_code == 401
        response = client.post("/v2/lib/app/blobs/uploads/", headers=right)
        assert response.status_code == 405
        assert response.json()["errors"][0]["code"] == "UNSUPPORTED"


def test_bcrypt_never_holds_the_event_loop(htpasswd: Path, tmp_path: Path) -> None:
    """While one login's bcrypt runs (cost 12, a few hundred ms), a request that needs no
    bcrypt (its check remembered) is answered."""
    htpasswd.write_bytes(entry("alice", RIGHT) + entry("slow", "pw", cost=12))
    controller = HtpasswdAccessController.open("r", htpasswd)
    app = create_app(
        Registry.filesystem(tmp_path / "root"), secret="s", access_controller=controller
    )
    right = {"Authorization": basic("alice", RIGHT)}
    order: list[str] = []

    async def scenario() -> None:
        import httpx

        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            assert (await client.get("/v2/", headers=right)).status_code == 200

            async def slow() -> None:
                await client.get("/v2/", headers={"Authorization": basic("slow", "pw")})
                order.append("slow")

            async def fast() -> None:
                await asyncio.sleep(0.02)
                await client.get("/v2/", headers=right)
                order.append("fast")

            await asyncio.gather(slow(), fast())

    asyncio.run(scenario())
    assert order == ["fast", "slow"]
