"""Blob store scenarios of issue 4: the native engine against the python engine and the hardware.

Every scenario runs both engines in the same process, one after the other, on the same disk, and
the hardware limit is measured in the same run: for a durable blob it is the slower of hashing
its bytes in memory (``hashlib``/``blake3``) and writing them to a file followed by ``fsync``. An
engine that overlaps the two approaches that limit rather than their sum.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import blake3

from benches.timing import Comparison, Result
from distblob import Descriptor, Digest, Registry

MIB = 1 << 20
KIB = 1 << 10


@dataclass
class Sizes:
    """How big the scenarios are; ``quick`` shrinks them for CI's smoke run."""

    big: int = 1024 * MIB  # one large blob
    chunked: int = 256 * MIB  # the stateless chunked upload
    chunks: int = 64
    small_count: int = 10_000  # small blobs through put
    small_size: int = 4 * KIB
    threaded: int = 256 * MIB  # per thread
    threads: int = 4
    stream: int = 2048 * MIB  # the peak-memory scenario
    rounds: int = 3

    @classmethod
    def quick(cls) -> Sizes:
        return cls(
            big=16 * MIB,
            chunked=8 * MIB,
            chunks=8,
            small_count=200,
            threaded=8 * MIB,
            stream=32 * MIB,
            rounds=1,
        )


