"""Hashing scenarios of issue 2, measured side by side in one run.

- native ``Sha256`` against ``hashlib.sha256`` on 1 MiB buffers (goal ≥ 0.95x);
- two threads hashing two streams against one thread (goal ≥ 1.8x on 2 cores: the GIL is
  released during ``update``);
- ``Blake3(max_threads=2)`` against native ``Sha256`` (goal ≥ 3x).
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import Callable

from benches.timing import Comparison, Result, measure
from distblob.hashing import Blake3, Sha256

MIB = 1 << 20


def _stream(make: Callable[[], object], buffer: bytes, count: int) -> Callable[[], None]:
    def run() -> None:
        hasher = make()
        for _ in range(count):
            hasher.update(buffer)  # type: ignore[attr-defined]

    return run


def _threads(run: Callable[[], None], n: int) -> Callable[[], None]:
    def go() -> None:
        workers = [threading.Thread(target=run) for _ in range(n)]
        for w in workers:
            w.start()
        for w in workers:
            w.join()

    return go


def run(total_mib: int = 256, rounds: int = 5) -> tuple[list[Result], list[Comparison]]:
    buffer = os.urandom(MIB)
    count = total_mib
    nbytes = count * MIB
    native = measure("sha256 native, 1 MiB buffers", nbytes, _stream(Sha256, buffer, count), rounds)
    stdlib = measure(
        "sha256 hashlib, 1 MiB buffers", nbytes, _stream(hashlib.sha256, buffer, count), rounds
    )
    one = measure(
        "sha256 native, 1 thread (2 streams in turn)",
        2 * nbytes,
        _threads(_stream(Sha256, buffer, 2 * count), 1),
        rounds,
    )
    two = measure(
        "sha256 native, 2 threads (1 stream each)",
        2 * nbytes,
        _threads(_stream(Sha256, buffer, count), 2),
        rounds,
    )
    blake = measure(
        "blake3 native, max_threads=2",
        nbytes,
        _stream(lambda: Blake3(max_threads=2), buffer, count),
        rounds,
    )
    results = [native, stdlib, one, two, blake]
    comparisons = [
        Comparison(
            "native sha256 / hashlib",
            native.name,
            stdlib.name,
            stdlib.seconds / native.seconds,
            0.95,
        ),
        Comparison("2 threads / 1 thread", two.name, one.name, two.mb_per_s / one.mb_per_s, 1.8),
        Comparison(
            "blake3 (2 threads) / native sha256",
            blake.name,
            native.name,
            blake.mb_per_s / native.mb_per_s,
            3.0,
        ),
    ]
    return results, comparisons
