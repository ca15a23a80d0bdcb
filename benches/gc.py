"""Garbage collection of a 100,000-blob store: ``distblob gc`` against the Go registry's
``garbage-collect`` (distribution 2.8.2), side by side.

``python -m benches.gc [--blobs 100000] [--rounds 3] [--distblob CMD] [--profile FILE]``

The store (:mod:`benches.gctree`: ~1,000 repositories of OCI images, one blob in ten referenced
by nothing and linked nowhere) is written once and cached in ``distblob-gc-trees`` under
``DISTBLOB_BENCH_DIR`` (else the temp dir), keyed by its shape; ``--rebuild`` writes it anew.
Each round copies it twice with ``cp -a`` (untimed), then, after an ``os.sync()``, times each
collector on its own copy, in alternating order from round to round. Reported: the median wall
and CPU seconds of each (CPU: user + system of the child), the Go / distblob ratio round by
round, and what each deleted. The check: both leave the same ``blobs/`` tree, and each deleted
exactly the blobs the tree was built to have unreferenced (exit status 1 otherwise).

The commands are templates, split like a shell line: ``{python}`` is this interpreter,
``{root}`` the copy's root, ``{config}`` a distribution config (JSON) for it. The defaults are
``docker-registry garbage-collect {config}`` (distribution's defaults: every manifest revision
is a root, no ``--delete-untagged``) and ``{python} -m distblob.cli gc --root {root}``.

``--profile FILE`` adds one untimed distblob run under cProfile on a fresh copy (the distblob
template must start with ``{python}``), writes its stats to ``FILE`` and prints where the time
went: the phases of the collection, then the functions that took the most time themselves.
cProfile slows Python calls down, so phases are shares of that run, not seconds of a real one.

``--smoke`` is CI's: 2,000 blobs, one round, the tree built in a scratch directory and removed
(the figures mean nothing; the check still holds).
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import pstats
import resource
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from benches.gctree import Shape, build, shape_of
from benches.store import scratch

GO_BIN = "/usr/bin/docker-registry"
GO_COMMAND = f"{GO_BIN} garbage-collect {{config}}"
DISTBLOB_COMMAND = "{python} -m distblob.cli gc --root {root}"
SMOKE_BLOBS = 2_000
V2 = ("docker", "registry", "v2")

#: ``--profile``'s phases: (label, file name, function) of the current collection's code.
PHASES = (
    ("walk of repositories and link reads", "garbagecollect.py", "read_repositories"),
    ("manifest reads and JSON parsing", "garbagecollect.py", "mark_manifest"),
    ("walk of blobs", "blobs.py", "enumerate"),
    ("plan (the three above and the rest of mark)", "garbagecollect.py", "plan"),
    ("sweep", "garbagecollect.py", "sweep"),
    ("of which blob deletes", "blobs.py", "remove"),
    ("the command's run, plan to summary", "gc.py", "_collect"),
)


@dataclass
class CachedTree:
    """A built tree: its root, its description, and what building it took."""

    root: str
    meta: dict[str, object]

    @property
    def garbage(self) -> set[str]:
        tree = self.meta["tree"]
        assert isinstance(tree, dict)
        return set(tree["garbage"])


@dataclass
class Runs:
    """One collector's rounds."""

    wall: list[float] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)
    deleted: list[int] = field(default_factory=list)


# -- the tree ----------------------------------------------------------------------------------


def _trees_dir() -> str:
    base = os.environ.get("DISTBLOB_BENCH_DIR") or tempfile.gettempdir()
    return os.path.join(base, "distblob-gc-trees")


def cached_tree(shape: Shape, directory: str, rebuild: bool = False) -> CachedTree:
    """The tree of ``shape`` in ``directory``, built now unless a complete one is there."""
    final = os.path.join(directory, shape.key())
    meta_path = os.path.join(final, "meta.json")
    if rebuild:
        _remove(final)
    if os.path.exists(meta_path):
        with open(meta_path) as f:
            return CachedTree(os.path.join(final, "root"), json.load(f))
    partial = final + ".partial"
    _remove(partial)
    os.makedirs(partial)
    start = time.perf_counter()
    tree = build(os.path.join(partial, "root"), shape)
    written = time.perf_counter() - start
    os.sync()
    meta = {"tree": tree.as_dict(), "write_s": written, "build_s": time.perf_counter() - start}
    with open(os.path.join(partial, "meta.json"), "w") as f:
        json.dump(meta, f)
    os.rename(partial, final)  # complete only once meta.json is in
    return CachedTree(os.path.join(final, "root"), meta)


def blob_entries(root: str) -> set[str]:
    """Every directory and file under ``blobs/``, relative to it."""
    top = os.path.join(root, *V2, "blobs")
    found: set[str] = set()
    for directory, subdirectories, files in os.walk(top):
        relative = os.path.relpath(directory, top)
        found.update(os.path.join(relative, name) for name in subdirectories + files)
    return found


def data_digests(entries: set[str]) -> set[str]:
    """The hex digests of the blobs whose ``data`` is among ``entries``."""
    return {e.split("/")[-2] for e in entries if e.endswith("/data")}


