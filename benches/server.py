"""HTTP server scenarios of issue 5: ``distblob serve`` against the Go registry 2.8, side by side.

Both servers run as subprocesses on loopback, each on its own fresh root on the same disk
(``DISTBLOB_BENCH_DIR`` chooses it: ``/dev/shm`` takes the disk out of the measurement), taking
turns round by round, and are driven by the same minimal client: :mod:`http.client` for the
request line and headers, ``socket.sendfile`` for request bodies (the kernel copies from the page
cache; the client does no per-byte work), ``readinto`` a reused buffer for response bodies.
``client ceiling`` rows measure that client against a null sink in this process, so a ratio is
the servers', not the client's.

Scenarios: one 1 GiB blob as one monolithic PUT (POST, then PUT with the body and the digest);
a GET of it at once (the first GET: what the server wrote, as it left it) and a second one; the
same blob in 16 MiB PATCHes then an empty PUT; and many 4 KiB blobs, each a POST and a
monolithic PUT, on one keep-alive connection. Every round uploads different content (the first
bytes carry the round number), so no round finds its blob already stored. The servers: distblob
with the default ``storage.filesystem.directio: auto``, with ``off`` (every write through the
page cache, as before directio) and with ``on``, and the Go registry; the server's CPU-seconds
per GiB uploaded are read from ``/proc``. ``hardware: … read from the disk`` is the bare data
path of a GET from the disk (``O_DIRECT`` reads), the bound of a first GET of a blob that is not
in the page cache.
"""

from __future__ import annotations

import hashlib
import http.client
import io
import mmap
import os
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from benches.store import scratch
from benches.timing import Comparison, Result

# The server harnesses live with the tests (tests/support); import them from there.
_TESTS = Path(__file__).resolve().parent.parent / "tests"
if str(_TESTS) not in sys.path:
    sys.path.insert(0, str(_TESTS))

from support.goregistry import REGISTRY_BIN, GoRegistry  # noqa: E402
from support.server import DistblobServer  # noqa: E402

MIB = 1 << 20
KIB = 1 << 10
LOOPBACK = "127.0.0.1"
REPO = "bench/server"
#: distblob with ``storage.filesystem.directio: off``: every write through the page cache.
PAGED = "distblob serve, directio off"
#: distblob with ``directio: on``: large cold blobs are read past the page cache too.
DIRECT = "distblob serve, directio on"


@dataclass
class Sizes:
    """How big the scenarios are; ``quick`` shrinks them for CI's smoke run."""

    big: int = 1024 * MIB
    patch: int = 16 * MIB
    small_count: int = 500
    small_size: int = 4 * KIB
    rounds: int = 3

    @classmethod
    def quick(cls) -> Sizes:
        return cls(big=16 * MIB, patch=4 * MIB, small_count=40, rounds=1)


class Server(Protocol):
    host: str
    port: int


# -- the client --------------------------------------------------------------------------------


class Client:
    """One keep-alive connection; bodies go out with ``sendfile`` and come in by ``readinto``."""

    def __init__(self, port: int) -> None:
        self.conn = http.client.HTTPConnection(LOOPBACK, port, timeout=300)
        self.buffer = bytearray(4 * MIB)

    def close(self) -> None:
        self.conn.close()

    def request(
        self,
        method: str,
        target: str,
        body: tuple[int, int, int] | bytes | None = None,
        *,
        expect: int,
    ) -> http.client.HTTPResponse:
        """Send a request; ``body`` is bytes or ``(fd, offset, count)`` sent with sendfile.

        Returns the response with its body unread when ``method`` is GET, read otherwise.
        """
        conn = self.conn
        conn.putrequest(method, target, skip_accept_encoding=True)
        length = 0 if body is None else len(body) if isinstance(body, bytes) else body[2]
        conn.putheader("Content-Length", str(length))
        if length:
            conn.putheader("Content-Type", "application/octet-stream")
        if isinstance(body, bytes):
            conn.endheaders(body)
        else:
            conn.endheaders()
            if body is not None:
                fd, offset, count = body
                assert conn.sock is not None
                with open(fd, "rb", closefd=False) as file:
                    conn.sock.sendfile(file, offset, count)
        response = conn.getresponse()
        if response.status != expect:
            raise RuntimeError(
                f"{method} {target} -> {response.status} (expected {expect}): {response.read()!r}"
            )
        if method != "GET":
            response.read()
        return response

    def drain(self, response: http.client.HTTPResponse) -> int:
        view = memoryview(self.buffer)
        total = 0
        while n := response.readinto(view):
            total += n
        return total

    def start_upload(self) -> str:
        location = self.request("POST", f"/v2/{REPO}/blobs/uploads/", expect=202).getheader(
            "Location"
        )
        assert location is not None
        return _relative(location)


