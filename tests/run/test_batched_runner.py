"""Batched groups in the runner: the same records as runs trained alone, failure isolation, the memory budget."""

from __future__ import annotations

import dataclasses
import signal

import pytest
import torch

from lthbench import hookimpl
from lthbench.train.memory import MAX_TRIALS, bytes_per_model, trials_that_fit, trials_that_fit_device
from lthbench.cli import main
from lthbench.config.parse import load_benchmark
from lthbench.lottery.execute import batch_key
from lthbench.lottery.workspace import Workspace
from lthbench.run.plan import plan_runs
from lthbench.protocols import Initializer
from lthbench.registry import build_registry
from lthbench.run.scheduler import Grouper, run_matrix
from lthbench.store import Store, load_tensors
from helpers.processes import kill_when, lthbench_run, comparable_records
from helpers.synthetic import synthetic_data
from helpers import tiny_matrix


def write_matrix(folder, initializers=tiny_matrix.THREE_INITIALIZERS, schedule=""):
    return tiny_matrix.write_matrix(folder, name="batched", seeds=(0, 1), initializer=initializers, schedule=schedule)


@pytest.fixture(scope="module")
def matrix(tmp_path_factory, data_root):
    """The matrix file and its records trained one run at a time (``--batch-trials 1``)."""
    folder = tmp_path_factory.mktemp("batched")
    path = write_matrix(folder)
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert main(["run", str(path), "--data-root", str(data_root), "--quiet", "--batch-trials", "1"]) == 0
    finally:
        torch.set_num_threads(before)
    return path, folder / "out"


def logs_of(output):
    return {p.parent.name: p.read_text() for p in output.glob("runs/*/log.txt")}


@pytest.mark.parametrize("trials", [2, 4])
def test_batched_groups_record_what_single_runs_record_bit_for_bit(matrix, data_root, tmp_path, trials, one_thread):
    path, single = matrix
    out = tmp_path / "out"
    # one job: every group is filled from all the runs ready at once (two jobs start a round's groups
    # as soon as either parent is stored, so their sizes depend on timing)
    args = ["run", str(path), "--data-root", str(data_root), "--quiet", "--output", str(out), "--jobs", "1"]
    assert main(args + ["--batch-trials", str(trials)]) == 0
    grouped = [log for log in logs_of(out).values() if f"in a batched group of {trials} runs" in log]
    assert len(grouped) == 12  # 2 seeds × 2 rounds × 3 initializers: all pruned runs trained in full groups
    want, got = comparable_records(single), comparable_records(out)
    assert got.keys() == want.keys()
    assert all(record["status"] == "done" for record in got.values())
    assert got == want
    for run_id in got:
        names = sorted(p.name for p in (single / "runs" / run_id).glob("*.pt"))
        assert names == sorted(p.name for p in (out / "runs" / run_id).glob("*.pt")) and "mask.pt" in names
        for name in names:
            tensors, expected = (load_tensors(o / "runs" / run_id / name) for o in (out, single))
            assert tensors.keys() == expected.keys()
            assert all(torch.equal(tensors[key], expected[key]) for key in expected)


def test_a_group_killed_mid_training_resumes_from_its_checkpoint(tmp_path, registry, data_root, one_thread,
                                                                  monkeypatch):
    monkeypatch.setenv("LTHBENCH_DATA", str(data_root))
    (tmp_path / "reference").mkdir()
    matrix = dict(seeds=(0, 1), initializer='["original", "reinit"]', rounds=1, iterations=200)
    bench = load_benchmark(tiny_matrix.write_matrix(tmp_path / "reference", **matrix), registry)
    run_matrix(bench, Workspace(registry, Store(bench.output), data_root, False, torch.device("cpu")),
               checkpoint_every=0)  # one run at a time
    path = tiny_matrix.write_matrix(tmp_path, **matrix)
    out = tmp_path / "out"
    args = ("--batch-trials", "4", "--jobs", "1", "--checkpoint-every", "20", "--quiet")  # one group of 4
    killed = lthbench_run(path, *args)
    kill_when(killed, lambda: any(out.glob("runs/*/group-*.pt")))
    assert killed.returncode == -signal.SIGKILL  # killed while the group trained
    final = lthbench_run(path, *args)
    assert final.wait() == 0, final.stdout.read().decode()
    logs = "".join(p.read_text() for p in out.glob("runs/*/log.txt"))
    assert "resumed the batched group of 4 runs from its checkpoint at iteration" in logs
    assert comparable_records(out) == comparable_records(tmp_path / "reference" / "out")
    assert not list(out.glob("runs/*/group-*.pt")) and not list(out.glob("runs/*/checkpoint.pt"))


