"""Pushes while online garbage collections run back to back, against the same pushes without.

``python -m benches.gc_push [--blobs 20000] [--rounds 4] [--small 400] [--large 2]``

One ``distblob serve`` on a filesystem root holding a store of ``--blobs`` blobs
(:mod:`benches.gctree`: repositories of images, one blob in ten garbage), so that every
collection has a real store to list, read and sweep. Each round measures, in alternating
order, the same pushes twice: alone, and while ``distblob gc --online --grace 0 --every 0``
collects back to back in another process (its work yields the CPU, ``SCHED_IDLE``, as every
online collection's does). The
pushes: ``--small`` 4 KiB blobs (a POST and a monolithic PUT each, one keep-alive connection)
and ``--large`` 64 MiB blobs (monolithic PUTs sent with sendfile). Every round pushes new
content. Reported: blobs per second and MB/s, the ratio with/without round by round (median
and range), and how many collections ran and what they deleted.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

from benches.gctree import build, shape_of
from benches.server import MIB, monolithic_put, small_blobs
from benches.store import scratch

# The server harness lives with the tests (tests/support); benches.server put it on the path.
from support.server import DistblobServer

LARGE = 64 * MIB


class Collector:
    """``distblob gc --online --every 0``: collections back to back in another process, until
    stopped (SIGTERM, which ends it between collections)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.runs = 0
        self.failures = 0
        self._process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> Collector:
        argv = [sys.executable, "-m", "distblob.commands", "gc", "--root", str(self.root)]
        argv += ["--online", "--grace", "0", "--every", "0", "--json"]
        self._process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        return self

    def __exit__(self, *_: object) -> None:
        assert self._process is not None
        self._process.send_signal(signal.SIGTERM)
        out = self._process.communicate(timeout=120)[0]
        self.runs = out.count(b'"online": true')
        self.failures = int(self._process.returncode != 0)


def pushes(port: int, small: int, large: list[tuple[int, str]], tag: bytes) -> tuple[float, float]:
    """Push ``small`` new 4 KiB blobs, then the ``large`` files; seconds for each part."""
    blobs = []
    for n in range(small):
        data = tag + n.to_bytes(8, "big") + os.urandom(4096 - len(tag) - 8)
        blobs.append((data, f"sha256:{hashlib.sha256(data).hexdigest()}"))
    start = time.perf_counter()
    small_blobs(port, blobs)
    small_seconds = time.perf_counter() - start
    start = time.perf_counter()
    for fd, digest in large:
        monolithic_put(port, fd, LARGE, digest)
    return small_seconds, time.perf_counter() - start


def large_files(directory: Path, count: int, tag: bytes) -> list[tuple[int, str]]:
    """``count`` new 64 MiB files, open, with their digests."""
    files = []
    for n in range(count):
        path = directory / f"{tag.decode()}-{n}"
        data = tag + n.to_bytes(8, "big") + os.urandom(LARGE - len(tag) - 8)
        path.write_bytes(data)
        files.append((os.open(path, os.O_RDONLY), f"sha256:{hashlib.sha256(data).hexdigest()}"))
    return files


def ratio_line(name: str, alone: list[float], beside: list[float]) -> str:
    ratios = [b / a for a, b in zip(alone, beside, strict=True)]
    return (
        f"{name:<16} alone {statistics.median(alone):8.1f}  during gc "
        f"{statistics.median(beside):8.1f}  during/alone {statistics.median(ratios):.2f}x "
        f"({min(ratios):.2f}-{max(ratios):.2f}, {len(ratios)} rounds)"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--blobs", type=int, default=20_000, help="blobs in the store (20000)")
    parser.add_argument("--rounds", type=int, default=4, help="rounds (default 4)")
    parser.add_argument("--small", type=int, default=400, help="4 KiB blobs per push (400)")
    parser.add_argument("--large", type=int, default=2, help="64 MiB blobs per push (2)")
    parser.add_argument("--smoke", action="store_true", help="a small store, one round (CI)")
    args = parser.parse_args(argv)
    if args.smoke:
        args.blobs, args.rounds, args.small, args.large = 2_000, 1, 50, 1
    with scratch() as work:
        root = Path(work, "root")
        started = time.perf_counter()
        build(str(root), shape_of(args.blobs))
        print(f"store of {args.blobs} blobs written in {time.perf_counter() - started:.1f} s")
        results: dict[str, list[float]] = {k: [] for k in ("small0", "small1", "large0", "large1")}
        runs = failures = 0
        with DistblobServer(root, delete_enabled=True) as server:
            for number in range(args.rounds):
                order = [False, True] if number % 2 == 0 else [True, False]
                for during in order:
                    tag = f"r{number}{'g' if during else 'a'}".encode()
                    large = large_files(Path(work), args.large, tag)
                    os.sync()
                    collector = Collector(root) if during else None
                    try:
                        if collector is not None:
                            collector.__enter__()
                            time.sleep(0.5)  # the first collection is under way
                        small_s, large_s = pushes(server.port, args.small, large, tag)
                    finally:
                        if collector is not None:
                            collector.__exit__()
                            runs += collector.runs
                            failures += collector.failures
                        for fd, _ in large:
                            os.close(fd)
                        for path in Path(work).glob(f"{tag.decode()}-*"):
                            path.unlink()
                    key = "1" if during else "0"
                    results["small" + key].append(args.small / small_s)
                    if args.large:
                        results["large" + key].append(args.large * LARGE / large_s / 1e6)
        print(ratio_line("4 KiB blobs/s", results["small0"], results["small1"]))
        if args.large:
            print(ratio_line("64 MiB MB/s", results["large0"], results["large1"]))
        print(f"collections run beside the pushes: {runs} ({failures} failed)")
        return 1 if failures else 0


__all__ = ["main"]

if __name__ == "__main__":
    raise SystemExit(main())
