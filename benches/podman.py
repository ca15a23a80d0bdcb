"""podman against ``distblob serve`` and the Go registry 2.8, side by side:
``python -m benches.podman`` (or ``python -m benches.compare --podman``).

Two scenarios, both servers on loopback, each on its own fresh root:

``pull``
    One image with one 200 MiB layer of random bytes (a tar, gzipped), pushed to both servers
    with skopeo (digests preserved, so both serve the same bytes), then ``podman pull`` into a
    fresh store (rootful, overlay driver) per round. The servers take turns, in alternating
    order; everything written is synced (untimed) before each timed pull. The claim is the
    median of the per-round ratios Go time / distblob time, with their min-max.

``partial``
    zstd:chunked partial pulls. An image of ``files`` small files in one layer, and a second
    where ``changed`` of them have new content, both pushed by ``podman push
    --compression-format zstd:chunked``. A fresh store with partial pulls enabled pulls the
    first, then the second through a counting relay: the bytes the server sent for the second
    pull's layer GETs are what a partial pull fetched. The claim is distblob bytes / Go bytes.

The files are all in the layer's top directory: podman 4.3.1 (Debian 12) fails to reuse a
file in a subdirectory of a lower layer ("open file ... under rootfs for copy") and falls back
to fetching the whole layer, from either registry alike.

Every podman call is hermetic: its own storage.conf, registries.conf, containers.conf,
signature policy, auth file and temporary directory, all in the scenario's scratch directory.
Skipped, saying why, when podman, skopeo or the Go registry is missing or when not root (the
overlay driver needs a rootful podman).
"""

from __future__ import annotations

import argparse
import gzip
import io
import json
import os
import random
import re
import resource
import shutil
import socket
import statistics
import subprocess
import sys
import tarfile
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benches.store import scratch
from benches.timing import Comparison, Result, print_table

_TESTS = Path(__file__).resolve().parent.parent / "tests"
if str(_TESTS) not in sys.path:
    sys.path.insert(0, str(_TESTS))

from support.goregistry import (  # noqa: E402
    OCI_MANIFEST,
    REGISTRY_BIN,
    SKOPEO_BIN,
    GoRegistry,
    make_oci_image_layout,
    skopeo_push,
)
from support.server import DistblobServer  # noqa: E402

MIB = 1 << 20
LOOPBACK = "127.0.0.1"
PULL_REPO = "bench/podman"
PARTIAL_REPO = "bench/chunked"
DISTBLOB = "distblob serve"
GO = "go registry 2.8"


@dataclass
class Sizes:
    """How big the scenarios are; ``quick`` shrinks them to a smoke run."""

    layer: int = 200 * MIB
    rounds: int = 5
    files: int = 3000
    changed: int = 150

    @classmethod
    def quick(cls) -> Sizes:
        # podman 4.3.1 fails to push a zstd:chunked layer of 200 such files ("short write").
        return cls(layer=8 * MIB, rounds=1, files=1000, changed=50)


def missing() -> str | None:
    """Why the scenarios cannot run here, or None."""
    if shutil.which("podman") is None:
        return "podman is not installed (Debian package podman)"
    if os.geteuid() != 0:
        return "podman's overlay driver needs root here"
    if not REGISTRY_BIN.exists():
        return f"{REGISTRY_BIN} not found (Debian package docker-registry)"
    if not Path(SKOPEO_BIN).exists() and shutil.which(SKOPEO_BIN) is None:
        return "skopeo is not installed"
    return None


# -- a hermetic podman ---------------------------------------------------------------------------


