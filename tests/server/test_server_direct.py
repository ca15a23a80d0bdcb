"""Large request bodies read from the socket by a thread, and files sent with ``sendfile``
(``distblob.server.direct``).

The protocol is tested under a real uvicorn server on loopback with a small app that hashes
what it receives (and sends a file with ``http.response.zerocopysend``), and the registry
through ``distblob serve``: keep-alive and pipelined requests after a body read past the
parser, ``Expect: 100-continue``, chunked bodies (no tap), a client that leaves mid-body, and a
stop while a body stalls. A file goes to a client on this host as copies and to any other with
``sendfile``; every client here is on loopback, so the tests of the send make the server take
the client for a remote one too.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import socket
import threading
import time
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

import pytest
import uvicorn
from starlette.requests import ClientDisconnect

from distblob.server import direct
from distblob.server import sendfile as sending
from support.goregistry import LOOPBACK, sha256_digest
from support.server import DistblobServer

pytestmark = pytest.mark.timeout(120)

BIG = (3 << 20) + 17  # above the 1 MiB the registry reads whole, and not a multiple of it


# -- a small app and an in-process uvicorn -----------------------------------------------------


class HashingApp:
    """Hashes each request body; answers JSON with its length, its digest and how it came."""

    def __init__(self) -> None:
        self.seen: list[dict[str, Any]] = []  # one entry per request, also for cut ones
        self.read_first = False  # receive one message before taking the rest directly

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while (message := await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        if scope["path"] == "/file":
            await self.send_file(scope, send)
            return
        sha = hashlib.sha256()
        entry: dict[str, Any] = {"length": 0, "direct": False, "cut": False}
        self.seen.append(entry)

        def write(view: memoryview) -> None:
            if scope["path"] == "/fail" and entry["length"] >= 1 << 20:
                raise OSError(28, "No space left on device")
            sha.update(view)
            entry["length"] += len(view)

        more = True
        if self.read_first:
            message = await receive()
            write(memoryview(message.get("body", b"")))
            more = message.get("more_body", False)
        tap = direct.tap(scope)
        body = tap.take() if tap is not None and more else None
        if body is not None:
            entry["direct"] = True
            try:
                await direct.receive_into(tap, body, write)  # type: ignore[arg-type]
            except ClientDisconnect:
                entry["cut"] = True
                return
            except OSError:
                headers = [(b"content-length", b"0")]
                await send({"type": "http.response.start", "status": 507, "headers": headers})
                await send({"type": "http.response.body", "body": b""})
                return
            more = False
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                entry["cut"] = True
                return
            write(memoryview(message.get("body", b"")))
            more = message.get("more_body", False)
        payload = json.dumps({**entry, "sha256": sha.hexdigest()}).encode()
        headers = [(b"content-length", b"%d" % len(payload))]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": payload})

    file_path: Path | None = None

    async def send_file(self, scope: Any, send: Any) -> None:
        """The file from byte 10 to its end, in two ``http.response.zerocopysend`` messages."""
        assert self.file_path is not None and direct.zerocopy(scope)
        size = self.file_path.stat().st_size
        headers = [(b"content-length", b"%d" % (size - 10))]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        with self.file_path.open("rb") as file:
            half = (size - 10) // 2
            for offset, count, more in ((10, half, True), (10 + half, size - 10 - half, False)):
                message = {"file": file, "offset": offset, "count": count, "more_body": more}
                await send({"type": direct.ZEROCOPY_SEND, **message})


class Served:
    def __init__(self, server: uvicorn.Server, thread: threading.Thread, app: HashingApp) -> None:
        self.server, self.thread, self.app = server, thread, app

    @property
    def port(self) -> int:
        return int(self.server.servers[0].sockets[0].getsockname()[1])

    def connect(self) -> socket.socket:
        return socket.create_connection((LOOPBACK, self.port), timeout=30)


@pytest.fixture
def served() -> Iterator[Served]:
    app = HashingApp()
    config = uvicorn.Config(
        app,
        host=LOOPBACK,
        port=0,
        http=direct.DirectProtocol,
        loop="uvloop",
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=1,
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.02)
    yield Served(server, thread, app)
    server.should_exit = True
    thread.join(20)
    assert not thread.is_alive()


def read_response(stream: BinaryIO) -> tuple[int, dict[str, str], bytes]:
    """One response (status line, headers, a Content-Length body) from a buffered stream."""
    status_line = stream.readline()
    assert status_line.startswith(b"HTTP/1.1 "), status_line
    headers: dict[str, str] = {}
    while (line := stream.readline()) not in (b"\r\n", b""):
        name, _, value = line.decode("latin-1").partition(":")
        headers[name.strip().lower()] = value.strip()
    body = stream.read(int(headers.get("content-length", "0")))
    return int(status_line.split()[1]), headers, body


def post(path: str, body: bytes, extra: str = "") -> bytes:
    head = f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n{extra}\r\n"
    return head.encode() + body


def answer(stream: BinaryIO) -> dict[str, Any]:
    status, _, body = read_response(stream)
    assert status == 200, body
    result: dict[str, Any] = json.loads(body)
    return result


# -- the protocol ------------------------------------------------------------------------------


def test_a_body_with_a_length_is_read_directly_and_whole(served: Served) -> None:
    data = os.urandom(BIG)
    with served.connect() as sock, sock.makefile("rb") as stream:
        sock.sendall(post("/", data))
        got = answer(stream)
    assert got == {
        "length": len(data),
        "direct": True,
        "cut": False,
        "sha256": hashlib.sha256(data).hexdigest(),
    }


def test_keep_alive_and_pipelined_requests_follow_a_direct_body(served: Served) -> None:
    """Three requests in one send: the parser resumes exactly where each body ends."""
    first, second, third = os.urandom(BIG), os.urandom(BIG + 1), b"tail"
    with served.connect() as sock, sock.makefile("rb") as stream:
        sock.sendall(post("/", first) + post("/", second) + post("/", third))
        answers = [answer(stream) for _ in range(3)]
        # The connection is still usable afterwards.
        sock.sendall(post("/", first))
        answers.append(answer(stream))
    for got, data in zip(answers, (first, second, third, first), strict=True):
        assert (got["length"], got["sha256"]) == (len(data), hashlib.sha256(data).hexdigest())
    # The short third body came in with its headers: nothing is left to take from the socket.
    assert [got["direct"] for got in answers] == [True, True, False, True]


def test_the_rest_of_a_body_after_messages_already_received(served: Served) -> None:
    served.app.read_first = True
    data = os.urandom(BIG)
    with served.connect() as sock, sock.makefile("rb") as stream:
        sock.sendall(post("/", data))
        got = answer(stream)
    assert (got["length"], got["sha256"]) == (len(data), hashlib.sha256(data).hexdigest())


def test_expect_100_continue_is_answered_before_the_body_is_read(served: Served) -> None:
    data = os.urandom(BIG)
    with served.connect() as sock, sock.makefile("rb") as stream:
        head = f"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: {len(data)}\r\n"
        sock.sendall(head.encode() + b"Expect: 100-continue\r\n\r\n")
        assert stream.readline() == b"HTTP/1.1 100 Continue\r\n"
        assert stream.readline() == b"\r\n"
        sock.sendall(data)
        got = answer(stream)
    assert (got["length"], got["direct"]) == (len(data), True)
    assert got["sha256"] == hashlib.sha256(data).hexdigest()


def test_a_chunked_body_comes_as_messages(served: Served) -> None:
    data = os.urandom(BIG)
    with served.connect() as sock, sock.makefile("rb") as stream:
        head = b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
        pieces = [data[i : i + 100_000] for i in range(0, len(data), 100_000)]
        chunks = b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in pieces) + b"0\r\n\r\n"
        sock.sendall(head + chunks + post("/", data))
        chunked, direct_after = answer(stream), answer(stream)
    assert (chunked["length"], chunked["direct"]) == (len(data), False)
    assert chunked["sha256"] == hashlib.sha256(data).hexdigest()
    assert (direct_after["length"], direct_after["direct"]) == (len(data), True)


def test_a_client_leaving_mid_body_hands_over_what_it_sent(served: Served) -> None:
    data = os.urandom(BIG)
    sent = 2 << 20
    with served.connect() as sock:
        sock.sendall(post("/", data)[: -(len(data) - sent)])
        sock.shutdown(socket.SHUT_WR)
        assert sock.recv(1) == b""  # the server closes without an answer
    deadline = time.monotonic() + 10
    while not (served.app.seen and served.app.seen[0]["cut"]):
        assert time.monotonic() < deadline
        time.sleep(0.02)
    assert served.app.seen[0] == {"length": sent, "direct": True, "cut": True}
    # The server goes on serving.
    with served.connect() as sock, sock.makefile("rb") as stream:
        sock.sendall(post("/", b"after"))
        assert answer(stream)["length"] == 5


def test_a_body_the_store_failed_on_is_dropped_and_the_connection_goes_on(
    served: Served,
) -> None:
    data = os.urandom(BIG)
    with served.connect() as sock, sock.makefile("rb") as stream:
        sock.sendall(post("/fail", data) + post("/", b"next"))
        assert read_response(stream)[0] == 507
        assert answer(stream)["length"] == 4


def test_past_the_discard_limit_the_rest_is_never_parsed_as_requests(
    served: Served, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A body left unread in the socket is not taken for requests: the connection closes."""
    monkeypatch.setattr(direct, "DISCARD_LIMIT", 64 << 10)
    smuggled = post("/smuggled", b"x") * 20_000
    data = os.urandom(1 << 20) + smuggled + os.urandom(BIG)
    with served.connect() as sock:
        try:
            sock.sendall(post("/fail", data))
            with sock.makefile("rb") as stream:
                assert read_response(stream)[0] == 507
                stream.read()
        except ConnectionResetError:
            pass  # closed with body bytes unread: the kernel may answer them with a reset
    time.sleep(0.2)
    assert len(served.app.seen) == 1  # /fail only: nothing of its body ran as a request


