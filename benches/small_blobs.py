"""4 KiB blob pushes (a POST, then a monolithic PUT, on one keep-alive connection): distblob
against the Go registry 2.8.2, and optionally against another distblob tree (an A/B of a change).

``python -m benches.small_blobs --before /path/to/other/python --rounds 6``

The servers run side by side, each on a fresh root on the same disk (``DISTBLOB_BENCH_DIR``
chooses it), and take turns round by round in alternating order, every round with new content;
``os.sync()`` (untimed) before each. Reported per server: the median and the range of blobs per
second over the rounds (round 0 warms up and is not counted), and the server's CPU per blob
(user and system, all threads, from ``/proc/<pid>/stat``), which a noisy machine moves much
less than the wall time. Ratios are taken round by round (both servers measured in the same
minute), then their median and range.

``--before DIR`` runs a second ``distblob serve`` from the ``python`` tree ``DIR`` (its own
native module), for a before/after comparison: "before" and "after" alternate as well.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from benches.server import REGISTRY_BIN, DistblobServer, GoRegistry, _small_blob, small_blobs
from benches.store import scratch

TICK = os.sysconf("SC_CLK_TCK")


class _Server(Protocol):
    port: int


@dataclass
class Rounds:
    """One server's rounds: blobs per second and CPU seconds per blob."""

    rates: list[float] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)


def cpu_seconds(pid: int) -> float:
    """User and system CPU seconds of a process, all its threads (ended ones included)."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def _pid(server: object) -> int | None:
    process = getattr(server, "_proc", None)
    return getattr(process, "pid", None)


def _distblob(root: Path, tree: str | None) -> DistblobServer:
    """A ``distblob serve`` started from ``tree`` (a ``python`` directory), or from this one."""
    saved = os.environ.get("PYTHONPATH")
    if tree is not None:
        os.environ["PYTHONPATH"] = tree
    try:
        server = DistblobServer(root, extra_config={"log": {"level": "info"}})
        server.__enter__()
    finally:
        if tree is not None:
            if saved is None:
                del os.environ["PYTHONPATH"]
            else:
                os.environ["PYTHONPATH"] = saved
    return server


def _summary(values: list[float]) -> str:
    return f"{statistics.median(values):7.1f} ({min(values):.1f}-{max(values):.1f})"


def measure(servers: dict[str, _Server], count: int, size: int, rounds: int) -> dict[str, Rounds]:
    """Every server, ``rounds`` + 1 times (the first warms up), taking turns."""
    measured = {name: Rounds() for name in servers}
    names = list(servers)
    for number in range(rounds + 1):
        for name in names if number % 2 else names[::-1]:
            server = servers[name]
            blobs = [_small_blob(size) for _ in range(count)]
            os.sync()
            pid = _pid(server)
            cpu_before = cpu_seconds(pid) if pid is not None else 0.0
            start = time.perf_counter()
            small_blobs(server.port, blobs)
            seconds = time.perf_counter() - start
            cpu = cpu_seconds(pid) - cpu_before if pid is not None else float("nan")
            if number:
                measured[name].rates.append(count / seconds)
                measured[name].cpu.append(cpu / count)
    return measured


def report(measured: dict[str, Rounds]) -> None:
    print(f"{'server':<16} {'blobs/s median (min-max)':>28} {'server CPU ms/blob':>26}")
    for name, rounds in measured.items():
        cpu_ms = [seconds * 1000 for seconds in rounds.cpu]
        print(f"{name:<16} {_summary(rounds.rates):>28} {_summary(cpu_ms):>26}")
    pairs = [(name, "go") for name in measured if name != "go" and "go" in measured]
    if "before" in measured:
        pairs.append(("after", "before"))
    for a, b in pairs:
        ratios = [x / y for x, y in zip(measured[a].rates, measured[b].rates, strict=True)]
        print(
            f"{a} / {b}: {statistics.median(ratios):.2f}x "
            f"({min(ratios):.2f}-{max(ratios):.2f}, {len(ratios)} rounds)"
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", metavar="DIR", help="another distblob python tree to run")
    parser.add_argument("--rounds", type=int, default=6, help="counted rounds (default 6)")
    parser.add_argument("--count", type=int, default=500, help="blobs a round (default 500)")
    parser.add_argument("--quick", action="store_true", help="tiny sizes: a smoke test")
    args = parser.parse_args(argv)
    rounds, count = (1, 20) if args.quick else (args.rounds, args.count)
    with scratch() as root, ExitStack() as running:
        servers: dict[str, _Server] = {}
        after = _distblob(Path(root, "after"), None)
        running.callback(after.__exit__, None, None, None)
        servers["after" if args.before else "distblob"] = after
        if args.before:
            before = _distblob(Path(root, "before"), args.before)
            running.callback(before.__exit__, None, None, None)
            servers["before"] = before
        if REGISTRY_BIN.exists():
            servers["go"] = running.enter_context(GoRegistry(Path(root, "go")))
        else:
            print(f"({REGISTRY_BIN} not found: the Go registry is skipped)")
        measured = measure(servers, count, 4096, rounds)
    report(measured)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
