"""The configurations users run (``tests/fixtures/configs/``, each marked with its origin) start
unchanged but for their paths, addresses and hosts, and answer one probe set as the Go registry
2.8.2 does with the same file and variables.

Each file is read, only the values that name a path, an address or a host are swapped for test
ones (a throw-away htpasswd, a test PKI, the token PKI's bundle, loopback ports, a Go registry as
the mirror's upstream, a test Redis), and ``<registry> serve CONFIG`` is started with the
fixture's ``REGISTRY_*`` variables (their values rewritten the same way). The probe set: ``GET
/``, ``GET /v2/``, an anonymous push, an authenticated push where auth is configured, a pull, and
a pull through the cache where ``proxy`` is configured. Go 2.8 refuses the 3.x files (their
``storage.tag`` reads as a second storage driver); there distblob is held to the statuses Go
gives the 2.8 file of the same shape.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import http.client
import json
import os
import ssl
import subprocess
import sys
import time
import urllib.parse
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import bcrypt
import jwt
import pytest
import yaml
from cryptography.hazmat.primitives.asymmetric import ec

from distblob.auth.tokenkeys import thumbprint
from distblob.config import ConfigError, load_config
from distblob.config.env import apply_env
from support.goregistry import (
    LOOPBACK,
    OCI_CONFIG,
    OCI_LAYER_TAR,
    OCI_MANIFEST,
    REGISTRY_BIN,
    GoRegistry,
    answers_ping,
    free_port,
)
from support.redisserver import RedisServer
from support.tls import make_pki
from support.tokenserver import TokenPKI, _certificate

pytestmark = pytest.mark.timeout(300)

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "configs"
USER, PASSWORD = "testuser", "testpassword"
UPSTREAM_REPO = "library/probe"


@dataclass(frozen=True)
class Case:
    """One real configuration: its file, its variables, and what it configures."""

    file: str
    env: str | None = None
    #: Whether Go 2.8 starts it (3.x-only keys make it refuse).
    go: bool = True
    auth: str | None = None
    tls: bool = False
    mirror: bool = False
    redis: bool = False
    #: ``http.debug``: "plain", or "prometheus" with metrics at /metrics.
    debug: str | None = None
    #: The keys distblob accepts without effect (class 2), each warned about once.
    warned: tuple[str, ...] = ()


CASES = {
    "debian": Case("debian.yml", auth="htpasswd"),
    "distribution-2.8-example": Case("distribution-2.8-example.yml", auth="htpasswd"),
    "distribution-3.0-example": Case("distribution-3.0-example.yml", go=False, auth="htpasswd"),
    "distribution-2.8-dev": Case("distribution-2.8-dev.yml", redis=True, debug="prometheus"),
    "distribution-3.0-dev": Case("distribution-3.0-dev.yml", go=False, debug="prometheus"),
    "registry-2-image": Case("registry-2-image.yml"),
    "registry-3-image": Case("registry-3-image.yml", go=False, debug="prometheus"),
    "deploying-htpasswd-tls": Case("deploying-htpasswd-tls.yml", auth="htpasswd", tls=True),
    "deploying-htpasswd-tls-env": Case(
        "registry-2-image.yml", env="deploying-htpasswd-tls.env", auth="htpasswd", tls=True
    ),
    "token-auth": Case("token-auth.yml", auth="token"),
    "token-auth-3.0": Case("token-auth-3.0.yml", go=False, auth="token", debug="prometheus"),
    "mirror": Case("mirror.yml", mirror=True),
    "mirror-env": Case("registry-2-image.yml", env="mirror.env", mirror=True),
    "helm-docker-registry": Case(
        "helm-docker-registry.yml", env="helm-docker-registry.env", debug="plain"
    ),
}


def read_env(name: str) -> dict[str, str]:
    """A fixture of ``NAME=value`` lines (``#`` comments), as compose's env_file reads them."""
    lines = (FIXTURES / name).read_text().splitlines()
    pairs = (line.partition("=") for line in lines if line.strip() and not line.startswith("#"))
    return {name: value for name, _, value in pairs}


def rewrite(node: Any, swaps: Mapping[str, str]) -> Any:
    """``node`` with every string value that ``swaps`` names replaced; keys and shape kept."""
    if isinstance(node, Mapping):
        return {key: rewrite(value, swaps) for key, value in node.items()}
    if isinstance(node, list):
        return [rewrite(item, swaps) for item in node]
    return swaps.get(node, node) if isinstance(node, str) else node


@dataclass
class World:
    """The test files and servers the configs' paths and hosts are pointed at."""

    tmp: Path
    swaps: dict[str, str]
    client_tls: ssl.SSLContext
    token: TokenPKI


@contextlib.contextmanager
def world(tmp: Path, case: Case) -> Iterator[World]:
    pki = make_pki(tmp / "pki")
    token = TokenPKI.create(tmp / "token")
    # 3.x's example accepts EdDSA, HS256 and ES512 only: the signer signs ES512 (P-521), which
    # Go 2.8 verifies as well.
    token.signer_key = ec.generate_private_key(ec.SECP521R1())
    token.signer = _certificate(
        "token signer", token.signer_key, (token.ca, token.ca_key), ca=False
    )
    jwks = tmp / "jwks.json"
    jwk = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(token.ca_key.public_key()))
    jwks.write_text(json.dumps({"keys": [{**jwk, "kid": thumbprint(token.ca_key.public_key())}]}))
    htpasswd = tmp / "htpasswd"
    hashed = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(rounds=5)).decode()
    htpasswd.write_text(f"{USER}:{hashed}\n")
    swaps = {
        # Paths of the files: each points at its test stand-in.
        "/etc/docker/registry": str(htpasswd),  # Debian's auth.htpasswd.path
        "/etc/registry": str(htpasswd),
        "/auth/htpasswd": str(htpasswd),
        "/certs/domain.crt": str(pki.server_cert),
        "/certs/domain.key": str(pki.server_key),
        "/root/certs/bundle": str(token.bundle),
        "/path/to/jwks": str(jwks),
    }
    with contextlib.ExitStack() as stack:
        if case.mirror:
            upstream = stack.enter_context(GoRegistry(tmp / "upstream"))
            push_image(Prober(upstream.url, None), UPSTREAM_REPO, {})
            swaps["https://registry-1.docker.io"] = upstream.url
        if case.redis:
            redis = stack.enter_context(RedisServer(tmp))
            swaps["localhost:6379"] = f"{LOOPBACK}:{redis.port}"
        yield World(tmp, swaps, pki.client_context(), token)


