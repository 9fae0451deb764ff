"""Statistics on ticket effects: the ticket against its controls and the dense network, per level.

For every cell (experiment, architecture, data set, training, pruner) and
every pruning round, the ticket (initializer ``original``) is compared with
each other initializer of the same round and with the dense network (round 0
of the same cell), on the test accuracy at early stop and on the early-stop
iteration. A cell whose pruner is a control of pruner ``P`` (its
``control_of``, from :meth:`lthbench.protocols.Pruner.mimics`, is ``P``; e.g.
Frankle & Carbin's random pruning: as many weights per layer as ``P``
removes, at random positions) lends its ticket runs to the cell of the same
experiment, architecture, data set and training pruned by ``P``: that cell's
ticket is compared with them as the group ``random mask``, round by round
(the two cells' levels of weights remaining match by construction), while the
control cell keeps its own comparisons. Only runs with status ``done`` count.
Differences are always ``ticket - other``.

Verdicts, in the paper's terms:

* ``winning ticket``: the ticket's accuracy is not below dense (the 95%
  Welch confidence interval of ticket - dense accuracy does not lie entirely
  below 0) and it does not learn later (the interval of ticket - dense
  early-stop iteration does not lie entirely above 0). Absence of evidence
  counts for the ticket here, as in Frankle & Carbin's definition
  ("matches"), so with few seeds the verdict says little: read it with the
  interval's width.
* ``ticket beats <control>``: the Holm-adjusted Welch p < 0.05 and the
  ticket's mean accuracy is higher; ``<control> beats ticket`` when it is
  lower; otherwise ``no difference from <control>``.
* ``not enough seeds``: fewer than :data:`MIN_SEEDS` runs in either group.

Reported beside the verdicts:

Each comparison also gets a paired t-test over the seeds both groups have
(``paired_p``, unadjusted): the groups of one seed share θ₀'s seed and the
data order, so pairing is the more powerful test. It is reported beside
Welch's test, which the verdicts use.

Two intervals of each difference are reported. The verdict uses Welch's
t interval (``ci_t_low``/``ci_t_high``, Welch-Satterthwaite degrees of
freedom), which keeps its 95% coverage with 3 seeds per group when the
accuracies are roughly normal. The seeded percentile bootstrap interval
(``ci_low``/``ci_high``) is reported as well, but with 3 seeds it is far
too narrow: resampling 3 values cannot show the spread of their mean (in a
simulation of 3 against 3 draws from one normal distribution it excluded 0
about 20% of the time, against the nominal 5%).
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from lthbench.config.settings import TICKET
from lthbench.run.plan import DENSE

RANDOM_MASK = "random mask"
ACCURACY = "early_stop_test_accuracy"
ITERATION = "early_stop_iteration"
METRICS = (ACCURACY, ITERATION)
SETTING_KEYS = ["experiment", "architecture", "dataset", "training"]
CELL_KEYS = ["cell_id", *SETTING_KEYS, "pruner"]
MIN_SEEDS = 3
ALPHA = 0.05
N_RESAMPLES = 2000
NOT_ENOUGH_SEEDS = "not enough seeds"
NO_VARIANCE = "no variance in either group"
STATS_COLUMNS = [
    *CELL_KEYS, "round", "weights_remaining", "metric", "group_a", "group_b", "n_a", "n_b",
    "mean_a", "mean_b", "std_a", "std_b", "diff", "ci_low", "ci_high", "ci_t_low", "ci_t_high", "welch_t", "welch_p",
    "mannwhitney_u", "mannwhitney_p", "p_holm", "hedges_g", "n_pairs", "paired_p", "note",
]
VERDICT_COLUMNS = [*CELL_KEYS, "round", "weights_remaining", "comparison", "verdict"]


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


def holm(p_values: Any) -> np.ndarray:
    """Holm-Bonferroni adjusted p-values of one family; NaN entries stay NaN and are not counted.

    scipy.stats.false_discovery_control offers only Benjamini-Hochberg/Yekutieli
    and statsmodels is not a dependency, so Holm's (1979) step-down is written
    here: with the m p-values sorted ascending, p_adj(i) = max_{j<=i} min(1, (m-j+1) p(j)).
    """
    p = np.asarray(p_values, dtype=float)
    adjusted = np.full_like(p, np.nan)
    valid = np.flatnonzero(~np.isnan(p))
    order = valid[np.argsort(p[valid], kind="stable")]
    scaled = (len(order) - np.arange(len(order))) * p[order]
    adjusted[order] = np.minimum(1.0, np.maximum.accumulate(scaled))
    return adjusted


def _mean_difference(x: np.ndarray, y: np.ndarray, axis: int = -1) -> np.ndarray:
    return np.mean(x, axis=axis) - np.mean(y, axis=axis)


def bootstrap_ci(a: np.ndarray, b: np.ndarray, seed: int = 0) -> tuple[float, float]:
    """95% percentile bootstrap CI of ``mean(a) - mean(b)`` (independent resampling, seeded).

    The percentile method is used because BCa's jackknife is unstable with the
    handful of seeds a benchmark has.
    """
    result = stats.bootstrap(
        (a, b), _mean_difference, n_resamples=N_RESAMPLES, method="percentile",
        vectorized=True, rng=np.random.default_rng(seed),
    )
    return float(result.confidence_interval.low), float(result.confidence_interval.high)


def compare(a: Any, b: Any, seed: int = 0) -> dict[str, Any]:
    """Descriptive statistics, Welch's t (with its 95% CI), Mann-Whitney U, Hedges' g and a bootstrap CI of ``a - b``."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    nan = float("nan")
    row = {
        "n_a": len(a), "n_b": len(b),
        "mean_a": np.mean(a) if len(a) else nan, "mean_b": np.mean(b) if len(b) else nan,
        "std_a": np.std(a, ddof=1) if len(a) > 1 else nan, "std_b": np.std(b, ddof=1) if len(b) > 1 else nan,
        "welch_t": nan, "welch_p": nan, "mannwhitney_u": nan, "mannwhitney_p": nan,
        "hedges_g": nan, "ci_low": nan, "ci_high": nan, "ci_t_low": nan, "ci_t_high": nan, "note": "",
    }
    row["diff"] = row["mean_a"] - row["mean_b"]
    if min(len(a), len(b)) < MIN_SEEDS:
        return {**row, "note": NOT_ENOUGH_SEEDS}
    row["ci_low"], row["ci_high"] = bootstrap_ci(a, b, seed)
    row["hedges_g"] = hedges_g(a, b)
    mannwhitney = stats.mannwhitneyu(a, b, alternative="two-sided")
    row["mannwhitney_u"], row["mannwhitney_p"] = float(mannwhitney.statistic), float(mannwhitney.pvalue)
    if np.ptp(a) == 0 and np.ptp(b) == 0:  # Welch's t is undefined without variance; the difference is exact
        return {**row, "ci_t_low": row["diff"], "ci_t_high": row["diff"], "note": NO_VARIANCE}
    with warnings.catch_warnings():
        # One group with identical values (e.g. every seed stopping at the same evaluation
        # step) makes scipy warn about precision loss; Welch's t is still well defined.
        warnings.filterwarnings("ignore", "Precision loss occurred", RuntimeWarning)
        welch = stats.ttest_ind(a, b, equal_var=False)
    row["welch_t"], row["welch_p"] = float(welch.statistic), float(welch.pvalue)
    interval = welch.confidence_interval(1 - ALPHA)
    row["ci_t_low"], row["ci_t_high"] = float(interval.low), float(interval.high)
    return row


