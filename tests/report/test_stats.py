"""Statistics on ticket effects: tests against values computed independently, and the verdict logic."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats as scipy_stats
from helpers.synthetic_results import write_synthetic_results

from lthbench.report.results import read_folder, tidy_frame
from lthbench.report.stats import (
    ACCURACY,
    ITERATION,
    NOT_ENOUGH_SEEDS,
    RANDOM_MASK,
    bootstrap_ci,
    compare,
    comparison_table,
    hedges_g,
    holm,
    paired_t,
    random_mask_controls,
    verdicts,
)

GOLDEN_STORE = Path(__file__).parents[1] / "golden" / "store"


def test_welch_t_and_p_match_the_hand_formula():
    a = np.array([0.91, 0.93, 0.92, 0.95])
    b = np.array([0.88, 0.90, 0.86])
    se2_a, se2_b = a.var(ddof=1) / len(a), b.var(ddof=1) / len(b)
    t = (a.mean() - b.mean()) / math.sqrt(se2_a + se2_b)
    df = (se2_a + se2_b) ** 2 / (se2_a**2 / (len(a) - 1) + se2_b**2 / (len(b) - 1))  # Welch-Satterthwaite
    result = compare(a, b)
    assert result["welch_t"] == pytest.approx(t, rel=1e-12)
    assert result["welch_p"] == pytest.approx(2 * scipy_stats.t.sf(abs(t), df), rel=1e-10)
    assert result["diff"] == pytest.approx(a.mean() - b.mean())
    assert (result["n_a"], result["n_b"]) == (4, 3)
    half_width = scipy_stats.t.ppf(0.975, df) * math.sqrt(se2_a + se2_b)
    assert result["ci_t_low"] == pytest.approx(a.mean() - b.mean() - half_width, rel=1e-10)
    assert result["ci_t_high"] == pytest.approx(a.mean() - b.mean() + half_width, rel=1e-10)


def test_paired_t_pairs_by_seed_and_matches_the_hand_formula():
    ticket = pd.Series([0.91, 0.95, 0.93, 0.97], index=[0, 1, 2, 3])
    other = pd.Series([0.90, 0.92, 0.93], index=[2, 0, 1])  # seed 3 has no partner
    d = np.array([0.91 - 0.92, 0.95 - 0.93, 0.93 - 0.90])  # seeds 0, 1, 2
    t = d.mean() / (d.std(ddof=1) / math.sqrt(3))
    n, p = paired_t(ticket, other)
    assert n == 3 and p == pytest.approx(2 * scipy_stats.t.sf(abs(t), 2), rel=1e-10)
    assert math.isnan(paired_t(ticket[:2], other)[1])  # two pairs are too few
    assert math.isnan(paired_t(pd.Series([1.5, 2.5, 3.5]), pd.Series([1.0, 2.0, 3.0]))[1])  # one difference


def test_the_comparison_table_pairs_every_comparison_by_seed():
    frame = _frame(ticket=0.975, reinit=0.95, seeds=4)
    ticket = frame["initializer"] == "original"
    frame.loc[ticket, ACCURACY] += 0.001 * frame.loc[ticket, "seed"] ** 2  # differences that vary by seed
    table = comparison_table(frame, {})
    assert set(table["n_pairs"]) == {4}
    accuracy = table[table["metric"] == ACCURACY]
    assert accuracy["paired_p"].notna().all() and (accuracy["paired_p"] < accuracy["welch_p"]).all()


def test_with_three_seeds_the_welch_interval_keeps_its_coverage_and_the_bootstrap_does_not():
    """Why verdicts use Welch's interval: 3 against 3 draws of one normal distribution, 400 times."""
    rng = np.random.default_rng(1)
    misses = {"welch": 0, "bootstrap": 0}
    for case in range(400):
        result = compare(rng.normal(0, 1, 3), rng.normal(0, 1, 3), seed=case)
        misses["welch"] += not result["ci_t_low"] <= 0 <= result["ci_t_high"]
        misses["bootstrap"] += not result["ci_low"] <= 0 <= result["ci_high"]
    assert misses["welch"] / 400 <= 0.075  # nominal 0.05; a binomial sd is 0.011
    assert misses["bootstrap"] / 400 >= 0.12


@pytest.mark.parametrize(
    ("a", "b", "u", "p"),
    [
        # No a above any b: U = 0; exact two-sided p = 2 * P(U <= 0) = 2 * 1/C(6,3) = 0.1.
        ([1, 2, 3], [4, 5, 6], 0, 0.1),
        # Only 4 > 3: U = 1; P(U <= 1) = 2/20, so p = 0.2.
        ([1, 2, 4], [3, 5, 6], 1, 0.2),
    ],
)
def test_mann_whitney_u_on_hand_cases(a, b, u, p):
    result = compare(a, b)
    assert result["mannwhitney_u"] == u
    assert result["mannwhitney_p"] == pytest.approx(p)


