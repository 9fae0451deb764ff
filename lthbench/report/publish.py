"""Published reports: the report file with its one-line finding, and an index page of a folder of reports.

Each report carries its name, date, device and finding in ``<meta>`` tags, so
the index is rebuilt from the reports themselves and never goes stale.
"""

from __future__ import annotations

import tempfile
import urllib.parse
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pandas as pd

from lthbench.config.parse import parse_report
from lthbench.config.settings import Report
from lthbench.errors import UserError
from lthbench.registry import Registry
from lthbench.report.html import (UNITS, CellView, cell_views, environment, format_difference, format_percent,
                                  render_report, run_counts, verdict_summary)
from lthbench.report.results import CSV_COLUMNS, ResultFolder, read_folder, tidy_frame
from lthbench.report.stats import (ACCURACY, DENSE, INCONCLUSIVE, ITERATION, LEVEL, NOT_ENOUGH_SEEDS, OVERALL,
                                   UNTESTABLE, comparison_table, random_mask_controls, winning_tickets)

META_PREFIX = "lthbench:"
#: The report's file name in the first results folder when ``-o`` is not given.
DEFAULT_REPORT = "report.html"
INDEX_TEMPLATE = "index.html.j2"


def finding(table: pd.DataFrame, winners: pd.DataFrame) -> str:
    """One sentence per cell from its overall verdicts, and at how many levels the ticket is a winning ticket.

    Control cells (``control_cell``) are left out: their comparison appears in
    the cell of the pruner they are a control of (``vs random mask``).
    """
    parts = []
    for (cell_id, experiment, pruner), cell in table[~table["control_cell"].astype(bool)].groupby(
            ["cell_id", "experiment", "pruner"], sort=False):
        overall = cell[cell["scope"] == OVERALL]
        levels = cell.loc[cell["scope"] == LEVEL, "round"].nunique()
        if overall.empty:
            continue
        first = overall.iloc[0]
        claims = []
        for group in sorted(dict.fromkeys(overall["group_b"]), key=lambda name: name == DENSE):
            rows = {row["metric"]: row for row in overall[overall["group_b"] == group].to_dict("records")}
            said = [f"{what} {_claim(rows[metric])}" for metric, what in (
                (ACCURACY, "accuracy"), (ITERATION, "early stop")) if metric in rows]
            claims.append(f"vs {group}: {', '.join(said)}")
        marks = winners[(winners["cell_id"] == cell_id) & (winners["scope"] == LEVEL)]
        claims.append(f"winning ticket at {int(marks['winning_ticket'].sum())}/{levels} levels")
        span = f"{format_percent(first['level_high'])}–{format_percent(first['level_low'])}% weights"
        parts.append(f"{experiment} · {pruner} ({span}): {'; '.join(claims)}")
    return " | ".join(parts) or "no comparison could be made"


def _claim(row: dict[str, Any]) -> str:
    """A verdict with its difference: ``better (+0.42 pt)``; the verdict alone when nothing was tested."""
    if row["verdict"] in (UNTESTABLE, NOT_ENOUGH_SEEDS):
        return row["verdict"]
    return f"{row['verdict']} ({format_difference(row['diff'], row['metric'])} {UNITS[row['metric']]})"


def inconclusive_hints(table: pd.DataFrame) -> list[str]:
    """For each inconclusive overall verdict, and as a count for levels, what the seeds can detect and would need."""
    lines = []
    overall = table[(table["scope"] == OVERALL) & (table["verdict"] == INCONCLUSIVE)]
    for row in overall.to_dict("records"):
        summary = verdict_summary(row)
        what = "accuracy" if row["metric"] == ACCURACY else "early stop"
        lines.append(f"{row['experiment']} · {row['pruner']}: ticket vs {row['group_b']}, {what} over the levels is "
                     f"inconclusive ({summary['text']}); {summary['hint']}")
    levels = table[(table["scope"] == LEVEL) & (table["verdict"] == INCONCLUSIVE)]
    if len(levels):
        lines.append(f"{len(levels)} per-level verdicts are inconclusive; the report's Table 1 gives for each the "
                     "detectable difference and the seeds needed")
    return lines


def status_hints(folder: str | Path, settings: Report) -> list[str]:
    """:func:`inconclusive_hints` of an output folder's finished runs, judged with ``settings``; [] before any run."""
    if not (Path(folder) / "matrix.json").is_file():
        return []
    frame = tidy_frame([read_folder(folder)])
    return inconclusive_hints(comparison_table(frame, random_mask_controls(frame), settings))


def report_settings(folders: list[ResultFolder]) -> Report:
    """The ``[report]`` settings of the benchmark file recorded in the folders' ``matrix.json`` (defaults when absent).

    Folders that declare different settings cannot share one report: that is a :class:`UserError`.
    """
    settings = {}
    for folder in folders:
        raw = (folder.matrix.get("config") or {}).get("report", {})
        settings[str(folder.path)] = parse_report(raw, folder.path / "matrix.json")
    if len(set(settings.values())) > 1:
        names = ", ".join(settings)
        raise UserError(f"{names}: their benchmark files declare different [report] settings; report them separately")
    return next(iter(settings.values()), Report())


