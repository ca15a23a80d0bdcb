"""SVG charts of a benchmark run, for the docs' performance page; ``python -m benches.charts``.

Reads the JSON ``python -m benches.compare --json FILE`` writes (``benches/published.json``, the
figures the docs publish, by default) and draws one chart per group of scenarios it finds:
distblob against the Go registry and against the pure-Python engine where the run has them, with
the measured hardware bound as a dashed line where it has one. A group whose scenarios are
missing (a ``--server`` run has no blob store figures) is skipped. Scenario sizes are read from
the names, so a ``--quick`` run charts too (its figures mean nothing).

The output is deterministic for one matplotlib version (no date, a fixed id salt), so charts
drawn again from unchanged figures leave git with nothing to commit.
"""

from __future__ import annotations

import argparse
import json
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("svg")
import matplotlib.pyplot as plt

DEFAULT_INPUT = Path(__file__).with_name("published.json")
DEFAULT_OUTPUT = Path(__file__).parent.parent / "docs" / "img"

#: One colour per kind of series, the same on every chart.
COLOURS = {
    "distblob": "#1565c0",
    "python": "#ef6c00",
    "go": "#2e7d32",
    "other": "#8e24aa",
    "before": "#90a4ae",
}


@dataclass
class Series:
    """One bar in each group it has a value for."""

    label: str
    colour: str


@dataclass
class Group:
    """A scenario: its bars by series label, and the hardware bound where one was measured."""

    label: str
    values: dict[str, float] = field(default_factory=dict)
    #: For times: the slowest run's value, drawn as a whisker from the bar's end.
    slowest: dict[str, float] = field(default_factory=dict)
    bound: float | None = None


@dataclass
class Chart:
    name: str
    title: str
    unit: str
    series: list[Series]
    groups: list[Group]
    #: For times, where shorter bars are better.
    lower_is_better: bool = False

    def drawable(self) -> bool:
        return any(group.values for group in self.groups)


class Run:
    """The results of one JSON file, looked up by name pattern."""

    def __init__(self, doc: dict[str, Any]) -> None:
        self.results: dict[str, dict[str, Any]] = {r["name"]: r for r in doc.get("results", [])}

    def find(self, pattern: str) -> dict[str, Any] | None:
        """The first result whose whole name matches ``pattern``."""
        compiled = re.compile(pattern)
        return next((r for n, r in self.results.items() if compiled.fullmatch(n)), None)

    def mb_per_s(self, pattern: str) -> float | None:
        found = self.find(pattern)
        return None if found is None else float(found["mb_per_s"])

    def per_s(self, pattern: str) -> float | None:
        found = self.find(pattern)
        return None if found is None else float(found["extra"]["blobs_per_s"])

    def seconds(self, pattern: str) -> tuple[float, float | None] | None:
        found = self.find(pattern)
        if found is None:
            return None
        slowest = found["extra"].get("slowest_run_s")
        return float(found["seconds"]), None if slowest is None else float(slowest)


def _group(label: str, values: dict[str, float | None], bound: float | None = None) -> Group:
    return Group(label, {k: v for k, v in values.items() if v is not None}, bound=bound)


def _slower(*speeds: float | None) -> float | None:
    """The bound of a pipeline: its slowest stage (``None`` unless all were measured)."""
    return None if None in speeds else min(s for s in speeds if s is not None)


def store_chart(run: Run) -> Chart:
    """The blob store (issue 4): native against python and the hardware bound."""
    chunks = run.find(r"\d+ chunks, fresh resume each: native")
    count = chunks["name"].split()[0] if chunks else "N"
    threads = run.find(r"\d+ threads, 1 blob each: native")
    many = threads["name"].split()[0] if threads else "N"
    return Chart(
        "store",
        "Blob store: one upload, MB/s",
        "MB/s",
        [Series("native", COLOURS["distblob"]), Series("python", COLOURS["python"])],
        [
            _group(
                "one large blob, durable",
                {
                    "native": run.mb_per_s(r"1 blob, 1 MiB writes, durable: native"),
                    "python": run.mb_per_s(r"1 blob, 1 MiB writes, durable: python"),
                },
                run.mb_per_s(r"hardware limit \(slower of the two\)"),
            ),
            _group(
                f"{count} chunks, a fresh resume() each",
                {
                    "native": run.mb_per_s(r"\d+ chunks, fresh resume each: native"),
                    "python": run.mb_per_s(r"\d+ chunks, fresh resume each: python"),
                },
            ),
            _group("1 thread, one blob", {"native": run.mb_per_s(r"1 thread, 1 blob: native")}),
            _group(
                f"{many} threads, one blob each",
                {"native": run.mb_per_s(r"\d+ threads, 1 blob each: native")},
            ),
            _group(
                "one large blob, BLAKE3, durable",
                {"native": run.mb_per_s(r"1 blob, blake3 upload, durable: native")},
                _slower(
                    run.mb_per_s(r"hardware: blake3 in memory \(all cores\)"),
                    run.mb_per_s(r"hardware: write \+ fsync"),
                ),
            ),
        ],
    )


