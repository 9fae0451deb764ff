"""``lthbench bench``: both loops run on real data and the ratio is theirs."""

from __future__ import annotations

import json

import pytest
import torch

from lthbench.cli.bench import batched_loop, bench_command
from lthbench.cli import main
from lthbench.config.settings import Training


def test_bench_measures_every_side_and_reports_ratios_to_the_reference(registry, data_root):
    lines = []
    rows = bench_command(registry, data_root, torch.device("cpu"), ["lenet_300_100"], steps=4, warmup=1, workers=0,
                         trials=3, print_line=lines.append)
    (row,) = rows
    reference, ours, batched = row["reference"], row["lthbench"], row["batched"]
    assert reference["steps_per_second"] > 0 and ours["steps_per_second"] > 0 and batched["steps_per_second"] > 0
    assert row["ratio"] == ours["steps_per_second"] / reference["steps_per_second"]
    assert row["batched_ratio"] == batched["steps_per_second"] / reference["steps_per_second"]
    assert ours["images_per_second"] == pytest.approx(ours["steps_per_second"] * 60)
    assert batched["images_per_second"] == pytest.approx(batched["steps_per_second"] * 60)
    assert row["trials"] == 3 and row["device"] == "cpu"
    assert len(lines) == 3 and lines[2].startswith("lenet_300_100")


def test_networks_with_batch_norm_have_no_batched_side(registry, data_root):
    training = Training(batch_size=8, optimizer="sgd", lr=0.1)
    assert batched_loop(registry, "resnet20", training, data_root, torch.device("cpu"), 1, 2, trials=2) is None


def test_bench_command_line_writes_json_and_rejects_unknown_cases(data_root, tmp_path, capsys):
    out = tmp_path / "bench.json"
    assert main(["bench", "--device", "cpu", "--models", "lenet_300_100", "--steps", "3", "--warmup", "1",
                 "--workers", "0", "--data-root", str(data_root), "--json", str(out)]) == 0
    assert json.loads(out.read_text())[0]["model"] == "lenet_300_100"
    assert main(["bench", "--models", "lenet300"]) == 2
    assert "unknown case 'lenet300'" in capsys.readouterr().err
    assert main(["bench", "--models", "lenet_300_100", "--trials", "0"]) == 2
    assert "--trials: must be at least 1" in capsys.readouterr().err
