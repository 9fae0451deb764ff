"""Figures of one matrix cell as inline SVG strings (matplotlib, without pyplot's global state).

Every function takes the cell's rows of the results frame (status ``done``
only) and, where curves or layers are needed, the stored records by run id.
The SVG keeps its text as text (``svg.fonttype = "none"``: small files,
selectable, rendered in the page's font), its ids are salted by the figure's
name so the output is deterministic, and matplotlib escapes all text it writes.
Text is drawn as written (``text.parse_math`` off): a ``$`` in a label or a
layer name is a dollar sign, not the start of a mathtext formula. Legends
stand below the axes (constrained layout), never over the data. Each
:class:`SvgFigure` keeps its matplotlib figure, so that ``lthbench report
--figures`` can also save it as SVG, PNG and PDF files (:meth:`SvgFigure.save`).
"""

from __future__ import annotations

import io
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import FixedLocator, FuncFormatter, LogFormatter, NullLocator

from lthbench.report.stats import ACCURACY, DENSE, ITERATION, LEVEL, RANDOM_MASK, TICKET

STYLE = {
    "svg.fonttype": "none",
    "text.parse_math": False,
    "font.family": "sans-serif",
    "font.sans-serif": ["Helvetica", "Arial", "DejaVu Sans", "Liberation Sans"],
    "font.size": 11,
    "legend.fontsize": 9,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "legend.frameon": False,
}
WIDTH, HEIGHT = 5.0, 3.3
CURVE_LEVELS = 3
MAX_TICKS = 8
SVG_PREAMBLE = re.compile(r"^.*?(?=<svg\b)|<metadata>.*?</metadata>\s*", re.DOTALL)
SVG_SIZE = re.compile(r'\s(width|height)="[^"]*"')
#: The formats ``lthbench report --figures`` writes, and the resolution of the PNG files.
FILE_FORMATS = ("svg", "png", "pdf")
PNG_DPI = 200
#: Fonts embedded as TrueType in PDF files, as journals ask.
FILE_STYLE = {"pdf.fonttype": 42}


@dataclass(frozen=True)
class SvgFigure:
    """One rendered figure with its caption; ``kind`` names what it shows (``accuracy``, ``curves``, ...)."""

    name: str
    caption: str
    svg: str
    kind: str = ""
    figure: Figure | None = field(default=None, compare=False, repr=False)

    def save(self, folder: Path, stem: str) -> list[Path]:
        """Write the figure as ``folder/stem.svg``, ``.png`` and ``.pdf``; return the paths."""
        paths = []
        with matplotlib.rc_context({**STYLE, **FILE_STYLE, "svg.hashsalt": self.name}):
            for fmt in FILE_FORMATS:
                path = folder / f"{stem}.{fmt}"
                metadata = {"Date": None} if fmt in ("svg", "pdf") else None
                if fmt == "pdf":
                    metadata = {"CreationDate": None, "ModDate": None}
                self.figure.savefig(path, format=fmt, bbox_inches="tight", dpi=PNG_DPI, metadata=metadata)
                paths.append(path)
        return paths


def _figure(height: float = HEIGHT) -> Figure:
    """A figure of the report's width with constrained layout (room for a legend outside the axes)."""
    return Figure(figsize=(WIDTH, height), layout="constrained")


def legend_below(figure: Figure, axis: Axes, **kwargs: Any) -> None:
    """The legend of ``axis``'s labelled artists, under the axes, clear of the data."""
    handles, labels = axis.get_legend_handles_labels()
    if handles:
        figure.legend(handles, labels, loc="outside lower center", ncol=min(len(handles), 3), **kwargs)


def to_svg(figure: Figure, name: str) -> str:
    """Render ``figure``: the ``<svg>`` element only, sized by the page (viewBox kept)."""
    buffer = io.StringIO()
    with matplotlib.rc_context({"svg.hashsalt": name}):
        figure.savefig(buffer, format="svg", bbox_inches="tight", metadata={"Date": None})
    svg = SVG_PREAMBLE.sub("", buffer.getvalue())
    return SVG_SIZE.sub("", svg, count=2).strip()


