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
and range), and how many collections ran. ``--burner`` adds, in the same rounds, the pushes
beside a process that only burns CPU at idle priority: what any work beside them costs on the
machine, the bound of the ratio.
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
        f"{name:<16} alone {statistics.median(alone):8.1f}  beside "
        f"{statistics.median(beside):8.1f}  beside/alone {statistics.median(ratios):.2f}x "
        f"({min(ratios):.2f}-{max(ratios):.2f}, {len(ratios)} rounds)"
    )


#: A process that only burns CPU at idle priority: what the pushes lose to any work beside
#: them, however low its priority (the bound of the "during gc" ratio on this machine).
BURNER = (
    "import os\nos.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))\nwhile True:\n    pass\n"
)


class Burner:
    """:data:`BURNER` in another process while the ``with`` block runs."""

    def __init__(self) -> None:
        self.runs = 0
        self.failures = 0
        self._process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> Burner:
        self._process = subprocess.Popen([sys.executable, "-c", BURNER])
        return self

    def __exit__(self, *_: object) -> None:
        assert self._process is not None
        self._process.kill()
        self._process.wait()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--blobs", type=int, default=20_000, help="blobs in the store (20000)")
    parser.add_argument("--rounds", type=int, default=4, help="rounds (default 4)")
    parser.add_argument("--small", type=int, default=400, help="4 KiB blobs per push (400)")
    parser.add_argument("--large", type=int, default=2, help="64 MiB blobs per push (2)")
    parser.add_argument(
        "--burner", action="store_true", help="also: the pushes beside an idle-priority burner"
    )
    parser.add_argument("--smoke", action="store_true", help="a small store, one round (CI)")
    args = parser.parse_args(argv)
    if args.smoke:
        args.blobs, args.rounds, args.small, args.large = 2_000, 1, 50, 1
    sides = ["alone", "gc"] + (["burner"] if args.burner else [])
    with scratch() as work:
        root = Path(work, "root")
        started = time.perf_counter()
        build(str(root), shape_of(args.blobs))
        print(f"store of {args.blobs} blobs written in {time.perf_counter() - started:.1f} s")
        small: dict[str, list[float]] = {side: [] for side in sides}
        large_rates: dict[str, list[float]] = {side: [] for side in sides}
        runs = failures = 0
        with DistblobServer(root, delete_enabled=True) as server:
            for number in range(args.rounds):
                order = sides if number % 2 == 0 else sides[::-1]
                for side in order:
                    tag = f"r{number}{side}".encode()
                    large = large_files(Path(work), args.large, tag)
                    os.sync()
                    beside = {"alone": None, "gc": Collector(root), "burner": Burner()}[side]
                    try:
                        if beside is not None:
                            beside.__enter__()
                            time.sleep(0.5)  # the first collection is under way
                        small_s, large_s = pushes(server.port, args.small, large, tag)
                    finally:
                        if beside is not None:
                            beside.__exit__()
                            runs += beside.runs
                            failures += beside.failures
                        for fd, _ in large:
                            os.close(fd)
                        for path in Path(work).glob(f"{tag.decode()}-*"):
                            path.unlink()
                    small[side].append(args.small / small_s)
                    if args.large:
                        large_rates[side].append(args.large * LARGE / large_s / 1e6)
        for side in sides[1:]:
            what = "during gc" if side == "gc" else "beside an idle-priority CPU burner"
            print(what)
            print(ratio_line("  4 KiB blobs/s", small["alone"], small[side]))
            if args.large:
                print(ratio_line("  64 MiB MB/s", large_rates["alone"], large_rates[side]))
        print(f"collections run beside the pushes: {runs} ({failures} failed)")
        return 1 if failures else 0


__all__ = ["main"]

if __name__ == "__main__":
    raise SystemExit(main())
