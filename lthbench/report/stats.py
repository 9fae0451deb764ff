"""Statistics on ticket effects: the ticket against its controls and the dense network, with one rule per verdict.

What is compared. For every cell (experiment, architecture, data set,
training, pruner) and every pruning round, the ticket (initializer
``original``) is compared with each other initializer of the same round
(``reinit``, rewind points), with the dense network (round 0 of the same
cell) and, where the cell has one, with its random mask: a cell whose pruner
is a control of pruner ``P`` (its ``control_of``, from
:meth:`lthbench.protocols.Pruner.mimics`, is ``P``; e.g. Frankle & Carbin's
random pruning, as many weights per layer as ``P`` removes at random
positions) lends its ticket runs to the cell of the same experiment,
architecture, data set and training pruned by ``P`` as the group ``random
mask``, round by round; the control cell keeps its own comparisons. Metrics:
the test accuracy at early stop (higher is better) and the early-stop
iteration (lower is better). Differences are always ``ticket - other``. Only
runs with status ``done`` count. Several runs of one group and seed (draws)
are averaged within the seed first: the seed is the unit, not the run.

The primary test. The runs of one seed share θ₀'s seed and the data order,
and the ticket and its controls at a level share the mask they were pruned
by (a random mask, the counts per layer), so the groups are paired by seed:
the test is the paired t-test of the per-seed differences when at least
:data:`MIN_SEEDS` seeds have both groups (seeds without a partner are left
out and named in the note), and Welch's t-test of the two groups otherwise.
The interval is the t interval of that test.

Multiplicity. A family is the levels of one comparison on one metric in one
cell; its size ``m`` is the number of levels tested. Every p-value,
interval and equivalence test the verdict reads is Bonferroni-adjusted over
the family (``statsmodels.stats.multitest.multipletests``): the interval has
confidence 1 - α/m, so the adjusted p is below α exactly when that interval
excludes 0, and the verdict can never contradict the interval printed beside
it. Holm's step-down rejects a little more often, but no confidence interval
agrees with its decisions (the compatible simultaneous intervals of
Strassburger & Bretz, 2008, shrink to a bound at 0 for every rejected
level), so a Holm verdict could disagree with any interval shown: Bonferroni
is used for the test, the interval and the equivalence test alike.

Verdicts, in this order:

* ``not enough seeds``: fewer than :data:`MIN_SEEDS` seeds in a group.
* ``untestable``: the early-stop iteration of a run of either group is its
  last evaluation (censored: it was still improving, so its true early stop
  is unknown), or the differences have no spread (the t-test is undefined).
* ``equivalent``: two one-sided tests (TOST, ``statsmodels``
  ``ttost_paired`` / ``ttost_ind``), adjusted like the p-value, show the
  difference within ± the margin: their counterpart interval (confidence
  1 - 2α/m) lies inside (-margin, +margin). This comes first: a difference
  shown to be smaller than the declared margin is one that does not matter,
  even where the interval also excludes 0 (the note says so).
* ``better`` / ``worse``: the interval excludes 0 on the side the ticket
  is better (higher accuracy, earlier stop) or worse.
* ``inconclusive``: none of these; never read as "no difference". Beside it
  stands the number of seeds that would detect a difference of one margin
  with 80% power (:func:`seeds_needed`; an equivalence test at a true
  difference of 0 needs about as many). Every tested row also has the
  smallest difference its design detects with 80% power given the observed
  spread (:func:`detectable_effect` times ``sd_tested``, the SD of the paired
  differences or the pooled SD of Welch's groups).

Matching dense (Frankle & Carbin's "winning ticket") is a non-inferiority
test on the rows against the dense network: the ticket's accuracy is not
lower than dense by more than the accuracy margin, and its early stop not
later by more than the iteration margin (each the one-sided test of TOST,
adjusted like the rest). A level gets the winning-ticket mark when both hold;
a control cell never does: its "ticket" is not a pruned θ₀ ticket.

Across levels: besides the per-level rows, one ``overall`` row per cell,
comparison and metric tests the mean of the per-level values over the levels
that ``[report] overall_weights_remaining`` selects (default: every pruned
level), per seed, with the same test, rule and vocabulary (one test: no
adjustment). Only seeds with runs at every selected level count there.
"""