def _relative(location: str) -> str:
    """The path and query of a Location (the Go registry sends absolute ones)."""
    if location.startswith("http"):
        return "/" + location.split("/", 3)[3]
    return location


def _with_digest(location: str, digest: str) -> str:
    return f"{location}{'&' if '?' in location else '?'}digest={digest}"


# -- scenarios ---------------------------------------------------------------------------------


def monolithic_put(port: int, fd: int, size: int, digest: str) -> None:
    client = Client(port)
    try:
        location = client.start_upload()
        client.request("PUT", _with_digest(location, digest), (fd, 0, size), expect=201)
    finally:
        client.close()


def chunked_patches(port: int, fd: int, size: int, step: int, digest: str) -> None:
    client = Client(port)
    try:
        location = client.start_upload()
        for offset in range(0, size, step):
            count = min(step, size - offset)
            response = client.request("PATCH", location, (fd, offset, count), expect=202)
            new_location = response.getheader("Location")
            assert new_location is not None
            location = _relative(new_location)
        client.request("PUT", _with_digest(location, digest), expect=201)
    finally:
        client.close()


def get_blob(port: int, size: int, digest: str) -> None:
    client = Client(port)
    try:
        response = client.request("GET", f"/v2/{REPO}/blobs/{digest}", expect=200)
        got = client.drain(response)
        if got != size:
            raise RuntimeError(f"GET returned {got} bytes, expected {size}")
    finally:
        client.close()


def small_blobs(port: int, blobs: list[tuple[bytes, str]]) -> None:
    client = Client(port)
    try:
        for data, digest in blobs:
            location = client.start_upload()
            client.request("PUT", _with_digest(location, digest), data, expect=201)
    finally:
        client.close()


# -- the client's ceiling ----------------------------------------------------------------------


class NullSink:
    """A loopback HTTP server that discards request bodies and serves GETs from a file.

    One connection at a time, no parsing beyond the headers; it answers a POST with a Location,
    any other upload with 201, and a GET with ``size`` bytes of ``fd`` via ``sendfile``.
    """

    def __init__(self, fd: int, size: int) -> None:
        self.fd = fd
        self.size = size
        self.listener = socket.create_server((LOOPBACK, 0))
        self.port: int = self.listener.getsockname()[1]
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.listener.close()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            with conn, suppress(OSError):
                self._connection(conn)

    def _connection(self, conn: socket.socket) -> None:
        reader = conn.makefile("rb", buffering=MIB)
        assert isinstance(reader, io.BufferedReader)
        sink = bytearray(4 * MIB)
        view = memoryview(sink)
        while True:
            request_line = reader.readline()
            if not request_line:
                return
            method = request_line.split(b" ", 1)[0]
            length = 0
            while (line := reader.readline()) not in (b"\r\n", b"\n", b""):
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            while length:
                n = reader.readinto(view[: min(length, len(sink))])
                if not n:
                    return
                length -= n
            if method == b"GET":
                conn.sendall(f"HTTP/1.1 200 OK\r\nContent-Length: {self.size}\r\n\r\n".encode())
                sent = 0
                while sent < self.size:
                    sent += os.sendfile(conn.fileno(), self.fd, sent, self.size - sent)
            elif method in (b"POST", b"PATCH"):
                conn.sendall(
                    b"HTTP/1.1 202 Accepted\r\nLocation: /v2/null/blobs/uploads/x\r\n"
                    b"Content-Length: 0\r\n\r\n"
                )
            else:
                conn.sendall(b"HTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n")


# -- running -----------------------------------------------------------------------------------


@dataclass
class Workload:
    """The data of one run: a big file on the bench disk and the small blobs of every round."""

    fd: int
    size: int
    big_digests: list[str]
    small: list[list[tuple[bytes, str]]]