def _copy(source: str, destination: str) -> float:
    """``cp -a``; its seconds."""
    start = time.perf_counter()
    subprocess.run(["cp", "-a", source, destination], check=True)
    return time.perf_counter() - start


def _remove(path: str) -> None:
    """``rm -rf`` (untimed, like the copies)."""
    subprocess.run(["rm", "-rf", "--", path], check=True)


def _write_config(root: str, path: str) -> None:
    """A distribution config for ``root`` (JSON, which YAML reads)."""
    config = {
        "version": 0.1,
        "log": {"level": "info"},
        "storage": {"filesystem": {"rootdirectory": root}, "delete": {"enabled": True}},
    }
    Path(path).write_text(json.dumps(config, indent=2))


# -- running the collectors --------------------------------------------------------------------


def command(template: str, root: str, config: str, profile: str | None = None) -> list[str]:
    """The argv of ``template`` for one copy (``profile``: run Python under cProfile)."""
    python = [sys.executable]
    if profile is not None:
        python += ["-m", "cProfile", "-o", profile]
    argv: list[str] = []
    for token in shlex.split(template):
        argv += python if token == "{python}" else [token.format(root=root, config=config)]
    return argv


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_timed(argv: list[str], log: str) -> tuple[float, float]:
    """Wall and CPU seconds of one collection; its output goes to ``log``."""
    os.sync()  # no dirty pages of the copy or of the other collector's deletes
    cpu = _children_cpu()
    start = time.perf_counter()
    with open(log, "wb") as out:
        done = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=out)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        tail = Path(log).read_text(errors="replace")[-2000:]
        raise RuntimeError(f"{shlex.join(argv)} exited with {done.returncode}:\n{tail}")
    return wall, _children_cpu() - cpu


@contextmanager
def copies(
    tree: CachedTree, names: list[str], where: str, seconds: list[float]
) -> Iterator[dict[str, str]]:
    """A fresh copy of the tree per name (its seconds appended to ``seconds``), with a config
    beside it; removed afterwards."""
    roots = {name: os.path.join(where, name) for name in names}
    try:
        for root in roots.values():
            seconds.append(_copy(tree.root, root))
            _write_config(root, root + ".json")
        yield roots
    finally:
        for root in roots.values():
            _remove(root)


def one_round(
    tree: CachedTree, commands: dict[str, str], number: int, where: str, copied: list[float]
) -> dict[str, tuple[float, float, set[str]]]:
    """Each collector once on its own copy; wall, CPU and the ``blobs/`` entries left."""
    names = list(commands) if number % 2 == 0 else list(commands)[::-1]
    measured: dict[str, tuple[float, float, set[str]]] = {}
    with copies(tree, names, where, copied) as roots:
        for name in names:
            root = roots[name]
            argv = command(commands[name], root, root + ".json")
            wall, cpu = run_timed(argv, root + ".log")
            measured[name] = (wall, cpu, blob_entries(root))
    return measured


def profile(tree: CachedTree, template: str, output: str, where: str) -> float:
    """One distblob collection under cProfile, its stats in ``output``; its wall seconds."""
    if not template.startswith("{python}"):
        raise SystemExit("--profile needs a distblob command that starts with {python}")
    with copies(tree, ["profiled"], where, []) as roots:
        root = roots["profiled"]
        argv = command(template, root, root + ".json", profile=output)
        wall, _ = run_timed(argv, root + ".log")
    return wall


# -- reporting ---------------------------------------------------------------------------------


def _median(values: list[float]) -> str:
    return f"{statistics.median(values):7.2f} s ({min(values):.2f}-{max(values):.2f})"


def describe(tree: CachedTree) -> None:
    meta = tree.meta
    shape, about = meta["tree"], meta
    assert isinstance(shape, dict)
    counts = shape["shape"]
    assert isinstance(counts, dict)
    print(
        f"tree: {counts['blobs']:,} blobs ({len(tree.garbage):,} unreferenced), "
        f"{counts['repositories']:,} repositories, {shape['images']:,} images, "
        f"{shape['tags']:,} tags, {shape['layer_links']:,} layer links"
    )
    print(
        f"built in {about['build_s']:.1f} s ({about['write_s']:.1f} s writing, then sync), "
        f"in {os.path.dirname(tree.root)}"
    )


def report(runs: dict[str, Runs], copy_seconds: list[float]) -> None:
    print(f"copy of the tree (cp -a, untimed): median {statistics.median(copy_seconds):.2f} s")
    print(f"{'collector':<10} {'wall median (min-max)':>26} {'CPU median (min-max)':>26}  deleted")
    for name, measured in runs.items():
        deleted = sorted(set(measured.deleted))
        print(f"{name:<10} {_median(measured.wall):>26} {_median(measured.cpu):>26}  {deleted}")
    if "go" in runs and "distblob" in runs:
        pairs = zip(runs["go"].wall, runs["distblob"].wall, strict=True)
        ratios = [go / distblob for go, distblob in pairs]
        print(
            f"go / distblob: {statistics.median(ratios):.2f}x "
            f"({', '.join(f'{r:.2f}' for r in ratios)}; above 1: distblob is faster)"
        )


