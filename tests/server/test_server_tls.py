"""``distblob serve`` with ``http.tls`` (``distblob.server.tls``), beside the Go registry 2.8.2.

- Blobs over TLS: a body larger than the 1 MiB the registry reads whole and a blob GET, right
  digests, with the socket extensions of ``distblob.server.direct`` off (shown in-process, on
  uvloop and on asyncio's loop, by an app that reports what its scope offered);
- skopeo pushes and pulls an OCI image over TLS with ``--dest-cert-dir``/``--src-cert-dir``,
  with and without client certificates required, and is refused without one when they are;
- the refusals, on both servers: no client certificate (or one from a CA the server does not
  trust) with ``clientcas``, a TLS 1.2 client with ``minimumtls: tls1.3``, a suite left out of
  ``ciphersuites``;
- byte for byte as the Go registry: a plain HTTP request to the TLS port, and a TLS handshake to
  a plain port (which distblob logs once, at debug level);
- a server stops at once with connections that have not finished (or begun) their handshake.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import json
import os
import signal
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import uvicorn

from distblob.config import TLS
from distblob.server import direct
from distblob.server.tls import PLAIN_HTTP_ANSWER, server_context, tls_protocol
from support.goregistry import (
    LOOPBACK,
    GoRegistry,
    SkopeoError,
    check_pulled_dir,
    make_oci_image_layout,
    run_skopeo,
    sha256_digest,
)
from support.server import DistblobServer
from support.tls import PKI, make_pki

pytestmark = pytest.mark.timeout(180)

BIG = (3 << 20) + 17  # above the 1 MiB the registry reads whole, and not a multiple of it


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> PKI:
    return make_pki(tmp_path_factory.mktemp("pki"))


def tls_server(root: Path, pki: PKI, client: bool = False, **tls: object) -> DistblobServer:
    return DistblobServer(
        root,
        extra_config={"http": {"tls": pki.tls_config(**tls)}},
        client_tls=pki.client_context(client=client),
    )


def tls_go(root: Path, pki: PKI, client: bool = False, **tls: object) -> GoRegistry:
    return GoRegistry(
        root,
        extra_config={"http": {"tls": pki.tls_config(**tls)}},
        client_tls=pki.client_context(client=client),
    )


@pytest.fixture(scope="module")
def ours(tmp_path_factory: pytest.TempPathFactory, pki: PKI) -> Iterator[DistblobServer]:
    with tls_server(tmp_path_factory.mktemp("root"), pki) as server:
        yield server


def exchange(port: int, data: bytes, context: ssl.SSLContext | None = None) -> bytes:
    """Send ``data`` on a fresh connection and read until the server closes it."""
    with socket.create_connection((LOOPBACK, port), timeout=10) as raw:
        sock = context.wrap_socket(raw, server_hostname=LOOPBACK) if context else raw
        sock.sendall(data)
        answer = b""
        try:
            while chunk := sock.recv(65536):
                answer += chunk
        except ConnectionResetError:
            pass
        return answer


def client_hello() -> bytes:
    """The first flight of a TLS client (its ClientHello record)."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    connection = context.wrap_bio(incoming, outgoing)
    with pytest.raises(ssl.SSLWantReadError):
        connection.do_handshake()
    return outgoing.read()


def get_ping(port: int, context: ssl.SSLContext) -> tuple[int, str]:
    """``GET /v2/`` over TLS: the status and the cipher suite agreed on."""
    conn = http.client.HTTPSConnection(LOOPBACK, port, timeout=10, context=context)
    try:
        conn.request("GET", "/v2/")
        response = conn.getresponse()
        response.read()
        assert isinstance(conn.sock, ssl.SSLSocket)
        cipher = conn.sock.cipher()
        assert cipher is not None
        return response.status, cipher[0]
    finally:
        conn.close()


def refused(port: int, context: ssl.SSLContext) -> bool:
    """Whether the server refuses a client with ``context`` (in the handshake, or, with TLS
    1.3, where the client reads the server's alert after its own handshake ended)."""
    try:
        get_ping(port, context)
    except (ssl.SSLError, ConnectionError):
        return True
    return False


