"""Harness for running the real Go registry (*distribution*) and skopeo in tests.

Interop tests compare distblob with Debian's ``docker-registry`` (distribution 2.8.2) and push
images with ``skopeo``. This module starts the registry on a loopback port with a throw-away
config, offers a small blob/manifest HTTP client on top of :mod:`http.client`, builds OCI image
layouts for skopeo to copy, and runs skopeo hermetically (own policy, registries.conf, auth file
and temp dir, so nothing outside a temp dir is read for trust decisions or written).

Only 127.0.0.1 is ever used.
"""

from __future__ import annotations

import base64
import contextlib
import copy
import datetime as dt
import gzip
import hashlib
import hmac
import http.client
import json
import os
import secrets
import signal
import socket
import ssl
import subprocess
import tempfile
import threading
import time
import urllib.parse
from collections.abc import Collection, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, NamedTuple, Self, TypedDict

REGISTRY_BIN = Path("/usr/bin/docker-registry")
SKOPEO_BIN = "skopeo"
LOOPBACK = "127.0.0.1"


OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER_TAR = "application/vnd.oci.image.layer.v1.tar"
OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
DOCKER_MANIFEST_V2 = "application/vnd.docker.distribution.manifest.v2+json"

# Size of a Go crypto/sha256 MarshalBinary state, as stored under _uploads/<id>/hashstates/.
SHA256_STATE_SIZE = 108


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that was free a moment ago.

    The port is released before returning, so another process may grab it; GoRegistry retries
    with a new port when the registry reports the address in use.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        port: int = sock.getsockname()[1]
        return port


def sha256_digest(data: bytes) -> str:
    """Return the ``sha256:<hex>`` digest string of ``data``."""
    return "sha256:" + hashlib.sha256(data).hexdigest()


def deep_merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """Return a new dict: ``base`` with ``override`` merged in, recursing into nested dicts."""
    merged: dict[str, Any] = copy.deepcopy(dict(base))
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


# --------------------------------------------------------------------------------------------
# HTTP client
# --------------------------------------------------------------------------------------------


class RegistryHTTPError(Exception):
    """A registry answered with a status the caller did not expect."""

    def __init__(self, status: int, body: bytes, *, method: str = "", target: str = "") -> None:
        self.status = status
        self.body = body
        self.method = method
        self.target = target
        text = body[:2000].decode("utf-8", "replace")
        super().__init__(f"{method} {target} -> HTTP {status}: {text}")

    @property
    def codes(self) -> list[str]:
        """Error codes from a distribution error body (``{"errors":[{"code":...}]}``)."""
        try:
            doc = json.loads(self.body)
        except ValueError:
            return []
        if not isinstance(doc, dict):
            return []
        return [str(e.get("code")) for e in doc.get("errors", []) if isinstance(e, dict)]


class Response(NamedTuple):
    """A fully read HTTP response; unpacks as ``(status, headers, body)``."""

    status: int
    headers: http.client.HTTPMessage
    body: bytes


def _connection(
    host: str, port: int, timeout: float, tls: ssl.SSLContext | None
) -> http.client.HTTPConnection:
    """An HTTP connection, or an HTTPS one with the client context ``tls``."""
    if tls is None:
        return http.client.HTTPConnection(host, port, timeout=timeout)
    return http.client.HTTPSConnection(host, port, timeout=timeout, context=tls)


def answers_ping(port: int, tls: ssl.SSLContext | None = None) -> bool:
    """Whether a registry on loopback ``port`` answers ``GET /v2/`` with 200, or 401 (the
    config has an ``auth`` section, and the API is up behind it)."""
    conn = _connection(LOOPBACK, port, 2.0, tls)
    try:
        conn.request("GET", "/v2/")
        resp = conn.getresponse()
        resp.read()
        return resp.status in (200, 401)
    except OSError:
        return False
    finally:
        conn.close()


