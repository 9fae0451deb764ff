"""A store that a user or a full disk damaged: deleted tensor files, symbolic links out of it, no space left."""

from __future__ import annotations

import hashlib
import os
import random
import resource
import shutil
import subprocess
import sys

import pytest
import torch

from lthbench.config.parse import load_benchmark
from lthbench.errors import UserError
from lthbench.lottery.workspace import Workspace
from lthbench.run.plan import plan_runs
from lthbench.run.scheduler import run_matrix
from lthbench.store import Store, StoreFullError
from helpers import tiny_matrix
from helpers.processes import comparable_records


def write_matrix(folder):
    return tiny_matrix.write_matrix(folder, name="faults", iterations=40, rounds=2,
                                    initializer='["original", "reinit"]')


def run(path, registry, data_root, **options):
    bench = load_benchmark(path, registry)
    ws = Workspace(registry, Store(bench.output), data_root, False, torch.device("cpu"))
    return bench, ws, run_matrix(bench, ws, **options)


@pytest.fixture(scope="module")
def finished(tmp_path_factory, registry, data_root):
    """A finished 2-round matrix (original and reinit): its benchmark file and records."""
    folder = tmp_path_factory.mktemp("finished")
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        bench, ws, counts = run(write_matrix(folder), registry, data_root)
    finally:
        torch.set_num_threads(before)
    assert counts == {"done": 5}
    return folder, bench, comparable_records(ws.store.root)


def copy_of(finished, tmp_path):
    """A fresh copy of the finished folder (benchmark file pointing at the copy's output)."""
    folder, bench, reference = finished
    shutil.copytree(folder / "out", tmp_path / "out", symlinks=True)
    path = write_matrix(tmp_path)
    return path, plan_runs(bench), reference


# ---- D11: a deleted tensor file of a finished parent -------------------------------------------------------------

def test_a_deleted_tensor_file_of_a_finished_parent_is_redone(finished, tmp_path, registry, data_root, one_thread):
    path, runs, reference = copy_of(finished, tmp_path)
    store = Store(tmp_path / "out")
    round_two = runs[-1]
    store.tensors_path(round_two.mask_parent, "trained").unlink()
    store.delete_record(round_two.run_id)
    _, ws, counts = run(path, registry, data_root)
    assert counts == {"done": 5}
    assert comparable_records(store.root) == reference


def test_retry_failed_recovers_children_that_failed_on_a_missing_parent_file(finished, tmp_path, registry, data_root,
                                                                           one_thread):
    path, runs, reference = copy_of(finished, tmp_path)
    store = Store(tmp_path / "out")
    round_two = [r for r in runs if r.round == 2]
    store.tensors_path(round_two[0].mask_parent, "mask").unlink()
    for spec in round_two:  # what the runs left when they had tried and failed on the missing file
        record = store.record(spec.run_id)
        store.write_record(spec.run_id, {**record, "status": "failed", "error": "FileNotFoundError: mask.pt"})
    assert run(path, registry, data_root)[2] == {"done": 3, "failed": 2}
    assert run(path, registry, data_root, retry_failed=True)[2] == {"done": 5}
    assert comparable_records(store.root) == reference


def test_any_deleted_or_truncated_tensor_file_is_redone_when_a_run_needs_it(finished, tmp_path, registry, data_root,
                                                                          one_thread):
    folder, bench, reference = finished
    files = sorted(p.relative_to(folder / "out") for p in (folder / "out").glob("runs/*/*.pt"))
    children = {}
    for spec in plan_runs(bench):
        for dep in spec.depends_on:
            children.setdefault(dep, []).append(spec.run_id)
    rng = random.Random(11)
    for case, relative in enumerate(rng.sample(files, 3)):
        root = tmp_path / str(case)
        root.mkdir()
        path, _, _ = copy_of(finished, root)
        store = Store(root / "out")
        damaged = store.root / relative
        if rng.random() < 0.5:
            damaged.unlink()
        else:
            damaged.write_bytes(damaged.read_bytes()[:200])
        for child in children.get(damaged.parent.name, []):  # make the runs that read the file run again
            store.delete_record(child)
        assert run(path, registry, data_root)[2] == {"done": 5}, relative
        assert comparable_records(store.root) == reference, relative


# ---- D10: symbolic links inside the store ---------------------------------------------------------------------

