"""The lottery engine end to end on CPU: records, lineage, initializers, sparsity, failure isolation."""

from __future__ import annotations

import json

import pytest
import torch

from lthbench.cli import main
from lthbench.config.parse import load_benchmark
from lthbench.train.data import seeded_generator
from lthbench.lottery.workspace import Workspace
from lthbench.run.plan import plan_runs
from lthbench.protocols import InitContext
from lthbench.run.scheduler import run_matrix
from lthbench.store import Store, load_tensors
from helpers.processes import comparable_records
from helpers.tiny_matrix import THREE_INITIALIZERS, write_matrix



def write_bench(tmp_path, mode="iterative", extra=""):
    path = write_matrix(tmp_path, name="e2e", seeds=(0, 1), output=tmp_path / f"out-{mode}", filename=f"{mode}.toml",
                        initializer=THREE_INITIALIZERS, rounds=3, schedule=f'mode = "{mode}"')
    path.write_text(path.read_text() + extra)
    return path


def run(path, registry, data_root):
    bench = load_benchmark(path, registry)
    ws = Workspace(registry, Store(bench.output), data_root, False, torch.device("cpu"))
    return bench, ws, run_matrix(bench, ws)


@pytest.fixture(scope="module")
def iterative(tmp_path_factory, registry, data_root):
    """A 2-seed, 3-round iterative matrix with three initializers, run once for the module."""
    return run(write_bench(tmp_path_factory.mktemp("iterative")), registry, data_root)


def test_end_to_end_run_produces_every_record(iterative):
    bench, ws, counts = iterative
    runs = plan_runs(bench)
    assert counts == {"done": 2 * (1 + 3 * 3)}
    for spec in runs:
        record = ws.store.record(spec.run_id)
        assert record["status"] == "done"
        assert (record["seed"], record["round"], record["initializer"]) == (
            spec.seed, spec.round, spec.initializer_label)
        assert record["curves"]["iteration"][-1] == 60
        assert 0.3 < record["early_stop_test_accuracy"] <= 1
        assert record["early_stop_iteration"] in record["curves"]["iteration"]
    matrix = ws.store.matrix()
    assert len(matrix["runs"]) == len(runs) and matrix["finished"]


def test_iterative_pruning_reaches_the_geometric_schedule(iterative):
    bench, ws, _ = iterative
    for spec in plan_runs(bench):
        record = ws.store.record(spec.run_id)
        for name, layer in record["layers"].items():
            rate = 0.1 if name.startswith(_output_prefix(record)) else 0.2
            expected = layer["total"] * (1 - rate) ** spec.round
            assert abs(layer["remaining"] - expected) <= 1, (name, spec.round)


def _output_prefix(record):
    return max(record["layers"], key=lambda n: n)  # lenet_300_100's output layer sorts last (fc3 / layers.4)


def test_controls_share_the_tickets_mask_and_the_lineage_follows_the_ticket(iterative):
    bench, ws, _ = iterative
    runs = [r for r in plan_runs(bench) if r.seed == 0]
    by = {(r.round, r.initializer_label): r for r in runs}
    for round_ in (1, 2, 3):
        masks = [load_tensors(ws.store.tensors_path(by[(round_, label)].run_id, "mask"))
                 for label in ("original", "reinit", "rewind(iteration=20)")]
        for other in masks[1:]:
            assert all(torch.equal(masks[0][k], other[k]) for k in masks[0])
    # round 2's mask is pruned from the round-1 ticket's trained weights: it keeps only what round 1 kept
    m1 = load_tensors(ws.store.tensors_path(by[(1, "original")].run_id, "mask"))
    m2 = load_tensors(ws.store.tensors_path(by[(2, "original")].run_id, "mask"))
    assert all(not (m2[k] & ~m1[k]).any() for k in m1)
    assert by[(2, "reinit")].mask_parent == by[(1, "original")].run_id


def test_seeds_draw_different_tickets(iterative):
    bench, ws, _ = iterative
    dense = [r for r in plan_runs(bench) if r.round == 0]
    a, b = (load_tensors(ws.store.tensors_path(r.run_id, "init")) for r in dense)
    assert not torch.equal(a[next(iter(a))], b[next(iter(b))])


def _init_context(ws, spec, network, arch):
    return InitContext(network, arch, load_tensors(ws.store.tensors_path(spec.dense_id, "init")),
                       lambda k: load_tensors(ws.store.tensors_path(spec.dense_id, f"rewind_{k}")), 33,
                       seeded_generator("reinit", spec.seed, spec.round, spec.initializer_label), spec.seed,
                       spec.round)