def report_command(results: list[str], output: str | None, csv: str | None, stats_csv: str | None,
                   registry: Registry, figures: str | None = None) -> int:
    """``lthbench report``: load ``results`` folders, write the HTML report and the CSVs and figure files asked for.

    ``output`` defaults to ``report.html`` in the first results folder.
    ``figures`` is a folder for every figure as SVG, PNG and PDF
    (:func:`write_figures`). It prints the run counts, the files written and,
    where verdicts are inconclusive, what the seeds can detect
    (:func:`inconclusive_hints`).
    """
    if not results:
        raise UserError("no results folder given; pass the output folder of 'lthbench run'")
    if output is None:
        output = str(Path(results[0]) / DEFAULT_REPORT)
    destinations = [("-o", output)] + [(option, path) for option, path in (("--csv", csv), ("--stats-csv", stats_csv))
                                       if path is not None]
    _check_destinations(destinations)
    if figures is not None:
        _check_figures_folder(figures)
    folders = [read_folder(path) for path in results]
    settings = report_settings(folders)
    frame = tidy_frame(folders)
    controls = random_mask_controls(frame)
    table = comparison_table(frame, controls, settings)
    winners = winning_tickets(table)
    cells = cell_views(folders, frame, table, winners, controls)
    html = render_report(folders, frame, table, winners=winners, controls=controls, report=settings,
                         sections=registry.report_sections(frame, table), finding=finding(table, winners), cells=cells)
    writers = {"-o": lambda path: path.write_text(html, encoding="utf-8"),
               "--csv": lambda path: frame[CSV_COLUMNS].to_csv(path, index=False),
               "--stats-csv": lambda path: table.to_csv(path, index=False)}
    written = [_write(option, destination, writers[option]) for option, destination in destinations]
    if figures is not None:
        files = write_figures(cells, Path(figures))
        written.append(f"{len(files)} figure files to {figures}")
    counts = ", ".join(f"{count} {status}" for status, count in run_counts(frame).items())
    print(f"{counts} runs; wrote {', '.join(written)}")
    for line in inconclusive_hints(table):
        print(line)
    return 0


def write_figures(cells: list[CellView], folder: Path) -> list[Path]:
    """Save every figure of the report as ``<experiment>_<pruner>[_<training>]-<kind>.svg`` / ``.png`` / ``.pdf``.

    The names come from the cell (see :func:`lthbench.report.html.slug`) and
    the figure's kind (``accuracy``, ``early-stop``, ``differences``,
    ``curves``, ``layers``), so they stay the same from one report to the next.
    """
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for cell in cells:
        for figure in cell.figures:
            try:
                paths += figure.save(folder, f"{cell.stem}-{figure.kind}")
            except OSError as error:
                raise UserError(f"--figures {folder}: cannot be written ({error.strerror or error})") from None
    return paths


def _check_figures_folder(destination: str) -> None:
    """Refuse, before anything is written, a ``--figures`` folder that cannot be made or written into."""
    path = Path(destination)
    if not destination:
        raise UserError("--figures: empty; give the folder to write the figures to")
    if path.exists() and not path.is_dir():
        raise UserError(f"--figures {destination}: is a file, not a folder")
    existed = path.exists()
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as error:
        raise UserError(f"--figures {destination}: cannot be written ({error.strerror or error})") from None
    finally:
        if not existed and path.is_dir() and not any(path.iterdir()):
            path.rmdir()


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
    """Name, date, device and finding of one report file, and ``href``: its file name as a relative URL."""
    reader = _MetaReader()
    reader.feed(path.read_text(encoding="utf-8", errors="replace"))
    return {"file": path.name, "name": reader.meta.get("name", path.stem), **reader.meta, "href": _href(path.name)}


def _href(name: str) -> str:
    """A file name as a link relative to its folder: percent-quoted, so that no name reads as a scheme or a query."""
    return urllib.parse.quote(name, safe="")


def _report_files(folder: Path) -> list[Path]:
    """The ``*.html`` files of ``folder`` that are regular files in it (no links, no folders), but the index."""
    return [p for p in sorted(folder.glob("*.html"))
            if p.name != "index.html" and not p.is_symlink() and p.is_file()]


def write_index(folder: str | Path) -> Path:
    """Write ``index.html`` listing every lthbench report in ``folder``, newest first."""
    folder = Path(folder)
    if not folder.is_dir():
        raise UserError(f"{folder}: not a folder of reports")
    reports = [report_metadata(p) for p in _report_files(folder)]
    reports = [r for r in reports if "finding" in r]
    reports.sort(key=lambda r: r.get("date", ""), reverse=True)
    index = folder / "index.html"
    index.write_text(environment().get_template(INDEX_TEMPLATE).render(reports=reports), encoding="utf-8")
    return index