from __future__ import annotations

import functools
import math
import warnings
from collections.abc import Iterator
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats
from statsmodels.stats.multitest import multipletests
from statsmodels.stats.power import TTestIndPower, TTestPower
from statsmodels.stats.weightstats import ttost_ind, ttost_paired

from lthbench.config.settings import TICKET, Report
from lthbench.run.plan import DENSE

RANDOM_MASK = "random mask"
ACCURACY = "early_stop_test_accuracy"
ITERATION = "early_stop_iteration"
METRICS = (ACCURACY, ITERATION)
#: +1 where a higher value is better, -1 where lower is.
DIRECTION = {ACCURACY: 1, ITERATION: -1}
SETTING_KEYS = ["experiment", "architecture", "dataset", "training"]
CELL_KEYS = ["cell_id", *SETTING_KEYS, "pruner"]
MIN_SEEDS = 3
ALPHA = 0.05
POWER = 0.8
#: A default iteration margin is this fraction of the cell's training length.
ITERATION_MARGIN_FRACTION = 0.1
BETTER, WORSE, EQUIVALENT, INCONCLUSIVE, UNTESTABLE = "better", "worse", "equivalent", "inconclusive", "untestable"
NOT_ENOUGH_SEEDS = "not enough seeds"
VERDICTS = (BETTER, WORSE, EQUIVALENT, INCONCLUSIVE, UNTESTABLE, NOT_ENOUGH_SEEDS)
PAIRED, WELCH = "paired", "Welch"
LEVEL, OVERALL = "level", "overall"
ADJUSTMENT = "Bonferroni"
CENSORED = "early stop censored (a run's lowest validation loss was at its last evaluation)"
NO_SPREAD = "the differences have no spread: the t-test is undefined"
WITHIN_MARGIN = "the interval excludes 0, but the difference lies within the margin"
#: ``lthbench report --stats-csv``: the contract's columns, then the ones that explain them.
STATS_COLUMNS = [
    *CELL_KEYS, "round", "weights_remaining", "metric", "group_a", "group_b", "scope", "n_a", "n_b",
    "mean_a", "mean_b", "diff", "ci_low", "ci_high", "adjustment", "p_value", "p_adjusted", "margin", "tost_p",
    "verdict", "detectable_difference", "seeds_needed", "note",
    "test", "family_size", "confidence", "better_when", "sd_a", "sd_b", "sd_diff", "sd_tested", "hedges_g",
    "tost_p_unadjusted", "tost_ci_low", "tost_ci_high", "noninferiority_p_unadjusted", "noninferiority_p", "noninferior",
    "levels", "level_low", "level_high", "control_cell",
]


def hedges_g(a: np.ndarray, b: np.ndarray) -> float:
    """Hedges' g of ``a - b``: Cohen's d with the pooled SD, times the small-sample correction.

    scipy.stats has no effect-size function, so it is written here:
    d = (mean_a - mean_b) / s_p with s_p² = ((n_a-1)s_a² + (n_b-1)s_b²) / (n_a+n_b-2),
    g = J·d with J = 1 - 3 / (4(n_a+n_b) - 9) (Hedges & Olkin 1985; Borenstein et al.,
    Introduction to Meta-Analysis, 2009, eqs. 4.18-4.22). NaN when the pooled SD is 0.
    """
    n_a, n_b = len(a), len(b)
    pooled_var = ((n_a - 1) * np.var(a, ddof=1) + (n_b - 1) * np.var(b, ddof=1)) / (n_a + n_b - 2)
    if pooled_var == 0:
        return float("nan")
    correction = 1 - 3 / (4 * (n_a + n_b) - 9)
    return float(correction * (np.mean(a) - np.mean(b)) / np.sqrt(pooled_var))


def adjust(p_values: Any) -> np.ndarray:
    """Bonferroni-adjusted p-values of one family (``multipletests``); NaN entries stay NaN and are not counted."""
    p = np.asarray(p_values, dtype=float)
    adjusted = np.full_like(p, np.nan)
    valid = ~np.isnan(p)
    if valid.any():
        adjusted[valid] = multipletests(p[valid], alpha=ALPHA, method="bonferroni")[1]
    return adjusted