def test_initializers_original_reinit_rewind(iterative, registry):
    bench, ws, _ = iterative
    spec = next(r for r in plan_runs(bench) if r.round == 1 and r.seed == 0)
    arch = registry.architecture("lenet_300_100")
    network = arch.build((1, 28, 28), 10, arch.Params())
    context = _init_context(ws, spec, network, arch)
    theta0 = context.initial_state

    original = registry.initializer("original").initialize(context, None)
    assert all(torch.equal(original.state[k], theta0[k]) for k in theta0)  # bitwise θ₀
    assert original.start_iteration == 0

    reinit = registry.initializer("reinit").initialize(context, None).state
    for name in network.prunable:
        assert not torch.equal(reinit[name], theta0[name])
        # same distribution: means within 5 standard errors, standard deviations within 5 %
        standard_error = theta0[name].std().item() / theta0[name].numel() ** 0.5
        assert reinit[name].mean().item() == pytest.approx(theta0[name].mean().item(), abs=5 * standard_error)
        assert reinit[name].std().item() == pytest.approx(theta0[name].std().item(), rel=0.05)

    rewind = registry.initializer("rewind")
    params = rewind.Params(iteration=20)
    state = rewind.initialize(context, params)
    saved = load_tensors(ws.store.tensors_path(spec.dense_id, "rewind_20"))
    assert state.start_iteration == 20
    assert all(torch.equal(state.state[k], saved[k]) for k in saved)
    assert not torch.equal(saved[network.prunable[0]], theta0[network.prunable[0]])
    assert rewind.rewind_iteration(rewind.Params(epoch=2), 33) == 66


def test_rewind_state_is_the_dense_run_after_k_iterations(iterative, registry, data_root):
    """θ_20 saved during the dense run equals a fresh dense run trained for 20 iterations."""
    bench, ws, _ = iterative
    dense = next(r for r in plan_runs(bench) if r.round == 0 and r.seed == 0)
    from lthbench.train.data import prepare
    from helpers.synthetic import train_alone
    import dataclasses

    arch = registry.architecture("lenet_300_100")
    network = arch.build((1, 28, 28), 10, arch.Params())
    network.module.load_state_dict(load_tensors(ws.store.tensors_path(dense.run_id, "init")))
    training = dataclasses.replace(dense.cell.training, iterations=20)
    data = prepare(registry.dataset("mnist"), data_root, False, dense.cell.training, 0, torch.device("cpu"))
    train_alone(network.module, {}, data, dataclasses.replace(training))
    saved = load_tensors(ws.store.tensors_path(dense.run_id, "rewind_20"))
    assert all(torch.equal(network.module.state_dict()[k], saved[k]) for k in saved)


def test_rerun_skips_everything_stored(iterative, registry, data_root, capsys):
    bench, ws, _ = iterative
    records = {p: p.read_bytes() for p in ws.store.root.glob("runs/*/record.json")}
    counts = run_matrix(bench, ws)
    assert counts == {"done": len(records)}
    assert {p: p.read_bytes() for p in ws.store.root.glob("runs/*/record.json")} == records


def test_one_shot_hits_each_target_from_the_dense_weights(tmp_path, registry, data_root):
    bench, ws, counts = run(_rewrite_one_shot(tmp_path), registry, data_root)
    assert counts == {"done": 4}
    for spec in plan_runs(bench):
        record = ws.store.record(spec.run_id)
        assert spec.mask_parent in (None, spec.dense_id)
        for name, layer in record["layers"].items():
            rate = 0.1 if name == _output_prefix(record) else 0.2
            assert abs(layer["remaining"] - layer["total"] * (1 - rate) ** spec.round) <= 1


def _rewrite_one_shot(tmp_path):
    path = write_bench(tmp_path, "one_shot")
    text = path.read_text().replace('["original", "reinit", { name = "rewind", iteration = 20 }]', '["original"]')
    path.write_text(text.replace("seeds = [0, 1]", "seeds = [0]"))
    return path


FAILING_PLUGIN = '''
from lthbench import hookimpl
from lthbench.protocols import Pruner


class Exploding(Pruner):
    name = "exploding"
    description = "raises on its second round"

    def prune(self, context, params):
        if context.weights and all(m.all() for m in context.masks.values()):
            from lthbench_plugins.pruners import LayerwiseMagnitude
            return LayerwiseMagnitude().prune(context, LayerwiseMagnitude.Params())
        raise RuntimeError("boom in round two")


@hookimpl
def lthbench_pruners():
    return [Exploding()]
'''