def snapshot(folder):
    """Every path under ``folder`` with a hash of its content (links as their targets)."""
    return {str(p.relative_to(folder)): (os.readlink(p) if p.is_symlink() else
                                         hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir")
            for p in sorted(folder.rglob("*"))}


def outside_folder(tmp_path):
    outside = tmp_path / "outside"
    (outside / "folder").mkdir(parents=True)
    (outside / "foreign.txt").write_text("a foreign file\n")
    (outside / "folder" / "foreign.pt").write_text("not a tensor file, and not lthbench's")
    return outside


def test_a_log_file_linked_to_a_foreign_file_is_refused_and_left_alone(finished, tmp_path, registry, data_root,
                                                                        one_thread):
    path, runs, _ = copy_of(finished, tmp_path)
    store = Store(tmp_path / "out")
    outside = outside_folder(tmp_path)
    before = snapshot(outside)
    store.delete_record(runs[-1].run_id)
    log = store.log_path(runs[-1].run_id)
    log.unlink()
    log.symlink_to(outside / "foreign.txt")
    with pytest.raises(UserError, match="symbolic link"):
        run(path, registry, data_root)
    assert snapshot(outside) == before


#: Store entries replaced by a link, and where the link points (inside ``outside``; ``None``: dangling).
LINKS = [("runs/.lock-takeover", None), ("runs/{run}", "folder"), ("runs/{run}/log.txt", "foreign.txt"),
         ("runs/{run}/log.txt", None), ("runs/{run}/record.json", "foreign.txt"), ("runs/{run}/mask.pt", "foreign.txt"),
         ("runs/{run}/trained.pt", "folder/foreign.pt"), ("runs/{run}/lock", None), ("runs/{run}/checkpoint.pt", None),
         ("runs/{parent}", "folder"), ("runs", "folder"), ("matrix.json", "foreign.txt")]


def test_no_write_of_lthbench_follows_a_link_out_of_the_store(finished, tmp_path, registry, data_root, one_thread):
    from lthbench.cli import main

    rng = random.Random(10)
    for case, (entry, target) in enumerate(rng.sample(LINKS, len(LINKS))):
        root = tmp_path / str(case)
        root.mkdir()
        path, runs, _ = copy_of(finished, root)
        store = Store(root / "out")
        outside = outside_folder(root)
        store.delete_record(runs[-1].run_id)  # something to train, so that every kind of file is written
        link = store.root / entry.format(run=runs[-1].run_id, parent=runs[-1].mask_parent)
        if link.is_dir():
            shutil.rmtree(link)
        else:
            link.unlink(missing_ok=True)
        link.symlink_to(outside / (target or "dangling"))
        before = snapshot(outside)
        try:
            run(path, registry, data_root)
        except UserError as error:
            assert "symbolic link" in str(error), entry
        main(["status", str(path)])
        assert snapshot(outside) == before, entry


# ---- D12: no space left ---------------------------------------------------------------------------------------
# RLIMIT_FSIZE makes the kernel refuse (EFBIG) any write past ``limit`` bytes of a file, as a full disk refuses
# (ENOSPC) a write past its free space; Python ignores SIGXFSZ, so the write fails instead of killing the process.

def can_limit_file_size():
    hard = resource.getrlimit(resource.RLIMIT_FSIZE)[1]
    return sys.platform.startswith("linux") and (hard == resource.RLIM_INFINITY or hard >= 10_000_000)


needs_file_size_limit = pytest.mark.skipif(
    not can_limit_file_size(), reason="needs Linux and an unlimited hard RLIMIT_FSIZE to make writes fail")


def assert_nothing_recorded_as_failed(store):
    assert not [p for p in store.root.glob("runs/*/record.json") if store.record(p.parent.name)["status"] != "done"]
    assert not list(store.root.glob("runs/*/.*.tmp")) and not list(store.root.glob("runs/*/lock"))


@needs_file_size_limit
def test_a_full_disk_stops_an_in_process_run_with_one_sentence_and_a_rerun_completes(tmp_path, registry,
                                                                                     data_root, one_thread):
    path = write_matrix(tmp_path)
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (400_000, hard))  # θ₀ of LeNet-300-100 takes about 1.07 MB
    try:
        with pytest.raises(StoreFullError) as raised:
            run(path, registry, data_root)
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
    message = str(raised.value)
    assert message.startswith("cannot write init.pt in " + str(tmp_path / "out" / "runs")) and "MB of free" in message
    assert "\n" not in message
    store = Store(tmp_path / "out")
    assert_nothing_recorded_as_failed(store)
    assert run(path, registry, data_root)[2] == {"done": 5}


@needs_file_size_limit
def test_a_full_disk_stops_lthbench_run_with_exit_2_and_one_sentence_and_a_rerun_completes(tmp_path, registry,
                                                                                          data_root, one_thread):
    path = write_matrix(tmp_path)
    limit = 2_000_000  # θ₀ and masks fit, a checkpoint of Adam's state (about 3.2 MB) does not

    def limit_file_size():
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONDONTWRITEBYTECODE": "1"}
    full = subprocess.run([sys.executable, "-m", "lthbench.cli", "run", str(path), "--data-root", str(data_root),
                           "--quiet", "--checkpoint-every", "10"], capture_output=True, text=True, env=env,
                          timeout=600, preexec_fn=limit_file_size)
    assert full.returncode == 2, full.stdout + full.stderr
    assert "Traceback" not in full.stdout + full.stderr and len(full.stderr.strip().splitlines()) == 1
    assert full.stderr.startswith("lthbench: error: cannot write checkpoint.pt in " + str(tmp_path / "out" / "runs"))
    store = Store(tmp_path / "out")
    assert_nothing_recorded_as_failed(store)
    assert run(path, registry, data_root)[2] == {"done": 5}
