"""Resuming: checkpoints give bitwise the same training, crashes at any moment lose nothing, bad files are redone."""

from __future__ import annotations

import os
import random
import shlex
import signal
import time

import pytest
import torch

from lthbench.train.checkpoint import Checkpointer, TrainingHooks
from lthbench.config.parse import load_benchmark
from lthbench.lottery.workspace import Workspace
from lthbench.run.plan import plan_runs
from lthbench.run.scheduler import run_matrix
from lthbench.config.settings import Training
from lthbench.store import Store, _atomic_write
from helpers.synthetic import half_masks, small_net, synthetic_data, train_alone
from helpers import tiny_matrix
from helpers.processes import comparable_records, kill_when, lthbench_run

REWIND_TOO = '["original", { name = "rewind", iteration = 20 }]'


def write_matrix(folder, iterations=60):
    return tiny_matrix.write_matrix(folder, name="resume", optimizer="sgd", lr=0.05, momentum=0.9,
                                    iterations=iterations, initializer=REWIND_TOO)


class Interrupt(Exception):
    pass


def _stop_at(iteration):
    def on_progress(done, total, loss):
        if done == iteration:
            raise Interrupt

    return on_progress


@pytest.mark.parametrize("optimizer", [dict(optimizer="sgd", lr=0.1, momentum=0.9), dict(optimizer="adam", lr=1e-2)],
                         ids=["sgd", "adam"])
def test_resumed_training_equals_uninterrupted_training(tmp_path, optimizer):
    training = Training(batch_size=20, iterations=70, eval_every=15, validation_size=1, **optimizer)
    reference_model = small_net()
    masks = half_masks(reference_model)
    reference = train_with(reference_model, masks, training, TrainingHooks())
    checkpointer = Checkpointer(tmp_path / "checkpoint.pt", every=10)
    model = small_net()
    with pytest.raises(Interrupt):  # stopped at iteration 37: the checkpoint of iteration 30 is kept
        train_with(model, masks, training, TrainingHooks(checkpointer, _stop_at(37)))
    assert torch.load(checkpointer.path, weights_only=True)["iteration"] == 30
    logged = []
    resumed_model = small_net()
    resumed = train_with(resumed_model, masks, training, TrainingHooks(checkpointer, log=logged.append))
    assert logged[0] == "resumed from the checkpoint at iteration 30"
    assert vars(resumed.curves) == vars(reference.curves)
    final, expected = resumed_model.state_dict(), reference_model.state_dict()
    assert all(torch.equal(final[name], expected[name]) for name in expected)


def train_with(model, masks, training, hooks):
    return train_alone(model, masks, synthetic_data(), training, hooks=hooks)