def prepare(world: World, case: Case, kind: str) -> tuple[Path, dict[str, str], int, int]:
    """The rewritten config file, variables, port and debug port of one registry (its own root
    and ports)."""
    port, debug = free_port(), free_port()
    swaps = {
        **world.swaps,
        "/var/lib/registry": str(world.tmp / kind / "root"),
        "/var/lib/docker-registry": str(world.tmp / kind / "root"),
        ":5000": f"{LOOPBACK}:{port}",
        ":5001": f"{LOOPBACK}:{debug}",
    }
    doc = rewrite(yaml.safe_load((FIXTURES / case.file).read_text()), swaps)
    proxy = doc.get("proxy") or {}
    for key in ("username", "password"):
        # The recipe's placeholders, filled in (as given, both registries refuse them: below).
        if proxy.get(key) == [key]:
            proxy[key] = f"mirror-{key}"
    config = world.tmp / kind / "config.yml"
    config.parent.mkdir(parents=True, exist_ok=True)
    config.write_text(yaml.safe_dump(doc, sort_keys=False))
    placeholders = {"[username]": "mirror-username", "[password]": "mirror-password"}
    environ = rewrite(read_env(case.env), {**swaps, **placeholders}) if case.env else {}
    return config, environ, port, debug


@contextlib.contextmanager
def serving(
    kind: str, config: Path, environ: dict[str, str], port: int, tls: ssl.SSLContext | None
) -> Iterator[Path]:
    """``<registry> serve CONFIG`` with ``environ``, up; yields its log file."""
    if kind == "go":
        argv = [str(REGISTRY_BIN), "serve", str(config)]
    else:
        argv = [sys.executable, "-m", "distblob.cli", "serve", str(config)]
    base = {k: v for k, v in os.environ.items() if not k.startswith("REGISTRY_")}
    log = config.parent / f"{kind}.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            argv, env={**base, **environ}, stdout=out, stderr=subprocess.STDOUT, cwd=config.parent
        )
    try:
        deadline = time.monotonic() + 60
        while not answers_ping(port, tls):
            assert proc.poll() is None, f"{kind} exited:\n{log.read_text()}"
            assert time.monotonic() < deadline, f"{kind} not up:\n{log.read_text()}"
            time.sleep(0.05)
        yield log
    finally:
        proc.terminate()
        proc.wait(timeout=30)