@functools.cache
def detectable_effect(n_a: int, n_b: int, paired: bool, family_size: int) -> float:
    """The standardized difference the verdict's test finds with 80% power (``statsmodels.stats.power``).

    The test is the paired t on ``n_a`` differences, or Welch's on groups of
    ``n_a`` and ``n_b`` (as the pooled t, which ``TTestIndPower`` models),
    reaching ``better`` or ``worse`` in the true direction: a one-sided test
    at α/(2m), m = ``family_size``. Its two-sided form adds only the chance of
    a rejection in the wrong direction, which scipy's noncentral t returns as
    NaN at these small α. Cached: a report asks for few distinct designs.
    """
    alpha = ALPHA / (2 * family_size)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if paired:
            effect = TTestPower().solve_power(nobs=n_a, alpha=alpha, power=POWER, alternative="larger")
        else:
            effect = TTestIndPower().solve_power(nobs1=n_a, ratio=n_b / n_a, alpha=alpha, power=POWER,
                                                 alternative="larger")
    return float(np.squeeze(effect))


def seeds_needed(effect: float, paired: bool, family_size: int) -> float:
    """The fewest seeds (per group) whose test finds a standardized difference ``effect`` with 80% power.

    The same test as :func:`detectable_effect`, solved for the number of
    seeds (``solve_power``) and rounded up, at least :data:`MIN_SEEDS`; NaN
    when ``effect`` is not positive.
    """
    if not effect > 0:
        return math.nan
    alpha = ALPHA / (2 * family_size)
    analysis = TTestPower() if paired else TTestIndPower()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        n = float(np.squeeze(analysis.solve_power(effect_size=effect, alpha=alpha, power=POWER, alternative="larger")))
    # solve_power's roots are accurate to about 1e-6: an integer solution must not round up to the next seed.
    return float(max(MIN_SEEDS, math.ceil(n - 1e-3))) if np.isfinite(n) else math.nan


def compare_groups(a: pd.Series, b: pd.Series, *, margin: float, family_size: int = 1,
                    direction: int = 1, censored: bool = False) -> dict[str, Any]:
    """The test of ``a - b`` (per-seed values, indexed by seed) for a family of ``family_size`` tests, before adjustment.

    Paired by seed where :data:`MIN_SEEDS` seeds have both groups, Welch
    otherwise. The row has the unadjusted p-values of the test, of TOST with
    ± ``margin`` and of the non-inferiority side of TOST (``direction``: +1
    where higher values are better, -1 where lower), the intervals at the
    family's confidence, and the detectable difference; its ``verdict`` is set only when
    no test applies (``not enough seeds``, or ``untestable`` when
    ``censored`` or without spread); :func:`judge` decides the others.
    """
    x, y, paired, dropped = _align(a, b)
    nan = math.nan
    row: dict[str, Any] = {
        "test": PAIRED if paired else WELCH, "n_a": len(x), "n_b": len(y), "family_size": family_size,
        "mean_a": x.mean() if len(x) else nan, "mean_b": y.mean() if len(y) else nan,
        "sd_a": x.std(ddof=1) if len(x) > 1 else nan, "sd_b": y.std(ddof=1) if len(y) > 1 else nan,
        "sd_diff": (x - y).std(ddof=1) if paired else nan, "margin": margin,
        "better_when": "higher" if direction > 0 else "lower",
        "adjustment": f"{ADJUSTMENT} over {family_size}" if family_size > 1 else "none (one test)",
        "confidence": 1 - ALPHA / family_size, "verdict": "",
    }
    row["diff"] = row["mean_a"] - row["mean_b"]
    notes = [f"seeds without a partner left out: {', '.join(map(str, dropped))}"] if dropped else []
    untested = _untested(x, y, paired, censored)
    if untested:
        verdict, reason = untested
        return {**row, "verdict": verdict, "note": "; ".join(filter(None, [reason, *notes]))}
    with warnings.catch_warnings():
        # One group of identical values (every seed stopping at the same evaluation) makes scipy
        # warn about precision loss; the tests are still well defined.
        warnings.filterwarnings("ignore", "Precision loss occurred", RuntimeWarning)
        test = stats.ttest_rel(x, y) if paired else stats.ttest_ind(x, y, equal_var=False)
        tost = ttost_paired(x, y, -margin, margin) if paired else ttost_ind(x, y, -margin, margin, usevar="unequal")
    interval = test.confidence_interval(row["confidence"])
    counterpart = test.confidence_interval(1 - 2 * ALPHA / family_size)
    lower_p, upper_p = float(tost[1][1]), float(tost[2][1])  # H0: diff <= -margin; H0: diff >= +margin
    pooled = math.sqrt(((len(x) - 1) * row["sd_a"] ** 2 + (len(y) - 1) * row["sd_b"] ** 2) / (len(x) + len(y) - 2))
    sd = row["sd_diff"] if paired else pooled
    return {
        **row, "note": "; ".join(notes), "hedges_g": hedges_g(x, y),
        "ci_low": float(interval.low), "ci_high": float(interval.high), "p_value": float(test.pvalue),
        "tost_p_unadjusted": float(tost[0]), "tost_ci_low": float(counterpart.low),
        "tost_ci_high": float(counterpart.high),
        "noninferiority_p_unadjusted": lower_p if direction > 0 else upper_p,
        "sd_tested": sd, "detectable_difference": detectable_effect(len(x), len(y), paired, family_size) * sd,
    }


