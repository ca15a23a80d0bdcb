"""The README's access-control example, as written: it starts and does what the README says.

The YAML block is taken from ``README.md`` itself, its file paths pointed at files made here (a
throw-away PKI and an htpasswd file), its address at a free loopback port. Then over HTTPS,
verified against the test CA: anyone pulls, nobody anonymous pushes (401), a user other than
``ci`` is 403 DENIED, and ``ci`` pushes to ``team/*`` and nowhere else.
"""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path
from typing import Any

import bcrypt
import pytest
import yaml

from support.goregistry import RegistryClient, sha256_digest
from support.server import DistblobServer
from support.tls import make_pki

pytestmark = pytest.mark.timeout(120)

ROOT = Path(__file__).resolve().parent.parent.parent
USERS = {"ci": "ci-Pa55", "alice": "alice-Pa55"}


def readme_config() -> dict[str, Any]:
    """The README's one YAML block."""
    blocks = re.findall(r"```yaml\n(.*?)```", (ROOT / "README.md").read_text(), re.S)
    assert len(blocks) == 1, "the README has one YAML example"
    config: dict[str, Any] = yaml.safe_load(blocks[0])
    return config


def authorization(user: str | None) -> dict[str, str]:
    if user is None:
        return {}
    token = base64.b64encode(f"{user}:{USERS[user]}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


def status(client: RegistryClient, method: str, path: str, user: str | None, **kw: Any) -> Any:
    response = client.request(method, path, headers=authorization(user), **kw)
    codes = []
    if response.body.startswith(b"{"):
        codes = [e["code"] for e in json.loads(response.body).get("errors", [])]
    return response.status, codes


def test_the_readme_access_example_does_what_the_readme_says(tmp_path: Path) -> None:
    config = readme_config()
    pki = make_pki(tmp_path / "pki")
    htpasswd = tmp_path / "htpasswd"
    htpasswd.write_bytes(
        b"".join(
            f"{user}:".encode() + bcrypt.hashpw(password.encode(), bcrypt.gensalt(4)) + b"\n"
            for user, password in USERS.items()
        )
    )
    assert set(config["http"]["tls"]) == {"certificate", "key"}
    config["http"]["tls"] = pki.tls_config()
    del config["http"]["addr"]  # the harness picks a free loopback port
    config["auth"]["htpasswd"]["path"] = str(htpasswd)
    blob = b"pushed by ci\n"
    digest = sha256_digest(blob)
    with (
        DistblobServer(
            tmp_path / "root", extra_config=config, client_tls=pki.client_context()
        ) as s,
        s.client() as client,
    ):
        upload = "/v2/team/app/blobs/uploads/"
        assert status(client, "POST", upload, None) == (401, ["UNAUTHORIZED"])
        assert status(client, "POST", upload, "alice") == (403, ["DENIED"])
        assert status(client, "POST", "/v2/other/app/blobs/uploads/", "ci") == (
            403,
            ["DENIED"],
        )
        headers = authorization("ci")
        created = client.request("POST", f"{upload}?digest={digest}", body=blob, headers=headers)
        assert created.status == 201
        for user in (None, "alice", "ci"):
            pulled = client.request(
                "GET", f"/v2/team/app/blobs/{digest}", headers=authorization(user)
            )
            assert (pulled.status, pulled.body) == (200, blob)