def _colors(initializers: list[str]) -> dict[str, str]:
    """A fixed colour per initializer, the ticket first; dense is grey."""
    ordered = sorted(initializers, key=lambda name: (name != TICKET, initializers.index(name)))
    palette = matplotlib.colormaps["tab10"].colors
    return {DENSE: "0.35", **{name: palette[i % len(palette)] for i, name in enumerate(ordered)}}


def _percent_axis(axis: Axes, levels: np.ndarray) -> None:
    """A log x axis of percent weights remaining, decreasing to the right, ticked at the levels."""
    axis.set_xscale("log")
    ticks = np.sort(levels)[::-1]
    ticks = ticks[:: int(np.ceil(len(ticks) / MAX_TICKS))]
    axis.xaxis.set_major_locator(FixedLocator(ticks))
    axis.xaxis.set_minor_locator(NullLocator())
    axis.xaxis.set_major_formatter(FuncFormatter(lambda x, _: f"{x:.3g}"))
    axis.set_xlim(levels.max() * 1.15, levels.min() / 1.15)
    axis.set_xlabel("weights remaining (%)")


def metric_figure(rows: pd.DataFrame, metric: str, name: str, reference: pd.DataFrame | None = None,
                  reference_label: str = "") -> SvgFigure:
    """Mean over seeds per initializer against percent of weights remaining, min-max band, dense line.

    ``reference`` (``weights_remaining``, ``value``) is a published ticket
    series, drawn as black stars labelled ``reference_label``.
    """
    label = {ACCURACY: "test accuracy at early stop (%)", ITERATION: "early-stop iteration"}[metric]
    scale = 100 if metric == ACCURACY else 1
    pruned = rows[rows["round"] > 0]
    dense = rows[rows["initializer"] == DENSE][metric] * scale
    colors = _colors(list(pruned["initializer"].unique()))
    figure = _figure()
    axis = figure.subplots()
    if not dense.empty:
        axis.axhline(dense.mean(), color=colors[DENSE], linestyle="--", linewidth=1.2, label="dense (mean)")
        axis.axhspan(dense.min(), dense.max(), color=colors[DENSE], alpha=0.12, linewidth=0)
    for initializer, group in pruned.groupby("initializer", sort=False):
        by_round = group.groupby("round").agg(
            level=("weights_remaining", "mean"), mean=(metric, "mean"), low=(metric, "min"), high=(metric, "max")
        )
        level, color = by_round["level"] * 100, colors[initializer]
        axis.plot(level, by_round["mean"] * scale, marker="o", markersize=4, color=color, label=initializer)
        axis.fill_between(level, by_round["low"] * scale, by_round["high"] * scale, color=color, alpha=0.2, linewidth=0)
    levels = pruned.groupby("round")["weights_remaining"].mean().to_numpy() * 100
    has_reference = reference is not None and not reference.empty
    if has_reference:
        axis.plot(reference["weights_remaining"] * 100, reference["value"] * scale, linestyle="none", marker="*",
                  markersize=9, color="black", label=f"{reference_label} (ticket)", zorder=5)
        levels = np.concatenate([levels, reference["weights_remaining"].to_numpy() * 100])
    if len(levels):
        _percent_axis(axis, levels)
    axis.set_ylabel(label)
    legend_below(figure, axis)
    what = {ACCURACY: "Test accuracy at the early-stop iteration", ITERATION: "Early-stop iteration"}[metric]
    caption = (
        f"{what} against the percentage of weights remaining (log scale, sparser to the right). "
        "Lines: mean over seeds; bands: minimum to maximum; dashed line and grey band: the dense network."
    )
    if has_reference:
        caption += f" Stars: the winning ticket as published by {reference_label}, for comparison."
    kind = {ACCURACY: "accuracy", ITERATION: "early-stop"}[metric]
    return SvgFigure(name, caption, to_svg(figure, name), kind, figure)