def small_puts_chart(run: Run) -> Chart:
    return Chart(
        "small-puts",
        "Blob store: 4 KiB put, blobs/s",
        "blobs/s",
        [Series("native", COLOURS["distblob"]), Series("python", COLOURS["python"])],
        [
            _group(
                f"fsync={fsync}",
                {
                    engine: run.per_s(rf"\d+ x 4 KiB put, fsync={fsync}: {engine}")
                    for engine in ("native", "python")
                },
            )
            for fsync in ("False", "True")
        ],
    )


def _server_groups(run: Run, names: dict[str, str], size: str = r"\d+") -> list[Group]:
    scenarios = {
        "monolithic PUT": rf"{size} MiB monolithic PUT",
        "PATCHes + PUT": rf"{size} MiB in \d+ MiB PATCHes \+ PUT",
        "GET": rf"{size} MiB GET",
    }
    return [
        _group(
            label,
            {
                series: run.mb_per_s(rf"{re.escape(prefix)}: {pattern}")
                for series, prefix in names.items()
            },
        )
        for label, pattern in scenarios.items()
    ]


def server_chart(run: Run) -> Chart:
    """``distblob serve`` against the Go registry, one connection."""
    names = {"distblob serve": "distblob serve", "Go registry 2.8": "go registry 2.8"}
    groups = _server_groups(run, names)
    for group, key in zip(groups, ("sendfile PUT", None, "GET"), strict=True):
        if key is not None:
            group.bound = run.mb_per_s(rf"client ceiling: \d+ MiB {key}")
    return Chart(
        "server",
        "HTTP server, one large blob, MB/s",
        "MB/s",
        [Series("distblob serve", COLOURS["distblob"]), Series("Go registry 2.8", COLOURS["go"])],
        groups,
    )


def server_small_chart(run: Run) -> Chart:
    small = r"\d+ x 4 KiB POST\+PUT, one connection"
    return Chart(
        "server-small",
        "HTTP server, 4 KiB blobs (POST + PUT), blobs/s",
        "blobs/s",
        [Series("distblob serve", COLOURS["distblob"]), Series("Go registry 2.8", COLOURS["go"])],
        [
            _group(
                "4 KiB blobs, one connection",
                {
                    "distblob serve": run.per_s(rf"distblob serve: {small}"),
                    "Go registry 2.8": run.per_s(rf"go registry 2\.8: {small}"),
                },
            )
        ],
    )


def proxy_chart(run: Run) -> Chart:
    """The pull-through cache against the Go registry's: times, shorter is better."""
    groups = []
    for label, suffix in (
        ("cold GET, last byte", "cold GET"),
        ("warm GET", "warm GET"),
        ("cold GET until committed", "cold GET to commit"),
    ):
        group = Group(label)
        for series, prefix in (
            ("distblob", r"distblob proxy"),
            ("Go registry 2.8 proxy", r"go registry 2\.8 proxy"),
        ):
            found = run.seconds(rf"{prefix}: \d+ MiB {suffix}")
            if found is not None:
                group.values[series], slowest = found
                if slowest is not None:
                    group.slowest[series] = slowest
        groups.append(group)
    return Chart(
        "proxy",
        "Pull-through cache, one large blob, seconds (shorter is better)",
        "s",
        [Series("distblob", COLOURS["distblob"]), Series("Go registry 2.8 proxy", COLOURS["go"])],
        groups,
        lower_is_better=True,
    )


def s3_chart(run: Run) -> Chart:
    names = {
        "distblob, filesystem": "distblob serve, filesystem",
        "distblob, S3": "distblob serve, s3",
        "Go registry 2.8, S3": "go registry 2.8, s3 via shim",
    }
    return Chart(
        "s3",
        "HTTP server on S3 (rclone serve s3), one large blob, MB/s",
        "MB/s",
        [
            Series("distblob, filesystem", COLOURS["before"]),
            Series("distblob, S3", COLOURS["distblob"]),
            Series("Go registry 2.8, S3", COLOURS["go"]),
        ],
        _server_groups(run, names),
    )