def test_a_stop_interrupts_a_stalled_body(served: Served) -> None:
    data = os.urandom(BIG)
    with served.connect() as sock:
        sock.sendall(post("/", data)[: 2 << 20])
        deadline = time.monotonic() + 10
        while not (served.app.seen and served.app.seen[0]["direct"]):
            assert time.monotonic() < deadline
            time.sleep(0.02)
        started = time.monotonic()
        served.server.should_exit = True
        served.thread.join(15)
        assert not served.thread.is_alive()
        assert time.monotonic() - started < 10  # the 1 s drain, then the copy stops at once
    assert not [t for t in threading.enumerate() if t.name == "distblob-body"]


class SendfileCalls:
    """Counts ``os.sendfile`` calls (passing them on) while a test runs."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls = 0
        real = os.sendfile

        def counted(*args: Any) -> int:
            self.calls += 1
            return real(*args)

        monkeypatch.setattr(os, "sendfile", counted)


@pytest.fixture(params=["local", "remote"])
def client_is(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """The server takes the loopback client for what the parameter says."""
    if request.param == "remote":
        monkeypatch.setattr(sending, "is_local", lambda sock: False)
    return str(request.param)


def test_a_file_sent_with_zerocopysend_arrives_whole_on_a_kept_connection(
    served: Served, tmp_path: Path, client_is: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    sendfile = SendfileCalls(monkeypatch)
    data = os.urandom(BIG)
    served.app.file_path = tmp_path / "file"
    served.app.file_path.write_bytes(data)
    with served.connect() as sock, sock.makefile("rb") as stream:
        for _ in range(2):
            sock.sendall(b"GET /file HTTP/1.1\r\nHost: x\r\n\r\n")
            status, headers, body = read_response(stream)
            assert (status, headers["content-length"]) == (200, str(len(data) - 10))
            assert body == data[10:]
    # A local client is sent copies, a remote one the file itself.
    assert (sendfile.calls > 0) == (client_is == "remote")


def test_a_client_leaving_during_a_zerocopy_send_leaves_nothing_running(
    served: Served, tmp_path: Path, client_is: str
) -> None:
    served.app.file_path = tmp_path / "file"
    served.app.file_path.write_bytes(os.urandom(64 << 20))
    with served.connect() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.sendall(b"GET /file HTTP/1.1\r\nHost: x\r\n\r\n")
        assert sock.recv(1000)
    deadline = time.monotonic() + 10
    while [t for t in threading.enumerate() if t.name == "distblob-send"]:
        assert time.monotonic() < deadline, "the sending thread is still running"
        time.sleep(0.05)
    with served.connect() as sock, sock.makefile("rb") as stream:
        sock.sendall(post("/", b"after"))
        assert answer(stream)["length"] == 5


@pytest.mark.parametrize(
    ("family", "sockname", "peername", "local"),
    [
        (socket.AF_INET, ("127.0.0.1", 5000), ("127.0.0.1", 40000), True),
        (socket.AF_INET, ("127.0.0.1", 5000), ("127.3.2.1", 40000), True),
        (socket.AF_INET6, ("::1", 5000, 0, 0), ("::1", 40000, 0, 0), True),
        (socket.AF_INET6, ("::", 5000, 0, 0), ("::ffff:127.0.0.1", 40000, 0, 0), True),
        (socket.AF_UNIX, "/run/distblob.sock", "", True),
        # The host's own address: the kernel routes that through loopback too.
        (socket.AF_INET, ("192.0.2.7", 5000), ("192.0.2.7", 40000), True),
        (socket.AF_INET6, ("2001:db8::7", 5000, 0, 0), ("2001:db8::7", 40000, 0, 0), True),
        (socket.AF_INET, ("192.0.2.7", 5000), ("192.0.2.8", 40000), False),
        (socket.AF_INET6, ("2001:db8::7", 5000, 0, 0), ("2001:db8::8", 40000, 0, 0), False),
        (socket.AF_INET6, ("::", 5000, 0, 0), ("::ffff:192.0.2.8", 40000, 0, 0), False),
        (socket.AF_INET6, ("fe80::1%eth0", 5000, 0, 2), ("fe80::2%eth0", 40000, 0, 2), False),
        (socket.AF_INET, ("127.0.0.1", 5000), ("not an address", 40000), False),
        (socket.AF_INET, ("127.0.0.1", 5000), (), False),
    ],
)
def test_which_clients_are_on_this_host(
    family: int, sockname: Any, peername: Any, local: bool
) -> None:
    assert sending.local_peer(family, sockname, peername) is local


def test_a_loopback_connection_is_local() -> None:
    with socket.create_server((LOOPBACK, 0)) as listener:
        with socket.create_connection(listener.getsockname()) as client:
            assert sending.is_local(client)
        assert not sending.is_local(listener)  # not connected: it cannot tell


@pytest.mark.parametrize("copy", [True, False], ids=["copies", "sendfile"])
def test_a_file_sender_sends_the_region_through_small_buffers(
    tmp_path: Path, copy: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Through socket buffers far smaller than the region, so that writes come back short
    and would block."""
    data = os.urandom(2 * sending.BUFFER + 3)
    path = tmp_path / "file"
    path.write_bytes(data)
    with socket.create_server((LOOPBACK, 0)) as listener:
        reader = socket.create_connection(listener.getsockname())
        reader.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 16)
        conn, _ = listener.accept()
    conn.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 16)
    conn.setblocking(False)
    received = bytearray()

    def read() -> None:
        while chunk := reader.recv(1 << 16):
            received.extend(chunk)

    thread = threading.Thread(target=read)
    thread.start()
    sender = sending.FileSender(os.dup(conn.fileno()), copy=copy)
    waits = 0
    wait = sender._wait

    def counted_wait() -> None:
        nonlocal waits
        waits += 1
        wait()

    monkeypatch.setattr(sender, "_wait", counted_wait)
    with path.open("rb") as file:
        assert sender.send(file.fileno(), 7, len(data) - 9) == len(data) - 9
    conn.close()
    thread.join(30)
    reader.close()
    assert sender.sent == len(data) - 9
    assert bytes(received) == data[7:-2]
    assert waits > 0  # the socket was full at times


