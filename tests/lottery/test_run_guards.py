"""What validation cannot know, a run checks: a data set of undeclared size still never gives a run that
claims a batch it did not use, or a ``done`` record without metrics."""

from __future__ import annotations

import sys

import torch

from lthbench import hookimpl
from lthbench.config.parse import load_benchmark
from lthbench.lottery.workspace import Workspace
from lthbench.registry import build_registry
from lthbench.run.plan import plan_runs
from lthbench.run.scheduler import run_matrix
from lthbench.store import Store
from lthbench_plugins.datasets import Mnist
from helpers.tiny_matrix import write_matrix


class UnsizedMnist(Mnist):
    """MNIST from a plugin that does not declare its split sizes (as a third party's may not)."""

    name = "unsized-mnist"
    train_size = None
    test_size = None


@hookimpl
def lthbench_datasets():
    return [UnsizedMnist()]


def unsized_registry():
    return build_registry((sys.modules[__name__],))


def run_unsized(tmp_path, data_root, drop=(), **training):
    """Run the tiny matrix, on the unsized data set, with ``training`` and without the training keys ``drop``."""
    registry = unsized_registry()
    path = write_matrix(tmp_path, rounds=1, **training)
    lines = [line for line in path.read_text().splitlines() if line.split(" =")[0] not in drop]
    path.write_text("\n".join(lines).replace('dataset = "mnist"', 'dataset = "unsized-mnist"'))
    bench = load_benchmark(path, registry)  # validation cannot see these sizes
    store = Store(bench.output)
    counts = run_matrix(bench, Workspace(registry, store, data_root, False, torch.device("cpu")))
    return counts, [store.record(run.run_id) for run in plan_runs(bench)]


def test_a_training_of_zero_iterations_is_recorded_failed_not_done(tmp_path, data_root, one_thread):
    counts, (dense, pruned) = run_unsized(tmp_path, data_root, drop=("iterations",), train_subset=0, epochs=1e-9)
    assert dense["status"] == "failed" and counts["blocked"] == 1 and pruned is None
    assert "trained no iteration" in dense["error"] and dense["early_stop_test_accuracy"] is None


def test_a_batch_larger_than_the_training_set_is_recorded_failed(tmp_path, data_root, one_thread):
    counts, (dense, _) = run_unsized(tmp_path, data_root, train_subset=0, batch_size=70000)
    assert dense["status"] == "failed" and counts["failed"] == 1
    assert "batch_size = 70000" in dense["error"] and "59800 training images" in dense["error"]


def test_a_subset_larger_than_the_split_is_recorded_failed(tmp_path, data_root, one_thread):
    _, (dense, _) = run_unsized(tmp_path, data_root, test_subset=20000)
    assert dense["status"] == "failed" and "test_subset = 20000" in dense["error"]
    assert "10000 images" in dense["error"]