def curves_figure(rows: pd.DataFrame, records: dict[str, dict[str, Any]], name: str) -> SvgFigure:
    """Mean test-accuracy curves per initializer at up to three levels, with the dense curve for reference."""
    rounds = sorted(rows.loc[rows["round"] > 0, "round"].unique())
    shown = sorted({rounds[int(i)] for i in np.linspace(0, len(rounds) - 1, min(CURVE_LEVELS, len(rounds)))})
    colors = _colors([n for n in rows["initializer"].unique() if n != DENSE])
    figure = _figure(HEIGHT)
    axes = figure.subplots(1, max(len(shown), 1), sharey=True, squeeze=False)
    dense = _mean_curves(rows[rows["initializer"] == DENSE], records)
    for axis, round_ in zip(axes[0], shown):
        level = rows[rows["round"] == round_]
        curves = pd.concat([_mean_curves(level, records), dense])
        for initializer, curve in curves.groupby(level="initializer", sort=False):
            curve = curve.droplevel("initializer")
            style = {"linestyle": "--", "linewidth": 1} if initializer == DENSE else {"linewidth": 1.5}
            axis.plot(curve.index, curve.to_numpy() * 100, color=colors[initializer], label=initializer, **style)
        axis.set_title(f"{level['weights_remaining'].mean() * 100:.3g}% remaining", fontsize=10)
        axis.set_xlabel("iteration")
    axes[0][0].set_ylabel("test accuracy (%)")
    legend_below(figure, axes[0][-1])
    caption = "Test accuracy during training, mean over seeds, at a few levels of weights remaining; dashed: dense."
    return SvgFigure(name, caption, to_svg(figure, name), "curves", figure)


def _mean_curves(rows: pd.DataFrame, records: dict[str, dict[str, Any]]) -> pd.Series:
    """Test accuracy by (initializer, iteration), averaged over the seeds that recorded it."""
    points = [
        (row.initializer, iteration, accuracy)
        for row in rows.itertuples()
        for iteration, accuracy in zip(
            records.get(row.run_id, {}).get("curves", {}).get("iteration", []),
            records.get(row.run_id, {}).get("curves", {}).get("test_accuracy", []),
        )
    ]
    frame = pd.DataFrame(points, columns=["initializer", "iteration", "accuracy"])
    return frame.groupby(["initializer", "iteration"], sort=False)["accuracy"].mean()


def layers_figure(rows: pd.DataFrame, records: dict[str, dict[str, Any]], name: str) -> SvgFigure:
    """Percent of weights remaining in each prunable layer after every round (mean over seeds)."""
    ticket = rows[(rows["round"] > 0) & (rows["initializer"] == TICKET)]
    source = ticket if not ticket.empty else rows[rows["round"] > 0]
    fractions = pd.DataFrame([
        {"round": row.round, "layer": layer, "percent": 100 * counts["remaining"] / counts["total"]}
        for row in source.drop_duplicates(["round", "seed"]).itertuples()
        for layer, counts in records.get(row.run_id, {}).get("layers", {}).items()
        if counts.get("total")
    ], columns=["round", "layer", "percent"])
    table = fractions.pivot_table(index="layer", columns="round", values="percent", aggfunc="mean", sort=False)
    figure = _figure(HEIGHT * 1.2)
    axis = figure.subplots()
    colors = matplotlib.colormaps["viridis"](np.linspace(0, 0.9, max(len(table.columns), 1)))
    positions = np.arange(len(table.index))
    for color, round_ in zip(colors, table.columns):
        overall = source.loc[source["round"] == round_, "weights_remaining"].mean() * 100
        label = f"round {round_} ({overall:.3g}%)"
        axis.plot(positions, table[round_], marker="o", markersize=4, color=color, label=label)
    axis.set_yscale("log")
    axis.yaxis.set_major_formatter(FuncFormatter(lambda y, _: f"{y:.3g}"))
    # Label minor ticks (e.g. 20, 50) only when the axis spans less than two decades.
    axis.yaxis.set_minor_formatter(LogFormatter(labelOnlyBase=False, minor_thresholds=(2, 0.5)))
    crowded = len(positions) > 6
    names = [layer.removesuffix(".weight") for layer in table.index]
    axis.set_xticks(positions, names, rotation=45 if crowded else 0, ha="right" if crowded else "center")
    axis.set_xlabel("layer")
    axis.set_ylabel("weights remaining (%)")
    legend_below(figure, axis, fontsize=8)
    caption = "Percentage of weights remaining in each prunable layer after each round (overall in brackets)."
    return SvgFigure(name, caption, to_svg(figure, name), "layers", figure)


