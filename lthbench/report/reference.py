"""Published reference values (``references/*.csv``) and the cells they apply to.

A reference set applies to a cell when the cell trains the paper's setting:
the same architecture and data set (the CSV's columns), the same pruner with
its default parameters (its label is the bare name), the same schedule mode
and pruning rates, and the same optimizer, learning rate and batch size. The
training length may differ (a benchmark may shorten it); the report then says
so beside the values. A level of ours matches a published level when their
fractions of weights remaining differ by at most :data:`LEVEL_TOLERANCE`
(the paper prints three decimals).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from typing import Any

import pandas as pd

from lthbench.report.stats import ACCURACY, DENSE, ITERATION, TICKET

LEVEL_TOLERANCE = 0.0015
#: Reference metrics that compare two initializers, and how ours is computed from the means of both.
GAP, RATIO = "early_stop_test_accuracy_gap", "early_stop_iteration_ratio"


@dataclass(frozen=True)
class ReferenceSet:
    """One paper's values and the setting they were measured in."""

    file: str
    label: str
    citation: str
    cell: dict[str, Any] = field(default_factory=dict)
    training: dict[str, Any] = field(default_factory=dict)
    iterations: int = 0

    def matches(self, cell: dict[str, Any]) -> bool:
        """Whether a cell of ``matrix.json`` trains this setting (see the module's docstring)."""
        values = self.frame()
        known = set(zip(values["architecture"], values["dataset"]))
        if (cell.get("architecture"), cell.get("dataset")) not in known:
            return False
        training = cell.get("training") or {}
        return (all(_same(cell.get(key), value) for key, value in self.cell.items())
                and all(_same(training.get(key), value) for key, value in self.training.items()))

    def frame(self) -> pd.DataFrame:
        """The CSV's rows."""
        return _read(self.file)

    def length_note(self, cell: dict[str, Any]) -> str:
        """A sentence when the cell trains for another number of iterations than the paper ("" otherwise)."""
        iterations = (cell.get("training") or {}).get("iterations")
        if not iterations or iterations == self.iterations:
            return ""
        return (f"This cell trains {iterations:,} iterations, the paper {self.iterations:,}: accuracies compare "
                "directly, early-stop iterations only where neither stopped at the end of training.")


def _same(value: Any, expected: Any) -> bool:
    """Equality, with floats compared to rounding."""
    if isinstance(expected, float) and isinstance(value, (int, float)) and not isinstance(value, bool):
        return math.isclose(value, expected, rel_tol=1e-9)
    return value == expected


@cache
def _read(file: str) -> pd.DataFrame:
    with resources.files("lthbench.report").joinpath("references", file).open(encoding="utf-8") as handle:
        return pd.read_csv(handle)


FRANKLE_2019 = ReferenceSet(
    file="frankle2019.csv",
    label="Frankle & Carbin 2019",
    citation=("J. Frankle and M. Carbin. The Lottery Ticket Hypothesis: Finding Sparse, Trainable Neural Networks. "
              "ICLR 2019. arXiv:1803.03635v5."),
    cell={"pruner": "layerwise_magnitude", "mode": "iterative", "rate": 0.2, "output_rate": 0.1},
    training={"optimizer": "adam", "lr": 1.2e-3, "batch_size": 60},
    iterations=50_000,
)
#: Every reference set a report looks at.
SETTINGS = (FRANKLE_2019,)


def reference_for(cell: dict[str, Any]) -> ReferenceSet | None:
    """The reference set that applies to a cell of ``matrix.json``, if any."""
    return next((ref for ref in SETTINGS if ref.matches(cell)), None)


def series(ref: ReferenceSet, cell: dict[str, Any], metric: str) -> pd.DataFrame:
    """The ticket's published values of ``metric`` at pruned levels, for the cell's figures."""
    rows = ref.frame()
    rows = rows[(rows["architecture"] == cell["architecture"]) & (rows["dataset"] == cell["dataset"])
                & (rows["metric"] == metric) & (rows["initializer"] == TICKET) & (rows["weights_remaining"] < 1)]
    return rows[["weights_remaining", "value"]].reset_index(drop=True)


def comparison_rows(ref: ReferenceSet, cell: dict[str, Any], rows: pd.DataFrame) -> list[dict[str, Any]]:
    """Each published value of the cell's setting beside ours at the same level (``ours`` None where not measured).

    ``rows`` are the cell's rows of the results frame. Ours is the mean over
    seeds of the done runs (``n`` of them): the ticket's (the dense network's
    at 100 %), ticket − reinit for an accuracy gap, reinit ÷ ticket for an
    early-stop ratio.
    """
    done = rows[rows["status"] == "done"]
    published = ref.frame()
    published = published[(published["architecture"] == cell["architecture"])
                          & (published["dataset"] == cell["dataset"])]
    out = []
    for row in published.to_dict("records"):
        level = done[(done["weights_remaining"] - row["weights_remaining"]).abs() <= LEVEL_TOLERANCE]
        ours, n = _ours(level, row["metric"], row["weights_remaining"] >= 1)
        out.append({**row, "ours": ours, "n": n})
    return out


def _ours(level: pd.DataFrame, metric: str, dense: bool) -> tuple[float | None, int]:
    """Our mean of a reference metric at one level, and how many runs of the ticket it averages."""
    ticket = level[level["initializer"] == (DENSE if dense else TICKET)]
    if metric in (ACCURACY, ITERATION):
        return (float(ticket[metric].mean()), len(ticket)) if len(ticket) else (None, 0)
    reinit = level[level["initializer"] == "reinit"]
    if not len(ticket) or not len(reinit):
        return None, 0
    if metric == GAP:
        return float(ticket[ACCURACY].mean() - reinit[ACCURACY].mean()), len(ticket)
    if metric == RATIO and ticket[ITERATION].mean() > 0:
        return float(reinit[ITERATION].mean() / ticket[ITERATION].mean()), len(ticket)
    return None, 0


def format_reference(value: Any, metric: str) -> str:
    """A reference or our value in the unit of its metric: accuracy in %, iterations, a ratio, a gap in pt."""
    if value is None or pd.isna(value):
        return "–"
    if metric == ITERATION:
        return f"{value:,.0f}"
    if metric == RATIO:
        return f"{value:.2f}×"
    if metric == GAP:
        return f"{value * 100:+.2f} pt".replace("-", "−")
    return f"{value * 100:.2f}"
