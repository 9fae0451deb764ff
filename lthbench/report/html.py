"""Render the report of one or more output folders as one self-contained HTML file.

Everything that comes from users or plugins' data (experiment names, errors,
the config) is escaped by Jinja2's autoescape. Only two kinds of markup are
inserted as is: SVG figures that matplotlib renders here (it escapes their
text) and extra sections whose HTML a plugin owns.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from collections.abc import Collection
from typing import Any

import jinja2
import pandas as pd

from lthbench.report.figures import SvgFigure, figure_set
from lthbench.report.results import ResultFolder
from lthbench.report.stats import ACCURACY, DENSE, ITERATION, TICKET, random_mask_runs
from lthbench.run.status import FAILURES, RunStatus

TEMPLATE = "report.html.j2"
STATUSES = (RunStatus.DONE, RunStatus.FAILED, RunStatus.DIVERGED, RunStatus.BLOCKED, RunStatus.PENDING)
METRIC_TITLES = {ACCURACY: "Test accuracy at early stop (%)", ITERATION: "Early-stop iteration"}


@dataclass
class CellView:
    """What the report shows of one matrix cell."""

    anchor: str
    title: str
    subtitle: str
    comparisons: list[str]
    verdict_rows: list[dict[str, Any]]
    figures: list[SvgFigure]
    stats: dict[str, list[dict[str, Any]]]
    censoring: str = ""


def censoring_note(rows: pd.DataFrame) -> str:
    """A warning when runs reached their lowest validation loss at their last iteration ("" when none did).

    Such a run was still improving when training ended: its early-stop
    iteration is the training length, not a point where it stopped learning,
    so comparisons of early-stop iterations (and "does not learn later") are
    censored there.
    """
    done = rows[(rows["status"] == "done") & rows["early_stop_iteration"].notna() & rows["iterations"].notna()]
    at_end = done["early_stop_iteration"] >= done["iterations"]
    dense = done["round"] == 0
    if not at_end.any():
        return ""
    return (f"{int(at_end[dense].sum())} of {int(dense.sum())} dense runs and {int(at_end[~dense].sum())} of "
            f"{int((~dense).sum())} pruned runs had their lowest validation loss at the last evaluation: they were "
            "still improving when training ended. Their early-stop iteration is the training length, so the "
            "early-stop comparisons are censored there (a ticket cannot be shown to learn earlier than a network "
            "that never stopped), and the dense network may be undertrained. Train longer to test early stopping.")


def format_value(value: Any, metric: str) -> str:
    """A metric value for tables: accuracy in percent with two decimals, iterations as integers."""
    if pd.isna(value):
        return "–"
    return f"{value * 100:.2f}" if metric == ACCURACY else f"{value:.0f}"


def format_interval(low: Any, high: Any, metric: str) -> str:
    """A confidence interval as ``[low, high]`` in the metric's units; empty when there is none."""
    if pd.isna(low):
        return ""
    return f"[{format_value(low, metric)}, {format_value(high, metric)}]"


def format_p(value: Any) -> str:
    """A p-value as ``0.003`` or ``<0.001``; a dash when there is none."""
    if pd.isna(value):
        return "–"
    return "<0.001" if value < 0.001 else f"{value:.3f}"


def format_number(value: Any, digits: int = 2) -> str:
    """A plain number with ``digits`` decimals; a dash for missing values."""
    return "–" if pd.isna(value) else f"{value:.{digits}f}"


def format_percent(fraction: Any) -> str:
    """A fraction of weights remaining as a percentage with three significant digits."""
    return "–" if pd.isna(fraction) else f"{fraction * 100:.3g}"


def format_duration(seconds: float) -> str:
    """Seconds as ``1 h 02 min``, ``3 min 05 s`` or ``12 s``."""
    minutes, secs = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min" if hours else f"{minutes} min {secs:02d} s" if minutes else f"{secs} s"


def verdict_class(verdict: str) -> str:
    """A CSS class for a verdict: ``good`` for the ticket, ``bad`` against it, ``muted`` when undecided."""
    if verdict == "winning ticket" or verdict.startswith("ticket beats"):
        return "good"
    if verdict.startswith("not a winning ticket") or verdict.endswith("beats ticket"):
        return "bad"
    return "neutral" if verdict.startswith("no difference") else "muted"