def difference_figure(table: pd.DataFrame, name: str) -> SvgFigure:
    """Ticket − other per level and comparison, with the interval each verdict read, the margin band and 0.

    ``table`` holds the cell's comparison rows (:func:`lthbench.report.stats.comparison_table`).
    Levels without an interval (not tested) are drawn as hollow markers.
    """
    levels = table[table["scope"] == LEVEL]
    groups = list(dict.fromkeys(levels["group_b"]))
    colors = _colors([TICKET, *(group for group in groups if group != DENSE)])  # as in the metric figures
    figure = _figure(HEIGHT * 1.6)
    axes = figure.subplots(2, 1, sharex=True)
    offsets = dict(zip(groups, np.linspace(-0.04, 0.04, len(groups)) if len(groups) > 1 else [0.0]))
    for axis, metric, label in ((axes[0], ACCURACY, "accuracy difference (pt)"),
                                (axes[1], ITERATION, "early-stop difference (iterations)")):
        rows = levels[levels["metric"] == metric]
        scale = 100 if metric == ACCURACY else 1
        margin = rows["margin"].max() * scale
        if np.isfinite(margin):
            axis.axhspan(-margin, margin, color="0.5", alpha=0.12, linewidth=0, label="± margin")
        axis.axhline(0, color="0.2", linewidth=0.8)
        for group, group_rows in rows.groupby("group_b", sort=False):
            x = group_rows["weights_remaining"].to_numpy() * 100 * (1 + offsets[group])
            diff, low, high = (group_rows[c].to_numpy(float) * scale for c in ("diff", "ci_low", "ci_high"))
            tested = np.isfinite(low)
            axis.errorbar(x[tested], diff[tested], yerr=[diff[tested] - low[tested], high[tested] - diff[tested]],
                          fmt="o", markersize=4, capsize=2, color=colors[group], label=f"vs {group}")
            axis.plot(x[~tested], diff[~tested], "o", markersize=4, markerfacecolor="none", color=colors[group])
        axis.set_ylabel(label, fontsize=9)
    _percent_axis(axes[1], levels["weights_remaining"].dropna().unique() * 100)
    axes[0].set_xlabel("")
    legend_below(figure, axes[0], fontsize=8)
    caption = ("Ticket − other at each level: points are the mean difference over seeds, bars the interval the "
               "verdict read (paired or Welch t, Bonferroni-adjusted over the levels); hollow points were not tested "
               "(too few seeds, censored or without spread); grey band: ± the equivalence margin. Accuracy on top, "
               "early-stop iteration below (below 0: the ticket stops earlier).")
    return SvgFigure(name, caption, to_svg(figure, name), "differences", figure)


def figure_set(rows: pd.DataFrame, records: dict[str, dict[str, Any]], name: str,
               random_mask: pd.DataFrame | None = None, comparisons: pd.DataFrame | None = None,
               references: dict[str, pd.DataFrame] | None = None, reference_label: str = "") -> list[SvgFigure]:
    """All figures of one cell; ``rows`` are its results rows, ``name`` a stable id for the SVG ids.

    ``random_mask`` holds the pruned ticket runs of the cell's random-mask
    control, if it has one: the metric figures draw them as the series
    ``random mask``. ``comparisons``, the cell's rows of the comparison
    table, adds the figure of the verdicts' intervals when any level is compared.
    ``references`` holds published ticket values by metric (see
    :func:`lthbench.report.reference.series`), labelled ``reference_label``.
    """
    done = rows[rows["status"] == "done"]
    if done[done["round"] > 0].empty:
        return []
    series = done
    if random_mask is not None:
        series = pd.concat([done, random_mask[random_mask["status"] == "done"].assign(initializer=RANDOM_MASK)])
    with matplotlib.rc_context(STYLE):
        figures = [
            metric_figure(series, metric, f"{name}-{suffix}", (references or {}).get(metric), reference_label)
            for metric, suffix in ((ACCURACY, "accuracy"), (ITERATION, "iteration"))
        ]
        if comparisons is not None and (comparisons["scope"] == LEVEL).any():
            figures.append(difference_figure(comparisons, f"{name}-differences"))
        return [*figures, curves_figure(done, records, f"{name}-curves"), layers_figure(done, records, f"{name}-layers")]
