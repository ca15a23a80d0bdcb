"""``REGISTRY_*`` environment variables (distblob.config.env): distribution's mapping rules, and
the Go registry 2.8.2 and distblob started with the same variables behaving the same."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import http.client
import http.server
import os
import pathlib
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

import bcrypt
import pytest
import yaml

from distblob.config import ConfigError, load_config
from distblob.config.env import apply_env
from support.goregistry import REGISTRY_BIN, answers_ping, free_port

pytestmark = pytest.mark.timeout(120)


def env_doc(doc: object, **environ: str) -> Any:
    result, _ = apply_env(doc, environ)
    return result


def test_a_variable_names_a_nested_key_and_wins_over_the_file() -> None:
    doc = {"http": {"addr": ":5000", "secret": "file"}}
    assert env_doc(doc, REGISTRY_HTTP_ADDR="127.0.0.1:6000") == {
        "http": {"addr": "127.0.0.1:6000", "secret": "file"}
    }


def test_values_are_yaml_except_for_distribution_string_keys() -> None:
    doc = env_doc(
        None,
        REGISTRY_STORAGE_DELETE_ENABLED="true",
        REGISTRY_REDIS_DB="3",
        REGISTRY_HTTP_SECRET="12345",
        REGISTRY_PROXY_PASSWORD="true",
        REGISTRY_HTTP_TLS_CLIENTCAS="[/a.pem, /b.pem]",
    )
    assert doc["storage"] == {"delete": {"enabled": True}}
    assert doc["redis"] == {"db": 3}
    assert doc["http"] == {"secret": "12345", "tls": {"clientcas": ["/a.pem", "/b.pem"]}}
    assert doc["proxy"] == {"password": "true"}


def test_a_whole_section_comes_before_the_keys_that_add_to_it() -> None:
    doc = {"auth": {"silly": {"realm": "r", "service": "s"}}, "storage": {"inmemory": None}}
    doc = env_doc(
        doc,
        REGISTRY_AUTH_HTPASSWD_PATH="/etc/htpasswd",
        REGISTRY_AUTH="htpasswd",
        REGISTRY_AUTH_HTPASSWD_REALM="basic",
        REGISTRY_STORAGE="s3",
        REGISTRY_STORAGE_S3_BUCKET="b",
        REGISTRY_STORAGE_DELETE_ENABLED="true",
    )
    assert doc["auth"] == {"htpasswd": {"path": "/etc/htpasswd", "realm": "basic"}}
    assert doc["storage"] == {"s3": {"bucket": "b"}, "delete": {"enabled": True}}


def test_map_keys_match_in_any_case_and_new_ones_are_lower_cased() -> None:
    doc = {"storage": {"filesystem": {"rootDirectory": "/a"}}}
    doc = env_doc(doc, REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY="/b", REGISTRY_LOG_FIELDS_ENV="x")
    assert doc == {
        "storage": {"filesystem": {"rootDirectory": "/b"}},
        "log": {"fields": {"env": "x"}},
    }


def test_go_field_names_and_list_indexes() -> None:
    doc = env_doc(
        None,
        REGISTRY_NOTIFICATIONS_EVENTCONFIG_INCLUDEREFERENCES="true",
        REGISTRY_NOTIFICATIONS_ENDPOINTS_0_NAME="hook",
        REGISTRY_NOTIFICATIONS_ENDPOINTS_0_URL="http://127.0.0.1:1/e",
        REGISTRY_NOTIFICATIONS_ENDPOINTS_1_NAME="other",
        REGISTRY_HEALTH_FILECHECKERS_0_FILE="/down",
        REGISTRY_REDIS_OPTIONS_ADDRS="[127.0.0.1:6379]",
    )
    assert doc["notifications"] == {
        "events": {"includereferences": True},
        "endpoints": [{"name": "hook", "url": "http://127.0.0.1:1/e"}, {"name": "other"}],
    }
    assert doc["health"] == {"file": [{"file": "/down"}]}
    assert doc["redis"] == {"addrs": ["127.0.0.1:6379"]}
    with pytest.raises(ConfigError) as info:
        apply_env(None, {"REGISTRY_NOTIFICATIONS_ENDPOINTS_2_NAME": "gap"})
    assert info.value.key == "REGISTRY_NOTIFICATIONS_ENDPOINTS_2_NAME"


def test_an_unrecognized_variable_is_ignored_with_a_warning() -> None:
    doc, warnings = apply_env(
        {"version": "0.1"},
        {
            "REGISTRY_PORT_5000_TCP": "tcp://10.0.0.1:5000",
            "REGISTRY_HTTP_ADRESS": ":1",
            "REGISTRY_CONFIGURATION_PATH": "/etc/x.yml",
            "OTHER_HTTP_ADDR": ":2",
        },
    )
    assert doc == {"version": "0.1"}
    assert warnings == [
        "ignoring unrecognized environment variable REGISTRY_HTTP_ADRESS",
        "ignoring unrecognized environment variable REGISTRY_PORT_5000_TCP",
    ]


def test_load_config_applies_them_with_or_without_a_file(tmp_path: pathlib.Path) -> None:
    environ = {"REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY": str(tmp_path / "env")}
    assert load_config(None, environ).root == str(tmp_path / "env")
    path = tmp_path / "config.yml"
    path.write_text(yaml.safe_dump({"storage": {"filesystem": {"rootdirectory": "/file"}}}))
    assert load_config(path, environ).root == str(tmp_path / "env")
    assert load_config(path, {}).root == "/file"
    # What the variables set is checked as the file is, and a refused key is still refused.
    with pytest.raises(ConfigError) as info:
        load_config(path, {"REGISTRY_STORAGE": "azure"})
    assert (info.value.key, info.value.reason) == (
        "storage.azure",
        "not supported; use s3 (set by REGISTRY_STORAGE)",
    )
    warned = load_config(None, {"REGISTRY_PORT": "tcp://10.0.0.1:5000"})
    assert warned.warnings == ("ignoring unrecognized environment variable REGISTRY_PORT",)


# -- side by side with the Go registry ---------------------------------------------------------

USER, PASSWORD = "alice", "s3cret"


@contextlib.contextmanager
def serving(kind: str, config: pathlib.Path, environ: dict[str, str], port: int) -> Iterator[None]:
    """The Go registry or distblob, started as ``<command> serve CONFIG`` with ``environ``."""
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
        while not answers_ping(port):
            assert proc.poll() is None, log.read_text()
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.05)
        yield
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def request(
    port: int, method: str, path: str, body: bytes = b"", auth: bool = False
) -> tuple[int, str, str]:
    """The status, ``WWW-Authenticate`` and ``Location`` of one request."""
    headers = {"Content-Length": str(len(body))}
    if auth:
        headers["Authorization"] = (
            "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
        )
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request(method, path, body=body, headers=headers)
        response = conn.getresponse()
        response.read()
        header = response.getheader
        return response.status, header("WWW-Authenticate") or "", header("Location") or ""
    finally:
        conn.close()


def base_config(tmp_path: pathlib.Path) -> pathlib.Path:
    """A file the variables override: its root and address must not be used."""
    config = tmp_path / "config.yml"
    doc = {
        "version": "0.1",
        "storage": {"filesystem": {"rootdirectory": str(tmp_path / "file-root")}},
        "http": {"addr": f"127.0.0.1:{free_port()}", "secret": "file-secret"},
    }
    config.write_text(yaml.safe_dump(doc))
    return config


@pytest.mark.skipif(not REGISTRY_BIN.exists(), reason="the Go registry is a test dependency")
@pytest.mark.parametrize("kind", ["go", "distblob"])
def test_helm_style_variables_root_address_and_htpasswd(kind: str, tmp_path: pathlib.Path) -> None:
    config = base_config(tmp_path)
    htpasswd = tmp_path / "htpasswd"
    htpasswd.write_bytes(f"{USER}:".encode() + bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(5)))
    port = free_port()
    environ = {
        "REGISTRY_HTTP_ADDR": f"127.0.0.1:{port}",
        "REGISTRY_HTTP_SECRET": "0123456789",
        "REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY": str(tmp_path / "env-root"),
        "REGISTRY_AUTH": "htpasswd",
        "REGISTRY_AUTH_HTPASSWD_REALM": "env-realm",
        "REGISTRY_AUTH_HTPASSWD_PATH": str(htpasswd),
    }
    blob = b"pushed under REGISTRY_* variables"
    digest = hashlib.sha256(blob).hexdigest()
    with serving(kind, config, environ, port):
        assert request(port, "GET", "/v2/")[:2] == (401, 'Basic realm="env-realm"')
        assert request(port, "GET", "/v2/", auth=True)[0] == 200
        assert request(port, "POST", "/v2/t/blobs/uploads/")[0] == 401
        status, _, location = request(port, "POST", "/v2/t/blobs/uploads/", auth=True)
        assert status == 202
        location = location.removeprefix(f"http://127.0.0.1:{port}")
        put = f"{location}{'&' if '?' in location else '?'}digest=sha256:{digest}"
        assert request(port, "PUT", put, blob, auth=True)[0] == 201
    data = f"docker/registry/v2/blobs/sha256/{digest[:2]}/{digest}/data"
    assert (tmp_path / "env-root" / data).read_bytes() == blob
    assert not (tmp_path / "file-root").exists()


@pytest.mark.skipif(not REGISTRY_BIN.exists(), reason="the Go registry is a test dependency")
@pytest.mark.parametrize("kind", ["go", "distblob"])
def test_proxy_remoteurl_from_the_environment_makes_a_read_only_mirror(
    kind: str, tmp_path: pathlib.Path
) -> None:
    config = base_config(tmp_path)
    port = free_port()
    upstream = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Upstream)
    threading.Thread(target=upstream.serve_forever, daemon=True).start()
    environ = {
        "REGISTRY_HTTP_ADDR": f"127.0.0.1:{port}",
        "REGISTRY_PROXY_REMOTEURL": f"http://127.0.0.1:{upstream.server_address[1]}",
    }
    try:
        with serving(kind, config, environ, port):
            assert request(port, "GET", "/v2/")[0] == 200
            # A mirror refuses pushes (distribution: 405 UNSUPPORTED); without it, 202.
            assert request(port, "POST", "/v2/t/blobs/uploads/")[0] == 405
    finally:
        upstream.shutdown()
        upstream.server_close()


class Upstream(http.server.BaseHTTPRequestHandler):
    """The remote a mirror pings when it starts (Go's proxy does): ``/v2/`` answers 200."""

    def do_GET(self) -> None:
        self.send_response(200 if self.path == "/v2/" else 404)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass
