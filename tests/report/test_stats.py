"""Statistics on ticket effects: verdicts on frames of known truth, their consistency, coverage and statsmodels' numbers."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats as scipy_stats
from statsmodels.stats.multitest import multipletests
from statsmodels.stats.weightstats import ttost_paired
from helpers.synthetic_results import write_synthetic_results

from lthbench.config.settings import Report
from lthbench.report.results import read_folder, tidy_frame
from lthbench.report.stats import (
    ACCURACY,
    ALPHA,
    BETTER,
    EQUIVALENT,
    INCONCLUSIVE,
    ITERATION,
    NOT_ENOUGH_SEEDS,
    OVERALL,
    RANDOM_MASK,
    UNTESTABLE,
    VERDICTS,
    WORSE,
    adjust,
    compare_groups,
    comparison_table,
    detectable_effect,
    hedges_g,
    random_mask_controls,
    seeds_needed,
    winning_tickets,
)

GOLDEN_STORE = Path(__file__).parents[1] / "golden" / "store"
ITERATIONS = 10_000
CELL = {"cell_id": "c1", "experiment": "lenet", "architecture": "lenet_300_100", "dataset": "mnist", "training": "",
        "pruner": "layerwise_magnitude", "status": "done", "iterations": ITERATIONS, "control_of": None}


def _frame(rng: np.random.Generator, *, ticket: float = 0.97, reinit: float = 0.97, dense: float = 0.97,
           spread: float = 0.002, ticket_stop: float = 3000, reinit_stop: float = 3000, dense_stop: float = 3000,
           stop_spread: float = 100, seeds: int = 5, rounds: int = 3) -> pd.DataFrame:
    """A done cell: per seed a dense run and, per round, ticket and reinit runs, each with its own normal noise."""
    rows = []
    for seed in range(seeds):
        rows.append({"initializer": "dense", "round": 0, "seed": seed, "weights_remaining": 1.0,
                     ACCURACY: dense + rng.normal(0, spread), ITERATION: dense_stop + rng.normal(0, stop_spread)})
        for round_ in range(1, rounds + 1):
            for name, accuracy, stop in (("original", ticket, ticket_stop), ("reinit", reinit, reinit_stop)):
                rows.append({"initializer": name, "round": round_, "seed": seed, "weights_remaining": 0.8**round_,
                             ACCURACY: accuracy + rng.normal(0, spread), ITERATION: stop + rng.normal(0, stop_spread)})
    return pd.DataFrame(rows).assign(**CELL)


def _rows(table: pd.DataFrame, group: str, metric: str, scope: str | None = None) -> pd.DataFrame:
    rows = table[(table["group_b"] == group) & (table["metric"] == metric)]
    return rows if scope is None else rows[rows["scope"] == scope]


# ---------------------------------------------------------------- known truth

def test_a_real_effect_is_better_at_every_level_and_overall():
    frame = _frame(np.random.default_rng(1), ticket=0.975, reinit=0.95, ticket_stop=2000, reinit_stop=4000)
    table = comparison_table(frame, {})
    for metric in (ACCURACY, ITERATION):
        rows = _rows(table, "reinit", metric)
        assert list(rows["scope"]) == ["level"] * 3 + [OVERALL]
        assert set(rows["verdict"]) == {BETTER}
    assert (_rows(table, "reinit", ACCURACY)["ci_low"] > 0).all()
    assert (_rows(table, "reinit", ITERATION)["ci_high"] < 0).all()  # earlier is better


def test_no_effect_with_a_tight_spread_is_equivalent():
    frame = _frame(np.random.default_rng(2), spread=0.0005, stop_spread=20)
    table = comparison_table(frame, {})
    for metric in (ACCURACY, ITERATION):
        assert set(_rows(table, "reinit", metric)["verdict"]) == {EQUIVALENT}
        assert set(_rows(table, "dense", metric)["verdict"]) == {EQUIVALENT}


def test_no_effect_with_a_wide_spread_is_inconclusive_with_a_seeds_hint():
    frame = _frame(np.random.default_rng(3), spread=0.01, stop_spread=1500, seeds=3)
    table = comparison_table(frame, {})
    rows = _rows(table, "reinit", ACCURACY)
    assert set(rows["verdict"]) == {INCONCLUSIVE}
    assert (rows["ci_low"] < 0).all() and (rows["ci_high"] > 0).all() and (rows["tost_p"] >= ALPHA).all()
    assert (rows["detectable_difference"] > rows["margin"]).all()  # 3 seeds cannot see a difference of one margin
    assert (rows["seeds_needed"] > 3).all()
    # with that many seeds and the observed spread, the design detects a difference of one margin
    for row in rows.itertuples():
        effect = detectable_effect(int(row.seeds_needed), int(row.seeds_needed), True, row.family_size)
        assert effect * row.sd_tested <= row.margin
        smaller = detectable_effect(int(row.seeds_needed) - 1, int(row.seeds_needed) - 1, True, row.family_size)
        assert smaller * row.sd_tested > row.margin or row.seeds_needed == 3


def test_a_better_control_makes_the_ticket_worse():
    frame = _frame(np.random.default_rng(4), ticket=0.95, reinit=0.97, ticket_stop=4000, reinit_stop=2000)
    table = comparison_table(frame, {})
    for metric in (ACCURACY, ITERATION):
        assert set(_rows(table, "reinit", metric)["verdict"]) == {WORSE}
    assert (_rows(table, "reinit", ACCURACY)["ci_high"] < 0).all()
    assert (_rows(table, "reinit", ITERATION)["ci_low"] > 0).all()


def test_a_censored_early_stop_is_untestable_and_accuracy_still_tested():
    frame = _frame(np.random.default_rng(5), ticket=0.975, reinit=0.95)
    frame.loc[(frame["initializer"] == "reinit") & (frame["round"] == 2) & (frame["seed"] == 0), ITERATION] = ITERATIONS
    table = comparison_table(frame, {})
    level_two = _rows(table, "reinit", ITERATION, "level").set_index("round").loc[2]
    assert level_two["verdict"] == UNTESTABLE and "censored" in level_two["note"] and math.isnan(level_two["ci_low"])
    assert _rows(table, "reinit", ITERATION, OVERALL)["verdict"].item() == UNTESTABLE
    tested = _rows(table, "reinit", ITERATION, "level")
    assert set(tested.loc[tested["round"] != 2, "family_size"]) == {2}  # the untestable level is not in the family
    assert set(_rows(table, "reinit", ACCURACY)["verdict"]) == {BETTER}


def test_fewer_than_the_minimum_seeds_is_not_enough_seeds():
    table = comparison_table(_frame(np.random.default_rng(6), ticket=0.975, reinit=0.95, seeds=2), {})
    assert set(table["verdict"]) == {NOT_ENOUGH_SEEDS}
    assert table["ci_low"].isna().all() and table["p_value"].isna().all()
    assert table["diff"].notna().all()


def test_draws_of_one_seed_are_averaged_not_counted_as_seeds():
    frame = _frame(np.random.default_rng(7), seeds=3)
    second_draw = frame[frame["initializer"] == "reinit"].assign(**{ACCURACY: lambda f: f[ACCURACY] + 0.001})
    table = comparison_table(pd.concat([frame, second_draw]), {})
    rows = _rows(table, "reinit", ACCURACY, "level")
    assert set(rows["n_b"]) == {3} and set(rows["test"]) == {"paired"}
    single = _rows(comparison_table(frame, {}), "reinit", ACCURACY, "level")
    np.testing.assert_allclose(rows["mean_b"], single["mean_b"] + 0.0005)


def test_unpaired_seeds_fall_back_to_welch():
    frame = _frame(np.random.default_rng(8), seeds=6, ticket=0.975, reinit=0.95)
    frame = frame[~((frame["initializer"] == "reinit") & (frame["seed"] < 4))]  # two seeds in common
    frame = frame[~((frame["initializer"] == "original") & (frame["seed"] >= 4))]
    rows = _rows(comparison_table(frame, {}), "reinit", ACCURACY, "level")
    assert set(rows["test"]) == {"Welch"} and set(rows["n_a"]) == {4} and set(rows["n_b"]) == {2}
    assert set(rows["verdict"]) == {NOT_ENOUGH_SEEDS}


def test_the_winning_ticket_is_non_inferiority_against_dense():
    frame = _frame(np.random.default_rng(9), ticket=0.97, dense=0.971, ticket_stop=2500, dense_stop=3000,
                   spread=0.0005, stop_spread=50)
    winners = winning_tickets(comparison_table(frame, {}))
    assert winners["winning_ticket"].all() and (winners["reason"] == "").all()
    lower = _frame(np.random.default_rng(9), ticket=0.95, dense=0.97, spread=0.0005, stop_spread=50)
    winners = winning_tickets(comparison_table(lower, {}))
    assert not winners["winning_ticket"].any()
    assert set(winners["reason"]) == {"accuracy not shown within the margin below dense"}


def test_a_censored_dense_network_awards_no_winning_ticket():
    frame = _frame(np.random.default_rng(10), spread=0.0005, stop_spread=50)
    frame.loc[frame["initializer"] == "dense", ITERATION] = ITERATIONS  # every dense run still improving at the end
    winners = winning_tickets(comparison_table(frame, {}))
    assert not winners["winning_ticket"].any() and set(winners["reason"]) == {"early stop: untestable"}


def test_a_control_cell_gets_no_winning_ticket(tmp_path):
    frame = tidy_frame([read_folder(write_synthetic_results(tmp_path / "r", random_control="random"))])
    table = comparison_table(frame, random_mask_controls(frame))
    winners = winning_tickets(table)
    control = frame.loc[frame["pruner"] == "random", "cell_id"].iloc[0]
    assert not winners.loc[winners["cell_id"] == control, "winning_ticket"].any()
    assert winners.loc[winners["cell_id"] != control, "winning_ticket"].any()


def test_the_overall_range_comes_from_the_report_settings():
    frame = _frame(np.random.default_rng(11), rounds=4)
    every = _rows(comparison_table(frame, {}), "reinit", ACCURACY, OVERALL).iloc[0]
    assert (every["levels"], every["level_high"], every["level_low"]) == (4, pytest.approx(0.8), pytest.approx(0.8**4))
    some = comparison_table(frame, {}, Report(overall_weights_remaining=(0.45, 0.7)))
    row = _rows(some, "reinit", ACCURACY, OVERALL).iloc[0]
    assert (row["levels"], row["level_high"], row["level_low"]) == (2, pytest.approx(0.64), pytest.approx(0.512))
    per_seed = frame[frame["round"].isin([2, 3])].pivot_table(index="seed", columns="initializer", values=ACCURACY)
    assert row["diff"] == pytest.approx((per_seed["original"] - per_seed["reinit"]).mean())
    assert row["adjustment"] == "none (one test)" and row["family_size"] == 1


def test_margins_come_from_the_report_settings():
    frame = _frame(np.random.default_rng(12))
    table = comparison_table(frame, {})
    assert set(_rows(table, "reinit", ACCURACY)["margin"]) == {0.005}
    assert set(_rows(table, "reinit", ITERATION)["margin"]) == {0.1 * ITERATIONS}  # a tenth of training by default
    table = comparison_table(frame, {}, Report(accuracy_margin=0.01, iteration_margin=250))
    assert set(_rows(table, "reinit", ACCURACY)["margin"]) == {0.01}
    assert set(_rows(table, "reinit", ITERATION)["margin"]) == {250}


# ---------------------------------------------------------------- consistency over random frames

def test_every_verdict_agrees_with_its_interval_and_tost_over_random_frames():
    rng = np.random.default_rng(13)
    tables = []
    for _ in range(12):
        effect, spread = rng.choice([-0.01, -0.003, 0.0, 0.003, 0.01]), rng.choice([0.0005, 0.002, 0.006])
        stop_effect, stop_spread = rng.choice([-1500, -300, 0, 300, 1500]), rng.choice([30, 300, 900])
        tables.append(comparison_table(_frame(rng, ticket=0.97 + effect, spread=spread, ticket_stop=3000 + stop_effect,
                                              stop_spread=stop_spread, seeds=int(rng.integers(3, 7)), rounds=4), {}))
    table = pd.concat(tables)
    assert set(table["verdict"]) <= set(VERDICTS) and {BETTER, WORSE, EQUIVALENT, INCONCLUSIVE} <= set(table["verdict"])
    sign = np.where(table["metric"] == ACCURACY, 1, -1)
    low, high = sign * np.where(sign > 0, table["ci_low"], table["ci_high"]), sign * np.where(
        sign > 0, table["ci_high"], table["ci_low"])  # the interval of "how much better the ticket is"
    better, worse = table["verdict"] == BETTER, table["verdict"] == WORSE
    equivalent, inconclusive = table["verdict"] == EQUIVALENT, table["verdict"] == INCONCLUSIVE
    assert (low[better] > 0).all() and (high[worse] < 0).all()
    assert (table.loc[equivalent, "tost_p"] < ALPHA).all()
    assert (table.loc[equivalent, "tost_ci_low"] > -table.loc[equivalent, "margin"]).all()
    assert (table.loc[equivalent, "tost_ci_high"] < table.loc[equivalent, "margin"]).all()
    assert ((low[inconclusive] <= 0) & (high[inconclusive] >= 0)).all()
    decided_by_interval = ((low > 0) | (high < 0)) & (table["tost_p"] >= ALPHA)
    assert set(table.loc[decided_by_interval, "verdict"]) <= {BETTER, WORSE}
    assert (table.loc[inconclusive, "tost_p"] >= ALPHA).all() and table.loc[inconclusive, "seeds_needed"].notna().all()
    tested = table["p_adjusted"].notna()
    excludes = (table["ci_low"] > 0) | (table["ci_high"] < 0)
    assert ((table.loc[tested, "p_adjusted"] < ALPHA) == excludes[tested]).all()  # the p and the interval agree
    inside = (table["tost_ci_low"] > -table["margin"]) & (table["tost_ci_high"] < table["margin"])
    assert ((table.loc[tested, "tost_p"] < ALPHA) == inside[tested]).all()


# ---------------------------------------------------------------- coverage by simulation

def test_the_adjusted_intervals_keep_the_family_wise_error_under_the_null():
    """200 families of 4 levels, 3 seeds each, ticket and control from one distribution."""
    rng = np.random.default_rng(14)
    families, levels, errors = 200, 4, 0
    for _ in range(families):
        misses = 0
        for _ in range(levels):
            seed_effect = rng.normal(0, 1, 3)  # shared by both groups of a seed, as θ₀ and the data order are
            result = compare_groups(pd.Series(seed_effect + rng.normal(0, 0.5, 3)),
                                    pd.Series(seed_effect + rng.normal(0, 0.5, 3)), margin=0.1, family_size=levels)
            misses += not result["ci_low"] <= 0 <= result["ci_high"]
        errors += misses > 0
    # Bonferroni's bound is 0.05 (about 0.049 for independent levels; binomial sd 0.015 here); intervals of 95%
    # each, unadjusted, would give 1 - 0.95**4 = 0.185.
    assert errors / families <= 0.09


def test_tost_rejects_at_most_five_percent_when_the_difference_equals_the_margin():
    rng = np.random.default_rng(15)
    margin, cases = 0.5, 300
    rejections = sum(
        compare_groups(pd.Series(margin + rng.normal(0, 0.3, 5)), pd.Series(rng.normal(0, 0.3, 5)),
                       margin=margin)["tost_p_unadjusted"] < ALPHA
        for _ in range(cases))
    assert rejections / cases <= 0.075  # nominal 0.05 at the boundary; the binomial sd is 0.013


# ---------------------------------------------------------------- against statsmodels and hand formulas

def test_every_adjusted_p_and_tost_p_matches_statsmodels():
    frame = _frame(np.random.default_rng(16), ticket=0.972, reinit=0.97, ticket_stop=2800, rounds=4)
    table = comparison_table(frame, {})
    for (group, metric), rows in table[table["scope"] == "level"].groupby(["group_b", "metric"]):
        raw, tost = [], []
        for round_ in sorted(rows["round"]):
            ticket = frame[(frame["initializer"] == "original") & (frame["round"] == round_)].set_index("seed")[metric]
            other = frame[(frame["initializer"] == group) & (frame["round"] == (0 if group == "dense" else round_))]
            other = other.set_index("seed")[metric].loc[ticket.index]
            margin = 0.005 if metric == ACCURACY else 0.1 * ITERATIONS
            raw.append(scipy_stats.ttest_rel(ticket, other).pvalue)
            tost.append(ttost_paired(ticket.to_numpy(), other.to_numpy(), -margin, margin)[0])
        rows = rows.sort_values("round")
        np.testing.assert_allclose(rows["p_value"], raw, rtol=1e-10)
        np.testing.assert_allclose(rows["p_adjusted"], multipletests(raw, method="bonferroni")[1], rtol=1e-10)
        np.testing.assert_allclose(rows["tost_p"], multipletests(tost, method="bonferroni")[1], rtol=1e-10)


def test_the_paired_interval_matches_the_hand_formula():
    ticket = pd.Series([0.91, 0.95, 0.93, 0.97], index=[0, 1, 2, 3])
    other = pd.Series([0.90, 0.92, 0.93], index=[2, 0, 1])  # seed 3 has no partner
    d = np.array([0.91 - 0.92, 0.95 - 0.93, 0.93 - 0.90])  # seeds 0, 1, 2
    result = compare_groups(ticket, other, margin=0.005, family_size=4)
    half = scipy_stats.t.ppf(1 - ALPHA / 8, 2) * d.std(ddof=1) / math.sqrt(3)
    assert result["test"] == "paired" and (result["n_a"], result["n_b"]) == (3, 3)
    assert result["diff"] == pytest.approx(d.mean())
    assert (result["ci_low"], result["ci_high"]) == (pytest.approx(d.mean() - half), pytest.approx(d.mean() + half))
    assert result["p_value"] == pytest.approx(2 * scipy_stats.t.sf(abs(d.mean() / (d.std(ddof=1) / math.sqrt(3))), 2))
    assert "seeds without a partner left out: 3" in result["note"]


def test_the_welch_interval_matches_the_hand_formula():
    a = pd.Series([0.91, 0.93, 0.92, 0.95], index=[0, 1, 2, 3])
    b = pd.Series([0.88, 0.90, 0.86], index=[4, 5, 6])
    se2_a, se2_b = a.var(ddof=1) / 4, b.var(ddof=1) / 3
    df = (se2_a + se2_b) ** 2 / (se2_a**2 / 3 + se2_b**2 / 2)  # Welch-Satterthwaite
    result = compare_groups(a, b, margin=0.005)
    half = scipy_stats.t.ppf(1 - ALPHA / 2, df) * math.sqrt(se2_a + se2_b)
    assert result["test"] == "Welch"
    assert (result["ci_low"], result["ci_high"]) == (pytest.approx(a.mean() - b.mean() - half),
                                                     pytest.approx(a.mean() - b.mean() + half))


def test_identical_differences_are_untestable():
    result = compare_groups(pd.Series([1.5, 2.5, 3.5]), pd.Series([1.0, 2.0, 3.0]), margin=0.1)
    assert result["verdict"] == UNTESTABLE and "no spread" in result["note"]


def test_the_detectable_difference_has_eighty_percent_power_by_simulation():
    """With the detectable effect as the true difference, the paired test finds it about 80% of the time."""
    rng = np.random.default_rng(17)
    effect, cases = detectable_effect(5, 5, True, 3), 400
    found = 0
    for _ in range(cases):
        d = effect + rng.normal(0, 1, 5)
        low = d.mean() - scipy_stats.t.ppf(1 - ALPHA / 6, 4) * d.std(ddof=1) / math.sqrt(5)
        found += low > 0
    assert 0.74 <= found / cases <= 0.86  # binomial sd 0.02
    assert seeds_needed(effect, True, 3) == 5


def test_adjust_leaves_missing_p_values_out_of_the_family():
    np.testing.assert_allclose(adjust([0.01, float("nan"), 0.02]), [0.02, float("nan"), 0.04], equal_nan=True)


def test_hedges_g_matches_the_formula_on_fixed_numbers():
    # means 2.5 and 4.5, both SDs sqrt(5/3): d = -2 / sqrt(5/3) = -1.5491933;
    # J = 1 - 3 / (4 * 8 - 9) = 20/23, so g = -1.3471246.
    assert hedges_g(np.array([1.0, 2, 3, 4]), np.array([3.0, 4, 5, 6])) == pytest.approx(-1.3471246, abs=1e-7)


def test_hedges_g_is_nan_without_variance():
    assert math.isnan(hedges_g(np.array([1.0, 1, 1]), np.array([2.0, 2, 2])))


def test_runs_not_done_are_left_out():
    frame = _frame(np.random.default_rng(18), seeds=3)
    frame.loc[(frame["initializer"] == "original") & (frame["seed"] == 0), "status"] = "failed"
    table = comparison_table(frame, {})
    assert set(table["n_a"]) == {2} and set(table["verdict"]) == {NOT_ENOUGH_SEEDS}


# ---------------------------------------------------------------- the random-mask control

def _synthetic(tmp_path, **options) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The results frame of a synthetic folder and its comparison table."""
    frame = tidy_frame([read_folder(write_synthetic_results(tmp_path / "results", **options))])
    return frame, comparison_table(frame, random_mask_controls(frame))


