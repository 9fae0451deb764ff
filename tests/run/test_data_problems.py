"""Data problems are user errors before any run starts; status totals agree with validate."""

from __future__ import annotations

import json

import torchvision

from lthbench.cli import main
from lthbench.store import read_json
from helpers import tiny_matrix


def test_a_failed_download_is_a_user_error_with_its_cause_and_records_nothing(tmp_path, monkeypatch, capsys):
    """torchvision fetches from a mirror that does not exist (a local file URL): no network is used."""
    monkeypatch.setattr(torchvision.datasets.MNIST, "mirrors", [f"file://{tmp_path}/no-mirror/"])
    path = tiny_matrix.write_matrix(tmp_path, rounds=1, iterations=20, eval_every=10)
    assert main(["run", str(path), "--data-root", str(tmp_path / "empty"), "--download", "--quiet"]) == 2
    error = capsys.readouterr().err
    assert error.startswith("lthbench: error: ") and "Traceback" not in error
    assert "dataset 'mnist'" in error and "Error downloading" in error
    assert "No such file" in error  # the cause, which torchvision puts after the first line
    assert not list((tmp_path / "out").glob("runs/*/record.json"))


def test_a_missing_data_set_is_a_user_error_before_any_run(tmp_path, capsys):
    path = tiny_matrix.write_matrix(tmp_path, rounds=1, iterations=20, eval_every=10)
    assert main(["run", str(path), "--data-root", str(tmp_path / "empty"), "--quiet"]) == 2
    assert "are not in" in capsys.readouterr().err
    assert not (tmp_path / "out" / "runs").exists()


def test_a_run_recorded_failed_for_missing_data_by_an_older_version_runs_again(tmp_path, data_root, one_thread):
    path = tiny_matrix.write_matrix(tmp_path, rounds=1, iterations=20, eval_every=10)
    out = tmp_path / "out"
    assert main(["run", str(path), "--data-root", str(data_root), "--quiet"]) == 0
    records = sorted(out.glob("runs/*/record.json"))
    old = read_json(records[-1])
    failed = {**old, "status": "failed", "error": "DataNotFound: mnist: torchvision could not download or read it "
              "under /x (Error downloading train-images-idx3-ubyte.gz:)", "curves": {}, "layers": {}}
    for key in ("weights_remaining", "early_stop_iteration", "early_stop_test_accuracy", "final_test_accuracy"):
        failed[key] = None
    records[-1].write_text(json.dumps(failed))
    assert main(["run", str(path), "--data-root", str(data_root), "--quiet"]) == 0  # without --retry-failed
    assert read_json(records[-1])["status"] == "done"


def test_status_totals_count_a_shared_dense_run_once_as_validate_does(tmp_path, data_root, capsys):
    path = tiny_matrix.write_matrix(tmp_path, pruner=["layerwise_magnitude", "global_magnitude"], seeds=[0, 1])
    assert main(["validate", str(path), "--data-root", str(data_root)]) == 0
    validated = next(line for line in capsys.readouterr().out.splitlines() if "training runs," in line)
    count = int(validated.split()[0])
    assert count == 2 + 2 * 2 * 2  # 2 shared dense runs, 2 pruners × 2 seeds × 2 rounds
    assert main(["status", str(path)]) == 0
    total = next(line for line in capsys.readouterr().out.splitlines() if "training runs (" in line)
    assert total.startswith(f"{count} training runs") and f"{count} pending" in total
