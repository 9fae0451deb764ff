"""The CPU defaults (parallel jobs, stacks, chosen threads) write the records of one run at a time on one thread."""

from __future__ import annotations

import json
from pathlib import Path

from helpers.tiny_matrix import write_matrix
from lthbench.cli import main

#: Fields that say how long a run took, not what it computed.
TIMINGS = ("wall_time",)


def _records(output: Path) -> dict[str, dict]:
    return {path.parent.name: json.loads(path.read_text()) for path in sorted(output.glob("runs/*/record.json"))}


def test_new_defaults_write_the_records_of_one_thread_one_job_one_run_at_a_time(tmp_path, data_root, capsys):
    """With patience, so that runs of one stack stop at different iterations while the others go on."""
    outputs = {}
    for name, options in (("defaults", []), ("serial", ["--threads", "1", "--jobs", "1", "--batch-trials", "1"])):
        (tmp_path / name).mkdir()
        path = write_matrix(tmp_path / name, seeds=[0, 1], initializer='["original", "reinit"]', rounds=2,
                            iterations=240, patience=1)
        assert main(["run", str(path), "--data-root", str(data_root), "--quiet", *options]) == 0
        outputs[name] = tmp_path / name / "out"
    assert "in a batched group of" in "".join(p.read_text() for p in outputs["defaults"].glob("runs/*/log.txt"))
    want, got = _records(outputs["serial"]), _records(outputs["defaults"])
    assert got.keys() == want.keys() and len(want) == 10
    for run_id, record in want.items():
        assert {k: v for k, v in got[run_id].items() if k not in TIMINGS} == {
            k: v for k, v in record.items() if k not in TIMINGS}, run_id
    stopped = [r for r in want.values() if r["stopped_early"]]
    assert stopped and all(r["stopped_at"] == r["curves"]["iteration"][-1] < 240 for r in stopped)
    assert all(r["training"]["patience"] == 1 for r in want.values())
