"""Small helpers for side-by-side measurements: best-of-N throughput, and a table printer.

Machines here are shared and noisy, so every figure is the best of several rounds and claims are
made as ratios between scenarios measured in the same run, never as absolute times.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field


@dataclass
class Result:
    """One measured scenario: bytes moved per round and the best round's seconds."""

    name: str
    nbytes: int
    seconds: float
    extra: dict[str, float] = field(default_factory=dict)

    @property
    def mb_per_s(self) -> float:
        return self.nbytes / self.seconds / 1e6

    def as_dict(self) -> dict[str, object]:
        return {**asdict(self), "mb_per_s": self.mb_per_s}


def best_of(rounds: int, fn: Callable[[], object]) -> float:
    """The fastest of ``rounds`` calls of ``fn``, in seconds."""
    best = float("inf")
    for _ in range(rounds):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def measure(name: str, nbytes: int, fn: Callable[[], object], rounds: int = 5) -> Result:
    fn()  # warm caches, page in buffers, start thread pools
    return Result(name, nbytes, best_of(rounds, fn))


@dataclass
class Comparison:
    """A ratio between two results of the same run, with the issue's goal."""

    label: str
    numerator: str
    denominator: str
    ratio: float
    goal: float
    #: For figures where less is better (memory), the goal is a ceiling.
    ceiling: bool = False
    unit: str = "x"

    @property
    def met(self) -> bool:
        return self.ratio <= self.goal if self.ceiling else self.ratio >= self.goal


def print_table(results: list[Result], comparisons: list[Comparison]) -> None:
    width = max(len(r.name) for r in results)
    print(f"{'scenario':<{width}}  {'MB/s':>9}")
    for r in results:
        extra = "".join(
            f"  {key}={value:.0f}" if value >= 100 else f"  {key}={value:.2f}"
            for key, value in r.extra.items()
        )
        print(f"{r.name:<{width}}  {r.mb_per_s:>9.0f}{extra}")
    print()
    width = max(len(c.label) for c in comparisons)
    print(f"{'ratio':<{width}}  {'value':>8}  {'goal':>9}  met")
    for c in comparisons:
        goal = f"{'<=' if c.ceiling else '>='}{c.goal:.2f}{c.unit}"
        value = f"{c.ratio:.2f}{c.unit}"
        print(f"{c.label:<{width}}  {value:>8}  {goal:>9}  {'yes' if c.met else 'NO'}")