def paired_t(a: pd.Series, b: pd.Series) -> tuple[int, float]:
    """Pairs and two-sided paired t-test p of ``a - b`` over the seeds (index) both have; NaN below 3 pairs.

    Ticket, controls and dense network of one seed share θ₀'s seed and the
    data order, so pairing them by seed removes the seed-to-seed spread that
    Welch's test has to carry. NaN too when every pair differs by the same
    amount (no variance).
    """
    if a.index.has_duplicates or b.index.has_duplicates:
        return 0, float("nan")
    seeds = a.index.intersection(b.index)
    d = np.asarray(a[seeds], dtype=float) - np.asarray(b[seeds], dtype=float)
    if len(d) < MIN_SEEDS or np.ptp(d) == 0:
        return len(d), float("nan")
    return len(d), float(stats.ttest_rel(a[seeds], b[seeds]).pvalue)


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


def comparison_table(frame: pd.DataFrame, controls: dict[Any, Any], seed: int = 0) -> pd.DataFrame:
    """Every comparison (see the module docstring) as one row of :data:`STATS_COLUMNS`.

    ``controls`` is :func:`random_mask_controls` of ``frame``. ``p_holm``
    adjusts ``welch_p`` within each family: one cell, metric and comparison,
    across its pruning rounds.
    """
    done = frame[frame["status"] == "done"]
    rows = []
    for keys, cell in done.groupby(CELL_KEYS, sort=False, dropna=False):
        dense = cell[cell["round"] == 0]
        control = controls.get(keys[0])
        random_mask = random_mask_runs(done, control)
        for round_, level in cell[cell["round"] > 0].groupby("round"):
            ticket = level[level["initializer"] == TICKET]
            if ticket.empty:
                continue
            others = [name for name in level["initializer"].unique() if name != TICKET]
            groups = [(name, level[level["initializer"] == name]) for name in others] + [(DENSE, dense)]
            if control is not None:
                groups.append((RANDOM_MASK, random_mask[random_mask["round"] == round_]))
            level_of = level["weights_remaining"].mean()
            where = {**dict(zip(CELL_KEYS, keys)), "round": round_, "weights_remaining": level_of}
            for metric in METRICS:
                for name, other in groups:
                    result = compare(ticket[metric].dropna(), other[metric].dropna(), seed)
                    result["n_pairs"], result["paired_p"] = paired_t(ticket.set_index("seed")[metric].dropna(),
                                                                     other.set_index("seed")[metric].dropna())
                    rows.append({**where, "metric": metric, "group_a": TICKET, "group_b": name, **result})
    table = pd.DataFrame(rows, columns=STATS_COLUMNS)
    families = table.groupby([*CELL_KEYS, "metric", "group_b"], sort=False, dropna=False)["welch_p"]
    table["p_holm"] = families.transform(holm)
    return table


