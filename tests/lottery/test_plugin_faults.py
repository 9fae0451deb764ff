"""Plugins that misbehave: edit the engine's masks in place, exit the process, or raise SystemExit."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

from lthbench.config.parse import load_benchmark
from lthbench.lottery.workspace import Workspace
from lthbench.run.plan import plan_runs
from lthbench.run.scheduler import run_matrix
from lthbench.store import Store
from helpers import tiny_matrix

FAULTY_PLUGINS = '''
import os

from lthbench import hookimpl
from lthbench.protocols import Pruner
from lthbench.registry import build_registry


def _magnitude(context):
    from lthbench_plugins.pruners import LayerwiseMagnitude
    return LayerwiseMagnitude().prune(context, LayerwiseMagnitude.Params())


class Reviving(Pruner):
    """Prunes by magnitude in round 1; later sets every mask it was given to True in place and returns them."""

    name = "reviving"
    description = "revives pruned weights by editing context.masks in place"

    def prune(self, context, params):
        if context.level == 1:
            return _magnitude(context)
        for mask in context.masks.values():
            mask.fill_(True)
        return context.masks


class Faulty(Pruner):
    """Ends the process or raises SystemExit on round 1, as its name says."""

    def prune(self, context, params):
        if self.name == "os_exit_3":
            os._exit(3)
        if self.name == "system_exit_0":
            raise SystemExit(0)
        raise SystemExit("a plugin gave up")


def _faulty(name):
    return type(name, (Faulty,), {"name": name, "description": name})()


@hookimpl
def lthbench_pruners():
    return [Reviving(), *(_faulty(n) for n in ("os_exit_3", "system_exit_0", "system_exit_text"))]


def registry():
    import sys
    return build_registry((sys.modules[__name__],))
'''


@pytest.fixture
def faulty_plugins(tmp_path, monkeypatch):
    """A plugin module of misbehaving pruners, importable by worker processes and ``lthbench`` subprocesses."""
    folder = tmp_path / "plugins"
    folder.mkdir()
    (folder / "faulty_plugins.py").write_text(FAULTY_PLUGINS)
    monkeypatch.syspath_prepend(str(folder))
    sys.modules.pop("faulty_plugins", None)
    import faulty_plugins

    return faulty_plugins


def run_in_process(path, registry, data_root):
    bench = load_benchmark(path, registry)
    ws = Workspace(registry, Store(bench.output), data_root, False, torch.device("cpu"))
    return bench, ws, run_matrix(bench, ws)


def test_a_pruner_editing_the_masks_it_was_given_cannot_revive_weights(tmp_path, faulty_plugins, data_root,
                                                                       one_thread):
    path = tiny_matrix.write_matrix(tmp_path, pruner="reviving", rounds=2, iterations=40)
    bench, ws, counts = run_in_process(path, faulty_plugins.registry(), data_root)
    assert counts == {"done": 2, "failed": 1}
    round_two = plan_runs(bench)[-1]
    record = ws.store.record(round_two.run_id)
    assert record["status"] == "failed" and "revived weights" in record["error"]
    round_one = ws.store.record(plan_runs(bench)[1].run_id)
    assert round_one["weights_remaining"] < 0.81  # what round 1 kept is stored as it was pruned


@pytest.mark.parametrize("pruner", ["system_exit_0", "system_exit_text"])
def test_a_plugin_raising_system_exit_fails_its_run_in_process(tmp_path, faulty_plugins, data_root, pruner,
                                                               one_thread):
    path = tiny_matrix.write_matrix(tmp_path, pruner=[pruner, "layerwise_magnitude"], rounds=1, iterations=40)
    bench, ws, counts = run_in_process(path, faulty_plugins.registry(), data_root)
    assert counts == {"done": 2, "failed": 1}
    failed = next(ws.store.record(r.run_id) for r in plan_runs(bench) if r.cell.pruner.name == pruner and r.round)
    assert failed["status"] == "failed" and failed["error"].startswith("SystemExit")
    assert "Traceback" in failed["traceback"]


def lthbench_run(path, plugins_folder, data_root, *args):
    """``lthbench run`` in a subprocess whose registry is the faulty plugins module's."""
    script = ("import sys, lthbench.registry, faulty_plugins\n"
              "lthbench.registry.default_registry = faulty_plugins.registry\n"
              "from lthbench.cli import main\nsys.exit(main(sys.argv[1:]))\n")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(plugins_folder)}
    return subprocess.run([sys.executable, "-c", script, "run", str(path), "--data-root", str(data_root), *args],
                          capture_output=True, text=True, env=env, timeout=600)


def test_plugins_that_end_the_process_fail_their_run_and_the_matrix_says_so(tmp_path, faulty_plugins, data_root):
    """A plugin that leaves the process (os._exit, SystemExit) under ``lthbench run`` fails that run only."""
    pruners = ["os_exit_3", "system_exit_0", "layerwise_magnitude"]
    path = tiny_matrix.write_matrix(tmp_path, pruner=pruners, rounds=1, iterations=40)
    plugins = tmp_path / "plugins"
    first = lthbench_run(path, plugins, data_root, "--quiet")
    assert first.returncode == 1, first.stdout + first.stderr
    assert "2 done" in first.stdout and "2 failed" in first.stdout
    bench = load_benchmark(path, faulty_plugins.registry())
    store = Store(bench.output)
    errors = {r.cell.pruner.name: store.record(r.run_id)["error"] for r in plan_runs(bench) if r.round}
    assert "died (exit code 3)" in errors["os_exit_3"]
    assert errors["system_exit_0"].startswith("SystemExit")
    assert store.record(next(r.run_id for r in plan_runs(bench) if r.round and
                             r.cell.pruner.name == "layerwise_magnitude"))["status"] == "done"
    logs = {p: p.read_text() for p in store.root.glob("runs/*/log.txt")}
    _, _, again = run_in_process(path, faulty_plugins.registry(), data_root)  # nothing is tried, so nothing dies
    assert again == {"done": 2, "failed": 2}
    assert {p: p.read_text() for p in store.root.glob("runs/*/log.txt")} == logs