@pytest.mark.parametrize("copy", [True, False], ids=["copies", "sendfile"])
def test_a_file_sender_says_when_the_file_is_short(tmp_path: Path, copy: bool) -> None:
    path = tmp_path / "file"
    path.write_bytes(b"x" * 1000)
    left, right = socket.socketpair()
    with left, right, path.open("rb") as file:
        sender = sending.FileSender(os.dup(left.fileno()), copy=copy)
        with pytest.raises(EOFError, match="ended 500 bytes early"):
            sender.send(file.fileno(), 0, 1500)
        assert sender.sent == 1000
        assert right.recv(2000) == b"x" * 1000


@pytest.mark.parametrize("copy", [True, False], ids=["copies", "sendfile"])
def test_a_file_sender_says_when_the_client_is_gone(tmp_path: Path, copy: bool) -> None:
    path = tmp_path / "file"
    path.write_bytes(os.urandom(4 << 20))
    left, right = socket.socketpair()
    right.close()
    with left, path.open("rb") as file:
        sender = sending.FileSender(os.dup(left.fileno()), copy=copy)
        with pytest.raises(ConnectionError):
            sender.send(file.fileno(), 0, 4 << 20)


@pytest.mark.parametrize(
    ("headers", "length"),
    [
        ([(b"content-length", b"12")], 12),
        ([(b"content-length", b" 12 ")], 12),
        ([(b"content-length", b"12"), (b"content-length", b"12")], None),
        ([(b"content-length", b"12"), (b"transfer-encoding", b"chunked")], None),
        ([(b"transfer-encoding", b"chunked")], None),
        ([(b"content-length", "١٢".encode())], None),
        ([(b"content-length", b"-1")], None),
        ([], None),
    ],
)
def test_only_one_plain_content_length_offers_a_tap(
    headers: list[tuple[bytes, bytes]], length: int | None
) -> None:
    assert direct._declared_length(headers) == length