def _ticket_mean(frame: pd.DataFrame, pruner: str, round_: int, column: str = ACCURACY) -> float:
    """Mean of ``column`` over the done ticket runs of the cell pruned by ``pruner``, at ``round_``."""
    rows = frame[(frame["pruner"] == pruner) & (frame["initializer"] == "original") & (frame["round"] == round_)]
    return rows.loc[rows["status"] == "done", column].mean()


def test_reference_ticket_is_compared_with_the_random_mask_ticket_at_every_round(tmp_path):
    frame, table = _synthetic(tmp_path, random_control="random")
    rows = table[table["group_b"] == RANDOM_MASK]
    assert set(rows["pruner"]) == {"layerwise_magnitude"} and set(rows["group_a"]) == {"original"}
    accuracy = _rows(rows, RANDOM_MASK, ACCURACY, "level").set_index("round")
    assert list(accuracy.index) == [1, 2, 3]
    assert set(accuracy["n_a"]) == {3} and set(accuracy["n_b"]) == {3}
    for round_ in (1, 2, 3):
        assert accuracy.loc[round_, "mean_a"] == pytest.approx(_ticket_mean(frame, "layerwise_magnitude", round_))
        assert accuracy.loc[round_, "mean_b"] == pytest.approx(_ticket_mean(frame, "random", round_))
        reference_level = _ticket_mean(frame, "layerwise_magnitude", round_, "weights_remaining")
        assert accuracy.loc[round_, "weights_remaining"] == pytest.approx(reference_level)
    assert list(accuracy["verdict"]) == [BETTER] * 3
    assert _rows(rows, RANDOM_MASK, ACCURACY, OVERALL)["verdict"].item() == BETTER


