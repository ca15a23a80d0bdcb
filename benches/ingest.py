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

``--baseline DIR`` adds a fourth way: the native engine of another build of distblob (``DIR`` is
where its ``distblob`` package is, e.g. an older commit's ``python/`` with its compiled
``_native``), run in a child process that times the ingest itself, so before and after are
measured side by side in one run.

Besides the seconds, each run's CPU time (user + system, of every thread and of the shell's
processes) is reported: on a machine shared with other work, wall times swing by a factor of two
from run to run, and CPU per byte is what an engine controls. The CPU figure leaves out the
kernel's writeback threads (the final ``sync``), which do the same work for every variant.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import resource
import shutil
import subprocess
import sys
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
        config=None,
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


def _measured_ingest(source: str, dest: str, engine: str, durable: bool) -> tuple[float, float]:
    """Wall and CPU seconds of :func:`_ingest` in this process (what a child reports)."""
    cpu = _cpu()
    start = time.perf_counter()
    _ingest(source, dest, engine, durable)
    return time.perf_counter() - start, _cpu() - cpu


def _baseline(build: str, source: str, dest: str, durable: bool) -> tuple[float, float]:
    """The native engine of the distblob package in ``build``, timed inside a child process."""
    code = (
        "import sys; from benches.ingest import _measured_ingest as m; "
        "print(*m(sys.argv[1], sys.argv[2], 'native', sys.argv[3] == 'durable'))"
    )
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([build, here])}
    mode = "durable" if durable else "cached"
    done = subprocess.run(
        [sys.executable, "-c", code, source, dest, mode],
        check=True,
        capture_output=True,
        text=True,
        env=env,
    )
    wall, cpu = map(float, done.stdout.split())
    return wall, cpu


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


def _cpu() -> float:
    """CPU seconds used so far by this process's threads and its waited-for children."""
    total = 0.0
    for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN):
        usage = resource.getrusage(who)
        total += usage.ru_utime + usage.ru_stime
    return total


def _timed(fn: Callable[[], tuple[float, float] | None]) -> tuple[float, float]:
    """Wall and CPU seconds of one call (or what it measured itself, if it returns that)."""
    os.sync()  # start every run with no dirty pages from the one before
    cpu = _cpu()
    start = time.perf_counter()
    measured = fn()
    return measured or (time.perf_counter() - start, _cpu() - cpu)


def run(
    quick: bool, rounds: int = 3, baseline: str | None = None, verbose: bool = False
) -> tuple[list[Result], list[Comparison]]:
    """Measure every variant ``rounds`` times; returns the best runs and the ratios."""
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
            cpu: dict[str, float] = {}
            variants: dict[str, Callable[[str, bool], tuple[float, float] | None]] = {
                "native": lambda dest, d: _ingest(source, dest, "native", d),
                "python": lambda dest, d: _ingest(source, dest, "python", d),
                "sha256sum+cp": lambda dest, d: _shell(source, dest, d),
            }
            if baseline is not None:
                variants["native (baseline)"] = lambda dest, d: _baseline(baseline, source, dest, d)
            # Best of several rounds, the variants taking turns: on this kind of VM whatever
            # first fills the page cache pays for faulting in the memory, so one round would
            # favour whichever variant runs later.
            for _ in range(1 if quick else rounds):
                for name, variant in variants.items():
                    dest = os.path.join(scratch, f"out-{name}")
                    took, used = _timed(lambda: variant(dest, durable))  # noqa: B023
                    if verbose:
                        print(f"{mode} {name}: {took:.2f} s, {used:.2f} CPU-s", flush=True)
                    seconds[name] = min(seconds.get(name, took), took)
                    cpu[name] = min(cpu.get(name, used), used)
                    shutil.rmtree(dest)
            for name in variants:
                extra = {"cpu_ms": cpu[name] * 1000}
                results.append(Result(f"ingest {mode}: {name}", nbytes, seconds[name], extra))
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
            comparisons.append(
                Comparison(
                    f"ingest {mode}: python CPU / native CPU",
                    "native",
                    "python",
                    cpu["python"] / cpu["native"],
                    1.5,
                )
            )
            if baseline is not None:
                for name in ("python", "sha256sum+cp"):
                    comparisons.append(
                        Comparison(
                            f"ingest {mode}: native (baseline) vs {name}",
                            "native (baseline)",
                            name,
                            seconds[name] / seconds["native (baseline)"],
                            1.5 if name == "python" else 2.0,
                        )
                    )
                comparisons.append(
                    Comparison(
                        f"ingest {mode}: python CPU / native (baseline) CPU",
                        "native (baseline)",
                        "python",
                        cpu["python"] / cpu["native (baseline)"],
                        1.5,
                    )
                )
    return results, comparisons


def _files(root: str) -> list[str]:
    return [os.path.join(d, f) for d, _, names in os.walk(root) for f in names]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--rounds", type=int, default=3, help="runs of each variant (best kept)")
    parser.add_argument(
        "--baseline", metavar="DIR", help="also run the native engine of the distblob in DIR"
    )
    parser.add_argument("--verbose", action="store_true", help="print every run")
    args = parser.parse_args(argv)
    results, comparisons = run(args.quick, args.rounds, args.baseline, args.verbose)
    print_table(results, comparisons)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