class RegistryClient:
    """Minimal blob/manifest client for a registry on loopback, one keep-alive connection.

    Every method reads the whole response body so the connection can be reused. Locations
    returned by the registry may be absolute (the Go registry sends
    ``http://127.0.0.1:PORT/v2/<repo>/blobs/uploads/<uuid>?_state=...``) or relative; both are
    accepted and always sent to this client's host and port.
    """

    def __init__(
        self, base_url: str, *, timeout: float = 30.0, tls: ssl.SSLContext | None = None
    ) -> None:
        parsed = urllib.parse.urlsplit(base_url)
        if parsed.scheme not in ("http", "https") or parsed.hostname is None:
            raise ValueError(f"need an http:// or https:// URL, got {base_url!r}")
        if (parsed.scheme == "https") != (tls is not None):
            raise ValueError("an https:// URL goes with a client TLS context, and only it")
        self.base_url = base_url.rstrip("/")
        self.host: str = parsed.hostname
        self.port: int = parsed.port or (443 if tls else 80)
        self.timeout = timeout
        self.tls = tls
        self._conn: http.client.HTTPConnection | None = None
        # Whether the current connection already carried a request: only then may a failure be
        # a stale keep-alive connection that is safe to retry on a fresh one.
        self._reused = False

    # -- plumbing -------------------------------------------------------------------------

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Close the connection (a new one is opened on the next request)."""
        if self._conn is not None:
            self._conn.close()
            self._conn = None
            self._reused = False

    def target(self, location: str) -> str:
        """Turn an absolute or relative Location into a request target (path + query)."""
        parts = urllib.parse.urlsplit(location)
        path = parts.path or "/"
        if not path.startswith("/"):
            # Relative reference without a leading slash: resolve against /v2/ like a browser
            # would resolve it against the API root.
            path = urllib.parse.urlsplit(urllib.parse.urljoin(self.base_url + "/v2/", path)).path
        return f"{path}?{parts.query}" if parts.query else path

    def request(
        self,
        method: str,
        location: str,
        *,
        body: bytes | None = None,
        headers: Mapping[str, str] | None = None,
        expect: Collection[int] | None = None,
    ) -> Response:
        """Send one request and read the full response.

        ``expect`` lists acceptable statuses; ``None`` accepts any status. Anything else raises
        :class:`RegistryHTTPError`.
        """
        target = self.target(location)
        hdrs = dict(headers or {})
        for attempt in range(2):
            if self._conn is None:
                self._conn = _connection(self.host, self.port, self.timeout, self.tls)
                self._reused = False
            reused = self._reused
            try:
                self._conn.request(method, target, body=body, headers=hdrs)
                resp = self._conn.getresponse()
                data = resp.read()
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
                # A keep-alive connection the server closed (e.g. after a registry restart)
                # fails on first use; retry once on a fresh one. A fresh connection failing is
                # a real error.
                self.close()
                if reused and attempt == 0:
                    continue
                raise
            self._reused = True
            if resp.will_close:
                self.close()
            if expect is not None and resp.status not in expect:
                raise RegistryHTTPError(resp.status, data, method=method, target=target)
            return Response(resp.status, resp.headers, data)
        raise AssertionError("unreachable")

    @staticmethod
    def _with_query(location: str, **params: str) -> str:
        """Append query parameters to a location that may already carry some (``_state``)."""
        parts = urllib.parse.urlsplit(location)
        extra = urllib.parse.urlencode(params)
        query = f"{parts.query}&{extra}" if parts.query else extra
        return urllib.parse.urlunsplit(parts._replace(query=query))

    @staticmethod
    def _location(resp: Response) -> str:
        location = resp.headers.get("Location")
        if not location:
            raise RegistryHTTPError(resp.status, b"response has no Location header")
        return location

    # -- API ------------------------------------------------------------------------------

    def ping(self) -> None:
        """``GET /v2/``, expecting 200."""
        self.request("GET", "/v2/", expect=(200,))

    def start_upload(self, repo: str) -> str:
        """Open an upload session; return its Location."""
        resp = self.request("POST", f"/v2/{repo}/blobs/uploads/", expect=(202,))
        return self._location(resp)

    def patch(self, location: str, data: bytes, start: int) -> str:
        """Send one chunk at offset ``start``; return the next Location."""
        end = start + len(data) - 1
        resp = self.request(
            "PATCH",
            location,
            body=data,
            headers={
                "Content-Range": f"{start}-{end}",
                "Content-Type": "application/octet-stream",
            },
            expect=(202,),
        )
        return self._location(resp)

    def upload_status(self, location: str) -> tuple[str, int]:
        """``GET`` the upload; return ``(location, range_end)``.

        ``range_end`` is the last byte offset of ``Range: 0-<end>``; note the Go registry
        answers ``0-0`` both for an empty upload and for one holding a single byte.
        """
        resp = self.request("GET", location, expect=(204,))
        range_header = resp.headers.get("Range", "")
        _, _, end = range_header.partition("-")
        return self._location(resp), int(end)

    def finish(self, location: str, digest: str, data: bytes = b"") -> http.client.HTTPMessage:
        """Commit the upload (``PUT <location>?digest=``, optional last chunk); return headers."""
        headers = {"Content-Type": "application/octet-stream"}
        resp = self.request(
            "PUT",
            self._with_query(location, digest=digest),
            body=data,
            headers=headers,
            expect=(201,),
        )
        return resp.headers

    def cancel(self, location: str) -> None:
        """Cancel an upload session (``DELETE <location>``, 204)."""
        self.request("DELETE", location, expect=(204,))

    def get_blob(
        self,
        repo: str,
        digest: str,
        headers: Mapping[str, str] | None = None,
        *,
        expect: Collection[int] | None = None,
    ) -> Response:
        """``GET`` a blob; by default any status is returned rather than raised."""
        return self.request("GET", f"/v2/{repo}/blobs/{digest}", headers=headers, expect=expect)

    def head_blob(
        self,
        repo: str,
        digest: str,
        headers: Mapping[str, str] | None = None,
        *,
        expect: Collection[int] | None = None,
    ) -> Response:
        """``HEAD`` a blob; by default any status is returned rather than raised."""
        return self.request("HEAD", f"/v2/{repo}/blobs/{digest}", headers=headers, expect=expect)

    def delete_blob(self, repo: str, digest: str) -> None:
        """``DELETE`` a blob (202; the registry must have ``storage.delete.enabled``)."""
        self.request("DELETE", f"/v2/{repo}/blobs/{digest}", expect=(202,))

    def push_blob(self, repo: str, data: bytes, chunks: int | Sequence[int] | None = None) -> str:
        """Upload ``data`` with POST, PATCHes and a final PUT; return its digest.

        ``chunks``: ``None`` sends everything in the PUT body; an int sends that many
        near-equal PATCHes and an empty PUT; a sequence gives the PATCH sizes explicitly and
        whatever is left over goes in the PUT body.
        """
        digest = sha256_digest(data)
        location = self.start_upload(repo)
        if chunks is None:
            sizes: list[int] = []
        elif isinstance(chunks, int):
            if chunks < 1:
                raise ValueError("chunks must be >= 1")
            step = -(-len(data) // chunks) or 1
            sizes = [min(step, len(data) - i) for i in range(0, len(data), step)]
        else:
            sizes = list(chunks)
        offset = 0
        for size in sizes:
            location = self.patch(location, data[offset : offset + size], offset)
            offset += size
        self.finish(location, digest, data[offset:])
        return digest

    def put_manifest(
        self, repo: str, ref: str, body: bytes, media_type: str
    ) -> http.client.HTTPMessage:
        """``PUT /v2/<repo>/manifests/<ref>`` (201); return the response headers."""
        resp = self.request(
            "PUT",
            f"/v2/{repo}/manifests/{ref}",
            body=body,
            headers={"Content-Type": media_type},
            expect=(201,),
        )
        return resp.headers

    def get_manifest(
        self,
        repo: str,
        ref: str,
        accept: str | Sequence[str] = (OCI_MANIFEST, OCI_INDEX, DOCKER_MANIFEST_V2),
        *,
        expect: Collection[int] | None = (200,),
    ) -> Response:
        """``GET /v2/<repo>/manifests/<ref>`` with the given ``Accept`` media types."""
        accept_header = accept if isinstance(accept, str) else ", ".join(accept)
        return self.request(
            "GET", f"/v2/{repo}/manifests/{ref}", headers={"Accept": accept_header}, expect=expect
        )


# --------------------------------------------------------------------------------------------
# Go registry process
# --------------------------------------------------------------------------------------------


# Written to the log before each start, so one start's output can be told from the previous.
_START_MARKER = "--- harness: start"


class GoRegistryError(RuntimeError):
    """The Go registry failed to start or stop; the message carries its log."""


class GoRegistry:
    """Run ``/usr/bin/docker-registry serve`` on 127.0.0.1 with a filesystem root.

    Use as a context manager. ``stop()``/``start()`` restart it on the same root and port.
    ``extra_config`` is deep-merged over the generated config (do not override ``http.addr``:
    ``port`` and ``url`` come from it).
    The config also pins ``http.secret`` for the lifetime of this object: the registry signs
    the ``_state`` parameter of upload Locations with it, and a random per-process secret (the
    default) would make uploads started before a restart unusable after it.
    """

    def __init__(
        self,
        root: Path,
        *,
        delete_enabled: bool = False,
        extra_config: dict[str, Any] | None = None,
        startup_timeout: float = 15.0,
        binary: Path = REGISTRY_BIN,
        client_tls: ssl.SSLContext | None = None,
    ) -> None:
        self.root = Path(root)
        self.client_tls = client_tls
        self.delete_enabled = delete_enabled
        self.extra_config = extra_config or {}
        self.startup_timeout = startup_timeout
        self.binary = binary
        self.port = 0
        self._secret = secrets.token_hex(16)
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._final_log = ""

    # -- properties -----------------------------------------------------------------------

    @property
    def url(self) -> str:
        """Base URL, ``http://127.0.0.1:PORT`` (``https`` with ``client_tls``, for a config
        with ``http.tls``)."""
        scheme = "https" if self.client_tls else "http"
        return f"{scheme}://{LOOPBACK}:{self.port}"

    @property
    def host(self) -> str:
        """``127.0.0.1:PORT``, as used in skopeo ``docker://`` references."""
        return f"{LOOPBACK}:{self.port}"

    @property
    def workdir(self) -> Path:
        """Temp dir holding the config and the log (exists between enter and exit)."""
        if self._tmp is None:
            raise GoRegistryError("registry not entered")
        return Path(self._tmp.name)

    @property
    def log_path(self) -> Path:
        """File receiving the registry's stdout and stderr (appended to across restarts)."""
        return self.workdir / "registry.log"

    @property
    def config_path(self) -> Path:
        """The config file passed to ``serve`` (JSON, which YAML parsers accept)."""
        return self.workdir / "config.yml"

    @property
    def running(self) -> bool:
        """Whether the registry process is alive."""
        return self._proc is not None and self._proc.poll() is None

    def log_text(self) -> str:
        """The registry log so far (still available after exit, when the temp dir is gone)."""
        if self._tmp is None:
            return self._final_log
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def config(self) -> dict[str, Any]:
        """The config dict written on start."""
        base: dict[str, Any] = {
            "version": 0.1,
            "log": {"level": "info"},
            "storage": {
                "filesystem": {"rootdirectory": str(self.root)},
                "delete": {"enabled": self.delete_enabled},
            },
            "http": {"addr": f"{LOOPBACK}:{self.port}", "secret": self._secret},
        }
        return deep_merge(base, self.extra_config)

    def client(self, *, timeout: float = 30.0) -> RegistryClient:
        """A new :class:`RegistryClient` for this registry (close it, or use ``with``)."""
        return RegistryClient(self.url, timeout=timeout, tls=self.client_tls)

    def gc_command(self, *, delete_untagged: bool = False, dry_run: bool = False) -> list[str]:
        """``docker-registry garbage-collect`` on this registry's config (the offline collector:
        distribution documents it for a registry in read-only mode or stopped)."""
        flags = ["--delete-untagged"] * delete_untagged + ["--dry-run"] * dry_run
        return [str(self.binary), "garbage-collect", *flags, str(self.config_path)]

    def environment(self) -> dict[str, str] | None:
        """The registry's environment; ``None`` inherits ours (subclasses may change it)."""
        return None

    # -- lifecycle ------------------------------------------------------------------------

    def __enter__(self) -> Self:
        self._tmp = tempfile.TemporaryDirectory(prefix="goregistry-")
        try:
            self.start()
        except BaseException:
            self._cleanup()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._cleanup()

    def _cleanup(self) -> None:
        try:
            self.stop()
        finally:
            if self._tmp is not None:
                # Keep the log for failure messages written after the with block.
                self._final_log = self.log_text()
                self._tmp.cleanup()
                self._tmp = None

    def start(self) -> None:
        """Start the registry and wait until ``GET /v2/`` answers 200.

        The first start picks a free port (retrying if it is taken meanwhile); later starts
        reuse it so clients and stored Locations keep working.
        """
        if self.running:
            raise GoRegistryError("registry already running")
        self.root.mkdir(parents=True, exist_ok=True)
        pick_port = self.port == 0
        for attempt in range(3):
            if pick_port:
                self.port = free_port()
            try:
                self._spawn_and_wait()
                return
            except GoRegistryError:
                # Only a port we picked ourselves may be swapped for another one.
                this_attempt = self.log_text().rpartition(_START_MARKER)[2]
                if pick_port and attempt < 2 and "address already in use" in this_attempt:
                    continue
                raise

    def _spawn_and_wait(self) -> None:
        self.config_path.write_text(json.dumps(self.config(), indent=2))
        with self.log_path.open("ab") as log:
            log.write(f"{_START_MARKER} on port {self.port} ---\n".encode())
            log.flush()
            # The child keeps its own copy of the log fd; ours is closed by the with block.
            self._proc = subprocess.Popen(
                [str(self.binary), "serve", str(self.config_path)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.workdir,
                env=self.environment(),
                # Own process group: a Ctrl-C aimed at pytest should not hit the registry
                # before the harness has a chance to stop it cleanly.
                start_new_session=True,
            )
        deadline = time.monotonic() + self.startup_timeout
        while True:
            if self._proc.poll() is not None:
                code = self._proc.returncode
                self._proc = None
                raise GoRegistryError(f"docker-registry exited with {code}:\n{self.log_text()}")
            if self._answers_ping():
                return
            if time.monotonic() > deadline:
                self.stop()
                raise GoRegistryError(
                    f"docker-registry not ready after {self.startup_timeout}s:\n{self.log_text()}"
                )
            time.sleep(0.05)

    def _answers_ping(self) -> bool:
        return answers_ping(self.port, self.client_tls)

    def stop(self, *, kill_after: float = 5.0) -> None:
        """Stop the registry: SIGTERM, then SIGKILL after ``kill_after`` seconds; wait."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=kill_after)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        else:
            proc.wait()


# --------------------------------------------------------------------------------------------
# OCI image layouts and skopeo
# --------------------------------------------------------------------------------------------


class OciImage(TypedDict):
    """What :func:`make_oci_image_layout` wrote."""

    path: Path
    tag: str
    manifest_digest: str
    manifest: bytes
    config_digest: str
    config: bytes
    layer_digests: list[str]
    layer_media_types: list[str]


def _layer_media_type_and_diff_id(data: bytes) -> tuple[str, str]:
    """Media type by gzip magic; diff_id is the digest of the uncompressed bytes."""
    if data[:2] == b"\x1f\x8b":
        try:
            return OCI_LAYER_GZIP, sha256_digest(gzip.decompress(data))
        except (OSError, EOFError):
            # Not really gzip after all: skopeo never decompresses when copying unchanged
            # layers, so any bytes work; label them as plain tar.
            pass
    return OCI_LAYER_TAR, sha256_digest(data)


def make_oci_image_layout(path: Path, layers: list[bytes], tag: str = "v1") -> OciImage:
    """Write an OCI image layout (oci-layout, index.json, blobs/sha256/...) at ``path``.

    The image has an OCI config blob and one layer per entry of ``layers``, and is tagged
    ``tag`` via the ``org.opencontainers.image.ref.name`` annotation, so skopeo can read it as
    ``oci:<path>:<tag>``. Layers starting with the gzip magic are labelled ``tar+gzip``,
    others ``tar``. Calling it again on the same path adds another tagged image.
    """
    path = Path(path)
    blob_dir = path / "blobs" / "sha256"
    blob_dir.mkdir(parents=True, exist_ok=True)

    def put(data: bytes) -> str:
        digest = sha256_digest(data)
        (blob_dir / digest.removeprefix("sha256:")).write_bytes(data)
        return digest

    layer_descs: list[dict[str, Any]] = []
    diff_ids: list[str] = []
    for data in layers:
        media_type, diff_id = _layer_media_type_and_diff_id(data)
        layer_descs.append({"mediaType": media_type, "digest": put(data), "size": len(data)})
        diff_ids.append(diff_id)

    config_doc = {
        "architecture": "amd64",
        "os": "linux",
        "config": {},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
        "history": [{"created_by": "distblob test harness"} for _ in layers],
    }
    config = json.dumps(config_doc, separators=(",", ":")).encode()
    config_digest = put(config)

    manifest_doc = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, "digest": config_digest, "size": len(config)},
        "layers": layer_descs,
    }
    manifest = json.dumps(manifest_doc, separators=(",", ":")).encode()
    manifest_digest = put(manifest)

    (path / "oci-layout").write_text(json.dumps({"imageLayoutVersion": "1.0.0"}))
    index_path = path / "index.json"
    if index_path.exists():
        index = json.loads(index_path.read_text())
    else:
        index = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": []}
    # Re-tagging replaces the old entry so the tag stays unambiguous for skopeo.
    index["manifests"] = [
        m
        for m in index["manifests"]
        if m.get("annotations", {}).get("org.opencontainers.image.ref.name") != tag
    ]
    index["manifests"].append(
        {
            "mediaType": OCI_MANIFEST,
            "digest": manifest_digest,
            "size": len(manifest),
            "annotations": {"org.opencontainers.image.ref.name": tag},
        }
    )
    index_path.write_text(json.dumps(index))
    return OciImage(
        path=path,
        tag=tag,
        manifest_digest=manifest_digest,
        manifest=manifest,
        config_digest=config_digest,
        config=config,
        layer_digests=[d["digest"] for d in layer_descs],
        layer_media_types=[d["mediaType"] for d in layer_descs],
    )


class SkopeoError(subprocess.CalledProcessError):
    """skopeo exited non-zero; ``str()`` includes its stderr."""

    def __str__(self) -> str:
        stderr = self.stderr.decode(errors="replace") if isinstance(self.stderr, bytes) else ""
        return f"{super().__str__()}\nstderr:\n{stderr}"


# Trust policy accepting any image: the Debian default policy.json says the same, but it lives in
# /etc/containers (package golang-github-containers-common) and may be absent or stricter.
_INSECURE_POLICY = {"default": [{"type": "insecureAcceptAnything"}]}


def run_skopeo(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[bytes]:
    """Run ``skopeo <args>`` hermetically; raise :class:`SkopeoError` on failure.

    Everything skopeo would read or write outside the test is redirected into a temp dir:

    - ``--policy``: a temp policy accepting any image. Debian ships one in
      /etc/containers/policy.json (package golang-github-containers-common), but it may be
      absent or stricter on another machine.
    - ``--registries.d``, ``CONTAINERS_REGISTRIES_CONF``, ``XDG_CONFIG_HOME``: no host
      mirrors, short-name aliases or signature stores change what the test sees.
    - ``REGISTRY_AUTH_FILE``, ``XDG_RUNTIME_DIR``: no stored credentials are used or written
      (``--src-creds``/``--dest-creds`` still work).
    - ``_CONTAINERS_ROOTLESS_UID`` + ``XDG_DATA_HOME``: as root, skopeo keeps a blob-info cache
      in /var/lib/containers/cache/blob-info-cache-v1.boltdb that survives between runs and
      lets it substitute blobs it has seen before (changing which requests reach the
      registry). containers/image takes the euid from that variable, and for a non-root euid
      it puts the cache under ``XDG_DATA_HOME``, i.e. in the temp dir. The variable has no
      other effect on the oci:, dir: and docker: transports.
    - ``--tmpdir``/``TMPDIR``: big-file spooling stays in the temp dir.

    Pass the plain-HTTP switches yourself (``--dest-tls-verify=false`` /
    ``--src-tls-verify=false``): skopeo talks HTTPS to 127.0.0.1 by default.
    """
    with tempfile.TemporaryDirectory(prefix="skopeo-") as tmp:
        tmpdir = Path(tmp)
        policy = tmpdir / "policy.json"
        policy.write_text(json.dumps(_INSECURE_POLICY))
        registries_conf = tmpdir / "registries.conf"
        registries_conf.write_text("")
        for sub in ("registries.d", "scratch", "data", "config", "run"):
            (tmpdir / sub).mkdir()
        env = dict(os.environ)
        env.update(
            {
                "CONTAINERS_REGISTRIES_CONF": str(registries_conf),
                "REGISTRY_AUTH_FILE": str(tmpdir / "auth.json"),
                "XDG_CONFIG_HOME": str(tmpdir / "config"),
                "XDG_DATA_HOME": str(tmpdir / "data"),
                "XDG_RUNTIME_DIR": str(tmpdir / "run"),
                "TMPDIR": str(tmpdir / "scratch"),
            }
        )
        if os.geteuid() == 0:
            env["_CONTAINERS_ROOTLESS_UID"] = "65534"
        cmd = [
            SKOPEO_BIN,
            "--policy",
            str(policy),
            "--registries.d",
            str(tmpdir / "registries.d"),
            "--tmpdir",
            str(tmpdir / "scratch"),
            *args,
        ]
        proc = subprocess.run(
            cmd,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=timeout,
            env=env,
            check=False,
        )
    if proc.returncode != 0:
        raise SkopeoError(proc.returncode, cmd, proc.stdout, proc.stderr)
    return proc


def skopeo_push(image: OciImage, host: str, ref: str, *, creds: str | None = None) -> None:
    """skopeo copies ``image`` (its tag in the OCI layout) to ``docker://host/ref`` over plain
    HTTP, digests preserved (without ``--preserve-digests`` skopeo gzips uncompressed layers)."""
    run_skopeo(
        "copy",
        "--preserve-digests",
        "--dest-tls-verify=false",
        *(["--dest-creds", creds] if creds else []),
        f"oci:{image['path']}:{image['tag']}",
        f"docker://{host}/{ref}",
    )


def skopeo_pull(host: str, ref: str, out: Path) -> None:
    """skopeo copies ``docker://host/ref`` over plain HTTP into the ``dir:`` layout ``out``."""
    run_skopeo("copy", "--src-tls-verify=false", f"docker://{host}/{ref}", f"dir:{out}")


def check_pulled_dir(out: Path, image: OciImage) -> None:
    """A ``dir:`` copy holds ``image``'s manifest and every blob, byte for byte."""
    assert (out / "manifest.json").read_bytes() == image["manifest"]
    blobs = image["path"] / "blobs" / "sha256"
    for digest in [image["config_digest"], *image["layer_digests"]]:
        hexpart = digest.removeprefix("sha256:")
        data = (out / hexpart).read_bytes()
        assert sha256_digest(data) == digest
        assert data == (blobs / hexpart).read_bytes()


# --------------------------------------------------------------------------------------------
# Upload Locations for uploads the Go registry did not start
# --------------------------------------------------------------------------------------------


def _go_time_json(when: dt.datetime) -> str:
    """A ``datetime`` as Go's ``time.Time`` marshals to JSON (RFC 3339 with nanoseconds,
    trailing fractional zeros dropped, ``Z`` for UTC)."""
    utc = when.astimezone(dt.UTC) if when.tzinfo is not None else when.replace(tzinfo=dt.UTC)
    text = utc.strftime("%Y-%m-%dT%H:%M:%S")
    if utc.microsecond:
        text += f".{utc.microsecond:06d}".rstrip("0")
    return text + "Z"


def upload_location(
    registry: GoRegistry, repo: str, upload_id: str, offset: int, started_at: dt.datetime
) -> str:
    """The Location the Go registry would hand out for upload ``upload_id`` at ``offset``.

    distribution (``registry/handlers/hmac.go``, 2.8) resumes an upload only from a URL whose
    ``_state`` query parameter it signed itself: ``base64.URLEncoding(mac + json)`` where
    ``json`` is ``{"Name","UUID","Offset","StartedAt"}`` in that order (Go's ``json.Marshal``
    of ``blobUploadState``) and ``mac`` is HMAC-SHA256 of ``json`` keyed with ``http.secret``.
    The registry checks the signature, the name and the UUID, then that ``Offset`` equals the
    size of the upload's data (a mismatch answers 404 BLOB_UPLOAD_INVALID *and cancels the
    upload*). ``started_at`` is a ``datetime`` (it is informative only: 2.8.2 reads the start
    time from the ``startedat`` file).
    """
    state = {
        "Name": repo,
        "UUID": upload_id,
        "Offset": offset,
        "StartedAt": _go_time_json(started_at),
    }
    message = json.dumps(state, separators=(",", ":")).encode()
    mac = hmac.new(registry._secret.encode(), message, hashlib.sha256).digest()
    token = base64.urlsafe_b64encode(mac + message).decode("ascii")
    query = urllib.parse.urlencode({"_state": token})
    return f"{registry.url}/v2/{repo}/blobs/uploads/{upload_id}?{query}"


# --------------------------------------------------------------------------------------------
# The Go registry on S3 (``rclone serve s3``)
# --------------------------------------------------------------------------------------------

#: distribution's largest ``multipartcopythresholdsize`` (5 GiB, S3's largest single copy).
GO_S3_COPY_THRESHOLD_MAX = 5 << 30


def go_s3_parameters(parameters: Mapping[str, Any]) -> dict[str, Any]:
    """distribution-style ``storage.s3`` parameters, adjusted for Go 2.8.2 on ``rclone serve s3``.

    - ``forcepathstyle`` is dropped: 2.8 has no such key (it uses path-style requests whenever
      ``regionendpoint`` is set).
    - ``multipartcopythresholdsize`` is raised to its maximum, 5 GiB. Above the threshold 2.8
      moves a finished upload to its blob path with ``UploadPartCopy``, which rclone does not
      implement: it ignores ``x-amz-copy-source``, stores an empty part and answers 200 with an
      empty body, so the commit fails (``SerializationError: empty response payload``, HTTP
      500). Below it 2.8 uses one ``CopyObject``, which rclone does properly.

    What no parameter avoids: 2.8 also uses ``UploadPartCopy`` when a PATCH arrives while the
    upload's last part is under 5 MiB and the upload already holds 5 MiB or more (it restarts the
    multipart upload from the bytes so far). So on rclone a chunked upload works when every PATCH
    but the last carries at least 5 MiB, or the whole upload stays under 5 MiB; skopeo and
    docker send one streamed PATCH and are not affected.
    """
    adjusted = {key: value for key, value in parameters.items() if key != "forcepathstyle"}
    adjusted.setdefault("v4auth", True)
    adjusted["multipartcopythresholdsize"] = GO_S3_COPY_THRESHOLD_MAX
    return adjusted


class S3GoRegistry(GoRegistry):
    """The Go registry with ``storage.s3`` (see :func:`go_s3_parameters`) instead of a root.

    ``parameters`` are distribution-style ``storage.s3`` parameters, e.g.
    ``RcloneS3.parameters(bucket)``. ``redirect`` is off by default (``storage.redirect.disable``),
    so blob GETs are served by the registry itself rather than answered with a presigned URL.
    ``extra_config`` is merged last, as for :class:`GoRegistry`.

    On ``rclone serve s3`` the registry starts and serves what the bucket holds, but it cannot
    take a blob upload unless ``regionendpoint`` points at a :class:`ListPartsShim` in front
    of rclone (see there).
    """

    def __init__(
        self,
        parameters: Mapping[str, Any],
        *,
        redirect: bool = False,
        delete_enabled: bool = False,
        extra_config: dict[str, Any] | None = None,
        startup_timeout: float = 15.0,
        binary: Path = REGISTRY_BIN,
    ) -> None:
        # Nothing is stored on disk; the base class only creates its root, so give it one that
        # exists.
        super().__init__(
            Path(tempfile.gettempdir()),
            delete_enabled=delete_enabled,
            extra_config=extra_config,
            startup_timeout=startup_timeout,
            binary=binary,
        )
        self.s3_parameters = go_s3_parameters(parameters)
        self.redirect = redirect

    def config(self) -> dict[str, Any]:
        config = super().config()
        storage = config["storage"]
        storage.pop("filesystem", None)
        s3 = {"s3": self.s3_parameters, "redirect": {"disable": not self.redirect}}
        config["storage"] = deep_merge(s3, storage)
        return config

    def environment(self) -> dict[str, str]:
        """Ours without ``AWS_*``: no credentials, profile or region but the config's.

        In particular ``AWS_CA_BUNDLE`` (set on some machines for the system CA store) makes
        aws-sdk-go refuse the HTTP transport distribution 2.8 installs (``LoadCustomCABundleError:
        ... unsupported transport``) and the registry panics at start. The endpoint is plain
        HTTP on loopback, so no CA is needed.
        """
        return {key: value for key, value in os.environ.items() if not key.startswith("AWS_")}


class ListPartsShim:
    """A loopback HTTP proxy in front of an S3 server that completes ``ListParts`` answers.

    Why: S3 always sends ``<IsTruncated>`` in a ``ListPartsResult``; rclone (its gofakes3 core)
    leaves the element out when it is false. aws-sdk-go then leaves ``IsTruncated`` nil, and
    distribution 2.8's s3 driver dereferences it (``for *resp.IsTruncated``, in ``Writer`` with
    ``append``), so *every* resumed upload panics: the PATCH or PUT after the POST of any blob
    upload ends with a reset connection. This proxy adds ``<IsTruncated>false</IsTruncated>``
    where it is missing and passes everything else through unchanged (the ``Host`` header too,
    so AWS signatures still verify). Point ``regionendpoint`` at :attr:`endpoint`.

    One thread per client connection, one upstream connection each, HTTP/1.1 keep-alive,
    ``Expect: 100-continue`` relayed; request bodies must have a ``Content-Length`` (aws-sdk-go
    always sends one).
    """

    _BUFFER = 1 << 20

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self._listener: socket.socket | None = None
        self.port = 0
        self._threads: list[threading.Thread] = []
        self._sockets: set[socket.socket] = set()
        self._lock = threading.Lock()

    @property
    def endpoint(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def start(self) -> Self:
        self._listener = socket.create_server((LOOPBACK, 0))
        self.port = self._listener.getsockname()[1]
        self._spawn(self._accept, self._listener)
        return self

    def close(self) -> None:
        listener, self._listener = self._listener, None
        if listener is not None:
            # shutdown() wakes the thread blocked in accept(); close() alone does not.
            with contextlib.suppress(OSError):
                listener.shutdown(socket.SHUT_RDWR)
            listener.close()
        with self._lock:
            open_sockets = list(self._sockets)
        for sock in open_sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        for thread in self._threads:
            thread.join(timeout=10)

    def _spawn(self, target: Any, *args: Any) -> None:
        thread = threading.Thread(target=target, args=args, daemon=True)
        self._threads.append(thread)
        thread.start()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            self._spawn(self._serve, client)

    def _serve(self, client: socket.socket) -> None:
        try:
            upstream = socket.create_connection((LOOPBACK, self.upstream_port))
        except OSError:
            client.close()
            return
        for sock in (client, upstream):
            # Heads and bodies go out in separate sends: without this, Nagle's algorithm holds
            # the second back until the peer's delayed ACK, 40 ms a request.
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        with self._lock:
            self._sockets.update((client, upstream))
        try:
            with client, upstream:
                from_client = client.makefile("rb", buffering=self._BUFFER)
                from_upstream = upstream.makefile("rb", buffering=self._BUFFER)
                while self._exchange(from_client, client, from_upstream, upstream):
                    pass
        except OSError:
            pass
        finally:
            with self._lock:
                self._sockets.difference_update((client, upstream))

    def _exchange(
        self, from_client: Any, client: socket.socket, from_upstream: Any, upstream: socket.socket
    ) -> bool:
        """Relay one request and its response; ``False`` when the connection is done."""
        head = _read_head(from_client)
        if head is None:
            return False
        request_line, headers = _parse_head(head)
        method, target, _ = request_line.split(" ", 2)
        if "chunked" in headers.get("transfer-encoding", "").lower():
            raise OSError("chunked request bodies are not relayed")
        length = int(headers.get("content-length", "0"))
        upstream.sendall(head)
        response: bytes | None = None
        refused = False
        if headers.get("expect", "").lower() == "100-continue" and length:
            response = _read_head(from_upstream)
            if response is None:
                return False
            if _status(response) == 100:
                client.sendall(response)
                response = None
            else:
                refused = True  # Answered before the body: relay the answer, then hang up.
        if response is None:
            _relay(from_client, upstream, length)
            response = _read_head(from_upstream)
            if response is None:
                return False
        status = _status(response)
        _, response_headers = _parse_head(response)
        query = urllib.parse.parse_qs(urllib.parse.urlsplit(target).query)
        list_parts = method == "GET" and "uploadId" in query and "partNumber" not in query
        rewrite = list_parts and status == 200
        if method == "HEAD" or status in (204, 304):
            client.sendall(response)
        elif rewrite or "content-length" not in response_headers:
            body = _read_body(from_upstream, response_headers)
            if rewrite:
                body = _complete_list_parts(body)
            client.sendall(_with_length(response, len(body)) + body)
        else:
            client.sendall(response)
            _relay(from_upstream, client, int(response_headers["content-length"]))
        if refused:
            return False
        return "close" not in response_headers.get("connection", "").lower()


def _read_head(stream: Any) -> bytes | None:
    """An HTTP message head up to and including the blank line; ``None`` at a clean EOF."""
    lines: list[bytes] = []
    while True:
        line = stream.readline(65536)
        if not line:
            if lines:
                raise OSError("connection closed inside a message head")
            return None
        lines.append(line)
        if line in (b"\r\n", b"\n"):
            if len(lines) == 1:
                lines.clear()  # Tolerate a stray blank line between messages.
                continue
            return b"".join(lines)


def _parse_head(head: bytes) -> tuple[str, dict[str, str]]:
    first, *rest = head.decode("latin-1").split("\r\n")
    headers: dict[str, str] = {}
    for line in rest:
        name, sep, value = line.partition(":")
        if sep:
            headers[name.strip().lower()] = value.strip()
    return first, headers


def _status(head: bytes) -> int:
    return int(head.split(b" ", 2)[1])


def _relay(source: Any, sink: socket.socket, length: int) -> None:
    buffer = bytearray(ListPartsShim._BUFFER)
    view = memoryview(buffer)
    while length:
        n = source.readinto(view[: min(length, len(buffer))])
        if not n:
            raise OSError("connection closed inside a body")
        sink.sendall(view[:n])
        length -= n


def _read_body(stream: Any, headers: Mapping[str, str]) -> bytes:
    if "content-length" in headers:
        return bytes(stream.read(int(headers["content-length"])))
    if "chunked" not in headers.get("transfer-encoding", "").lower():
        return bytes(stream.read())  # Delimited by the end of the connection.
    chunks: list[bytes] = []
    while True:
        size = int(stream.readline().split(b";", 1)[0], 16)
        if size == 0:
            while stream.readline() not in (b"\r\n", b"\n", b""):
                pass  # Trailers.
            return b"".join(chunks)
        chunks.append(stream.read(size))
        stream.readline()


def _with_length(head: bytes, length: int) -> bytes:
    """``head`` with ``Content-Length: length`` and no ``Transfer-Encoding``."""
    lines = head.decode("latin-1").split("\r\n")[:-2]
    kept = [
        line
        for line in lines
        if line.split(":", 1)[0].strip().lower() not in ("content-length", "transfer-encoding")
    ]
    return ("\r\n".join([*kept, f"Content-Length: {length}"]) + "\r\n\r\n").encode("latin-1")


def _complete_list_parts(body: bytes) -> bytes:
    if b"<IsTruncated>" in body or b"</ListPartsResult>" not in body:
        return body
    return body.replace(
        b"</ListPartsResult>", b"  <IsTruncated>false</IsTruncated>\n</ListPartsResult>"
    )