@contextmanager
def workload(root: str, sizes: Sizes) -> Iterator[Workload]:
    """A ``sizes.big`` random file whose first 8 bytes are rewritten for each round."""
    path = os.path.join(root, "blob")
    with open(path, "wb") as out:
        for _ in range(sizes.big // MIB):
            out.write(os.urandom(MIB))
    fd = os.open(path, os.O_RDWR)
    try:
        yield Workload(
            fd,
            sizes.big,
            [],
            [
                [_small_blob(sizes.small_size) for _ in range(sizes.small_count)]
                for _ in range(sizes.rounds + 1)
            ],
        )
    finally:
        os.close(fd)


def _small_blob(size: int) -> tuple[bytes, str]:
    data = os.urandom(size)
    return data, "sha256:" + hashlib.sha256(data).hexdigest()


def _prepare_round(work: Workload, round_number: int, tag: bytes) -> str:
    """Stamp the big file for this round and return its digest (not timed)."""
    os.pwrite(work.fd, tag + round_number.to_bytes(7, "big"), 0)
    h = hashlib.sha256()
    view = memoryview(bytearray(16 * MIB))
    offset = 0
    while n := os.preadv(work.fd, [view], offset):
        h.update(view[:n])
        offset += n
    return "sha256:" + h.hexdigest()


def _timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def cpu_seconds(pid: int) -> float:
    """User and system CPU time of process ``pid`` and its threads so far."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _server_pid(server: Server) -> int | None:
    proc = getattr(server, "_proc", None)
    return proc.pid if proc is not None else None


def _one_round(
    server: Server, work: Workload, sizes: Sizes, tag: bytes, number: int
) -> dict[str, float]:
    """Every scenario once against one server; seconds per scenario, and the server's
    CPU-seconds for each upload (``put_cpu``, ``patch_cpu``).

    Before each timed upload everything written so far is synced (not timed), so no scenario
    pays for the writeback of an earlier one. The first GET follows the PUT at once: what the
    server wrote is read as it left it (in the page cache, or on the disk only when it wrote
    past the page cache); the second GET reads it warm.
    """
    port, pid = server.port, _server_pid(server)

    def cpu() -> float:
        return cpu_seconds(pid) if pid is not None else 0.0

    digest = _prepare_round(work, 2 * number, tag)
    os.sync()
    before = cpu()
    times = {"put": _timed(lambda: monolithic_put(port, work.fd, work.size, digest))}
    times["put_cpu"] = cpu() - before
    times["get"] = _timed(lambda: get_blob(port, work.size, digest))
    times["warm_get"] = _timed(lambda: get_blob(port, work.size, digest))
    digest = _prepare_round(work, 2 * number + 1, tag)
    os.sync()
    before = cpu()
    times["patch"] = _timed(lambda: chunked_patches(port, work.fd, work.size, sizes.patch, digest))
    times["patch_cpu"] = cpu() - before
    os.sync()
    times["small"] = _timed(lambda: small_blobs(port, work.small[number]))
    return times


def _forget_big_blobs(root: Path) -> None:
    """Delete the data of the big blobs a round stored (not timed), so that a long run fits on
    a small disk or in a tmpfs. Only the data files go: the servers may remember the
    directories. Every round's content is new, so no later request asks for these blobs."""
    for data in root.glob("docker/registry/v2/blobs/*/*/*/data"):
        with suppress(OSError):
            if data.stat().st_size > MIB:
                data.unlink()


def measure_servers(
    servers: list[tuple[str, Server, bytes, Path]], work: Workload, sizes: Sizes
) -> dict[str, dict[str, Result]]:
    """Every scenario against every server: best of ``sizes.rounds`` (plus a warm-up).

    The servers take turns round by round, in alternating order, so a machine whose speed
    drifts during the run (other guests on the host, a disk whose write cache fills) slows
    both alike.
    """
    best: dict[str, dict[str, float]] = {name: {} for name, *_ in servers}
    for number in range(sizes.rounds + 1):  # round 0 warms up and is not counted
        for name, server, tag, root in servers if number % 2 else servers[::-1]:
            times = _one_round(server, work, sizes, tag, number)
            _forget_big_blobs(root)
            if number:
                for key, seconds in times.items():
                    best[name][key] = min(best[name].get(key, float("inf")), seconds)
    big = sizes.big >> 20
    measured = {}
    for name, times in best.items():
        results = {
            "put": Result(f"{name}: {big} MiB monolithic PUT", sizes.big, times["put"]),
            "patch": Result(
                f"{name}: {big} MiB in {sizes.patch >> 20} MiB PATCHes + PUT",
                sizes.big,
                times["patch"],
            ),
            "get": Result(f"{name}: {big} MiB first GET after the PUT", sizes.big, times["get"]),
            "warm_get": Result(f"{name}: {big} MiB second GET", sizes.big, times["warm_get"]),
            "small": Result(
                f"{name}: {sizes.small_count} x 4 KiB POST+PUT, one connection",
                sizes.small_count * sizes.small_size,
                times["small"],
            ),
        }
        results["small"].extra["blobs_per_s"] = sizes.small_count / times["small"]
        gib = sizes.big / (1 << 30)
        results["put"].extra["cpu_s_per_gib"] = times["put_cpu"] / gib
        results["patch"].extra["cpu_s_per_gib"] = times["patch_cpu"] / gib
        measured[name] = results
    return measured


def client_ceiling(work: Workload, sizes: Sizes) -> dict[str, Result]:
    """The client against :class:`NullSink`: how fast it can send and receive at all."""
    sink = NullSink(work.fd, work.size)
    try:
        digest = "sha256:" + "0" * 64
        put_s = min(
            _timed(lambda: monolithic_put(sink.port, work.fd, work.size, digest))
            for _ in range(sizes.rounds)
        )
        get_s = min(
            _timed(lambda: get_blob(sink.port, work.size, digest)) for _ in range(sizes.rounds)
        )
        small_s = min(_timed(lambda: small_blobs(sink.port, work.small[0])) for _ in range(2))
    finally:
        sink.close()
    big = sizes.big >> 20
    small = Result(
        f"client ceiling: {sizes.small_count} x 4 KiB POST+PUT",
        sizes.small_count * sizes.small_size,
        small_s,
    )
    small.extra["blobs_per_s"] = sizes.small_count / small_s
    return {
        "put": Result(f"client ceiling: {big} MiB sendfile PUT", sizes.big, put_s),
        "get": Result(f"client ceiling: {big} MiB GET", sizes.big, get_s),
        "small": small,
    }


def disk_read_bound(work: Workload, rounds: int) -> Result:
    """The bare data path of a GET from the disk: the big file read with ``O_DIRECT`` (4 MiB
    reads, none of it from the page cache), best of ``rounds``. A blob that is not in the page
    cache cannot be served faster than this."""
    os.fsync(work.fd)
    direct = os.open(f"/proc/self/fd/{work.fd}", os.O_RDONLY | os.O_DIRECT)
    buffer = mmap.mmap(-1, 4 * MIB)
    try:

        def read_all() -> None:
            offset = 0
            while n := os.preadv(direct, [buffer], offset):
                offset += n

        seconds = min(_timed(read_all) for _ in range(rounds))
    finally:
        buffer.close()
        os.close(direct)
    return Result(
        f"hardware: {work.size >> 20} MiB read from the disk (O_DIRECT)", work.size, seconds
    )


def disk_write_bound(work: Workload, root: str, rounds: int) -> Result:
    """The bare data path of a large upload to the disk: ``work.size`` bytes written to a new
    file with ``O_DIRECT`` (4 MiB writes from an aligned buffer, two in flight, as a server
    overlapping its writes would) and ``fdatasync``ed, best of ``rounds``; no hashing, no
    network, no copy. No server stores a blob on this disk faster."""
    chunk = 4 * MIB
    buffer = mmap.mmap(-1, chunk)
    buffer.write(os.urandom(chunk))
    path = os.path.join(root, "write-bound")

    def write_all() -> None:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_DIRECT, 0o600)
        try:

            def write_half(first: int) -> None:
                for offset in range(first * chunk, work.size, 2 * chunk):
                    os.pwrite(fd, buffer, offset)

            other = threading.Thread(target=write_half, args=(1,))
            other.start()
            write_half(0)
            other.join()
            os.ftruncate(fd, work.size)
            os.fdatasync(fd)
        finally:
            os.close(fd)
            os.unlink(path)

    try:
        seconds = min(_timed(write_all) for _ in range(rounds))
    finally:
        buffer.close()
    return Result(
        f"hardware: {work.size >> 20} MiB written to the disk (O_DIRECT + fdatasync)",
        work.size,
        seconds,
    )


