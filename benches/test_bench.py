"""pytest-benchmark suites: ``python -m pytest benches --benchmark-enable``.

Each group holds the native and python variants of one operation, so pytest-benchmark's table
shows them side by side (``--benchmark-group-by=group``). The normal test run does not collect
this folder; ``python -m benches.compare`` is the one-run comparison with ratios and goals.
"""

from __future__ import annotations

import hashlib
import os
import pathlib
from collections.abc import Callable
from typing import Any

import pytest

from distblob import Descriptor, Digest, Registry
from distblob.hashing import Blake3, Sha256

MIB = 1 << 20
BUFFER = os.urandom(MIB)
ENGINES = ["native", "python"]


@pytest.mark.benchmark(group="hash 64 MiB in 1 MiB buffers")
@pytest.mark.parametrize(
    "make",
    [Sha256, hashlib.sha256, lambda: Blake3(max_threads=2)],
    ids=["native-sha256", "hashlib-sha256", "native-blake3x2"],
)
def test_hash(benchmark: Any, make: Callable[[], Any]) -> None:
    def run() -> str:
        hasher = make()
        for _ in range(64):
            hasher.update(BUFFER)
        return str(hasher.hexdigest())

    assert len(benchmark(run)) == 64


@pytest.mark.benchmark(group="one 64 MiB blob, durable")
@pytest.mark.parametrize("engine", ENGINES)
def test_big_blob(benchmark: Any, engine: str, tmp_path: pathlib.Path) -> None:
    digest = Digest.from_bytes(BUFFER * 64)
    repo = Registry.filesystem(tmp_path, engine=engine).repository("bench/big")

    def run() -> Descriptor:
        writer = repo.blobs.create()
        for _ in range(64):
            writer.write(BUFFER)
        return writer.commit(Descriptor(digest=digest))

    assert benchmark(run).digest == digest


@pytest.mark.benchmark(group="put 4 KiB blobs, fsync=False")
@pytest.mark.parametrize("engine", ENGINES)
def test_small_put(benchmark: Any, engine: str, tmp_path: pathlib.Path) -> None:
    repo = Registry.filesystem(tmp_path, engine=engine, fsync=False).repository("bench/small")

    def run() -> Descriptor:
        return repo.blobs.put(os.urandom(4096))

    assert benchmark(run).size == 4096