# -- blobs over TLS ----------------------------------------------------------------------------


@pytest.mark.parametrize("chunks", [None, 2], ids=["monolithic", "patches"])
def test_a_large_upload_and_a_blob_get_over_tls(ours: DistblobServer, chunks: int | None) -> None:
    data = os.urandom(BIG)
    with ours.client() as client:
        digest = client.push_blob("tls/blobs", data, chunks=chunks)
        assert digest == sha256_digest(data)
        got = client.get_blob("tls/blobs", digest, expect=(200,))
        assert sha256_digest(got.body) == digest and len(got.body) == BIG
        head = client.head_blob("tls/blobs", digest, expect=(200,))
        assert head.headers["Docker-Content-Digest"] == digest
        ranged = client.get_blob(
            "tls/blobs", digest, headers={"Range": "bytes=1048570-2097160"}, expect=(206,)
        )
        assert ranged.body == data[1048570:2097161]
    assert "unexpected error" not in ours.log_text()


class ScopeReporter:
    """Hashes each request body and answers what the scope offered and how the body came."""

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        sha, length, more = hashlib.sha256(), 0, True
        while more:
            message = await receive()
            sha.update(message.get("body", b""))
            length += len(message.get("body", b""))
            more = message.get("more_body", False)
        report = {
            "scheme": scope["scheme"],
            "extensions": sorted(scope.get("extensions", {})),
            "length": length,
            "sha256": sha.hexdigest(),
        }
        payload = json.dumps(report).encode()
        headers = [(b"content-length", b"%d" % len(payload))]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": payload})


@pytest.mark.parametrize("loop", ["uvloop", "asyncio"])
def test_the_socket_extensions_are_off_on_a_tls_transport(pki: PKI, loop: str) -> None:
    context = server_context(TLS(certificate=str(pki.server_cert), key=str(pki.server_key)))
    config = uvicorn.Config(
        ScopeReporter(),
        host=LOOPBACK,
        port=0,
        http=tls_protocol(context, direct.DirectProtocol),
        loop=loop,
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=1,
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 20
        while not server.started:
            assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.02)
        port = int(server.servers[0].sockets[0].getsockname()[1])
        data = os.urandom(BIG)
        conn = http.client.HTTPSConnection(LOOPBACK, port, timeout=30, context=pki.client_context())
        try:
            for body in (data, data[:100]):  # keep-alive: two requests on one connection
                conn.request("POST", "/", body=body)
                response = conn.getresponse()
                report = json.loads(response.read())
                assert report == {
                    "scheme": "https",
                    "extensions": [],
                    "length": len(body),
                    "sha256": hashlib.sha256(body).hexdigest(),
                }
        finally:
            conn.close()
        # A plain request to the same port gets Go's answer.
        assert exchange(port, b"GET /v2/ HTTP/1.1\r\nHost: x\r\n\r\n") == PLAIN_HTTP_ANSWER
    finally:
        server.should_exit = True
        thread.join(20)
    assert not thread.is_alive()


# -- skopeo --------------------------------------------------------------------------------------


@pytest.mark.parametrize("required", [False, True], ids=["server-cert", "client-certs"])
def test_skopeo_pushes_and_pulls_over_tls(pki: PKI, tmp_path: Path, required: bool) -> None:
    layers = [os.urandom(BIG), b"a small layer"]
    image = make_oci_image_layout(tmp_path / "layout", layers, tag="v1")
    cert_dir = pki.cert_dir(f"certs-{required}", client=required)
    clientcas = [str(pki.ca)] if required else None
    with tls_server(tmp_path / "root", pki, client=required, clientcas=clientcas) as server:
        run_skopeo(
            "copy",
            "--preserve-digests",
            "--dest-cert-dir",
            str(cert_dir),
            f"oci:{image['path']}:v1",
            f"docker://{server.host}/tls/app:v1",
        )
        run_skopeo(
            "copy",
            "--src-cert-dir",
            str(cert_dir),
            f"docker://{server.host}/tls/app:v1",
            f"dir:{tmp_path / 'out'}",
        )
        check_pulled_dir(tmp_path / "out", image)
        if required:
            # Without its client certificate skopeo is refused.
            with pytest.raises(SkopeoError):
                run_skopeo(
                    "copy",
                    "--src-cert-dir",
                    str(pki.cert_dir("ca-only", client=False)),
                    f"docker://{server.host}/tls/app:v1",
                    f"dir:{tmp_path / 'refused'}",
                )
        assert "unexpected error" not in server.log_text()