def _align(a: pd.Series, b: pd.Series) -> tuple[np.ndarray, np.ndarray, bool, list[Any]]:
    """The two samples as tested: the seeds both have when they are enough to pair (and the seeds left out), else all."""
    seeds = a.index.intersection(b.index)
    if len(seeds) >= MIN_SEEDS:
        return (np.asarray(a[seeds], dtype=float), np.asarray(b[seeds], dtype=float), True,
                sorted(set(a.index) ^ set(b.index)))
    return np.asarray(a, dtype=float), np.asarray(b, dtype=float), False, []


def _untested(x: np.ndarray, y: np.ndarray, paired: bool, censored: bool) -> tuple[str, str] | None:
    """``(verdict, reason)`` when no test applies to these samples, else None."""
    if min(len(x), len(y)) < MIN_SEEDS:
        return NOT_ENOUGH_SEEDS, ""
    if censored:
        return UNTESTABLE, CENSORED
    if (np.ptp(x - y) if paired else max(np.ptp(x), np.ptp(y))) == 0:
        return UNTESTABLE, NO_SPREAD
    return None


def judge(table: pd.DataFrame) -> pd.DataFrame:
    """Adjust each family's p-values (:func:`adjust`) and give every tested row its verdict.

    A family is the rows of one cell, metric, comparison and scope. The
    verdict reads the row's own interval (``ci_low``/``ci_high``, already at
    the family's confidence) and its adjusted TOST p; ``noninferior`` is
    the adjusted non-inferiority p below α. Inconclusive rows get ``seeds_needed``.
    """
    table = table.copy()
    families = table.groupby([*CELL_KEYS, "metric", "group_b", "scope"], sort=False, dropna=False)
    for raw, adjusted in (("p_value", "p_adjusted"), ("tost_p_unadjusted", "tost_p"),
                          ("noninferiority_p_unadjusted", "noninferiority_p")):
        table[adjusted] = families[raw].transform(adjust)
    tested = table["verdict"] == ""
    table["noninferior"] = (table["noninferiority_p"] < ALPHA).where(tested, None)
    sign = table["metric"].map(DIRECTION)
    excludes_zero = (table["ci_low"] > 0) | (table["ci_high"] < 0)
    ticket_side = np.where(table["ci_low"] > 0, 1, -1) == sign
    equivalent = table["tost_p"] < ALPHA
    decided = np.select([equivalent, excludes_zero & ticket_side, excludes_zero], [EQUIVALENT, BETTER, WORSE],
                        INCONCLUSIVE)
    table["verdict"] = table["verdict"].where(~tested, decided)
    within = tested & equivalent & excludes_zero
    table.loc[within, "note"] = [f"{WITHIN_MARGIN}; {note}" if note else WITHIN_MARGIN
                                 for note in table.loc[within, "note"]]
    undecided = table.index[table["verdict"] == INCONCLUSIVE]
    table.loc[undecided, "seeds_needed"] = [
        seeds_needed(row.margin / row.sd_tested, row.test == PAIRED, row.family_size)
        for row in table.loc[undecided].itertuples()
    ]
    return table