def test_a_failing_plugin_fails_its_chain_only(tmp_path, data_root, monkeypatch):
    import sys

    from lthbench.registry import build_registry

    (tmp_path / "exploding_plugin.py").write_text(FAILING_PLUGIN)
    monkeypatch.syspath_prepend(str(tmp_path))
    sys.modules.pop("exploding_plugin", None)
    import exploding_plugin

    registry = build_registry((exploding_plugin,))
    path = write_bench(tmp_path)
    text = path.read_text().replace('pruner = "layerwise_magnitude"', 'pruner = ["exploding", "layerwise_magnitude"]')
    text = text.replace("seeds = [0, 1]", "seeds = [0]").replace(
        '["original", "reinit", { name = "rewind", iteration = 20 }]', '["original", "reinit"]')
    path.write_text(text)
    bench, ws, counts = run(path, registry, data_root)
    # exploding: dense + round 1 (2 runs) fine, round 2 fails for both initializers, round 3 blocked
    # layerwise: everything done (dense shared with the exploding cell)
    assert counts == {"done": 1 + 2 + 6, "failed": 2, "blocked": 2}
    failed = [ws.store.record(r.run_id) for r in plan_runs(bench) if r.round == 2 and r.cell.pruner.name == "exploding"]
    assert all(f["status"] == "failed" and "boom in round two" in f["error"] and "Traceback" in f["traceback"]
               for f in failed)
    # rerunning keeps the failures unless asked; --retry-failed tries only them again
    _, _, again = run(path, registry, data_root)
    assert again == counts
    ws2 = Workspace(registry, Store(bench.output), data_root, False, torch.device("cpu"))
    assert run_matrix(bench, ws2, retry_failed=True) == counts


def test_cli_run_and_status(tmp_path, data_root, capsys):
    path = write_bench(tmp_path)
    text = path.read_text().replace("seeds = [0, 1]", "seeds = [0]").replace("rounds = 3", "rounds = 1")
    path.write_text(text.replace('["original", "reinit", { name = "rewind", iteration = 20 }]', '["original"]'))
    assert main(["status", str(path)]) == 0
    assert "2 " in capsys.readouterr().out  # pending runs
    assert main(["run", str(path), "--data-root", str(data_root), "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "2 done" in out
    records = list((tmp_path / "out-iterative" / "runs").glob("*/record.json"))
    assert len(records) == 2 and all(json.loads(p.read_text())["status"] == "done" for p in records)


def test_a_rewind_point_after_the_end_of_training_fails_the_dense_run_with_a_clear_error(tmp_path, registry,
                                                                                         data_root):
    path = write_matrix(tmp_path, initializer='["original", { name = "rewind", epoch = 50 }]')
    bench, ws, counts = run(path, registry, data_root)
    assert counts == {"failed": 1, "blocked": 4}
    dense = plan_runs(bench)[0]
    error = ws.store.record(dense.run_id)["error"]
    assert "rewind(epoch=50.0) rewinds to iteration 1500, but the dense run trains for 60 iterations" in error


def test_a_rewinding_point_added_later_reuses_the_dense_run_and_recomputes_its_state_bit_for_bit(
        tmp_path, registry, data_root, one_thread):
    rewind = '["original", { name = "rewind", iteration = 20 }]'
    for folder in ("a", "b"):
        (tmp_path / folder).mkdir()
    bench, ws, counts = run(write_matrix(tmp_path / "a", initializer=rewind), registry, data_root)
    assert counts == {"done": 5}
    later = write_matrix(tmp_path / "b", initializer='"original"')
    assert run(later, registry, data_root)[2] == {"done": 3}
    later.write_text(later.read_text().replace('initializer = "original"', f"initializer = {rewind}"))
    bench_b, ws_b, counts_b = run(later, registry, data_root)
    assert counts_b == {"done": 5}
    dense = plan_runs(bench_b)[0]
    assert ws_b.store.log_path(dense.run_id).read_text().count(" started ") == 1  # not trained again
    # the same numbers; only the records written before the change name the cell by its former id
    without_cell = lambda output: {k: {**r, "cell_id": None} for k, r in comparable_records(output).items()}
    assert without_cell(tmp_path / "b" / "out") == without_cell(tmp_path / "a" / "out")
    saved, recomputed = (load_tensors(w.store.tensors_path(dense.run_id, "rewind_20")) for w in (ws, ws_b))
    assert saved.keys() == recomputed.keys() and all(torch.equal(saved[k], recomputed[k]) for k in saved)