class Podman:
    """podman with every file it reads or writes under ``home``: a store of its own (graphroot,
    runroot), empty registries.conf and containers.conf, a policy accepting any image, no
    stored credentials, its temporary files in ``home``."""

    def __init__(self, home: Path, *, partial: bool = False) -> None:
        self.home = home
        home.mkdir(parents=True)
        (home / "tmp").mkdir()
        options = (
            '[storage.options]\npull_options = {enable_partial_images = "true", '
            'use_hard_links = "false", ostree_repos = ""}\n'
            if partial
            else ""
        )
        (home / "storage.conf").write_text(
            f'[storage]\ndriver = "overlay"\ngraphroot = "{home}/root"\n'
            f'runroot = "{home}/run"\n{options}'
        )
        (home / "registries.conf").write_text("")
        (home / "auth.json").write_text('{"auths": {}}')
        (home / "containers.conf").write_text("")
        (home / "policy.json").write_text(
            json.dumps({"default": [{"type": "insecureAcceptAnything"}]})
        )
        self.env = {
            **os.environ,
            "CONTAINERS_STORAGE_CONF": str(home / "storage.conf"),
            "CONTAINERS_REGISTRIES_CONF": str(home / "registries.conf"),
            "CONTAINERS_CONF": str(home / "containers.conf"),
            "REGISTRY_AUTH_FILE": str(home / "auth.json"),
            "TMPDIR": str(home / "tmp"),
        }

    def __call__(self, *args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            ["podman", *args],
            env=self.env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if proc.returncode != 0:
            raise RuntimeError(f"podman {' '.join(args)} failed:\n{proc.stderr}")
        return proc

    def pull(self, ref: str) -> None:
        policy = str(self.home / "policy.json")
        self("pull", "-q", "--tls-verify=false", "--signature-policy", policy, ref)

    def push(self, image: str, dest: str, compression: str) -> None:
        policy = str(self.home / "policy.json")
        self(
            "push",
            "-q",
            "--tls-verify=false",
            "--signature-policy",
            policy,
            "--compression-format",
            compression,
            image,
            f"docker://{dest}",
        )

    def remove(self) -> None:
        """Delete the store (untimed). A podman call that failed may leave the overlay
        driver's home bind-mounted on itself (which ``os.path.ismount`` cannot tell)."""
        with open("/proc/self/mounts") as mounts:
            points = [line.split()[1] for line in mounts]
        inside = [point for point in points if point.startswith(f"{self.home}/")]
        for point in sorted(inside, key=len, reverse=True):
            subprocess.run(["umount", point], check=False)
        shutil.rmtree(self.home, ignore_errors=True)


@contextmanager
def podman_store(home: Path, *, partial: bool = False) -> Iterator[Podman]:
    store = Podman(home, partial=partial)
    try:
        yield store
    finally:
        store.remove()


# -- a relay that counts what the server sends ---------------------------------------------------


@dataclass
class Exchange:
    """One connection through the relay: its first request line, the status of its first
    response, and every byte the server sent on it (headers included). podman sends
    ``Connection: close`` to a plain-HTTP registry, so a connection carries one request."""

    request: str = ""
    status: int = 0
    down: int = 0


class CountingRelay:
    """A loopback port forwarding to ``target``; records an :class:`Exchange` per connection."""

    def __init__(self, target: int) -> None:
        self.target = target
        self.exchanges: list[Exchange] = []
        self._listener = socket.create_server((LOOPBACK, 0))
        self.port: int = self._listener.getsockname()[1]
        self._threads: list[threading.Thread] = []
        self._sockets: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def close(self) -> None:
        with suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)  # wakes the blocked accept()
        self._listener.close()
        for thread in self._threads:
            thread.join(timeout=30)
        for sock in self._sockets:
            sock.close()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            server = socket.create_connection((LOOPBACK, self.target))
            self._sockets += [client, server]
            exchange = Exchange()
            self.exchanges.append(exchange)
            for args in ((client, server, exchange, False), (server, client, exchange, True)):
                thread = threading.Thread(target=_pump, args=args, daemon=True)
                thread.start()
                self._threads.append(thread)


def _pump(source: socket.socket, sink: socket.socket, exchange: Exchange, down: bool) -> None:
    """Copy ``source`` to ``sink`` until EOF, noting the first line and (down) the bytes."""
    first = True
    with suppress(OSError):
        while chunk := source.recv(MIB):
            if first:
                first = False
                line = chunk.split(b"\r\n", 1)[0].decode("latin-1")
                if not down:
                    exchange.request = line
                else:
                    with suppress(IndexError, ValueError):
                        exchange.status = int(line.split()[1])
            if down:
                exchange.down += len(chunk)
            sink.sendall(chunk)
    with suppress(OSError):
        sink.shutdown(socket.SHUT_WR)


# -- the pull scenario ---------------------------------------------------------------------------


