"""What a store says about where and how it was made: file modes, the matrix's history, the environment of a record."""

from __future__ import annotations

import json
import os
import socket
import stat

import pytest
import torch

from lthbench.config.parse import load_benchmark
from lthbench.lottery.workspace import Workspace, processor_model
from lthbench.run.scheduler import run_matrix
from lthbench.store import Store, save_state
from helpers import tiny_matrix


def write_matrix(folder):
    return tiny_matrix.write_matrix(folder, name="environment", rounds=1, iterations=20, eval_every=10)


def run(path, registry, data_root, argv):
    """Run the matrix in this process, as ``lthbench run`` given the command line ``argv``."""
    bench = load_benchmark(path, registry)
    ws = Workspace(registry, Store(bench.output), data_root, False, torch.device("cpu"))
    return ws.store, run_matrix(bench, ws, command=argv)


@pytest.fixture
def umask():
    """Set the process's umask for one test, restoring it after."""
    before = os.umask(0o022)
    os.umask(before)
    yield lambda value: os.umask(value)
    os.umask(before)


@pytest.mark.parametrize("mask", [0o022, 0o002], ids=["umask-022", "umask-002"])
def test_every_file_and_folder_of_the_store_follows_the_users_umask(mask, umask, tmp_path, registry, data_root,
                                                                    one_thread):
    umask(mask)
    store, counts = run(write_matrix(tmp_path), registry, data_root, ["lthbench", "run"])
    assert counts == {"done": 2}
    run_id = next(store.root.glob("runs/*/record.json")).parent.name
    save_state(store.checkpoint_path(run_id), {"iteration": 10, "weights": torch.zeros(3)})  # as a checkpoint is
    files = [p for p in store.root.rglob("*") if p.is_file()]
    names = {p.name for p in files}
    assert {"matrix.json", "record.json", "log.txt", "checkpoint.pt"} <= names
    assert len([name for name in names if name.endswith(".pt")]) >= 3  # θ₀, a mask, trained weights and more
    modes = {str(p.relative_to(store.root)): stat.S_IMODE(p.stat().st_mode) for p in files}
    assert modes == dict.fromkeys(modes, 0o666 & ~mask)
    folders = {str(p.relative_to(store.root)): stat.S_IMODE(p.stat().st_mode) for p in store.root.rglob("*")
               if p.is_dir()}
    assert folders and folders == dict.fromkeys(folders, 0o777 & ~mask)


def test_a_rerun_keeps_the_first_start_and_appends_to_the_history(tmp_path, registry, data_root, one_thread):
    path = write_matrix(tmp_path)
    store, _ = run(path, registry, data_root, ["lthbench", "run", str(path)])
    first = store.matrix()
    store, counts = run(path, registry, data_root, ["lthbench", "run", str(path), "--quiet"])  # trains nothing
    assert counts == {"done": 2}
    matrix = store.matrix()
    assert matrix["started"] == first["started"] == first["history"][0]["started"]
    assert [entry["argv"] for entry in matrix["history"]] == [["lthbench", "run", str(path)],
                                                              ["lthbench", "run", str(path), "--quiet"]]
    assert matrix["history"][0] == first["history"][0]
    last = matrix["history"][-1]
    assert matrix["finished"] == last["finished"] and last["finished"] >= last["started"] >= first["finished"]
    assert last["host"] == socket.gethostname() and last["versions"] == matrix["versions"]
    assert set(last) == {"started", "finished", "git_commit", "versions", "argv", "host"}


def test_an_old_matrix_file_without_history_becomes_its_first_entry(tmp_path, registry, data_root, one_thread):
    path = write_matrix(tmp_path)
    store = Store(tmp_path / "out")
    old = {"started": "2000-01-01T00:00:00+00:00", "finished": "2000-01-01T00:00:01+00:00", "git_commit": "abc",
           "versions": {"torch": "2.11"}}
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "matrix.json").write_text(json.dumps(old))
    run(path, registry, data_root, ["lthbench", "run"])
    matrix = store.matrix()
    assert matrix["started"] == old["started"]
    assert matrix["history"][0] == {**old, "argv": None, "host": None}
    assert len(matrix["history"]) == 2


def test_a_record_names_the_processor_model_and_the_versions_of_what_computed_it(tmp_path, registry, data_root,
                                                                                  one_thread):
    store, _ = run(write_matrix(tmp_path), registry, data_root, ["lthbench", "run"])
    record = json.loads(next(store.root.glob("runs/*/record.json")).read_text())
    assert record["device"] == f"cpu ({processor_model()})"
    assert processor_model() not in ("", "x86_64", "aarch64")  # a model name, where the kernel gives one
    assert {"lthbench", "torch", "torchvision", "numpy", "scipy", "pandas"} <= set(record["versions"])
    import numpy
    import pandas
    import scipy

    assert (record["versions"]["numpy"], record["versions"]["scipy"], record["versions"]["pandas"]) == (
        numpy.__version__, scipy.__version__, pandas.__version__)