def test_a_truncated_or_foreign_checkpoint_is_discarded(tmp_path):
    training = Training(optimizer="adam", lr=1e-2, batch_size=20, iterations=40, eval_every=20, validation_size=1)
    reference = train_with(small_net(), {}, training, TrainingHooks())
    checkpointer = Checkpointer(tmp_path / "checkpoint.pt", every=10)
    with pytest.raises(Interrupt):
        train_with(small_net(), {}, training, TrainingHooks(checkpointer, _stop_at(25)))
    data = checkpointer.path.read_bytes()
    checkpointer.path.write_bytes(data[: len(data) // 2])
    log = []
    again = train_with(small_net(), {}, training, TrainingHooks(checkpointer, log=log.append))
    assert vars(again.curves) == vars(reference.curves) and not any("resumed" in line for line in log)
    # a checkpoint of a different training length is not resumed either
    checkpointer.remove()
    with pytest.raises(Interrupt):
        train_with(small_net(), {}, training, TrainingHooks(checkpointer, _stop_at(25)))
    longer = Training(**{**vars(training), "iterations": 60})
    log = []
    assert train_with(small_net(), {}, longer, TrainingHooks(checkpointer, log=log.append)).curves.iteration[-1] == 60
    assert not any("resumed" in line for line in log)


def test_a_checkpoint_whose_earlier_files_broke_is_discarded(tmp_path):
    """A dense run resumed after θ_k was saved needs θ_k: if it no longer loads, training starts over."""
    training = Training(optimizer="adam", lr=1e-2, batch_size=20, iterations=40, eval_every=20, validation_size=1)
    checkpointer = Checkpointer(tmp_path / "checkpoint.pt", every=10)
    rewind = tmp_path / "rewind_5.pt"
    torch.save({"w": torch.ones(2)}, rewind)
    with pytest.raises(Interrupt):
        train_with(small_net(), {}, training, TrainingHooks(checkpointer, _stop_at(25)))
    assert torch.load(checkpointer.path, weights_only=True)["files"] == ["rewind_5.pt"]
    rewind.write_bytes(rewind.read_bytes()[:10])
    log = []
    train_with(small_net(), {}, training, TrainingHooks(checkpointer, log=log.append))
    assert not any("resumed" in line for line in log)


def test_truncated_records_and_tensor_files_are_redone(tmp_path, registry, data_root, one_thread):
    bench = load_benchmark(write_matrix(tmp_path), registry)
    ws = Workspace(registry, Store(bench.output), data_root, False, torch.device("cpu"))
    assert run_matrix(bench, ws) == {"done": 5}
    reference = comparable_records(ws.store.root)
    runs = plan_runs(bench)
    dense, round_two = runs[0], runs[-1]
    record = ws.store.run_dir(dense.run_id) / "record.json"
    record.write_text(record.read_text()[:100])  # a crash mid-write on a file system without atomic rename
    trained = ws.store.tensors_path(round_two.mask_parent, "trained")
    trained.write_bytes(trained.read_bytes()[:1000])
    ws.store.delete_record(round_two.run_id)

    assert run_matrix(bench, ws) == {"done": 5}
    assert comparable_records(ws.store.root) == reference
    parent_log = ws.store.log_path(round_two.mask_parent).read_text()
    assert parent_log.count("started") == 2  # the round-1 ticket whose trained weights broke ran again
    assert ws.store.log_path(dense.run_id).read_text().count("started") == 2
    untouched = next(r for r in runs if r.round == 1 and r.initializer.name == "rewind")
    assert ws.store.log_path(untouched.run_id).read_text().count("started") == 1


@pytest.mark.parametrize("number", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_during_a_write_is_delivered_once_the_file_is_whole(tmp_path, number):
    def leave(signum, frame):
        raise SystemExit(128 + signum)  # what a worker process does on SIGTERM

    previous = signal.signal(signal.SIGTERM, leave) if number == signal.SIGTERM else None

    def write(handle):
        handle.write(b"first half, ")
        os.kill(os.getpid(), number)
        time.sleep(0.05)  # the signal has arrived by now
        handle.write(b"second half")

    try:
        with pytest.raises(KeyboardInterrupt if number == signal.SIGINT else SystemExit):
            _atomic_write(tmp_path / "file", write)
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    assert (tmp_path / "file").read_bytes() == b"first half, second half"
    assert not list(tmp_path.glob(".*.tmp"))


@pytest.mark.parametrize("workers", [[], ["--jobs", "2"]], ids=["in-process", "two-worker-processes"])
def test_ctrl_c_stops_with_exit_130_keeping_the_checkpoint_and_leaving_no_lock(tmp_path, data_root, monkeypatch,
                                                                                workers):
    monkeypatch.setenv("LTHBENCH_DATA", str(data_root))
    path = write_matrix(tmp_path, iterations=2000)
    out = tmp_path / "out"
    options = ["--data-root", f"{data_root}", "--checkpoint-every", "20", "--quiet", *workers]
    process = lthbench_run(path, *options)
    kill_when(process, lambda: any(out.glob("runs/*/checkpoint.pt")), signal_number=signal.SIGINT)
    output = process.stdout.read().decode()
    assert process.returncode == 130, output
    assert "Traceback" not in output
    # the command as typed, every option kept, quoted for the shell
    assert f"continue with: {shlex.join(['lthbench', 'run', str(path), *options])}" in output
    assert list(out.glob("runs/*/checkpoint.pt")) and not list(out.glob("runs/*/record.json"))
    assert not list(out.glob("runs/*/lock"))


def test_sigkill_at_random_moments_then_rerun_equals_an_uninterrupted_run(tmp_path, registry, data_root,
                                                                           one_thread, monkeypatch):
    monkeypatch.setenv("LTHBENCH_DATA", str(data_root))
    reference_dir = tmp_path / "reference"
    reference_dir.mkdir()
    bench = load_benchmark(write_matrix(reference_dir, iterations=200), registry)
    run_matrix(bench, Workspace(registry, Store(bench.output), data_root, False, torch.device("cpu")),
               checkpoint_every=0)
    reference = comparable_records(reference_dir / "out")

    path = write_matrix(tmp_path, iterations=200)
    out = tmp_path / "out"

    def records():
        return len(list(out.glob("runs/*/record.json")))

    def mid_training():
        return lambda: any(out.glob("runs/*/checkpoint.pt"))

    def right_after_a_record():
        before = records()
        return lambda: records() > before

    def after(seconds):
        started = time.monotonic()
        return lambda: time.monotonic() - started > seconds

    delays = random.Random(4).sample([x / 10 for x in range(20, 60)], 2)  # start-up takes about 2 s
    killed = []
    for moment in (mid_training, right_after_a_record, lambda: after(delays[0]), lambda: after(delays[1])):
        process = lthbench_run(path, "--checkpoint-every", "20", "--quiet")
        kill_when(process, moment())
        killed.append(process.returncode == -signal.SIGKILL)
    assert killed[:2] == [True, True]  # the deterministic moments came before the matrix was done
    final = lthbench_run(path, "--checkpoint-every", "20", "--quiet")
    output = final.communicate()[0].decode()
    assert final.returncode == 0, output
    assert comparable_records(out) == reference
    assert records() == len(reference) == 5
    assert not list(out.glob("runs/*/checkpoint.pt")) and not list(out.glob("runs/*/.*.tmp"))
    assert not list(out.glob("runs/*/lock"))
