"""The runner: locks, status, failure isolation across worker processes, exit codes, concurrent runs."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

from lthbench.run import locks
from lthbench.train.checkpoint import Checkpointer
from lthbench.cli import main
from lthbench.config.parse import load_benchmark
from lthbench.run.pool import LocalExecutor, WorkerSettings, worker_slots
from lthbench.lottery.workspace import Workspace
from lthbench.run.plan import plan_runs
from lthbench.run.scheduler import RunBoard, iterations_left, run_matrix, statuses, tidy_store
from lthbench.store import Store
from helpers.processes import comparable_records
from helpers import tiny_matrix

FAILING_PLUGINS = '''
import os

from lthbench import hookimpl
from lthbench.protocols import Pruner
from lthbench.registry import build_registry


class Failing(Pruner):
    """Prunes nothing useful: fails on round 1."""

    def prune(self, context, params):
        if self.name == "crashing":
            os._exit(3)  # the worker process dies
        raise RuntimeError("boom in round one")


class Exploding(Failing):
    name = "exploding"
    description = "raises on round 1"


class Crashing(Failing):
    name = "crashing"
    description = "kills its process on round 1"


@hookimpl
def lthbench_pruners():
    return [Exploding(), Crashing()]


def registry():
    import sys
    return build_registry((sys.modules[__name__],))
'''


def write_matrix(folder, pruners=("layerwise_magnitude",), seeds=(0,)):
    return tiny_matrix.write_matrix(folder, name="runner", seeds=seeds, pruner=list(pruners), iterations=40)


@pytest.fixture
def failing_plugins(tmp_path, monkeypatch):
    """A plugin module with an ``exploding`` and a ``crashing`` pruner, importable by worker processes too."""
    folder = tmp_path / "plugins"
    folder.mkdir()
    (folder / "failing_plugins.py").write_text(FAILING_PLUGINS)
    monkeypatch.syspath_prepend(str(folder))
    sys.modules.pop("failing_plugins", None)
    import failing_plugins

    return failing_plugins


def test_a_lock_excludes_live_processes_and_a_dead_ones_lock_is_taken_over(tmp_path):
    path = tmp_path / "runs" / "a" / "lock"
    assert locks.acquire(path) and not locks.held_by_other(path)
    locks.release(path)
    assert not path.exists()
    with subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"]) as other:
        path.write_text(json_holder(other.pid))
        assert locks.held_by_other(path) and not locks.acquire(path)
        other.kill()
        other.wait()
    assert not locks.held_by_other(path) and locks.acquire(path)  # its holder is dead: stale
    assert locks.read_holder(path)["pid"] == os.getpid()
    path.write_text("")  # a writer killed between creating and filling the lock
    assert locks.acquire(path)


CONTENDER = """
import sys
from pathlib import Path
from lthbench.run import locks

lock, journal, name = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
for _ in range(300):
    if locks.acquire(lock):
        with journal.open("a") as handle:
            handle.write(name + " in\\n")
        with journal.open("a") as handle:
            handle.write(name + " out\\n")
        locks.release(lock)