def test_groups_hold_runs_of_one_batch_key_lower_rounds_first(tmp_path, registry):
    bench = load_benchmark(write_matrix(tmp_path), registry)
    runs = plan_runs(bench)
    ws = Workspace(registry, Store(bench.output), tmp_path, False, torch.device("cpu"))
    groups = Grouper(ws, 4).groups(list(reversed(runs)))
    assert [[r.round for r in group] for group in groups] == [[0], [0], [1] * 4, [1, 1, 2, 2], [2] * 4]
    assert Grouper(ws, 1).groups(runs) == [(run,) for run in runs]
    pruned = runs[1]
    assert batch_key(runs[0], ws) is None  # a dense run saves θ_k mid-training
    bf16 = dataclasses.replace(pruned, cell=dataclasses.replace(
        pruned.cell, training=dataclasses.replace(pruned.cell.training, precision="bf16")))
    assert batch_key(bf16, ws) is None
    resnet = dataclasses.replace(pruned, cell=dataclasses.replace(
        pruned.cell, architecture=dataclasses.replace(pruned.cell.architecture, name="resnet20",
                                                    params=registry.architecture("resnet20").Params())))
    assert batch_key(resnet, ws) is None  # BatchNorm


def test_convolutional_networks_train_alone_when_convolutions_do_not_stack(tmp_path, registry):
    bench = load_benchmark(write_matrix(tmp_path), registry)
    runs = [run for run in plan_runs(bench) if run.round == 1]
    ws = Workspace(registry, Store(bench.output), tmp_path, False, torch.device("cpu"))
    conv = [dataclasses.replace(run, cell=dataclasses.replace(
        run.cell, architecture=dataclasses.replace(run.cell.architecture, name="conv2",
                                                 params=registry.architecture("conv2").Params()),
        dataset=dataclasses.replace(run.cell.dataset, name="cifar10"))) for run in runs]
    assert batch_key(conv[0], ws) is not None  # conv-2 can stack ...
    assert batch_key(conv[0], ws, convolutions=False) is None  # ... unless convolutions are kept alone
    assert batch_key(runs[0], ws, convolutions=False) is not None  # a fully connected network still stacks
    assert [len(g) for g in Grouper(ws, 4, convolutions=False).groups(conv)] == [1] * len(conv)
    assert [len(g) for g in Grouper(ws, len(runs), convolutions=False).groups(runs)] == [len(runs)]


class Exploding(Initializer):
    """Raises instead of initialising."""

    name = "exploding"
    description = "raises in every run"

    def initialize(self, context, params):
        raise RuntimeError("boom in the initializer")


class ExplodingPlugin:
    """Registers :class:`Exploding`."""

    @hookimpl
    def lthbench_initializers(self):
        return [Exploding()]


def test_a_raising_member_fails_alone_and_blocks_its_dependents(tmp_path, data_root, one_thread):
    registry = build_registry((ExplodingPlugin(),))
    path = write_matrix(tmp_path, '["original", "exploding"]', 'mask_source = "exploding"')
    bench = dataclasses.replace(load_benchmark(path, registry), seeds=(0,))
    ws = Workspace(registry, Store(bench.output), data_root, False, torch.device("cpu"))
    counts = run_matrix(bench, ws, batch_trials=4)
    # round 1 trains as a group, fails, and retrains alone: only the exploding run fails; round 2 is blocked
    assert counts == {"done": 2, "failed": 1, "blocked": 2}
    dense, original, exploding = plan_runs(bench)[:3]
    assert "boom in the initializer" in ws.store.record(exploding.run_id)["error"]
    assert ws.store.record(original.run_id)["status"] == "done"
    log = ws.store.log_path(original.run_id).read_text()
    assert "batched training failed (RuntimeError: boom in the initializer); training this run alone" in log
    assert log.count("finished: done") == 1
    assert not list(ws.store.root.glob("runs/*/lock"))


def test_batch_trials_below_one_is_refused(tmp_path, capsys):
    assert main(["run", str(write_matrix(tmp_path)), "--batch-trials", "0"]) == 2
    assert "--batch-trials = 0 must be at least 1" in capsys.readouterr().err


def test_bytes_per_model_counts_weights_gradients_masks_optimizer_state_and_activations():
    # per parameter: weight, gradient, float mask (3 × 4 bytes), optimizer state, a bool mask byte
    assert bytes_per_model(1000, "adam", 5000) == 1000 * (4 * 5 + 1) + 5000
    assert bytes_per_model(1000, "sgd", 5000) == 1000 * (4 * 4 + 1) + 5000
    assert bytes_per_model(10, "sgd", 0, element_size=2) == 10 * (2 * 4 + 1)


def test_trials_fill_half_the_free_memory_between_one_and_the_cap():
    assert trials_that_fit(26_000, 1_000_000) == 19  # 500 000 // 26 000
    assert trials_that_fit(26_000, 1_000_000, fraction=1.0) == 38
    assert trials_that_fit(100, 10**12) == MAX_TRIALS == 64
    assert trials_that_fit(10**9, 10**6) == 1  # one model always trains, as it would alone
    assert trials_that_fit(100, 1000, cap=3) == 3


def test_the_cpu_has_no_memory_budget():
    from lthbench.config.settings import Training

    module = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10))
    assert trials_that_fit_device(module, synthetic_data(), Training()) == MAX_TRIALS