@contextmanager
def scratch() -> Iterator[str]:
    path = tempfile.mkdtemp(prefix="distblob-bench-", dir=os.environ.get("DISTBLOB_BENCH_DIR"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def best(rounds: int, setup: Callable[[str], Callable[[], object]]) -> float:
    """Best time of ``rounds`` runs, each in a fresh directory (setup is not timed)."""
    times = []
    for _ in range(rounds):
        with scratch() as root:
            run = setup(root)
            start = time.perf_counter()
            run()
            times.append(time.perf_counter() - start)
    return min(times)


def _buffer() -> bytes:
    return os.urandom(MIB)


# -- the hardware ------------------------------------------------------------------------------


def hardware_limit(nbytes: int, algorithm: str, rounds: int) -> tuple[float, float, float]:
    """Seconds to hash ``nbytes`` in memory, to write and fsync them, and the slower of the two."""
    buffer = _buffer()
    count = nbytes // MIB

    def hash_only() -> None:
        h = (
            blake3.blake3(max_threads=blake3.blake3.AUTO)
            if algorithm == "blake3"
            else (hashlib.sha256())
        )
        for _ in range(count):
            h.update(buffer)

    def write_setup(root: str) -> Callable[[], None]:
        def run() -> None:
            fd = os.open(os.path.join(root, "data"), os.O_WRONLY | os.O_CREAT | os.O_EXCL)
            try:
                for _ in range(count):
                    os.write(fd, buffer)
                os.fsync(fd)
            finally:
                os.close(fd)

        return run

    hash_only()
    hash_s = min(_timed(hash_only) for _ in range(rounds))
    write_s = best(rounds, write_setup)
    return hash_s, write_s, max(hash_s, write_s)


def _timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


# -- scenarios ---------------------------------------------------------------------------------


def one_big_blob(engine: str, nbytes: int, rounds: int, algorithm: str = "sha256") -> float:
    """One blob written in 1 MiB buffers and committed durably."""
    buffer = _buffer()
    count = nbytes // MIB
    hasher = blake3.blake3() if algorithm == "blake3" else hashlib.sha256()
    for _ in range(count):
        hasher.update(buffer)
    digest = Digest.from_parts(algorithm, hasher.hexdigest())

    def setup(root: str) -> Callable[[], None]:
        repo = Registry.filesystem(root, engine=engine).repository("bench/big")

        def run() -> None:
            writer = repo.blobs.create(algorithm=algorithm)
            for _ in range(count):
                writer.write(buffer)
            writer.commit(Descriptor(digest=digest, size=nbytes))

        return run

    return best(rounds, setup)


def chunked_stateless(engine: str, nbytes: int, chunks: int, rounds: int) -> float:
    """``chunks`` chunks, each written by a freshly resumed writer, as a stateless server does."""
    data = os.urandom(nbytes)
    view = memoryview(data)
    step = nbytes // chunks
    digest = Digest.from_bytes(data)

    def setup(root: str) -> Callable[[], None]:
        repo = Registry.filesystem(root, engine=engine).repository("bench/chunked")

        def run() -> None:
            writer = repo.blobs.create()
            upload_id = writer.id
            writer.close()
            for i in range(chunks):
                writer = repo.blobs.resume(upload_id)
                writer.write(view[i * step : (i + 1) * step])
                writer.close()
            writer = repo.blobs.resume(upload_id)
            writer.commit(Descriptor(digest=digest, size=nbytes))

        return run

    return best(rounds, setup)


def small_puts(engine: str, count: int, size: int, fsync: bool, rounds: int) -> float:
    """``count`` distinct small blobs through ``put``."""
    blobs = [os.urandom(size) for _ in range(count)]

    def setup(root: str) -> Callable[[], None]:
        repo = Registry.filesystem(root, engine=engine, fsync=fsync).repository("bench/small")

        def run() -> None:
            for blob in blobs:
                repo.blobs.put(blob)

        return run

    return best(rounds, setup)


def threaded_blobs(engine: str, nbytes: int, threads: int, rounds: int) -> float:
    """``threads`` threads each writing and durably committing its own blob."""
    buffers = [os.urandom(MIB) for _ in range(threads)]
    count = nbytes // MIB
    digests = []
    for buffer in buffers:
        h = hashlib.sha256()
        for _ in range(count):
            h.update(buffer)
        digests.append(Digest.from_parts("sha256", h.hexdigest()))

    def setup(root: str) -> Callable[[], None]:
        repo = Registry.filesystem(root, engine=engine).repository("bench/threads")

        def one(i: int) -> None:
            writer = repo.blobs.create()
            for _ in range(count):
                writer.write(buffers[i])
            writer.commit(Descriptor(digest=digests[i], size=nbytes))

        def run() -> None:
            workers = [threading.Thread(target=one, args=(i,)) for i in range(threads)]
            for w in workers:
                w.start()
            for w in workers:
                w.join()

        return run

    return best(rounds, setup)


_MEMORY_PROBE = """
import os, resource, sys
from distblob import Descriptor, Registry
root, engine, nbytes = sys.argv[1], sys.argv[2], int(sys.argv[3])
buffer = os.urandom(1 << 20)
repo = Registry.filesystem(root, engine=engine).repository("bench/stream")
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
writer = repo.blobs.create()
for _ in range(nbytes >> 20):
    writer.write(buffer)
writer.close()
writer = repo.blobs.resume(writer.id)
from distblob import Digest
import hashlib
h = hashlib.sha256()
for _ in range(nbytes >> 20):
    h.update(buffer)
writer.commit(Descriptor(digest=Digest.from_parts("sha256", h.hexdigest())))
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(base, peak)
"""


def peak_memory(engine: str, nbytes: int) -> tuple[float, float]:
    """Peak RSS (MiB) of a fresh interpreter streaming one blob, before and after."""
    with scratch() as root:
        out = subprocess.run(
            [sys.executable, "-c", _MEMORY_PROBE, root, engine, str(nbytes)],
            check=True,
            capture_output=True,
            text=True,
        ).stdout.split()
    base_kib, peak_kib = int(out[0]), int(out[1])
    return base_kib / 1024, peak_kib / 1024


def run(sizes: Sizes) -> tuple[list[Result], list[Comparison]]:
    results: list[Result] = []
    comparisons: list[Comparison] = []
    r = sizes.rounds

    def add(name: str, nbytes: int, seconds: float) -> Result:
        result = Result(name, nbytes, seconds)
        results.append(result)
        return result

    hash_s, write_s, limit_s = hardware_limit(sizes.big, "sha256", r)
    add("hardware: hashlib sha256 in memory", sizes.big, hash_s)
    add("hardware: write + fsync", sizes.big, write_s)
    limit = add("hardware limit (slower of the two)", sizes.big, limit_s)
    big = {
        e: add(f"1 blob, 1 MiB writes, durable: {e}", sizes.big, one_big_blob(e, sizes.big, r))
        for e in ("native", "python")
    }
    comparisons.append(_ratio("big blob: native / python", big["native"], big["python"], 1.4))
    comparisons.append(_ratio("big blob: native / hardware limit", big["native"], limit, 0.85))

    chunked = {
        e: add(
            f"{sizes.chunks} chunks, fresh resume each: {e}",
            sizes.chunked,
            chunked_stateless(e, sizes.chunked, sizes.chunks, r),
        )
        for e in ("native", "python")
    }
    comparisons.append(
        _ratio("stateless chunks: native / python", chunked["native"], chunked["python"], 10.0)
    )

    total_small = sizes.small_count * sizes.small_size
    for fsync, goal in ((False, 2.0), (True, 0.0)):
        small = {
            e: add(
                f"{sizes.small_count} x 4 KiB put, fsync={fsync}: {e}",
                total_small,
                small_puts(e, sizes.small_count, sizes.small_size, fsync, r),
            )
            for e in ("native", "python")
        }
        for result in small.values():
            result.extra["blobs_per_s"] = sizes.small_count / result.seconds
        comparisons.append(
            _ratio(
                f"small puts fsync={fsync}: native / python", small["native"], small["python"], goal
            )
        )

    single = add(
        "1 thread, 1 blob: native", sizes.threaded, threaded_blobs("native", sizes.threaded, 1, r)
    )
    many = add(
        f"{sizes.threads} threads, 1 blob each: native",
        sizes.threaded * sizes.threads,
        threaded_blobs("native", sizes.threaded, sizes.threads, r),
    )
    comparisons.append(_ratio(f"{sizes.threads} threads / 1 thread (native)", many, single, 1.7))

    b3_hash, _b3_write, b3_limit = hardware_limit(sizes.big, "blake3", r)
    add("hardware: blake3 in memory (all cores)", sizes.big, b3_hash)
    b3 = add(
        "1 blob, blake3 upload, durable: native",
        sizes.big,
        one_big_blob("native", sizes.big, r, algorithm="blake3"),
    )
    comparisons.append(_ratio("blake3 upload / sha256 upload", b3, big["native"], 2.5))
    comparisons.append(
        _ratio("blake3 upload / its hardware limit", b3, Result("", sizes.big, b3_limit), 0.85)
    )

    for engine in ("native", "python"):
        base, peak = peak_memory(engine, sizes.stream)
        comparisons.append(
            Comparison(
                f"peak RSS growth streaming {sizes.stream >> 20} MiB: {engine}",
                engine,
                "interpreter baseline",
                peak - base,
                100.0,
                ceiling=True,
                unit=" MiB",
            )
        )
    return results, comparisons


def _ratio(label: str, a: Result, b: Result, goal: float) -> Comparison:
    return Comparison(label, a.name, b.name, a.mb_per_s / b.mb_per_s, goal)


__all__ = ["Sizes", "run"]