def test_random_cell_keeps_its_own_comparisons(tmp_path):
    _, table = _synthetic(tmp_path, random_control="random")
    assert set(table.loc[table["pruner"] == "random", "group_b"]) == {"reinit", "dense"}


LIKE_GLOBAL = {"name": "random", "like": "global_magnitude"}


@pytest.mark.parametrize("previous_release", [False, True], ids=["control_of", "matrix-without-control_of"])
def test_random_control_with_like_maps_to_that_pruners_cell(tmp_path, previous_release):
    """A matrix.json of the previous release has no ``control_of``: the installed pruner plugin supplies it."""
    _, table = _synthetic(tmp_path, random_control=LIKE_GLOBAL, previous_release=previous_release)
    rows = _rows(table, RANDOM_MASK, ACCURACY, "level")
    assert set(rows["pruner"]) == {"global_magnitude"}
    assert list(rows["n_a"]) == [3, 2, 2] and list(rows["n_b"]) == [3, 3, 3]  # a ticket run fails in round 2
    assert list(rows["verdict"]) == [BETTER, NOT_ENOUGH_SEEDS, NOT_ENOUGH_SEEDS]
    assert rows["family_size"].iloc[0] == 1


def test_random_control_without_its_reference_cell_adds_nothing(tmp_path):
    _, table = _synthetic(tmp_path, pruners=("global_magnitude",), random_control="random")
    assert set(table["group_b"]) == {"reinit", "dense"}
    assert set(table["pruner"]) == {"global_magnitude", "random"}


def test_a_store_of_the_previous_release_still_compares_its_ticket_with_its_random_mask():
    """tests/golden/store's matrix.json has no ``control_of``; its ``random`` cell is the control of layerwise."""
    frame = tidy_frame([read_folder(GOLDEN_STORE)])
    controls = random_mask_controls(frame)
    cell_of = frame.drop_duplicates("cell_id").set_index("pruner")["cell_id"]
    assert controls == {cell_of["layerwise_magnitude"]: cell_of["random"]}
    rows = comparison_table(frame, controls)
    rows = _rows(rows, RANDOM_MASK, ACCURACY, "level")
    assert set(rows["pruner"]) == {"layerwise_magnitude"} and list(rows["round"]) == [1, 2]
    assert set(rows["n_a"]) == {2} and set(rows["n_b"]) == {2} and set(rows["verdict"]) == {NOT_ENOUGH_SEEDS}