"""


def test_two_processes_contending_for_one_lock_never_hold_it_together(tmp_path):
    lock, journal = tmp_path / "runs" / "a" / "lock", tmp_path / "journal"
    lock.parent.mkdir(parents=True)
    script = tmp_path / "contender.py"
    script.write_text(CONTENDER)
    processes = [subprocess.Popen([sys.executable, str(script), str(lock), str(journal), name]) for name in "AB"]
    assert [p.wait() for p in processes] == [0, 0]
    lines = journal.read_text().splitlines()
    assert len(lines) >= 2 and not lock.exists()
    holder = None
    for line in lines:  # every "in" is followed by the same process's "out"
        name, what = line.split()
        assert (what == "in" and holder is None) or (what == "out" and holder == name), lines
        holder = name if what == "in" else None


def json_holder(pid):
    """The lock file that the live process ``pid`` of this host would write."""
    import json

    return json.dumps({**locks.holder_identity(), "pid": pid, "started": locks._start_time(pid)})


def test_a_recorded_runs_leftovers_go_once_its_trainer_is_dead(tmp_path, registry):
    bench = load_benchmark(write_matrix(tmp_path), registry)
    store = Store(bench.output)
    dense = plan_runs(bench)[0]
    store.write_record(dense.run_id, {"run_id": dense.run_id, "status": "done"})
    lock, checkpoint = store.lock_path(dense.run_id), store.checkpoint_path(dense.run_id)
    temporary = store.run_dir(dense.run_id) / ".weights.pt.123.tmp"
    with subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"]) as other:
        for path, text in ((lock, json_holder(other.pid)), (checkpoint, "state"), (temporary, "half")):
            path.write_text(text)
        tidy_store(plan_runs(bench), store, retry_failed=False)
        assert lock.exists() and checkpoint.exists() and temporary.exists()  # its trainer is still cleaning up
        other.kill()
        other.wait()
    tidy_store(plan_runs(bench), store, retry_failed=False)
    board = RunBoard(plan_runs(bench), store)
    assert not lock.exists() and not checkpoint.exists() and not temporary.exists()
    assert board.state[dense.run_id] == "done" and store.record(dense.run_id)["status"] == "done"


def test_worker_slots_share_the_usable_cores_and_put_k_workers_on_each_gpu():
    cores = len(os.sched_getaffinity(0))
    assert worker_slots(["cpu"], 3, 1) == [("cpu", cores)]
    assert worker_slots(["cpu"], 1, 2) == [("cpu", max(1, cores // 2))] * 2
    assert worker_slots(["cpu"], 1, 2, threads=3) == [("cpu", 3)] * 2
    assert [d for d, _ in worker_slots(["cuda:0", "cuda:1"], 2, 4)] == ["cuda:0", "cuda:0", "cuda:1", "cuda:1"]


def test_status_counts_running_runs_and_iterations_left_from_checkpoints(tmp_path, registry, capsys):
    bench = load_benchmark(write_matrix(tmp_path), registry)
    store = Store(bench.output)
    dense, first, second = plan_runs(bench)
    with subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"]) as other:
        store.lock_path(dense.run_id).parent.mkdir(parents=True)
        store.lock_path(dense.run_id).write_text(json_holder(other.pid))
        Checkpointer(store.checkpoint_path(dense.run_id), 10).save({"iteration": 30})
        assert statuses(plan_runs(bench), store) == {dense.run_id: "running", first.run_id: "pending",
                                                     second.run_id: "pending"}
        assert [iterations_left(r, store, registry) for r in (dense, first)] == [10, 40]
        assert main(["status", str(tmp_path / "matrix.toml")]) == 0
        assert "running" in capsys.readouterr().out
        other.kill()
    assert statuses(plan_runs(bench), store)[dense.run_id] == "pending"  # a dead holder runs nothing


def test_a_rewound_run_has_only_the_iterations_after_its_rewind_point_left(tmp_path, registry):
    path = tiny_matrix.write_matrix(tmp_path, iterations=40, initializer='{ name = "rewind", iteration = 30 }')
    store = Store(tmp_path / "out")
    dense, rewound, _ = plan_runs(load_benchmark(path, registry))
    assert (iterations_left(dense, store, registry), iterations_left(rewound, store, registry)) == (40, 10)


def test_failures_stay_in_their_chain_across_worker_processes(tmp_path, registry, data_root, failing_plugins,
                                                              one_thread):
    reference_dir = tmp_path / "reference"
    reference_dir.mkdir()
    bench = load_benchmark(write_matrix(reference_dir, seeds=(0, 1)), registry)
    run_matrix(bench, Workspace(registry, Store(bench.output), data_root, False, torch.device("cpu")))

    own = failing_plugins.registry()
    bench = load_benchmark(write_matrix(tmp_path, ["exploding", "crashing", "layerwise_magnitude"], (0, 1)), own)
    ws = Workspace(own, Store(bench.output), data_root, False, torch.device("cpu"))
    slots = [WorkerSettings(bench.output, data_root, False, "cpu", 1, 10, failing_plugins.registry)] * 2
    counts = run_matrix(bench, ws, executor=LocalExecutor(slots))
    # per seed: the shared dense run and the layerwise chain are done; each failing cell's round 1 fails
    assert counts == {"done": 2 * 3, "failed": 2 * 2, "blocked": 2 * 2}
    errors = {r.cell.pruner.name: ws.store.record(r.run_id)["error"] for r in plan_runs(bench)
              if r.round == 1 and r.seed == 0 and r.cell.pruner.name != "layerwise_magnitude"}
    assert "boom in round one" in errors["exploding"]
    assert "died (exit code 3)" in errors["crashing"]
    done = comparable_records(ws.store.root)
    assert {k: v for k, v in done.items() if v["status"] == "done"} == comparable_records(reference_dir / "out")


def test_cli_exits_non_zero_with_a_summary_and_retries_only_failed_runs(tmp_path, data_root, failing_plugins,
                                                                       monkeypatch, capsys, one_thread):
    import lthbench.registry

    monkeypatch.setattr(lthbench.registry, "default_registry", failing_plugins.registry)
    path = write_matrix(tmp_path, ["exploding", "layerwise_magnitude"])
    args = ["run", str(path), "--data-root", str(data_root), "--quiet"]
    assert main(args[:-1]) == 1
    out = capsys.readouterr().out
    assert "3 done" in out and "1 failed" in out and "1 blocked" in out
    ended = [line.split(" ")[0] for line in out.splitlines() if line.startswith("[")]
    assert ended == ["[1/5]", "[2/5]", "[3/5]", "[5/5]"]  # the total stays; a blocked run counts as settled
    assert "failed: lenet · exploding · seed 0 · round 1" in out and "boom in round one" in out
    runs = tmp_path / "out" / "runs"
    done = {p: p.read_bytes() for p in runs.glob("*/record.json") if b'"done"' in p.read_bytes()}
    assert main(args + ["--retry-failed"]) == 1
    assert {p: p.read_bytes() for p in done} == done  # done runs were not touched
    logs = {p.parent.name: p.read_text().count(" started ") for p in runs.glob("*/log.txt")}
    assert sorted(logs.values()) == [1, 1, 1, 2]  # only the failed run ran again


def test_two_concurrent_runs_share_one_output_folder(tmp_path, data_root):
    path = write_matrix(tmp_path, ["layerwise_magnitude", "global_magnitude"], seeds=(0, 1))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "lthbench.cli", "run", str(path), "--data-root", str(data_root), "--quiet"]
    processes = [subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env)
                 for _ in range(2)]
    outputs = [p.communicate()[0].decode() for p in processes]
    assert [p.returncode for p in processes] == [0, 0], outputs
    runs = tmp_path / "out" / "runs"
    records = comparable_records(tmp_path / "out")
    assert len(records) == 2 * (1 + 2 + 2) and all(r["status"] == "done" for r in records.values())
    assert all(p.read_text().count(" started ") == 1 for p in runs.glob("*/log.txt"))  # nothing ran twice
    assert not list(runs.glob("*/lock")) and not list(runs.glob("*/checkpoint.pt"))