def test_hedges_g_matches_the_formula_on_fixed_numbers():
    # means 2.5 and 4.5, both SDs sqrt(5/3): d = -2 / sqrt(5/3) = -1.5491933;
    # J = 1 - 3 / (4 * 8 - 9) = 20/23, so g = -1.3471246.
    assert hedges_g(np.array([1.0, 2, 3, 4]), np.array([3.0, 4, 5, 6])) == pytest.approx(-1.3471246, abs=1e-7)


def test_hedges_g_is_nan_without_variance():
    assert math.isnan(hedges_g(np.array([1.0, 1, 1]), np.array([2.0, 2, 2])))


def test_bootstrap_ci_covers_a_large_true_effect_and_excludes_zero():
    rng = np.random.default_rng(7)
    a, b = 1.0 + 0.1 * rng.standard_normal(20), 0.1 * rng.standard_normal(20)
    low, high = bootstrap_ci(a, b, seed=3)
    assert low < 1.0 < high
    assert low > 0


def test_bootstrap_ci_is_reproducible_with_its_seed():
    rng = np.random.default_rng(1)
    a, b = rng.standard_normal(8), rng.standard_normal(8)
    assert bootstrap_ci(a, b, seed=5) == bootstrap_ci(a, b, seed=5)
    assert bootstrap_ci(a, b, seed=5) != bootstrap_ci(a, b, seed=6)


@pytest.mark.parametrize(
    ("p", "expected"),
    [
        # sorted 0.005, 0.01, 0.03, 0.04 times 4, 3, 2, 1 = 0.02, 0.03, 0.06, 0.04; running max 0.02, 0.03, 0.06, 0.06
        ([0.01, 0.04, 0.03, 0.005], [0.03, 0.06, 0.06, 0.02]),
        ([0.02, float("nan"), 0.04], [0.04, float("nan"), 0.04]),  # NaN is not part of the family
        ([0.6, 0.7], [1.0, 1.0]),  # capped at 1
    ],
)
def test_holm_adjusts_a_hand_made_family(p, expected):
    np.testing.assert_allclose(holm(p), expected, equal_nan=True)


def test_too_few_seeds_give_no_p_values():
    result = compare([0.9, 0.91], [0.8, 0.81, 0.82])
    assert result["note"] == NOT_ENOUGH_SEEDS
    assert all(math.isnan(result[key]) for key in ("welch_p", "mannwhitney_p", "ci_low", "ci_high", "ci_t_low",
                                                   "ci_t_high"))
    assert result["diff"] == pytest.approx(0.905 - 0.81)


# ---------------------------------------------------------------- frames and verdicts

SPREAD = np.array([-0.002, 0.001, 0.0, 0.002, -0.001])


def _frame(ticket: float, reinit: float, dense: float = 0.97, ticket_iteration: int = 2000,
           seeds: int = 5, rounds: int = 2) -> pd.DataFrame:
    """A done cell: per seed a dense run and, per round, the ticket and reinit runs."""
    rows = []
    for seed in range(seeds):
        jitter = SPREAD[seed % len(SPREAD)]
        rows.append({"initializer": "dense", "round": 0, "seed": seed, "weights_remaining": 1.0,
                     ACCURACY: dense + jitter, ITERATION: 3000 + 1e4 * jitter})
        for round_ in range(1, rounds + 1):
            for name, accuracy, iteration in (("original", ticket, ticket_iteration), ("reinit", reinit, 4000)):
                rows.append({"initializer": name, "round": round_, "seed": seed, "weights_remaining": 0.8**round_,
                             ACCURACY: accuracy + jitter, ITERATION: iteration + 1e4 * jitter})
    frame = pd.DataFrame(rows)
    cell = {"cell_id": "c1", "experiment": "lenet", "architecture": "lenet_300_100", "dataset": "mnist",
            "training": "", "pruner": "layerwise_magnitude", "status": "done"}
    return frame.assign(**cell)


def _verdict(frame: pd.DataFrame, comparison: str, round_: int = 1) -> str:
    judged = verdicts(comparison_table(frame, {}))
    row = judged[(judged["comparison"] == comparison) & (judged["round"] == round_)]
    return row["verdict"].item()


def test_clear_ticket_effect_beats_reinit_and_is_a_winning_ticket():
    frame = _frame(ticket=0.975, reinit=0.95)
    assert _verdict(frame, "vs reinit") == "ticket beats reinit"
    assert _verdict(frame, "vs dense") == "winning ticket"


def test_no_effect_is_no_difference():
    frame = _frame(ticket=0.96, reinit=0.96)
    assert _verdict(frame, "vs reinit") == "no difference from reinit"


def test_control_better_than_ticket_beats_it():
    assert _verdict(_frame(ticket=0.95, reinit=0.97), "vs reinit") == "reinit beats ticket"


def test_ticket_below_dense_or_later_is_not_a_winning_ticket():
    assert _verdict(_frame(ticket=0.94, reinit=0.90), "vs dense") == "not a winning ticket: lower accuracy"
    later = _frame(ticket=0.975, reinit=0.90, ticket_iteration=5000)
    assert _verdict(later, "vs dense") == "not a winning ticket: learns later"


