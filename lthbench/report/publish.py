"""Published reports: the report file with its one-line finding, and an index page of a folder of reports.

Each report carries its name, date, device and finding in ``<meta>`` tags, so
the index is rebuilt from the reports themselves and never goes stale.
"""

from __future__ import annotations

from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pandas as pd

from lthbench.errors import UserError
from lthbench.registry import Registry
from lthbench.report.html import environment, render_report, run_counts
from lthbench.report.results import CSV_COLUMNS, read_folder, tidy_frame
from lthbench.report.stats import DENSE, comparison_table, random_mask_controls, verdicts

META_PREFIX = "lthbench:"
INDEX_TEMPLATE = "index.html.j2"


def finding(judged: pd.DataFrame, frame: pd.DataFrame) -> str:
    """One sentence per cell of ``judged``: at how many levels the ticket wins and beats each control.

    Cells that are a control of another pruner (``control_of`` in ``frame``)
    are left out: their comparison appears in the cell of the pruner they are
    a control of ("ticket beats random mask").
    """
    controls = frame.loc[frame["control_of"].notna(), "cell_id"]
    parts = []
    for (experiment, pruner), cell in judged[~judged["cell_id"].isin(controls)].groupby(["experiment", "pruner"],
                                                                                         sort=False):
        levels = cell["round"].nunique()
        sparsest = cell["weights_remaining"].min()
        counts = []
        comparisons = sorted(cell.groupby("comparison", sort=False), key=lambda item: item[0] != f"vs {DENSE}")
        for comparison, rows in comparisons:
            good = "winning ticket" if comparison == f"vs {DENSE}" else f"ticket beats {comparison[3:]}"
            counts.append(f"{good} at {int((rows['verdict'] == good).sum())}/{levels} levels")
        parts.append(f"{experiment} · {pruner} (down to {100 * sparsest:.1f}% weights): {', '.join(counts)}")
    return "; ".join(parts) or "no comparison could be made"


def report_command(results: list[str], output: str, csv: str | None, stats_csv: str | None, registry: Registry) -> int:
    """``lthbench report``: load ``results`` folders, write the HTML report and the CSVs asked for."""
    if not results:
        raise UserError("no results folder given; pass the output folder of 'lthbench run'")
    destinations = [("-o", output)] + [(option, path) for option, path in (("--csv", csv), ("--stats-csv", stats_csv))
                                       if path is not None]
    _check_destinations(destinations)
    folders = [read_folder(path) for path in results]
    frame = tidy_frame(folders)
    controls = random_mask_controls(frame)
    table = comparison_table(frame, controls)
    judged = verdicts(table)
    html = render_report(folders, frame, table, judged=judged, controls=controls,
                         sections=registry.report_sections(frame, table), finding=finding(judged, frame))
    writers = {"-o": lambda path: path.write_text(html, encoding="utf-8"),
               "--csv": lambda path: frame[CSV_COLUMNS].to_csv(path, index=False),
               "--stats-csv": lambda path: table.to_csv(path, index=False)}
    written = [_write(option, destination, writers[option]) for option, destination in destinations]
    counts = ", ".join(f"{count} {status}" for status, count in run_counts(frame).items())
    print(f"{counts} runs; wrote {', '.join(written)}")
    return 0


def _check_destinations(destinations: list[tuple[str, str]]) -> None:
    """Refuse, before anything is written, a destination (option, path) that no write could succeed at.

    Each must be a non-empty path of its own, not a folder, in a folder that
    exists or can be made, and open for writing; files this check creates
    are removed again.
    """
    created: list[Path] = []
    seen: set[Path] = set()
    try:
        for option, destination in destinations:
            path = Path(destination)
            if not destination:
                raise UserError(f"{option}: empty; give the path of the file to write")
            if path.resolve() in seen:
                raise UserError(f"{option} {destination}: is also the path of another output; give each its own")
            seen.add(path.resolve())
            if path.parent.exists() and not path.parent.is_dir():
                raise UserError(f"{option} {destination}: cannot be written ({path.parent} is a file, not a folder)")
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                existed = path.exists()
                with path.open("a"):  # creates it, or opens it without changing it
                    pass
                if not existed:
                    created.append(path)
            except OSError as error:
                raise UserError(f"{option} {destination}: cannot be written ({error.strerror or error})") from None
    finally:
        for path in created:
            path.unlink(missing_ok=True)


def _write(option: str, destination: str, write: Any) -> str:
    """Call ``write`` on the path ``destination`` (its folder made) and return it; a failing write names ``option``."""
    path = Path(destination)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write(path)
    except OSError as error:
        raise UserError(f"{option} {destination}: cannot be written ({error.strerror or error})") from None
    return str(path)


class _MetaReader(HTMLParser):
    """Collect the ``<meta name="lthbench:*">`` tags of a report."""

    def __init__(self) -> None:
        super().__init__()
        self.meta: dict[str, str] = {}

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        name = values.get("name") or ""
        if tag == "meta" and name.startswith(META_PREFIX):
            self.meta[name[len(META_PREFIX):]] = values.get("content") or ""


def report_metadata(path: Path) -> dict[str, str]:
    """Name, date, device and finding of one report file."""
    reader = _MetaReader()
    reader.feed(path.read_text(encoding="utf-8"))
    return {"file": path.name, "name": reader.meta.get("name", path.stem), **reader.meta}


def write_index(folder: str | Path) -> Path:
    """Write ``index.html`` listing every lthbench report in ``folder``, newest first."""
    folder = Path(folder)
    if not folder.is_dir():
        raise UserError(f"{folder}: not a folder of reports")
    reports = [report_metadata(p) for p in sorted(folder.glob("*.html")) if p.name != "index.html"]
    reports = [r for r in reports if "finding" in r]
    reports.sort(key=lambda r: r.get("date", ""), reverse=True)
    index = folder / "index.html"
    index.write_text(environment().get_template(INDEX_TEMPLATE).render(reports=reports), encoding="utf-8")
    return index