def _dense_verdict(accuracy: pd.Series, iteration: pd.Series) -> str:
    """``winning ticket`` unless the Welch intervals show lower accuracy or later learning than dense."""
    if NOT_ENOUGH_SEEDS in (accuracy["note"], iteration["note"]):
        return NOT_ENOUGH_SEEDS
    failures = []
    if accuracy["ci_t_high"] < 0:
        failures.append("lower accuracy")
    if iteration["ci_t_low"] > 0:
        failures.append("learns later")
    return "not a winning ticket: " + " and ".join(failures) if failures else "winning ticket"


def _control_verdict(accuracy: pd.Series) -> str:
    """Whether the ticket's accuracy beats, trails or matches one control's."""
    control = accuracy["group_b"]
    if pd.isna(accuracy["p_holm"]):
        return accuracy["note"] or NOT_ENOUGH_SEEDS
    if accuracy["p_holm"] >= ALPHA:
        return f"no difference from {control}"
    return f"ticket beats {control}" if accuracy["diff"] > 0 else f"{control} beats ticket"


def verdicts(table: pd.DataFrame) -> pd.DataFrame:
    """One verdict per cell, round and comparison (``vs dense``, ``vs <control>``)."""
    rows = []
    for keys, level in table.groupby([*CELL_KEYS, "round"], sort=False, dropna=False):
        by = {(row["metric"], row["group_b"]): row for _, row in level.iterrows()}
        where = {**dict(zip([*CELL_KEYS, "round"], keys)), "weights_remaining": level["weights_remaining"].iloc[0]}
        for (metric, group), row in by.items():
            if metric != ACCURACY:
                continue
            verdict = _dense_verdict(row, by[(ITERATION, DENSE)]) if group == DENSE else _control_verdict(row)
            rows.append({**where, "comparison": f"vs {group}", "verdict": verdict})
    return pd.DataFrame(rows, columns=VERDICT_COLUMNS)
