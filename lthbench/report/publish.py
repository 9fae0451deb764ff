"""Published reports: a one-line finding per report, and an index page of a folder of reports.

Each report carries its name, date, device and finding in ``<meta>`` tags, so
the index is rebuilt from the reports themselves and never goes stale.
"""

from __future__ import annotations

from html.parser import HTMLParser
from pathlib import Path

import pandas as pd

from lthbench.errors import UserError
from lthbench.report.stats import mimicked_pruner

META_PREFIX = "lthbench:"
INDEX_TEMPLATE = "index.html.j2"


def finding(judged: pd.DataFrame) -> str:
    """One sentence per cell: at how many levels the ticket wins and beats each control.

    Cells of a random-mask control are left out: their comparison appears in
    the cell of the pruner they mimic ("ticket beats random mask").
    """
    parts = []
    for (experiment, pruner), cell in judged.groupby(["experiment", "pruner"], sort=False):
        if mimicked_pruner(pruner) is not None:
            continue
        levels = cell["round"].nunique()
        sparsest = cell["weights_remaining"].min()
        counts = []
        comparisons = sorted(cell.groupby("comparison", sort=False), key=lambda item: item[0] != "vs dense")
        for comparison, rows in comparisons:
            good = "winning ticket" if comparison == "vs dense" else f"ticket beats {comparison[3:]}"
            counts.append(f"{good} at {int((rows['verdict'] == good).sum())}/{levels} levels")
        parts.append(f"{experiment} · {pruner} (down to {100 * sparsest:.1f}% weights): {', '.join(counts)}")
    return "; ".join(parts) or "no comparison could be made"


class _MetaReader(HTMLParser):
    """Collect ``<meta name="lthbench:*">`` and the ``<title>`` of a report."""

    def __init__(self) -> None:
        super().__init__()
        self.meta: dict[str, str] = {}
        self._in_title = False
        self.title = ""

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        name = values.get("name") or ""
        if tag == "meta" and name.startswith(META_PREFIX):
            self.meta[name[len(META_PREFIX):]] = values.get("content") or ""
        self._in_title = tag == "title"

    def handle_endtag(self, tag: str) -> None:
        self._in_title = False

    def handle_data(self, data: str) -> None:
        if self._in_title:
            self.title += data


def report_metadata(path: Path) -> dict[str, str]:
    """Name, date, device and finding of one report file."""
    reader = _MetaReader()
    reader.feed(path.read_text(encoding="utf-8"))
    return {"file": path.name, "name": reader.meta.get("name", path.stem), **reader.meta}


def write_index(folder: str | Path) -> Path:
    """Write ``index.html`` listing every lthbench report in ``folder``, newest first."""
    from lthbench.report.html import environment

    folder = Path(folder)
    if not folder.is_dir():
        raise UserError(f"{folder}: not a folder of reports")
    reports = [report_metadata(p) for p in sorted(folder.glob("*.html")) if p.name != "index.html"]
    reports = [r for r in reports if "finding" in r]
    reports.sort(key=lambda r: r.get("date", ""), reverse=True)
    index = folder / "index.html"
    index.write_text(environment().get_template(INDEX_TEMPLATE).render(reports=reports), encoding="utf-8")
    return index
