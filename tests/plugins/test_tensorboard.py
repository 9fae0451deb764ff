"""The first-party TensorBoard logger: its event files hold the record's curves."""

from __future__ import annotations

import json

import pytest

from lthbench.cli import main
from lthbench.registry import PLUGINS_ENV
from helpers import tiny_matrix

event_accumulator = pytest.importorskip(
    "tensorboard.backend.event_processing.event_accumulator",
    reason='tensorboard is not installed (pip install -e ".[tensorboard]"); the logger plugin needs it')

METRICS = ("train_loss", "val_loss", "val_accuracy", "test_accuracy")


def test_the_event_files_of_every_run_hold_the_curves_of_its_record(tmp_path, data_root, monkeypatch):
    monkeypatch.delenv(PLUGINS_ENV, raising=False)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.setenv("LTHBENCH_TENSORBOARD", str(tmp_path / "tb"))
    path = tiny_matrix.write_matrix(tmp_path, initializer='["original", "reinit"]', rounds=1, iterations=40,
                                    eval_every=20)
    assert main(["run", str(path), "--data-root", str(data_root), "--quiet", "--batch-trials", "2",
                 "--plugin", "lthbench_plugins.tensorboard"]) == 0
    records = [json.loads(p.read_text()) for p in (tmp_path / "out").glob("runs/*/record.json")]
    folders = sorted((tmp_path / "tb").iterdir())
    assert len(folders) == len(records) == 3
    for record in records:
        folder = next(f for f in folders if f.name.endswith(record["run_id"]))
        events = event_accumulator.EventAccumulator(str(folder))
        events.Reload()
        assert sorted(events.Tags()["scalars"]) == sorted(METRICS)
        for name in METRICS:
            scalars = events.Scalars(name)
            assert [s.step for s in scalars] == record["curves"]["iteration"] == [20, 40]
            # TensorBoard keeps 32-bit floats
            assert [s.value for s in scalars] == pytest.approx(record["curves"][name], rel=1e-6)