# -- the registry ------------------------------------------------------------------------------


def _upload(port: int) -> str:
    conn = http.client.HTTPConnection(LOOPBACK, port, timeout=30)
    conn.request("POST", "/v2/direct/app/blobs/uploads/")
    response = conn.getresponse()
    response.read()
    conn.close()
    assert response.status == 202
    location = response.getheader("Location")
    assert location is not None
    return location


def test_registry_pipelined_patches_then_put(tmp_path: Path) -> None:
    first, second = os.urandom(BIG), os.urandom(BIG)
    with DistblobServer(tmp_path / "root") as server:
        location = _upload(server.port)
        with socket.create_connection((LOOPBACK, server.port)) as sock:
            stream = sock.makefile("rb")
            patch = (
                f"PATCH {location} HTTP/1.1\r\nHost: x\r\nContent-Range: 0-{BIG - 1}\r\n"
                f"Content-Length: {BIG}\r\n\r\n"
            )
            sock.sendall(patch.encode() + first + b"GET /v2/ HTTP/1.1\r\nHost: x\r\n\r\n")
            status, headers, _ = read_response(stream)
            assert (status, headers["range"]) == (202, f"0-{BIG - 1}")
            assert read_response(stream)[0] == 200
            location = headers["location"]
            digest = sha256_digest(first + second)
            target = f"{location}&{urllib.parse.urlencode({'digest': digest})}"
            put = f"PUT {target} HTTP/1.1\r\nHost: x\r\nContent-Length: {BIG}\r\n\r\n"
            sock.sendall(put.encode() + second)
            status, headers, body = read_response(stream)
            assert status == 201, body
            assert headers["docker-content-digest"] == digest
            sock.sendall(f"GET /v2/direct/app/blobs/{digest} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
            status, _, body = read_response(stream)
            assert (status, body == first + second) == (200, True)
            stream.close()


def test_registry_a_patch_cut_off_keeps_its_prefix_and_resumes(tmp_path: Path) -> None:
    data = os.urandom(BIG)
    with DistblobServer(tmp_path / "root") as server:
        location = _upload(server.port)
        with socket.create_connection((LOOPBACK, server.port)) as sock:
            head = f"PATCH {location} HTTP/1.1\r\nHost: x\r\nContent-Length: {len(data)}\r\n\r\n"
            sock.sendall(head.encode() + data[: 2 << 20])
            sock.shutdown(socket.SHUT_WR)
            assert sock.recv(1) == b""
        conn = http.client.HTTPConnection(LOOPBACK, server.port, timeout=30)
        conn.request("GET", urllib.parse.urlsplit(location).path)  # its _state is stale now
        status = conn.getresponse()
        assert status.status == 204, (status.read(), server.log_text())
        status.read()
        size = int((status.getheader("Range") or "0-0").split("-")[1]) + 1
        assert size == 2 << 20  # all that was sent, though not a whole buffer
        location = status.getheader("Location")
        assert location is not None
        digest = sha256_digest(data)
        target = f"{location}&{urllib.parse.urlencode({'digest': digest})}"
        conn.request("PUT", target, body=data[size:])
        done = conn.getresponse()
        done.read()
        assert done.status == 201, done.read()
        conn.close()