class Prober:
    """One request per connection to a registry on loopback."""

    def __init__(self, url: str, tls: ssl.SSLContext | None) -> None:
        self.url, self.tls = url, tls

    def __call__(
        self, method: str, target: str, body: bytes = b"", headers: Mapping[str, str] = {}
    ) -> tuple[int, http.client.HTTPMessage, bytes]:
        parts = urllib.parse.urlsplit(urllib.parse.urljoin(self.url + "/", target))
        path = f"{parts.path}?{parts.query}" if parts.query else parts.path
        netloc = urllib.parse.urlsplit(self.url).netloc
        conn = (
            http.client.HTTPSConnection(netloc, timeout=60, context=self.tls)
            if self.tls
            else http.client.HTTPConnection(netloc, timeout=60)
        )
        try:
            conn.request(method, path, body, {"Content-Length": str(len(body)), **headers})
            resp = conn.getresponse()
            return resp.status, resp.headers, resp.read()
        finally:
            conn.close()


def image(repo: str) -> tuple[list[bytes], bytes]:
    """A small image for ``repo``: its blobs (config, layer) and its manifest."""
    config = json.dumps({"architecture": "amd64", "os": "linux", "repo": repo}).encode()
    layer = f"a probe layer for {repo}".encode()

    def descriptor(media_type: str, data: bytes) -> dict[str, Any]:
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        return {"mediaType": media_type, "digest": digest, "size": len(data)}

    manifest = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": descriptor(OCI_CONFIG, config),
        "layers": [descriptor(OCI_LAYER_TAR, layer)],
    }
    return [config, layer], json.dumps(manifest).encode()


def push_image(call: Prober, repo: str, headers: Mapping[str, str]) -> int:
    """The status of a push: the first that is not the protocol's, else the manifest's 201."""
    blobs, manifest = image(repo)
    for blob in blobs:
        status, answer, _ = call("POST", f"/v2/{repo}/blobs/uploads/", headers=headers)
        if status != 202:
            return status
        location = answer["Location"]
        digest = "sha256:" + hashlib.sha256(blob).hexdigest()
        sep = "&" if "?" in location else "?"
        status, _, _ = call("PUT", f"{location}{sep}digest={digest}", blob, headers)
        if status != 201:
            return status
    kind = {"Content-Type": OCI_MANIFEST}
    return call("PUT", f"/v2/{repo}/manifests/v1", manifest, {**headers, **kind})[0]


def pull_image(call: Prober, repo: str, headers: Mapping[str, str]) -> int:
    """The status of a pull (manifest by tag, then each blob), checked against the image."""
    blobs, manifest = image(repo)
    accept = {"Accept": OCI_MANIFEST}
    status, _, body = call("GET", f"/v2/{repo}/manifests/v1", headers={**headers, **accept})
    if status != 200:
        return status
    assert body == manifest
    for blob in blobs:
        digest = "sha256:" + hashlib.sha256(blob).hexdigest()
        status, _, body = call("GET", f"/v2/{repo}/blobs/{digest}", headers=headers)
        if status != 200:
            return status
        assert body == blob
    return status


def credentials(world: World, case: Case, config: Path) -> dict[str, str]:
    """The Authorization header of an authenticated client under ``case.auth``."""
    if case.auth == "htpasswd":
        basic = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
        return {"Authorization": f"Basic {basic}"}
    options = yaml.safe_load(config.read_text())["auth"]["token"]
    access = [{"type": "repository", "name": "probe/auth", "actions": ["pull", "push"]}]
    token = world.token.issue(access, issuer=options["issuer"], audience=options["service"])
    return {"Authorization": f"Bearer {token}"}


def probe(world: World, case: Case, config: Path, port: int, debug: int) -> dict[str, int]:
    """The probe set's statuses against the registry on ``port`` (and its debug server on
    ``debug`` where ``http.debug`` is configured)."""
    tls = world.client_tls if case.tls else None
    call = Prober(f"{'https' if tls else 'http'}://{LOOPBACK}:{port}", tls)
    statuses = {"GET /": call("GET", "/")[0], "GET /v2/": call("GET", "/v2/")[0]}
    statuses["anonymous push"] = push_image(call, "probe/anon", {})
    pulled, headers = "probe/anon", {}
    if case.auth:
        headers = credentials(world, case, config)
        statuses["authenticated push"] = push_image(call, "probe/auth", headers)
        pulled = "probe/auth"
    if case.mirror:
        statuses["pull-through"] = pull_image(call, UPSTREAM_REPO, headers)
    else:
        statuses["pull"] = pull_image(call, pulled, headers)
    if case.debug:
        debug_call = Prober(f"http://{LOOPBACK}:{debug}", None)
        statuses["debug: GET /debug/health"] = debug_call("GET", "/debug/health")[0]
        statuses["debug: GET /metrics"] = debug_call("GET", "/metrics")[0]
    return statuses