def ingest_chart(run: Run) -> Chart:
    series = {
        "native": "native",
        "native, previous path": "native (baseline)",
        "python engine": "python",
        "sha256sum + cp": "sha256sum+cp",
    }
    return Chart(
        "ingest",
        "distblob ingest, a tree of files, MB/s",
        "MB/s",
        [
            Series("native", COLOURS["distblob"]),
            Series("native, previous path", COLOURS["before"]),
            Series("python engine", COLOURS["python"]),
            Series("sha256sum + cp", COLOURS["other"]),
        ],
        [
            _group(
                label,
                {s: run.mb_per_s(rf"ingest {mode}: {re.escape(n)}") for s, n in series.items()},
            )
            for label, mode in (("page cache only", "cached"), ("durable", "durable"))
        ],
    )


CHARTS = (
    store_chart,
    small_puts_chart,
    server_chart,
    server_small_chart,
    proxy_chart,
    s3_chart,
    ingest_chart,
)


def draw(chart: Chart, path: Path) -> None:
    """One horizontal grouped bar chart, each bar labelled with its figure."""
    groups = [g for g in chart.groups if g.values]
    series = [s for s in chart.series if any(s.label in g.values for g in groups)]
    height = 0.8 / len(series)
    fig, ax = plt.subplots(figsize=(8, 1.2 + 0.32 * len(series) * len(groups) + 0.3 * len(groups)))
    top = max(max(g.values.values()) for g in groups)
    top = max(
        [top, *(g.bound or 0 for g in groups), *(v for g in groups for v in g.slowest.values())]
    )
    for number, group in enumerate(groups):
        bars = [s for s in series if s.label in group.values]
        for index, s in enumerate(bars):
            y = number + (index - (len(bars) - 1) / 2) * height
            value = group.values[s.label]
            ax.barh(y, value, height * 0.9, color=s.colour, label=s.label)
            slowest = group.slowest.get(s.label)
            if slowest is not None:
                ax.plot([value, slowest], [y, y], color="#424242", linewidth=1)
                ax.plot([slowest, slowest], [y - height / 4, y + height / 4], color="#424242")
            text = _figure(value)
            if slowest is not None:
                text += f"\N{EN DASH}{_figure(slowest)}"
            ax.text(max(value, slowest or 0) + top * 0.01, y, text, va="center", fontsize=8)
        if group.bound is not None:
            span = (len(bars) / 2 + 0.1) * height
            ax.plot(
                [group.bound, group.bound],
                [number - span, number + span],
                color="#c62828",
                linestyle="--",
                linewidth=1.2,
                label="measured bound",
            )
            ax.text(
                group.bound,
                number - span,
                _figure(group.bound),
                color="#c62828",
                ha="center",
                va="bottom",
                fontsize=7,
            )
    ax.set_yticks(range(len(groups)), [g.label for g in groups])
    ax.invert_yaxis()
    ax.set_xlim(0, top * 1.18)
    ax.set_xlabel(chart.unit)
    ax.set_title(chart.title, fontsize=10)
    ax.spines[["top", "right"]].set_visible(False)
    handles, labels = ax.get_legend_handles_labels()
    unique = dict(zip(labels, handles, strict=True))
    # The legend goes below the axes, in a strip of fixed height whatever the chart's size.
    fig.legend(
        unique.values(), unique.keys(), fontsize=8, frameon=False, loc="lower center", ncol=4
    )
    fig.tight_layout(rect=(0, 0.4 / fig.get_figheight(), 1, 1))
    fig.savefig(path, format="svg", metadata={"Date": None})
    plt.close(fig)


def _figure(value: float) -> str:
    if value >= 100:
        return f"{value:,.0f}"
    if value >= 10:
        return f"{value:.1f}".rstrip("0").rstrip(".")
    return f"{value:.2f}"


def main(argv: Iterable[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "input", nargs="?", type=Path, default=DEFAULT_INPUT, help="a benches.compare JSON file"
    )
    parser.add_argument(
        "--out", type=Path, default=DEFAULT_OUTPUT, help="where the SVGs go (docs/img)"
    )
    args = parser.parse_args(None if argv is None else list(argv))
    run = Run(json.loads(args.input.read_text()))
    args.out.mkdir(parents=True, exist_ok=True)
    plt.rcParams.update({"svg.hashsalt": "distblob", "svg.fonttype": "none"})
    for make in CHARTS:
        chart = make(run)
        if not chart.drawable():
            print(f"{chart.name}: no figures in {args.input}, skipped")
            continue
        path = args.out / f"{chart.name}.svg"
        draw(chart, path)
        print(f"{chart.name}: {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