# -- refusals, on both servers -------------------------------------------------------------------


SERVERS = ["distblob", "go"]


def start(kind: str, root: Path, pki: PKI, client: bool = False, **tls: object) -> Any:
    make = tls_server if kind == "distblob" else tls_go
    return make(root, pki, client, **tls)


@pytest.mark.parametrize("kind", SERVERS)
def test_clientcas_requires_a_client_certificate(kind: str, pki: PKI, tmp_path: Path) -> None:
    with start(kind, tmp_path, pki, client=True, clientcas=[str(pki.ca)]) as server:
        assert get_ping(server.port, pki.client_context(client=True))[0] == 200
        assert refused(server.port, pki.client_context())
        assert refused(server.port, pki.client_context(stranger=True))
        tls12 = pki.client_context(maximum=ssl.TLSVersion.TLSv1_2)
        assert refused(server.port, tls12)
        if kind == "distblob":
            assert "tls: handshake with 127.0.0.1:" in server.log_text()


@pytest.mark.parametrize("kind", SERVERS)
def test_minimumtls_1_3_refuses_a_tls_1_2_client(kind: str, pki: PKI, tmp_path: Path) -> None:
    with start(kind, tmp_path, pki, minimumtls="tls1.3") as server:
        assert refused(server.port, pki.client_context(maximum=ssl.TLSVersion.TLSv1_2))
        assert get_ping(server.port, pki.client_context())[0] == 200


@pytest.mark.parametrize("kind", SERVERS)
def test_the_default_minimum_serves_tls_1_2(kind: str, pki: PKI, tmp_path: Path) -> None:
    # (Below TLS 1.2 Python's client cannot go: OpenSSL's security level refuses it.)
    with start(kind, tmp_path, pki) as server:
        tls12 = pki.client_context(maximum=ssl.TLSVersion.TLSv1_2)
        assert get_ping(server.port, tls12)[0] == 200


@pytest.mark.parametrize("kind", SERVERS)
def test_ciphersuites_limit_tls_1_2(kind: str, pki: PKI, tmp_path: Path) -> None:
    suites = ["TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256", "TLS_AES_128_GCM_SHA256"]
    with start(kind, tmp_path, pki, ciphersuites=suites) as server:
        tls12 = pki.client_context(maximum=ssl.TLSVersion.TLSv1_2)
        assert get_ping(server.port, tls12) == (200, "ECDHE-RSA-AES128-GCM-SHA256")
        other = pki.client_context(
            maximum=ssl.TLSVersion.TLSv1_2, ciphers="ECDHE-RSA-AES256-GCM-SHA384"
        )
        assert refused(server.port, other)
        assert get_ping(server.port, pki.client_context())[0] == 200  # TLS 1.3


# -- byte for byte as Go -----------------------------------------------------------------------


PLAIN_REQUESTS = [
    b"GET /v2/ HTTP/1.1\r\nHost: x\r\n\r\n",
    b"HEAD /v2/ HTTP/1.1\r\nHost: x\r\n\r\n",
    b"POST /v2/a/blobs/uploads/ HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n",
    b"PUT /v2/a/manifests/v1 HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n",
    b"OPTIONS * HTTP/1.1\r\nHost: x\r\n\r\n",
    b"PATCH /v2/ HTTP/1.1\r\nHost: x\r\n\r\n",  # Go closes these without a word
    b"DELETE /v2/ HTTP/1.1\r\nHost: x\r\n\r\n",
    b"HELLO\r\n\r\n",
]


