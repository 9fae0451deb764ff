"""Write a synthetic output folder in the store's format, so report tests need no training.

The folder holds one experiment with several pruners (cells) sharing their
dense runs, and for every seed the pruning rounds of the initializers ``original`` and
``reinit``. The ticket gains accuracy and learns earlier with every round;
``reinit`` loses accuracy and learns later. One run fails (its descendants are
then blocked) and one run is left pending. On request a random-mask control
cell is added, whose ticket loses accuracy with every round and whose runs all succeed.
Pruners are given as in TOML (a name or a table with ``name``); each cell's label
and ``control_of`` are what ``lthbench run`` writes for them.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from lthbench.config.settings import PluginRef
from lthbench.registry import default_registry
from lthbench.store import Store, content_hash

LAYERS = {"fc1.weight": 784 * 300, "fc2.weight": 300 * 100, "fc3.weight": 100 * 10}
INITIALIZERS = ("original", "reinit")
RATE = 0.2
EVAL_EVERY = 100
ITERATIONS = 5000
FAILED_ROUND = 2
FAILURE = "RuntimeError: CUDA out of memory <while pruning & rewinding>"
CONFIG = {
    "benchmark": {"name": "synthetic", "seeds": [0, 1, 2]},
    "defaults": {"training": {"lr": 0.0012, "optimizer": "adam", "iterations": ITERATIONS}},
}


def _cell(experiment: str, pruner: str | dict[str, Any], rounds: int, previous_release: bool) -> dict[str, Any]:
    """A cell's ``matrix.json`` entry; ``previous_release`` leaves out ``control_of``, as that release did."""
    table = {"name": pruner} if isinstance(pruner, str) else dict(pruner)
    name = table.pop("name")
    plugin = default_registry().pruner(name)
    ref = PluginRef(name, plugin.Params(**table))
    training = {"optimizer": "adam", "lr": 0.0012, "iterations": ITERATIONS, "eval_every": EVAL_EVERY}
    control = {} if previous_release else {"control_of": plugin.mimics(ref.params)}
    return {
        "cell_id": content_hash([experiment, ref.label]),
        "experiment": experiment,
        "architecture": "lenet_300_100",
        "dataset": "mnist",
        "pruner": ref.label,
        **control,
        "initializers": list(INITIALIZERS),
        "mode": "iterative",
        "rounds": rounds,
        "rate": RATE,
        "output_rate": RATE / 2,
        "training": training,
        "mask_source": "original",
        "overrides": {},
        "label": "",
    }


def _layers(round_: int) -> dict[str, dict[str, int]]:
    """Layerwise pruning: hidden layers at ``RATE`` per round, the output layer at half of it."""
    return {
        name: {"total": total, "remaining": round(total * (1 - (RATE / 2 if name == "fc3.weight" else RATE)) ** round_)}
        for name, total in LAYERS.items()
    }


def _outcome(initializer: str, seed: int, round_: int, pruner_index: int, random_mask: bool) -> tuple[int, float]:
    """Early-stop iteration and test accuracy: the ticket improves with each round; reinit and a random mask degrade."""
    if initializer == "dense":  # shared by every cell, so independent of the pruner
        return 3000 + 100 * (seed % 3), 0.970 + 0.002 * math.sin(7 * seed)
    phase = INITIALIZERS.index(initializer)  # so that the differences between initializers vary by seed
    noise = 0.002 * math.sin(7 * seed + 3 * round_ + pruner_index + 2 * phase)
    jitter = 100 * ((seed * (1 + 2 * phase) + round_) % 3)
    if initializer == "original" and random_mask:
        return 3000 + 200 * round_ + jitter, 0.970 - 0.010 * round_ + noise
    if initializer == "original":
        return 3000 - 500 * round_ + jitter, 0.970 + 0.004 * round_ + noise
    return 3000 + 500 * round_ + jitter, 0.970 - 0.015 * round_ + noise


def _curves(early_stop: int, accuracy: float) -> dict[str, list[float]]:
    iterations = list(range(0, ITERATIONS + 1, EVAL_EVERY))
    test = [accuracy * (1 - math.exp(-(i + 100) / (early_stop / 3))) for i in iterations]
    val_loss = [0.1 + ((i - early_stop) / ITERATIONS) ** 2 for i in iterations]
    return {
        "iteration": iterations,
        "train_loss": [2.3 * math.exp(-i / 1000) for i in iterations],
        "val_loss": val_loss,
        "val_accuracy": test,
        "test_accuracy": test,
    }


