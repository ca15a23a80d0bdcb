"""``distblob ingest`` (issue 8): the native engine against the python engine and the shell.

One tree (1,000 files of 1 MiB and two of 512 MiB; tiny with ``quick``) is ingested three ways in
one run, each into a fresh directory on the same disk, from a source already in the page cache:

- ``distblob ingest --jobs 2`` with the native engine;
- the same with ``--engine python``;
- ``sha256sum`` over every file, then ``cp -r`` of the tree: what a shell script would do.

Each way is measured twice: *cached* (nothing synced: distblob's ``--no-fsync`` with its final
``sync`` left out, and a plain ``cp``) and *durable* (``--no-fsync`` with its one ``sync`` at the
end; ``cp`` followed by ``sync``). Outputs are synced and removed between runs, outside the
timings. Goals: native at least 1.5x python and 2x sha256sum+cp.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator

from benches.timing import Comparison, Result, print_table
from distblob.commands import ingest
from distblob.registry import Registry

MIB = 1 << 20


def make_tree(root: str, quick: bool) -> int:
    """Write the source tree; returns its size in bytes."""
    small_count, small_size, big_size = (20, 64 << 10, 8 * MIB) if quick else (1000, MIB, 512 * MIB)
    total = 0
    for i in range(small_count):
        directory = os.path.join(root, f"d{i // 100:02d}")
        os.makedirs(directory, exist_ok=True)
        with open(os.path.join(directory, f"f{i:04d}"), "wb") as f:
            f.write(os.urandom(small_size))
        total += small_size
    chunk = os.urandom(MIB)
    for name in ("big0", "big1"):
        with open(os.path.join(root, name), "wb") as f:
            written = 0
            while written < big_size:
                # Different content per file and per MiB, cheaply.
                f.write(name.encode() + written.to_bytes(8, "big") + chunk[16:])
                written += MIB
        total += big_size
    return total


def _ingest(source: str, dest: str, engine: str, durable: bool) -> None:
    args = argparse.Namespace(
        sources=[source],
        root=dest,
        repo="bench/ingest",
        jobs=2,
        algorithm="sha256",
        media_type="application/octet-stream",
        json=False,
        engine=engine,
        fsync=False,
    )
    with contextlib.ExitStack() as stack:
        if not durable:
            # The cached figure leaves out ingest's one final sync, as plain cp has none.
            original = Registry.sync
            Registry.sync = lambda self: None  # type: ignore[method-assign]
            stack.callback(setattr, Registry, "sync", original)
        stack.enter_context(contextlib.redirect_stdout(io.StringIO()))
        status = ingest.run(args)
    if status != 0:
        raise RuntimeError(f"ingest failed with status {status}")


def _shell(source: str, dest: str, durable: bool) -> None:
    files = [os.path.join(d, f) for d, _, names in os.walk(source) for f in names]
    subprocess.run(["sha256sum", "--", *files], check=True, stdout=subprocess.DEVNULL)
    subprocess.run(["cp", "-r", source, dest], check=True)
    if durable:
        os.sync()


@contextlib.contextmanager
def _scratch() -> Iterator[str]:
    base = os.environ.get("DISTBLOB_BENCH_DIR") or None
    root = tempfile.mkdtemp(prefix="distblob-ingest-bench-", dir=base)
    try:
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _timed(fn: Callable[[], None]) -> float:
    os.sync()  # start every run with no dirty pages from the one before
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def run(quick: bool) -> tuple[list[Result], list[Comparison]]:
    """Measure every variant once; returns the results and the ratios against the goals."""
    results: list[Result] = []
    comparisons: list[Comparison] = []
    with _scratch() as scratch:
        source = os.path.join(scratch, "src")
        os.mkdir(source)
        nbytes = make_tree(source, quick)
        # Read the tree once so that every variant starts from the page cache.
        subprocess.run(["cat", "--", *_files(source)], check=True, stdout=subprocess.DEVNULL)
        for durable in (False, True):
            mode = "durable" if durable else "cached"
            seconds: dict[str, float] = {}
            variants: dict[str, Callable[[str, bool], None]] = {
                "native": lambda dest, d: _ingest(source, dest, "native", d),
                "python": lambda dest, d: _ingest(source, dest, "python", d),
                "sha256sum+cp": lambda dest, d: _shell(source, dest, d),
            }
            # Best of several rounds, the variants taking turns: on this kind of VM whatever
            # first fills the page cache pays for faulting in the memory, so one round would
            # favour whichever variant runs later.
            for _ in range(1 if quick else 3):
                for name, variant in variants.items():
                    dest = os.path.join(scratch, f"out-{name}")
                    took = _timed(lambda: variant(dest, durable))  # noqa: B023
                    seconds[name] = min(seconds.get(name, took), took)
                    shutil.rmtree(dest)
            for name in variants:
                results.append(Result(f"ingest {mode}: {name}", nbytes, seconds[name]))
            comparisons.append(
                Comparison(
                    f"ingest {mode}: native vs python",
                    "native",
                    "python",
                    seconds["python"] / seconds["native"],
                    1.5,
                )
            )
            comparisons.append(
                Comparison(
                    f"ingest {mode}: native vs sha256sum+cp",
                    "native",
                    "sha256sum+cp",
                    seconds["sha256sum+cp"] / seconds["native"],
                    2.0,
                )
            )
    return results, comparisons


def _files(root: str) -> list[str]:
    return [os.path.join(d, f) for d, _, names in os.walk(root) for f in names]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args(argv)
    results, comparisons = run(args.quick)
    print_table(results, comparisons)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