def random_layer(size: int) -> bytes:
    """A gzipped tar of one file of ``size`` random bytes (gzip cannot shrink it)."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        info = tarfile.TarInfo("data.bin")
        info.size, info.mode, info.mtime = size, 0o644, 1_700_000_000
        tar.addfile(info, io.BytesIO(os.urandom(size)))
    return gzip.compress(raw.getvalue(), compresslevel=1, mtime=0)


@dataclass
class PullFigures:
    seconds: dict[str, list[float]]  # per server, per round
    cpu: dict[str, list[float]]  # podman's user + system CPU-seconds, per round
    get_ms: dict[str, list[float]]  # the servers' own duration of the layer GET
    layer_size: int


def _timed_pull(podman: Podman, ref: str) -> tuple[float, float]:
    os.sync()
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    podman.pull(ref)
    seconds = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime
    return seconds, cpu


def _layer_get_durations(log: str, digest: str, size: int) -> list[float]:
    """The layer GETs' durations in ms from either server's access log."""
    durations = []
    for line in log.splitlines():
        if digest not in line or "GET" not in line:
            continue
        ours = re.search(rf"bytes={size} .*duration_ms=([\d.]+)", line)
        if ours:
            durations.append(float(ours[1]))
            continue
        go = re.search(rf"http.response.duration=([\d.]+)(ms|s|µs) .*written={size}\b", line)
        if go:
            scale = {"s": 1000.0, "ms": 1.0, "µs": 0.001}[go[2]]
            durations.append(float(go[1]) * scale)
    return durations


def measure_pull(root: Path, servers: list[tuple[str, Any]], sizes: Sizes) -> PullFigures:
    layer_bytes = random_layer(sizes.layer)
    size = len(layer_bytes)
    image = make_oci_image_layout(root / "pull-image", [layer_bytes])
    digest = image["layer_digests"][0]
    for _, server in servers:
        skopeo_push(image, server.host, f"{PULL_REPO}:v1")
    shutil.rmtree(root / "pull-image")
    del layer_bytes
    seconds: dict[str, list[float]] = {name: [] for name, _ in servers}
    cpu: dict[str, list[float]] = {name: [] for name, _ in servers}
    for number in range(sizes.rounds + 1):  # round 0 warms up and is not counted
        for name, server in servers if number % 2 else servers[::-1]:
            with podman_store(root / f"store-{number}-{name.split()[0]}") as podman:
                took, used = _timed_pull(podman, f"{server.host}/{PULL_REPO}:v1")
            if number:
                seconds[name].append(took)
                cpu[name].append(used)
    get_ms = {
        name: _layer_get_durations(server.log_text(), digest, size)[1:] for name, server in servers
    }
    return PullFigures(seconds, cpu, get_ms, size)


# -- the partial pull scenario -------------------------------------------------------------------


def _small_files_tar(path: Path, files: dict[str, bytes]) -> None:
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in sorted(files.items()):
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(data), 0o644, 1_700_000_000
            tar.addfile(info, io.BytesIO(data))


@dataclass
class PartialFigures:
    layer_bytes: dict[str, int]  # what each server sent for the second pull's layer GETs
    total_bytes: dict[str, int]  # everything each server sent during the second pull
    full_layer_gets: dict[str, int]  # layer GETs answered 200 (the whole blob)
    layer_gets: dict[str, list[int]]  # their statuses, in order
    seconds: dict[str, float]  # the second pull's time, through the relay


def measure_partial(root: Path, servers: list[tuple[str, Any]], sizes: Sizes) -> PartialFigures:
    rng = random.Random(20)
    files = {f"f{i:05d}.bin": rng.randbytes(rng.randint(2048, 16384)) for i in range(sizes.files)}
    second = dict(files)
    for name in rng.sample(sorted(files), sizes.changed):
        second[name] = rng.randbytes(len(files[name]))
    _small_files_tar(root / "v1.tar", files)
    _small_files_tar(root / "v2.tar", second)
    with podman_store(root / "source") as source:
        for tag in ("v1", "v2"):
            source("import", "-q", str(root / f"{tag}.tar"), f"localhost/{PARTIAL_REPO}:{tag}")
        for _, server in servers:
            for tag in ("v1", "v2"):
                source.push(
                    f"localhost/{PARTIAL_REPO}:{tag}",
                    f"{server.host}/{PARTIAL_REPO}:{tag}",
                    "zstd:chunked",
                )
    figures = PartialFigures({}, {}, {}, {}, {})
    for name, server in servers:
        with podman_store(root / f"partial-{name.split()[0]}", partial=True) as podman:
            podman.pull(f"{server.host}/{PARTIAL_REPO}:v1")
            relay = CountingRelay(server.port)
            try:
                start = time.perf_counter()
                podman.pull(f"{LOOPBACK}:{relay.port}/{PARTIAL_REPO}:v2")
                figures.seconds[name] = time.perf_counter() - start
            finally:
                relay.close()
        config = _config_digest(server, f"{PARTIAL_REPO}:v2")
        layer = [
            x
            for x in relay.exchanges
            if x.request.startswith("GET ") and "/blobs/" in x.request and config not in x.request
        ]
        figures.layer_bytes[name] = sum(x.down for x in layer)
        figures.total_bytes[name] = sum(x.down for x in relay.exchanges)
        figures.layer_gets[name] = [x.status for x in layer]
        figures.full_layer_gets[name] = sum(1 for x in layer if x.status == 200)
    return figures


def _config_digest(server: Any, ref: str) -> str:
    repo, tag = ref.split(":")
    with server.client() as client:
        manifest = client.get_manifest(repo, tag, accept=OCI_MANIFEST)
    return str(json.loads(manifest.body)["config"]["digest"])


# -- the report ----------------------------------------------------------------------------------


def _servers(root: Path, stack: ExitStack) -> list[tuple[str, Any]]:
    return [
        (DISTBLOB, stack.enter_context(DistblobServer(root / "distblob"))),
        (GO, stack.enter_context(GoRegistry(root / "go"))),
    ]


def run(quick: bool = False, sizes: Sizes | None = None) -> tuple[list[Result], list[Comparison]]:
    reason = missing()
    if reason is not None:
        print(f"(podman scenarios skipped: {reason})")
        return [], []
    sizes = sizes or (Sizes.quick() if quick else Sizes())
    results: list[Result] = []
    comparisons: list[Comparison] = []
    with scratch() as tmp, ExitStack() as stack:
        root = Path(tmp)
        servers = _servers(root, stack)
        pull = measure_pull(root, servers, sizes)
        partial = measure_partial(root, servers, sizes)
    mib = sizes.layer >> 20
    for name, _ in servers:
        median = statistics.median(pull.seconds[name])
        result = Result(f"{name}: podman pull, one {mib} MiB gzip layer", pull.layer_size, median)
        result.extra["podman_cpu_ms"] = 1000 * statistics.median(pull.cpu[name])
        if pull.get_ms[name]:
            result.extra["layer_get_ms"] = statistics.median(pull.get_ms[name])
        results.append(result)
    ratios = [g / d for d, g in zip(pull.seconds[DISTBLOB], pull.seconds[GO], strict=True)]
    print(
        f"podman pull, go time / distblob time per round ({sizes.rounds} rounds): "
        + ", ".join(f"{r:.2f}" for r in ratios)
        + f"; median {statistics.median(ratios):.2f}, min-max {min(ratios):.2f}-{max(ratios):.2f}"
    )
    comparisons.append(
        Comparison(
            f"podman pull {mib} MiB: distblob / go (speed, median of rounds)",
            results[-2].name,
            results[-1].name,
            statistics.median(ratios),
            1.1,
        )
    )
    label = f"zstd:chunked partial pull, {sizes.changed} of {sizes.files} files changed"
    for name, _ in servers:
        result = Result(f"{name}: {label}", partial.layer_bytes[name], partial.seconds[name])
        result.extra["layer_bytes"] = partial.layer_bytes[name]
        result.extra["all_bytes"] = partial.total_bytes[name]
        result.extra["full_layer_gets"] = partial.full_layer_gets[name]
        results.append(result)
        print(f"{name}: partial pull's layer GETs answered {partial.layer_gets[name]}")
    comparisons.append(
        Comparison(
            "zstd:chunked partial pull bytes fetched: distblob / go",
            results[-2].name,
            results[-1].name,
            partial.layer_bytes[DISTBLOB] / max(partial.layer_bytes[GO], 1),
            1.05,
            ceiling=True,
        )
    )
    return results, comparisons


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes: a smoke test")
    parser.add_argument("--rounds", type=int, help="timed pull rounds (after one warm-up)")
    parser.add_argument("--layer-mib", type=int, help="the pulled layer's size")
    parser.add_argument("--files", type=int, help="files in the zstd:chunked layer")
    parser.add_argument("--changed", type=int, help="files the second image changes")
    args = parser.parse_args(argv)
    sizes = Sizes.quick() if args.quick else Sizes()
    if args.rounds:
        sizes.rounds = args.rounds
    if args.layer_mib:
        sizes.layer = args.layer_mib * MIB
    if args.files:
        sizes.files = args.files
    if args.changed:
        sizes.changed = args.changed
    results, comparisons = run(sizes=sizes)
    if results:
        print_table(results, comparisons)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())


__all__ = ["Sizes", "missing", "run"]