def _servers(root: str) -> list[tuple[str, bytes, Path, Callable[[Path], Any]]]:
    ours = ("distblob serve", b"D", Path(root, "distblob"), DistblobServer)
    # Today's writer before directio: everything through the page cache.
    paged = (
        PAGED,
        b"P",
        Path(root, "paged"),
        lambda path: DistblobServer(
            path, extra_config={"storage": {"filesystem": {"directio": "off"}}}
        ),
    )
    # Large cold blobs also read past the page cache.
    direct = (
        DIRECT,
        b"O",
        Path(root, "direct"),
        lambda path: DistblobServer(
            path, extra_config={"storage": {"filesystem": {"directio": "on"}}}
        ),
    )
    if not REGISTRY_BIN.exists():
        print(f"({REGISTRY_BIN} not found: the Go registry is skipped)")
        return [ours, paged, direct]
    return [ours, paged, direct, ("go registry 2.8", b"G", Path(root, "go"), GoRegistry)]


def run(quick: bool) -> tuple[list[Result], list[Comparison]]:
    sizes = Sizes.quick() if quick else Sizes()
    results: list[Result] = []
    comparisons: list[Comparison] = []
    with scratch() as root, workload(root, sizes) as work, ExitStack() as running:
        ceiling = client_ceiling(work, sizes)
        results += ceiling.values()
        disk = disk_read_bound(work, sizes.rounds)
        disk_write = disk_write_bound(work, root, sizes.rounds)
        results += [disk, disk_write]
        servers = [
            (name, running.enter_context(make(path)), tag, path)
            for name, tag, path, make in _servers(root)
        ]
        measured = measure_servers(servers, work, sizes)
        for name, *_ in servers:
            results += measured[name].values()
    ours = measured["distblob serve"]
    go = measured.get("go registry 2.8")
    if go is not None:
        for key, label, goal in (
            ("put", "monolithic PUT", 3.5),
            ("patch", "chunked PATCHes", 3.5),
            ("get", "first GET after the PUT", 1.0),
            ("warm_get", "second GET", 1.0),
            ("small", "4 KiB blobs/s", 3.0),
        ):
            comparisons.append(
                Comparison(
                    f"server {label}: distblob / go",
                    ours[key].name,
                    go[key].name,
                    ours[key].mb_per_s / go[key].mb_per_s,
                    goal,
                )
            )
    paged = measured.get(PAGED)
    if paged is not None:
        for key in ("put", "patch"):
            comparisons.append(
                Comparison(
                    f"server {key} CPU-s per GiB: directio auto / off",
                    ours[key].name,
                    paged[key].name,
                    ours[key].extra["cpu_s_per_gib"] / max(paged[key].extra["cpu_s_per_gib"], 1e-9),
                    0.6,
                    ceiling=True,
                )
            )
            comparisons.append(
                Comparison(
                    f"server {key}: directio auto / off",
                    ours[key].name,
                    paged[key].name,
                    ours[key].mb_per_s / paged[key].mb_per_s,
                    1.0,
                )
            )
    if go is not None:
        # What a first GET from the disk can reach at best, against Go's GET of its own blob
        # (from the page cache): the bound of the two first-GET goals.
        comparisons.append(
            Comparison(
                "hardware disk read / go first GET (bound)",
                disk.name,
                go["get"].name,
                disk.mb_per_s / go["get"].mb_per_s,
                1.0,
            )
        )
    if go is not None:
        # A large upload can be stored no faster than the disk writes: the bound of the two
        # upload goals, against Go's PUT.
        comparisons.append(
            Comparison(
                "hardware disk write / go monolithic PUT (bound)",
                disk_write.name,
                go["put"].name,
                disk_write.mb_per_s / go["put"].mb_per_s,
                3.5,
            )
        )
    direct = measured.get(DIRECT)
    if direct is not None and go is not None:
        comparisons.append(
            Comparison(
                "server first GET after the PUT, directio on: distblob / go",
                direct["get"].name,
                go["get"].name,
                direct["get"].mb_per_s / go["get"].mb_per_s,
                1.0,
            )
        )
    for key in ("put", "get", "small"):
        comparisons.append(
            Comparison(
                f"server {key}: client ceiling / distblob",
                ceiling[key].name,
                ours[key].name,
                ceiling[key].mb_per_s / ours[key].mb_per_s,
                2.0 if key != "small" else 1.5,
            )
        )
    return results, comparisons


__all__ = ["Sizes", "run"]