def check(before: set[str], after: dict[str, set[str]], garbage: set[str]) -> list[str]:
    """What went wrong: a collector that deleted other than ``garbage``, or two that differ."""
    problems = []
    for name, left in after.items():
        deleted = data_digests(before) - data_digests(left)
        if deleted != garbage:
            problems.append(
                f"{name} deleted {len(deleted):,} blobs: {len(deleted - garbage):,} referenced "
                f"ones, {len(garbage - deleted):,} unreferenced ones left"
            )
    trees = list(after.items())
    for (a, left_a), (b, left_b) in itertools.pairwise(trees):
        if left_a != left_b:
            problems.append(
                f"blobs/ differs: {len(left_a - left_b):,} entries only after {a}, "
                f"{len(left_b - left_a):,} only after {b}"
            )
    return problems


def print_profile(path: str, wall: float) -> None:
    """The phases of :data:`PHASES` found in the stats, then the top functions by own time."""
    stats = pstats.Stats(path)
    table = stats.stats  # type: ignore[attr-defined]
    total = stats.total_tt  # type: ignore[attr-defined]
    print(f"\nprofile of one distblob run: {wall:.2f} s wall under cProfile, {total:.2f} s in it")
    print(f"{'phase':<46} {'calls':>8} {'cumulative':>11} {'share':>6}")
    for label, filename, function in PHASES:
        found = [
            (value[1], value[3])
            for (file, _line, name), value in table.items()
            if name == function and os.path.basename(file) == filename
        ]
        if not found:
            print(f"{label:<46} {'(not in this profile)':>27}")
            continue
        calls, cumulative = sum(c for c, _ in found), max(t for _, t in found)
        print(f"{label:<46} {calls:>8,} {cumulative:>9.2f} s {cumulative / total:>6.0%}")
    print("\ntop functions by own time:")
    stats.sort_stats("tottime").print_stats(15)


# -- the command line --------------------------------------------------------------------------


def measure(
    tree: CachedTree, commands: dict[str, str], rounds: int
) -> tuple[dict[str, Runs], list[float], list[str]]:
    """Every round; the runs, the copy times and the problems the checks found."""
    before = blob_entries(tree.root)
    runs = {name: Runs() for name in commands}
    copy_seconds: list[float] = []
    problems: list[str] = []
    for number in range(rounds):
        with scratch() as where:
            measured = one_round(tree, commands, number, where, copy_seconds)
        line = []
        for name, (wall, cpu, left) in measured.items():
            runs[name].wall.append(wall)
            runs[name].cpu.append(cpu)
            runs[name].deleted.append(len(data_digests(before) - data_digests(left)))
            line.append(f"{name} {wall:.2f} s ({cpu:.2f} CPU-s)")
        print(f"round {number + 1}: {', '.join(line)}", flush=True)
        after = {name: left for name, (_w, _c, left) in measured.items()}
        problems += check(before, after, tree.garbage)
    return runs, copy_seconds, problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--blobs", type=int, default=100_000, help="blobs in the store")
    parser.add_argument("--repositories", type=int, help="default: one per 100 blobs")
    parser.add_argument("--seed", type=int, default=1, help="the tree's random seed")
    parser.add_argument("--rounds", type=int, default=3, help="rounds (default 3)")
    parser.add_argument("--distblob", default=DISTBLOB_COMMAND, help="distblob's command")
    parser.add_argument("--go", default=GO_COMMAND, help="the Go registry's command")
    parser.add_argument("--profile", metavar="FILE", help="also profile one distblob run")
    parser.add_argument("--rebuild", action="store_true", help="build the tree anew")
    parser.add_argument("--smoke", action="store_true", help="2,000 blobs, one round (CI)")
    args = parser.parse_args(argv)
    blobs, rounds = (SMOKE_BLOBS, 1) if args.smoke else (args.blobs, args.rounds)
    with ExitStack() as stack:
        # The smoke run's tree is built anew and removed: CI leaves nothing behind.
        directory = stack.enter_context(scratch()) if args.smoke else _trees_dir()
        tree = cached_tree(shape_of(blobs, args.repositories, args.seed), directory, args.rebuild)
        return _run(args, tree, rounds)


def _run(args: argparse.Namespace, tree: CachedTree, rounds: int) -> int:
    describe(tree)
    commands = {"go": args.go, "distblob": args.distblob}
    if not os.path.exists(GO_BIN) and args.go == GO_COMMAND:
        print(f"({GO_BIN} not found: the Go registry is skipped)")
        del commands["go"]
    runs, copy_seconds, problems = measure(tree, commands, rounds)
    report(runs, copy_seconds)
    if args.profile:
        with scratch() as where:
            wall = profile(tree, args.distblob, args.profile, where)
        print_profile(args.profile, wall)
    for problem in dict.fromkeys(problems):
        print(f"CHECK FAILED: {problem}")
    if not problems:
        print("check: every collector deleted exactly the unreferenced blobs; blobs/ trees equal")
    return 1 if problems else 0


if __name__ == "__main__":
    raise SystemExit(main())
