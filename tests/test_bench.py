"""``lthbench bench``: both loops run on real data and the ratio is theirs."""

from __future__ import annotations

import json

import pytest
import torch

from lthbench.bench import bench_command
from lthbench.cli import main


def test_bench_measures_both_loops_and_reports_their_ratio(registry, data_root):
    lines = []
    rows = bench_command(registry, data_root, torch.device("cpu"), ["lenet_300_100"], steps=4, warmup=1, workers=0,
                         print_line=lines.append)
    (row,) = rows
    reference, ours = row["reference"], row["lthbench"]
    assert reference["steps_per_second"] > 0 and ours["steps_per_second"] > 0
    assert row["ratio"] == ours["steps_per_second"] / reference["steps_per_second"]
    assert ours["images_per_second"] == pytest.approx(ours["steps_per_second"] * 60)
    assert len(lines) == 3 and lines[2].startswith("lenet_300_100")


def test_bench_command_line_writes_json_and_rejects_unknown_cases(data_root, tmp_path, capsys):
    out = tmp_path / "bench.json"
    assert main(["bench", "--device", "cpu", "--models", "lenet_300_100", "--steps", "3", "--warmup", "1",
                 "--workers", "0", "--data-root", str(data_root), "--json", str(out)]) == 0
    assert json.loads(out.read_text())[0]["model"] == "lenet_300_100"
    assert main(["bench", "--models", "lenet300"]) == 2
    assert "unknown case 'lenet300'" in capsys.readouterr().err