def random_mask_controls(frame: pd.DataFrame) -> dict[Any, Any]:
    """The cell id of each control cell, keyed by the cell id of the cell pruned by the pruner it is a control of.

    The two cells share experiment, architecture, data set and training, and
    the reference cell's pruner label is the control's ``control_of``; a
    control without such a cell is left out.
    """
    cells = frame.drop_duplicates("cell_id").to_dict("records")
    cell_of = {(*(cell[key] for key in SETTING_KEYS), cell["pruner"]): cell["cell_id"] for cell in cells}
    controls = {}
    for cell in cells:
        if pd.isna(cell["control_of"]):
            continue
        reference = cell_of.get((*(cell[key] for key in SETTING_KEYS), cell["control_of"]))
        if reference is not None:
            controls.setdefault(reference, cell["cell_id"])
    return controls


def random_mask_runs(frame: pd.DataFrame, control: Any) -> pd.DataFrame:
    """The pruned ticket runs of the control cell ``control``: the group ``random mask`` of the cell it controls."""
    return frame[(frame["cell_id"] == control) & (frame["initializer"] == TICKET) & (frame["round"] > 0)]


def _per_seed(runs: pd.DataFrame, metric: str) -> tuple[dict[Any, pd.Series], dict[Any, bool]]:
    """By round: the metric per seed (draws of one seed averaged), and whether any of those runs is censored."""
    valid = runs[runs[metric].notna()]
    censored = (valid["early_stop_iteration"] >= valid["iterations"]) & (metric == ITERATION)
    means = valid.groupby(["round", "seed"])[metric].mean()
    by_round = {round_: series.droplevel("round") for round_, series in means.groupby(level="round")}
    return by_round, censored.groupby(valid["round"]).any().to_dict()


def _margin(metric: str, cell: pd.DataFrame, report: Report) -> float:
    """The metric's margin: the declared one, or for iterations a tenth of the cell's training length."""
    if metric == ACCURACY:
        return report.accuracy_margin
    if report.iteration_margin is not None:
        return float(report.iteration_margin)
    return ITERATION_MARGIN_FRACTION * float(cell["iterations"].max())


def _groups(done: pd.DataFrame, cell: pd.DataFrame, control: Any) -> dict[str, pd.DataFrame]:
    """The runs of every group the cell's ticket is compared with: dense, the other initializers, its random mask."""
    pruned = cell[cell["round"] > 0]
    groups = {DENSE: cell[cell["round"] == 0]}
    groups.update({name: runs for name, runs in pruned.groupby("initializer", sort=False) if name != TICKET})
    if control is not None:
        groups[RANDOM_MASK] = random_mask_runs(done, control)
    return groups


def _samples(frame: pd.DataFrame, controls: dict[Any, Any], report: Report) -> Iterator[dict[str, Any]]:
    """Every comparison before its test: where it is, its two per-seed series and whether either is censored."""
    done = frame[frame["status"] == "done"]
    control_cells = set(frame.loc[frame["control_of"].notna(), "cell_id"])
    low, high = report.overall_weights_remaining
    for keys, cell in done.groupby(CELL_KEYS, sort=False, dropna=False):
        ticket = cell[(cell["round"] > 0) & (cell["initializer"] == TICKET)]
        levels = ticket.groupby("round")["weights_remaining"].mean()
        pooled = levels[(levels >= low) & (levels <= high)]
        where = {**dict(zip(CELL_KEYS, keys)), "group_a": TICKET, "control_cell": keys[0] in control_cells}
        for name, other in _groups(done, cell, controls.get(keys[0])).items():
            for metric in METRICS:
                common = {**where, "metric": metric, "group_b": name, "margin": _margin(metric, cell, report)}
                (a_by, a_censored), (b_by, b_censored) = _per_seed(ticket, metric), _per_seed(other, metric)
                empty = pd.Series(dtype=float)
                by_level = {}
                for round_, level in levels.items():
                    b_round = 0 if name == DENSE else round_
                    sample = (a_by.get(round_, empty), b_by.get(b_round, empty),
                              a_censored.get(round_, False) or b_censored.get(b_round, False))
                    by_level[round_] = sample
                    yield {**common, "scope": LEVEL, "round": round_, "weights_remaining": level, "a": sample[0],
                           "b": sample[1], "censored": sample[2], "levels": 1, "level_low": level, "level_high": level}
                if not pooled.empty:
                    chosen = [by_level[round_] for round_ in pooled.index]
                    yield {**common, "scope": OVERALL, "round": math.nan, "weights_remaining": math.nan,
                           "a": _level_mean([a for a, _, _ in chosen]), "b": _level_mean([b for _, b, _ in chosen]),
                           "censored": any(censored for _, _, censored in chosen), "levels": len(chosen),
                           "level_low": float(pooled.min()), "level_high": float(pooled.max())}


