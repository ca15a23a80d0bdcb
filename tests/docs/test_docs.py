"""The performance page's charts and tables: drawn from one file, and showing the same figures.

``benches/published.json`` holds the figures ``docs/performance.md`` publishes, in the shape
``python -m benches.compare --json`` writes; ``python -m benches.charts`` draws the committed
SVGs from it. A figure changed in one place and not the other would make a chart disagree with
the table under it, so every figure the charts draw must appear on the page.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from benches import charts

ROOT = Path(__file__).resolve().parent.parent.parent
PUBLISHED = ROOT / "benches" / "published.json"
PAGE = ROOT / "docs" / "performance.md"


def _published() -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(PUBLISHED.read_text())
    return doc


def _shown(value: float) -> set[str]:
    """The ways the page writes a figure: ``1567``, ``3,600``, ``1.99``."""
    return {f"{value:g}", f"{value:,.0f}", f"{value:.0f}", f"{value:.2f}"}


def _on_page(text: str, page: str) -> bool:
    """Whether ``text`` is on the page as a whole figure (``46`` is not in ``2.46``)."""
    return re.search(rf"(?<![\d.,]){re.escape(text)}(?![.,]?\d)", page) is not None


def test_every_charted_figure_is_on_the_page() -> None:
    page = PAGE.read_text()
    missing = []
    for result in _published()["results"]:
        extra = result["extra"]
        if "slowest_run_s" in extra:
            shown = {f"{result['seconds']:.2f}\N{EN DASH}{extra['slowest_run_s']:.2f} s"}
        elif "blobs_per_s" in extra:
            shown = _shown(extra["blobs_per_s"])
        else:
            shown = _shown(result["mb_per_s"])
        if not any(_on_page(text, page) for text in shown):
            missing.append((result["name"], sorted(shown)))
    assert not missing


def test_the_charts_draw_from_the_published_figures(tmp_path: Path) -> None:
    assert charts.main([str(PUBLISHED), "--out", str(tmp_path)]) == 0
    drawn = sorted(path.name for path in tmp_path.iterdir())
    committed = sorted(path.name for path in (ROOT / "docs" / "img").glob("*.svg"))
    assert drawn == committed
    referenced = {name for name in committed if f"img/{name}" in PAGE.read_text()}
    assert referenced == set(committed)


def test_a_run_without_some_scenarios_skips_their_charts(tmp_path: Path) -> None:
    doc = _published()
    doc["results"] = [r for r in doc["results"] if r["name"].startswith("distblob serve: ")]
    source = tmp_path / "server-only.json"
    source.write_text(json.dumps(doc))
    assert charts.main([str(source), "--out", str(tmp_path / "img")]) == 0
    drawn = sorted(p.name for p in (tmp_path / "img").iterdir())
    assert drawn == ["server-small.svg", "server.svg"]