def _record(run: dict[str, Any], cell: dict[str, Any], pruner_index: int, status: str) -> dict[str, Any]:
    layers = _layers(run["round"])
    random_mask = cell["pruner"].startswith("random")
    early_stop, accuracy = _outcome(run["initializer"], run["seed"], run["round"], pruner_index, random_mask)
    curves = _curves(early_stop, accuracy)
    failed = status == "failed"
    return {
        "run_id": run["run_id"],
        "status": status,
        **{key: cell[key] for key in ("experiment", "cell_id", "architecture", "dataset", "pruner")},
        "initializer": run["initializer"],
        "seed": run["seed"],
        "round": run["round"],
        "weights_remaining": sum(v["remaining"] for v in layers.values()) / sum(v["total"] for v in layers.values()),
        "layers": layers,
        "curves": curves if not failed else {key: [] for key in curves},
        "early_stop_iteration": None if failed else early_stop,
        "iterations": ITERATIONS,
        "early_stop_test_accuracy": None if failed else accuracy,
        "final_test_accuracy": None if failed else curves["test_accuracy"][-1],
        "wall_time": 12.5,
        "device": "cpu",
        "versions": {"lthbench": "0.1.0"},
        "error": FAILURE if failed else None,
        "traceback": "Traceback (most recent call last):\n  ...\n" + FAILURE if failed else None,
        "training": cell["training"],
    }


def write_synthetic_results(
    root: Path,
    experiment: str = "lenet",
    pruners: tuple[str, ...] = ("layerwise_magnitude", "global_magnitude"),
    seeds: tuple[int, ...] = (0, 1, 2),
    rounds: int = 3,
    random_control: str | dict[str, Any] | None = None,
    previous_release: bool = False,
) -> Path:
    """Write the folder under ``root`` and return it.

    The ``original`` run of round :data:`FAILED_ROUND`, last seed, last pruner
    fails: its later rounds are blocked. The ``reinit`` run of the last round, first seed,
    first pruner has no record and is pending. ``random_control`` (a pruner such as
    ``"random"`` or ``{"name": "random", "like": "global_magnitude"}``) adds one more cell after
    ``pruners``, every run done, whose ticket is clearly less accurate than any of theirs.
    ``previous_release`` writes ``matrix.json`` without ``control_of``, as stores of the
    previous release have it.
    """
    store = Store(root)
    cells, runs = [], []
    cell_pruners = (*pruners, random_control) if random_control else pruners
    for pruner_index, pruner in enumerate(cell_pruners):
        cell = _cell(experiment, pruner, rounds, previous_release)
        cells.append(cell)
        for seed in seeds:
            dense = {"run_id": content_hash(["dense", seed]), "cell_id": cell["cell_id"], "seed": seed,
                     "round": 0, "initializer": "dense", "depends_on": []}
            runs.append(dense)
            parent = dense["run_id"]
            for round_ in range(1, rounds + 1):
                chain = [
                    {"run_id": content_hash([cell["cell_id"], seed, round_, name]), "cell_id": cell["cell_id"],
                     "seed": seed, "round": round_, "initializer": name, "depends_on": [parent]}
                    for name in INITIALIZERS
                ]
                runs.extend(chain)
                parent = chain[0]["run_id"]
            fail = pruner_index == len(pruners) - 1 and seed == seeds[-1]
            pend = pruner_index == 0 and seed == seeds[0]
            chain_runs = [r for r in runs if r["cell_id"] == cell["cell_id"] and r["seed"] == seed]
            _write_chain(store, cell, pruner_index, chain_runs, fail, pend)
    store.write_matrix({
        "schema": 1,
        "benchmark": {"name": "synthetic", "seeds": list(seeds), "source": "benchmarks.toml", "device": "cpu"},
        "config": {**CONFIG, "experiment": [{"name": experiment, "pruner": list(cell_pruners)}]},
        "versions": {"lthbench": "0.1.0", "torch": "2.11.0", "python": "3.12.0"},
        "git_commit": "0123456789abcdef",
        "started": "2025-01-01T10:00:00",
        "finished": "2025-01-01T11:00:00",
        "cells": cells,
        "runs": runs,
    })
    return root


def _write_chain(store: Store, cell: dict[str, Any], pruner_index: int, chain: list[dict[str, Any]],
                 fail: bool, leave_pending: bool) -> None:
    """Write the records of one seed's chain; with ``fail`` one ticket fails and blocks its descendants."""
    last_round = max(run["round"] for run in chain)
    not_done: set[str] = set()
    for run in chain:
        if leave_pending and run["round"] == last_round and run["initializer"] == "reinit":
            continue
        if not_done & set(run["depends_on"]):
            not_done.add(run["run_id"])
            continue
        status = "failed" if fail and run["round"] == FAILED_ROUND and run["initializer"] == "original" else "done"
        if status == "failed":
            not_done.add(run["run_id"])
        store.write_record(run["run_id"], _record(run, cell, pruner_index, status))