def environment() -> jinja2.Environment:
    """The Jinja2 environment of the report templates, with autoescape and the number filters."""
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("lthbench.report", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(
        value=format_value, interval=format_interval, pvalue=format_p, number=format_number, percent=format_percent,
        duration=format_duration, verdict_class=verdict_class,
    )
    return env


def _cell_view(rows: pd.DataFrame, table: pd.DataFrame, judged: pd.DataFrame, records: dict[str, Any],
               random_mask: pd.DataFrame | None) -> CellView:
    """Verdicts, figures and statistics tables of one cell; ``random_mask``: its control's ticket runs, if any."""
    first = rows.iloc[0]
    subtitle = f"{first['architecture']} on {first['dataset']}, {first['mode']} pruning at rate {first['rate']}"
    if first["training"]:
        subtitle += f"; training: {first['training']}"
    comparisons = list(dict.fromkeys(judged["comparison"]))
    comparisons.sort(key=lambda name: name != f"vs {DENSE}")
    verdict_rows = [
        {"round": round_, "weights_remaining": level["weights_remaining"].iloc[0],
         "verdicts": dict(zip(level["comparison"], level["verdict"]))}
        for round_, level in judged.groupby("round", sort=True)
    ]
    stats = {
        metric: table[table["metric"] == metric].sort_values(["round"], kind="stable").to_dict("records")
        for metric in METRIC_TITLES
    }
    return CellView(
        anchor=f"cell-{first['cell_id']}",
        title=f"{first['experiment']} · {first['pruner']}",
        subtitle=subtitle,
        comparisons=comparisons,
        verdict_rows=verdict_rows,
        figures=figure_set(rows, records, str(first["cell_id"]), random_mask),
        stats=stats,
        censoring=censoring_note(rows),
    )


def run_counts(frame: pd.DataFrame) -> dict[str, int]:
    """How many runs have each status, counting a dense run shared by several cells once."""
    counts = frame.drop_duplicates("run_id")["status"].value_counts()
    return {status: int(counts.get(status, 0)) for status in STATUSES}


def _summary(folders: list[ResultFolder], frame: pd.DataFrame) -> dict[str, Any]:
    """Run counts by status, total training time and each folder's metadata."""
    runs = frame.drop_duplicates("run_id")
    return {
        "counts": run_counts(frame),
        "total": len(runs),
        "cells": frame["cell_id"].nunique(),
        "experiments": list(dict.fromkeys(frame["experiment"])),
        "wall_time": float(runs["wall_time"].fillna(0).sum()),
        "folders": [
            {"path": str(folder.path), "benchmark": folder.matrix.get("benchmark") or {},
             "versions": folder.matrix.get("versions") or {}, "git_commit": folder.matrix.get("git_commit"),
             "started": folder.matrix.get("started"), "finished": folder.matrix.get("finished"),
             "config": json.dumps(folder.matrix.get("config") or {}, indent=2, ensure_ascii=False, default=str)}
            for folder in folders
        ],
    }


def _problem_runs(frame: pd.DataFrame, statuses: Collection[str]) -> list[dict[str, Any]]:
    """Runs with one of ``statuses``, each once, with every experiment that uses it."""
    rows = frame[frame["status"].isin(statuses)]
    experiments = rows.groupby("run_id", sort=False)["experiment"].agg(lambda names: ", ".join(dict.fromkeys(names)))
    unique = rows.drop_duplicates("run_id").assign(experiments=lambda r: r["run_id"].map(experiments))
    # NaN is truthy in templates; give them None instead.
    return unique.astype(object).where(unique.notna(), None).to_dict("records")


def render_report(folders: list[ResultFolder], frame: pd.DataFrame, table: pd.DataFrame, *, judged: pd.DataFrame,
                  controls: dict[Any, Any], sections: list[dict[str, str]], finding: str) -> str:
    """The whole report as one HTML string.

    ``table``, ``judged`` and ``controls`` are the comparison table, its
    verdicts and the random-mask controls of ``frame``; ``finding`` is the
    one-line summary published in the report's metadata.
    """
    records = {run_id: record for folder in folders for run_id, record in folder.records.items()}
    views = []
    for cell_id, rows in frame.groupby("cell_id", sort=False):
        control = controls.get(cell_id)
        random_mask = None if control is None else random_mask_runs(frame, control)
        views.append(_cell_view(rows, table[table["cell_id"] == cell_id], judged[judged["cell_id"] == cell_id],
                                records, random_mask))
    cells = [view for view in views if view.verdict_rows or view.figures]
    names = list(dict.fromkeys(str(f.matrix.get("benchmark", {}).get("name", f.path.name)) for f in folders))
    benchmarks = [f.matrix.get("benchmark") or {} for f in folders]
    published = {
        "date": max((str(f.matrix.get("finished") or f.matrix.get("started") or "") for f in folders), default="")[:10],
        "device": ", ".join(dict.fromkeys(str(b.get("device", "unknown")) for b in benchmarks)),
        "finding": finding,
    }
    return environment().get_template(TEMPLATE).render(
        title=", ".join(names),
        summary=_summary(folders, frame),
        cells=cells,
        metric_titles=METRIC_TITLES,
        ticket=TICKET,
        failed=_problem_runs(frame, FAILURES),
        blocked=_problem_runs(frame, (RunStatus.BLOCKED,)),
        sections=sections,
        published=published,
    )