def test_the_dense_verdict_reads_the_welch_interval_not_the_bootstrap_one():
    table = comparison_table(_frame(ticket=0.975, reinit=0.95), {})
    accuracy = (table["metric"] == ACCURACY) & (table["group_b"] == "dense") & (table["round"] == 1)
    table.loc[accuracy, ["ci_low", "ci_high"]] = [-0.02, -0.01]  # the bootstrap alone would say "below dense"
    judged = verdicts(table)
    assert judged[(judged["comparison"] == "vs dense") & (judged["round"] == 1)]["verdict"].item() == "winning ticket"
    table.loc[accuracy, ["ci_t_low", "ci_t_high"]] = [-0.02, -0.01]
    judged = verdicts(table)
    assert judged[(judged["comparison"] == "vs dense") & (judged["round"] == 1)]["verdict"].item() == (
        "not a winning ticket: lower accuracy")


def test_too_few_seeds_give_no_verdict():
    frame = _frame(ticket=0.975, reinit=0.95, seeds=2)
    assert _verdict(frame, "vs reinit") == NOT_ENOUGH_SEEDS
    assert _verdict(frame, "vs dense") == NOT_ENOUGH_SEEDS


def test_runs_not_done_are_left_out():
    frame = _frame(ticket=0.975, reinit=0.95, seeds=3)
    frame.loc[(frame["initializer"] == "original") & (frame["seed"] == 0), "status"] = "failed"
    table = comparison_table(frame, {})
    assert set(table["n_a"]) == {2}
    assert set(table["note"]) == {NOT_ENOUGH_SEEDS}


def test_comparison_table_differences_are_ticket_minus_other():
    table = comparison_table(_frame(ticket=0.975, reinit=0.95), {})
    row = table[(table["metric"] == ACCURACY) & (table["group_b"] == "reinit") & (table["round"] == 1)].iloc[0]
    assert (row["group_a"], row["diff"]) == ("original", pytest.approx(0.025))
    assert row["weights_remaining"] == pytest.approx(0.8)


def test_holm_family_spans_the_rounds_of_one_comparison():
    table = comparison_table(_frame(ticket=0.975, reinit=0.95, rounds=3), {})
    family = table[(table["metric"] == ACCURACY) & (table["group_b"] == "reinit")]
    np.testing.assert_allclose(family["p_holm"], holm(family["welch_p"]))
    assert len(family) == 3


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
    accuracy = rows[rows["metric"] == ACCURACY].set_index("round")
    assert list(accuracy.index) == [1, 2, 3]
    assert set(accuracy["n_a"]) == {3} and set(accuracy["n_b"]) == {3}
    for round_ in (1, 2, 3):
        assert accuracy.loc[round_, "mean_a"] == pytest.approx(_ticket_mean(frame, "layerwise_magnitude", round_))
        assert accuracy.loc[round_, "mean_b"] == pytest.approx(_ticket_mean(frame, "random", round_))
        reference_level = _ticket_mean(frame, "layerwise_magnitude", round_, "weights_remaining")
        assert accuracy.loc[round_, "weights_remaining"] == pytest.approx(reference_level)
    np.testing.assert_allclose(accuracy["p_holm"], holm(accuracy["welch_p"]))
    judged = verdicts(table)
    against_random = judged[judged["comparison"] == f"vs {RANDOM_MASK}"]
    assert set(against_random["pruner"]) == {"layerwise_magnitude"}
    assert list(against_random["verdict"]) == ["ticket beats random mask"] * 3


def test_random_cell_keeps_its_own_comparisons(tmp_path):
    _, table = _synthetic(tmp_path, random_control="random")
    assert set(table.loc[table["pruner"] == "random", "group_b"]) == {"reinit", "dense"}


LIKE_GLOBAL = {"name": "random", "like": "global_magnitude"}


@pytest.mark.parametrize("previous_release", [False, True], ids=["control_of", "matrix-without-control_of"])
def test_random_control_with_like_maps_to_that_pruners_cell(tmp_path, previous_release):
    """A matrix.json of the previous release has no ``control_of``: the installed pruner plugin supplies it."""
    _, table = _synthetic(tmp_path, random_control=LIKE_GLOBAL, previous_release=previous_release)
    rows = table[(table["group_b"] == RANDOM_MASK) & (table["metric"] == ACCURACY)]
    assert set(rows["pruner"]) == {"global_magnitude"}
    assert list(rows["n_a"]) == [3, 2, 2] and set(rows["n_b"]) == {3}  # a ticket run of this cell fails in round 2
    judged = verdicts(table)
    against_random = judged[judged["comparison"] == f"vs {RANDOM_MASK}"]
    assert list(against_random["verdict"]) == ["ticket beats random mask", NOT_ENOUGH_SEEDS, NOT_ENOUGH_SEEDS]


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
    rows = rows[(rows["group_b"] == RANDOM_MASK) & (rows["metric"] == ACCURACY)]
    assert set(rows["pruner"]) == {"layerwise_magnitude"} and list(rows["round"]) == [1, 2]
    assert set(rows["n_a"]) == {2} and set(rows["n_b"]) == {2}
