"""Render the report of one or more output folders as one self-contained HTML file.

Everything that comes from users or plugins' data (experiment names, errors,
the config) is escaped by Jinja2's autoescape. Only two kinds of markup are
inserted as is: SVG figures that matplotlib renders here (it escapes their
text) and extra sections whose HTML a plugin owns.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from collections.abc import Collection
from typing import Any

import jinja2
import pandas as pd

from lthbench.report.figures import SvgFigure, figure_set
from lthbench.report.reference import (FRANKLE_2019, comparison_rows, format_reference, reference_for,
                                       series)
from lthbench.report.results import ResultFolder
from lthbench.config.settings import Report
from lthbench.report.stats import (ACCURACY, ADJUSTMENT, ALPHA, BETTER, DENSE, EQUIVALENT, INCONCLUSIVE, ITERATION,
                                   ITERATION_MARGIN_FRACTION, LEVEL, MIN_SEEDS, NOT_ENOUGH_SEEDS, OVERALL, POWER,
                                   RANDOM_MASK, TICKET, UNTESTABLE, WORSE, random_mask_runs)
from lthbench.run.status import FAILURES, RunStatus

TEMPLATE = "report.html.j2"
STATUSES = (RunStatus.DONE, RunStatus.FAILED, RunStatus.DIVERGED, RunStatus.BLOCKED, RunStatus.PENDING)
METRIC_TITLES = {ACCURACY: "Test accuracy at early stop (%)", ITERATION: "Early-stop iteration"}
#: Units of differences: accuracy in percentage points.
UNITS = {ACCURACY: "pt", ITERATION: "iterations"}
FINAL = "final_test_accuracy"
#: The columns of the per-level summary table: record field, title, and the format of its values.
SUMMARY_METRICS = ((ACCURACY, "Test accuracy at early stop (%)", ACCURACY),
                   (ITERATION, "Early-stop iteration", ITERATION),
                   (FINAL, "Final test accuracy (%)", ACCURACY))
#: Fields of a ``matrix.json`` cell that are not settings (ids, and what other rows show).
NOT_SETTINGS = ("cell_id", "overrides", "label")
#: Characters of differing training settings that may go into figure file names.
STEM_LABEL = 40


@dataclass
class CellView:
    """What the report shows of one matrix cell."""

    anchor: str
    title: str
    subtitle: str
    comparisons: list[str]
    verdict_rows: list[dict[str, Any]]
    overall: dict[str, Any]
    figures: list[SvgFigure]
    stats: dict[str, list[dict[str, Any]]]
    control: bool
    margins: str
    censoring: str = ""
    patience: str = ""
    stem: str = ""
    levels: list[dict[str, Any]] = field(default_factory=list)
    reference: dict[str, Any] | None = None


def slug(text: str) -> str:
    """``text`` as a file-name part: lower case letters, digits, ``.`` and ``_``, other runs as one ``-``."""
    return re.sub(r"[^a-z0-9._]+", "-", text.lower()).strip("-.") or "cell"


def level_summary(rows: pd.DataFrame, random_mask: pd.DataFrame | None = None) -> list[dict[str, Any]]:
    """Per level and initializer of one cell's done runs: weights remaining, n, and mean, SD, min and max of
    the early-stop accuracy, the early-stop iteration and the final accuracy.

    The dense network is round 0; ``random_mask`` (a control cell's ticket
    runs) is summarised as the initializer ``random mask``.
    """
    done = rows[rows["status"] == "done"]
    if random_mask is not None:
        done = pd.concat([done, random_mask[random_mask["status"] == "done"].assign(initializer=RANDOM_MASK)])
    order = {name: i for i, name in enumerate([DENSE, TICKET, *done["initializer"]])}
    out = []
    for (round_, initializer), group in sorted(done.groupby(["round", "initializer"], sort=False),
                                               key=lambda item: (item[0][0], order[item[0][1]])):
        stats = {metric: {"mean": group[metric].mean(), "sd": group[metric].std(ddof=1) if len(group) > 1 else None,
                          "min": group[metric].min(), "max": group[metric].max(), "format": fmt}
                 for metric, _, fmt in SUMMARY_METRICS}
        out.append({"round": int(round_), "weights_remaining": group["weights_remaining"].mean(),
                    "initializer": initializer, "n": len(group), "stats": stats,
                    "stopped": int(group["stopped_at"].notna().sum()) if "stopped_at" in group else 0})
    return out


def _setting_value(value: Any) -> str:
    """A setting as in a TOML file: strings as written, booleans lower case, lists in brackets; unset as –."""
    if value is None:
        return "–"
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


def _flat(settings: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested tables as dotted keys (``training.lr``)."""
    flat = {}
    for key, value in settings.items():
        if isinstance(value, dict):
            flat.update(_flat(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def hyperparameters(folders: list[ResultFolder]) -> list[dict[str, Any]]:
    """Every setting of every cell in the folders' ``matrix.json``, defaults included, one row per setting.

    A row gives one ``value`` when all cells share it, else ``per_cell``: each
    cell's title with its value. The seeds of each benchmark come first.
    """
    cells = {}
    seeds = set()
    for folder in folders:
        seeds.add(_setting_value((folder.matrix.get("benchmark") or {}).get("seeds")))
        for cell in folder.matrix.get("cells", []):
            if isinstance(cell, dict):
                cells.setdefault(cell.get("cell_id"), cell)
    per_cell = {_cell_name(cell): {k: _setting_value(v) for k, v in _flat(
        {k: v for k, v in cell.items() if k not in NOT_SETTINGS}).items()} for cell in cells.values()}
    keys = list(dict.fromkeys(key for settings in per_cell.values() for key in settings))
    rows = [{"key": "seeds", "value": ", ".join(sorted(seeds)), "per_cell": []}]
    for key in keys:
        values = [(name, settings.get(key, "–")) for name, settings in per_cell.items()]
        shared = {value for _, value in values}
        rows.append({"key": key, "value": values[0][1] if len(shared) == 1 else None,
                     "per_cell": [] if len(shared) == 1 else values})
    return rows


def _cell_name(cell: dict[str, Any]) -> str:
    """A cell as the report titles it, with its training label when it has one."""
    name = f"{cell.get('experiment')} · {cell.get('pruner')}"
    return f"{name} · {cell['label']}" if cell.get("label") else name


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


def patience_note(rows: pd.DataFrame) -> str:
    """How many done runs patience stopped before their budget, and where ("" when none did).

    Their early-stop iteration is found (they stopped after it), but their
    final accuracy is the one at the stop, not at the end of the budget.
    """
    if "stopped_at" not in rows:
        return ""
    done = rows[rows["status"] == "done"]
    stopped = done[done["stopped_at"].notna()]
    if stopped.empty:
        return ""
    return (f"{len(stopped)} of {len(done)} runs stopped early (patience: that many evaluations without a new "
            f"minimum of the validation loss), at iterations {stopped['stopped_at'].min():.0f}–"
            f"{stopped['stopped_at'].max():.0f} of {done['iterations'].max():.0f}. Their early-stop iteration lies "
            "before the stop; their final test accuracy is the one at the stop, not at the end of the budget.")


def format_value(value: Any, metric: str) -> str:
    """A metric value for tables: accuracy in percent with two decimals, iterations as integers."""
    if pd.isna(value):
        return "–"
    return f"{value * 100:.2f}" if metric == ACCURACY else f"{value:.0f}"


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


def format_difference(value: Any, metric: str) -> str:
    """A signed difference: accuracy in percentage points with two decimals, iterations as integers."""
    if pd.isna(value):
        return "–"
    text = f"{value * 100:+.2f}" if metric == ACCURACY else f"{value:+.0f}"
    return text.replace("-", "−")


def format_signed_interval(low: Any, high: Any, metric: str) -> str:
    """An interval of a difference as ``[−0.27, +0.72]``; empty when there is none."""
    if pd.isna(low):
        return ""
    return f"[{format_difference(low, metric)}, {format_difference(high, metric)}]"


def format_margin(margin: Any, metric: str) -> str:
    """A margin as ``±0.50 pt`` or ``±200 iterations``."""
    return "–" if pd.isna(margin) else f"±{format_difference(margin, metric)[1:]} {UNITS[metric]}"


def verdict_class(verdict: str) -> str:
    """A CSS class for a verdict: ``good`` for the ticket, ``bad`` against it, ``neutral`` when equivalent."""
    return {BETTER: "good", WORSE: "bad", EQUIVALENT: "neutral"}.get(verdict, "muted")


def verdict_summary(row: dict[str, Any]) -> dict[str, str]:
    """A verdict in words from one comparison row: the verdict, its difference and interval, how it was tested.

    ``text`` is e.g. ``+0.50 [+0.27, +0.72] pt`` (the interval the verdict
    read), ``method`` e.g. ``paired, Bonferroni over 7``; ``hint`` says,
    for an inconclusive verdict, what difference the seeds can detect and how
    many seeds would decide the margin; ``note`` why a comparison was not tested.
    """
    metric, verdict = row["metric"], row["verdict"]
    unit = UNITS[metric]
    interval = format_signed_interval(row["ci_low"], row["ci_high"], metric)
    text = " ".join(filter(None, (format_difference(row["diff"], metric), interval, unit)))
    tested = verdict not in (UNTESTABLE, NOT_ENOUGH_SEEDS)
    method = f"{row['test']}, {'one test' if row['family_size'] == 1 else row['adjustment']}" if tested else ""
    hint = ""
    if verdict == INCONCLUSIVE and not pd.isna(row["detectable_difference"]):
        hint = (f"{row['n_a']} seeds detect {format_margin(row['detectable_difference'], metric)}; "
                f"{format_number(row['seeds_needed'], 0)} would detect {format_margin(row['margin'], metric)}")
    return {"verdict": verdict, "text": text, "method": method, "hint": hint, "note": row["note"] or ""}


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
        value=format_value, pvalue=format_p, number=format_number, percent=format_percent,
        duration=format_duration, verdict_class=verdict_class, difference=format_difference, margin=format_margin,
        signed_interval=format_signed_interval, reference=format_reference,
    )
    return env


def _cell_view(rows: pd.DataFrame, table: pd.DataFrame, winners: pd.DataFrame, records: dict[str, Any],
               random_mask: pd.DataFrame | None, cell: dict[str, Any]) -> CellView:
    """Verdicts, figures and statistics tables of one cell; ``random_mask``: its control's ticket runs, if any.

    ``cell`` is its entry in ``matrix.json``; when a published reference set
    applies to it, its values are drawn in the figures and listed beside ours.
    """
    first = rows.iloc[0]
    ref = reference_for(cell) if cell else None
    reference = None
    if ref is not None:
        reference = {"label": ref.label, "citation": ref.citation, "note": ref.length_note(cell),
                     "rows": comparison_rows(ref, cell, rows)}
    subtitle = f"{first['architecture']} on {first['dataset']}, {first['mode']} pruning at rate {first['rate']}"
    if first["training"]:
        subtitle += f"; training: {first['training']}"
    comparisons = sorted(dict.fromkeys(table["group_b"]), key=lambda name: name != DENSE)
    levels = table[table["scope"] == LEVEL]
    marks = {(row["scope"], row["round"]): row for row in winners.to_dict("records")}
    verdict_rows = [
        {"round": round_, "weights_remaining": level["weights_remaining"].iloc[0],
         "verdicts": _summaries(level), "winning": marks.get((LEVEL, round_))}
        for round_, level in levels.groupby("round", sort=True)
    ]
    overall_rows = table[table["scope"] == OVERALL]
    overall = {}
    if not overall_rows.empty:
        first_row = overall_rows.iloc[0]
        overall = {"levels": int(first_row["levels"]), "low": first_row["level_low"], "high": first_row["level_high"],
                   "verdicts": _summaries(overall_rows),
                   "winning": next((row for (scope, _), row in marks.items() if scope == OVERALL), None)}
    shown = table.sort_values(["scope", "round"], kind="stable")
    shown = shown.astype(object).where(shown.notna(), None)  # NA is truthy, and ambiguous, in templates
    stats = {metric: shown[shown["metric"] == metric].to_dict("records") for metric in METRIC_TITLES}
    margins = {metric: format_margin(table.loc[table["metric"] == metric, "margin"].max(), metric)
               for metric in METRIC_TITLES}
    return CellView(
        anchor=f"cell-{first['cell_id']}",
        title=f"{first['experiment']} · {first['pruner']}",
        subtitle=subtitle,
        comparisons=comparisons,
        verdict_rows=verdict_rows,
        overall=overall,
        figures=figure_set(rows, records, str(first["cell_id"]), random_mask, table,
                           ref and {metric: series(ref, cell, metric) for metric in METRIC_TITLES},
                           ref.label if ref else ""),
        stats=stats,
        control=bool(table["control_cell"].any()),
        margins=f"accuracy {margins[ACCURACY]}, early stop {margins[ITERATION]}",
        censoring=censoring_note(rows),
        patience=patience_note(rows),
        stem=slug(f"{first['experiment']}_{first['pruner']}"),
        levels=level_summary(rows, random_mask),
        reference=reference,
    )


def _summaries(rows: pd.DataFrame) -> dict[str, dict[str, dict[str, str]]]:
    """:func:`verdict_summary` of each row, by comparison and metric."""
    summaries: dict[str, dict[str, dict[str, str]]] = {}
    for row in rows.to_dict("records"):
        summaries.setdefault(row["group_b"], {})[row["metric"]] = verdict_summary(row)
    return summaries


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


def cell_views(folders: list[ResultFolder], frame: pd.DataFrame, table: pd.DataFrame, winners: pd.DataFrame,
               controls: dict[Any, Any]) -> list[CellView]:
    """What the report shows of each cell that has verdicts or figures, in the order of the frame.

    Each view's ``stem`` (experiment and pruner) is unique among them, so that
    figure files never overwrite each other: where cells share one, the
    training settings in which they differ are added (``lr-0.003``, at most
    :data:`STEM_LABEL` characters), and where that is not enough, the start of
    the cell id.
    """
    records = {run_id: record for folder in folders for run_id, record in folder.records.items()}
    entries = {cell.get("cell_id"): cell for folder in folders for cell in folder.matrix.get("cells", [])
               if isinstance(cell, dict)}
    views = []
    for cell_id, rows in frame.groupby("cell_id", sort=False):
        control = controls.get(cell_id)
        random_mask = None if control is None else random_mask_runs(frame, control)
        views.append(_cell_view(rows, table[table["cell_id"] == cell_id], winners[winners["cell_id"] == cell_id],
                                records, random_mask, entries.get(cell_id, {})))
    cells = [view for view in views if view.verdict_rows or view.figures]
    training = {view.anchor: (entries.get(view.anchor.removeprefix("cell-")) or {}).get("training") or {}
                for view in cells}
    for stem in {view.stem for view in cells}:
        sharing = [view for view in cells if view.stem == stem]
        if len(sharing) < 2:
            continue
        keys = [key for key in dict.fromkeys(k for view in sharing for k in training[view.anchor])
                if len({json.dumps(training[view.anchor].get(key)) for view in sharing}) > 1]
        for view in sharing:
            differs = "_".join(f"{key}-{_setting_value(training[view.anchor].get(key))}" for key in keys)
            view.stem = f"{stem}_{slug(differs)[:STEM_LABEL]}" if differs else stem
    stems = [view.stem for view in cells]
    for view in cells:
        if stems.count(view.stem) > 1:
            view.stem = f"{view.stem}_{view.anchor.removeprefix('cell-')[:8]}"
    return cells


def render_report(folders: list[ResultFolder], frame: pd.DataFrame, table: pd.DataFrame, *, winners: pd.DataFrame,
                  controls: dict[Any, Any], sections: list[dict[str, str]], finding: str,
                  report: Report, cells: list[CellView] | None = None) -> str:
    """The whole report as one HTML string.

    ``table``, ``winners`` and ``controls`` are the comparison table, its
    winning-ticket marks and the random-mask controls of ``frame``;
    ``finding`` is the one-line summary published in the report's metadata,
    ``report`` the ``[report]`` settings the table was judged with;
    ``cells`` the :func:`cell_views` when the caller has made them already.
    """
    if cells is None:
        cells = cell_views(folders, frame, table, winners, controls)
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
        hyperparameters=hyperparameters(folders),
        summary_metrics=SUMMARY_METRICS,
        citation=FRANKLE_2019.citation,
        metric_titles=METRIC_TITLES,
        ticket=TICKET,
        failed=_problem_runs(frame, FAILURES),
        blocked=_problem_runs(frame, (RunStatus.BLOCKED,)),
        sections=sections,
        published=published,
        settings={"alpha": ALPHA, "min_seeds": MIN_SEEDS, "power": POWER, "report": report,
                  "iteration_fraction": ITERATION_MARGIN_FRACTION, "adjustment": ADJUSTMENT,
                  "accuracy_margin": format_margin(report.accuracy_margin, ACCURACY),
                  "iteration_margin": format_margin(report.iteration_margin, ITERATION)},
    )