def test_plain_http_to_the_tls_port_is_answered_as_go_does(
    ours: DistblobServer, pki: PKI, tmp_path: Path
) -> None:
    with tls_go(tmp_path, pki) as go:
        for request in PLAIN_REQUESTS:
            expected = exchange(go.port, request)
            assert exchange(ours.port, request) == expected, request
    assert exchange(ours.port, PLAIN_REQUESTS[0]) == PLAIN_HTTP_ANSWER
    # The connection after them is served as ever.
    assert get_ping(ours.port, pki.client_context())[0] == 200


def test_a_tls_handshake_to_a_plain_server_is_answered_as_go_does_and_logged_once(
    tmp_path: Path,
) -> None:
    hello = client_hello()
    with GoRegistry(tmp_path / "go") as go:
        expected = exchange(go.port, hello)
    assert expected.startswith(b"HTTP/1.1 400 Bad Request\r\n")
    config = {"log": {"level": "debug"}}
    with DistblobServer(tmp_path / "ours", extra_config=config) as server:
        for _ in range(3):
            assert exchange(server.port, hello) == expected
        with server.client() as client:
            client.ping()
        log = server.log_text()
    assert "Invalid HTTP request" not in log
    probes = [line for line in log.splitlines() if "TLS handshake from" in line]
    assert len(probes) == 1 and "level=debug" in probes[0], probes


# -- stopping --------------------------------------------------------------------------------------


def test_the_server_stops_with_handshakes_pending(pki: PKI, tmp_path: Path) -> None:
    server = tls_server(tmp_path, pki)
    with server:
        silent = socket.create_connection((LOOPBACK, server.port))
        partial = socket.create_connection((LOOPBACK, server.port))
        partial.sendall(client_hello()[:20])  # a handshake that never completes
        plain_start = socket.create_connection((LOOPBACK, server.port))
        plain_start.sendall(b"GE")  # perhaps the start of a plain request
        time.sleep(0.3)
        started = time.monotonic()
        server.stop()
        assert time.monotonic() - started < 5
        for sock in (silent, partial, plain_start):
            sock.settimeout(5)
            # Closed (with a reset where the server left bytes unread).
            with contextlib.suppress(ConnectionResetError):
                assert sock.recv(100) == b""
            sock.close()
    assert server.returncode in (0, -signal.SIGTERM), server.log
    assert "Traceback" not in server.log


def test_idle_keep_alive_clients_do_not_hold_the_stop(pki: PKI, tmp_path: Path) -> None:
    """asyncio's TLS transport waits for the client's close_notify when it closes, and an idle
    keep-alive client sends it only when it next reads: the stop would wait out
    ``http.draintimeout`` (30 s here, past the harness's 10 s before SIGKILL). The server
    sends its close_notify and closes, as Go does; the clients see the connection end."""
    server = DistblobServer(
        tmp_path,
        extra_config={"http": {"tls": pki.tls_config(), "draintimeout": "30s"}},
        client_tls=pki.client_context(),
    )
    with server:
        clients = []
        for _ in range(3):
            raw = socket.create_connection((LOOPBACK, server.port))
            tls = pki.client_context().wrap_socket(raw, server_hostname=LOOPBACK)
            tls.sendall(b"GET /v2/ HTTP/1.1\r\nHost: registry\r\n\r\n")
            answer = b""
            while not answer.endswith(b"\r\n\r\n{}"):  # the whole response, body included
                answer += tls.recv(4096)
            assert answer.startswith(b"HTTP/1.1 200 ")
            clients.append(tls)  # kept open, idle
        server.stop()
        for tls in clients:
            tls.settimeout(5)
            with contextlib.suppress(ConnectionResetError, ssl.SSLError):
                assert tls.recv(100) == b""
            tls.close()
    assert server.returncode == -signal.SIGTERM, server.log
    assert "Traceback" not in server.log