def expected(case: Case) -> dict[str, int]:
    """The statuses Go 2.8 gives a configuration of this shape."""
    statuses = {"GET /": 200, "GET /v2/": 401 if case.auth else 200}
    statuses["anonymous push"] = 401 if case.auth else 405 if case.mirror else 201
    if case.auth:
        statuses["authenticated push"] = 201
    statuses["pull-through" if case.mirror else "pull"] = 200
    if case.debug:
        statuses["debug: GET /debug/health"] = 200
        statuses["debug: GET /metrics"] = 200 if case.debug == "prometheus" else 404
    return statuses


def check_log(log: str, warnings: tuple[str, ...], case: Case) -> None:
    """Every class-2 warning once, and nothing at ERROR."""
    for key in case.warned:
        assert any(w.startswith(f"{key}: accepted without effect") for w in warnings), key
    for warning in warnings:
        assert log.count(f"config: {warning}") == 1, (warning, log)
    lines = log.splitlines()
    assert not [line for line in lines if "level=error" in line or "Traceback" in line], log


@pytest.mark.parametrize("name", list(CASES))
def test_real_config_starts_and_answers_as_go(name: str, tmp_path: Path) -> None:
    case = CASES[name]
    with world(tmp_path, case) as stage:
        tls = stage.client_tls if case.tls else None
        go_config, go_env, go_port, go_debug = prepare(stage, case, "go")
        if case.go:
            with serving("go", go_config, go_env, go_port, tls):
                go = probe(stage, case, go_config, go_port, go_debug)
            assert go == expected(case)
        else:
            argv = [str(REGISTRY_BIN), "serve", str(go_config)]
            base = {k: v for k, v in os.environ.items() if not k.startswith("REGISTRY_")}
            refused = subprocess.run(argv, capture_output=True, timeout=60, env=base)
            assert refused.returncode != 0
            assert b"must provide exactly one storage type" in refused.stderr + refused.stdout
        config, environ, port, debug = prepare(stage, case, "distblob")
        with serving("distblob", config, environ, port, tls) as log:
            ours = probe(stage, case, config, port, debug)
        assert ours == expected(case)
        warnings = load_config(config, environ).warnings
        check_log(log.read_text(), warnings, case)


@pytest.mark.parametrize("form", ["yaml", "env"])
def test_the_mirror_recipes_placeholders_are_refused_as_go_refuses_them(
    form: str, tmp_path: Path
) -> None:
    """``username: [username]`` is a YAML list, and so is the variable's ``[username]`` (Go
    reads a variable's value as YAML too): neither registry starts with the recipe unfilled."""
    file, environ = "mirror.yml", {}
    if form == "env":
        file, environ = "registry-2-image.yml", read_env("mirror.env")
    config = tmp_path / "config.yml"
    doc = yaml.safe_load((FIXTURES / file).read_text())
    doc["storage"]["filesystem"]["rootdirectory"] = str(tmp_path / "root")
    doc["http"]["addr"] = f"{LOOPBACK}:{free_port()}"
    config.write_text(yaml.safe_dump(doc))
    base = {k: v for k, v in os.environ.items() if not k.startswith("REGISTRY_")}
    outputs = []
    for argv in (
        [str(REGISTRY_BIN), "serve", str(config)],
        [sys.executable, "-m", "distblob.cli", "serve", str(config)],
    ):
        done = subprocess.run(argv, capture_output=True, timeout=60, env={**base, **environ})
        assert done.returncode != 0
        outputs.append((done.stdout + done.stderr).decode())
    assert "cannot unmarshal !!seq into string" in outputs[0]
    key = "proxy.username" if form == "yaml" else "REGISTRY_PROXY_PASSWORD"
    assert f"{key}: expected " in outputs[1], outputs[1]


def test_a_string_keys_variable_is_read_as_go_reads_it() -> None:
    """Go decodes each variable as YAML into its field: a string field keeps a scalar's text,
    drops a quoted value's quotes, and refuses a list or a mapping."""
    doc, _ = apply_env(
        None,
        {"REGISTRY_HTTP_SECRET": "true", "REGISTRY_PROXY_USERNAME": "'quoted'"},
    )
    assert doc == {"http": {"secret": "true"}, "proxy": {"username": "quoted"}}
    for text, kind in (("[a]", "a list"), ("{a: b}", "a mapping"), ("key: value", "a mapping")):
        with pytest.raises(ConfigError) as info:
            apply_env(None, {"REGISTRY_PROXY_PASSWORD": text})
        assert (info.value.key, info.value.reason) == (
            "REGISTRY_PROXY_PASSWORD",
            f"expected a string, not {kind}",
        )