def _level_mean(series: list[pd.Series]) -> pd.Series:
    """Per seed, the mean over levels of per-seed values; only seeds present at every level."""
    return pd.concat(series, axis=1).dropna().mean(axis=1)


def comparison_table(frame: pd.DataFrame, controls: dict[Any, Any], report: Report | None = None) -> pd.DataFrame:
    """Every comparison (see the module docstring) as one row of :data:`STATS_COLUMNS`, its verdict included.

    ``controls`` is :func:`random_mask_controls` of ``frame``; ``report`` the
    ``[report]`` settings (defaults when None). The level rows of one cell,
    metric and comparison form a family whose size is the number of them
    that are tested; each overall row is a family of one.
    """
    report = report or Report()
    samples = list(_samples(frame, controls, report))
    families = [(*(s[key] for key in CELL_KEYS), s["metric"], s["group_b"], s["scope"]) for s in samples]
    sizes: dict[tuple, int] = {}
    for family, sample in zip(families, samples):
        x, y, paired, _ = _align(sample["a"], sample["b"])
        sizes[family] = sizes.get(family, 0) + (_untested(x, y, paired, sample["censored"]) is None)
    rows = []
    for family, sample in zip(families, samples):
        result = compare_groups(sample["a"], sample["b"], margin=sample["margin"], family_size=max(sizes[family], 1),
                                direction=DIRECTION[sample["metric"]], censored=sample["censored"])
        rows.append({**{k: v for k, v in sample.items() if k not in ("a", "b", "censored")}, **result})
    table = pd.DataFrame(rows, columns=STATS_COLUMNS).astype({"round": "Int64", "n_a": int, "n_b": int,
                                                              "family_size": int, "levels": int})
    return judge(table)


def winning_tickets(table: pd.DataFrame) -> pd.DataFrame:
    """Per cell and level (and overall), whether the ticket matches dense: non-inferior in accuracy and early stop.

    Columns ``cell_id``, ``scope``, ``round``, ``winning_ticket`` (bool;
    always False for a control cell) and ``reason`` (why not, "" when it is).
    """
    dense = table[table["group_b"] == DENSE]
    rows = []
    for (cell_id, scope, round_), level in dense.groupby(["cell_id", "scope", "round"], sort=False, dropna=False):
        by_metric = level.set_index("metric")
        reasons = []
        for metric, what in ((ACCURACY, "accuracy not shown within the margin below dense"),
                             (ITERATION, "early stop not shown within the margin after dense")):
            row = by_metric.loc[metric] if metric in by_metric.index else None
            if row is None or row["verdict"] in (NOT_ENOUGH_SEEDS, UNTESTABLE):
                reasons.append(f"{'accuracy' if metric == ACCURACY else 'early stop'}: "
                               f"{'no runs' if row is None else row['verdict']}")
            elif not row["noninferior"]:
                reasons.append(what)
        control = bool(level["control_cell"].iloc[0])
        if control:
            reasons = ["a control cell has no ticket of its own"]
        rows.append({"cell_id": cell_id, "scope": scope, "round": round_, "winning_ticket": not reasons,
                     "reason": "; ".join(reasons)})
    return pd.DataFrame(rows, columns=["cell_id", "scope", "round", "winning_ticket", "reason"])
