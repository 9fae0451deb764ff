"""Guards against behaviour changes: the run ids, records and stores of the previous release (tests/golden).

The golden files were written by ``tests/golden/make_golden.py`` with the
code before a refactor; a change that alters any of them is a change of
behaviour (new ids orphan every stored result), not a refactor. Regenerate
them only for an intended change, with that script.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from golden.make_golden import (OUTPUT_PLACEHOLDER, REPO, RUN_IDS, STORE, TINY_MATRICES, matrix_files, unique_runs,
                                normalised_matrix, planned, tiny_matrix_path)
from lthbench.cli import main

GOLDEN_IDS = json.loads(RUN_IDS.read_text())
#: Record fields that say where and when a run trained, not what it computed: the time it took, the
#: machine's processor and host name, the library versions. Two runs of the same code on one machine differ in
#: ``wall_time`` only; every other field, curves included, is bitwise the same (checked before the refactor).
ENVIRONMENT_FIELDS = ("wall_time", "device", "host", "versions")


@pytest.mark.parametrize("key", list(GOLDEN_IDS))
def test_every_matrix_plans_the_run_ids_the_previous_release_planned(key, registry, tmp_path, monkeypatch):
    """benchmarks.toml, the examples and the tests' tiny matrices: the same runs, in the same order, with the same ids.

    Planning reads no data: the data root points at an empty folder.
    """
    monkeypatch.setenv("LTHBENCH_DATA", str(tmp_path / "no-data"))
    if key.startswith("tiny/"):
        path = tiny_matrix_path(tmp_path, key.removeprefix("tiny/"))
    else:
        path = REPO / key
    assert unique_runs(planned(path, registry)) == unique_runs(GOLDEN_IDS[key])


def test_the_golden_run_ids_cover_every_checked_in_matrix_and_tiny_matrix():
    """A matrix file or tiny matrix added since needs its ids recorded (run make_golden.py --ids-only)."""
    expected = {str(path.relative_to(REPO)) for path in matrix_files()} | {f"tiny/{key}" for key in TINY_MATRICES}
    assert set(GOLDEN_IDS) == expected


def test_the_output_folder_is_not_part_of_any_run_id(registry, tmp_path):
    """Moving results elsewhere keeps every id (and so every stored result)."""
    first = planned(tiny_matrix_path(tmp_path / "a", "test_lottery:iterative"), registry)
    (tmp_path / "b").mkdir()
    moved = tiny_matrix_path(tmp_path / "b", "test_lottery:iterative")
    moved.write_text(moved.read_text().replace(str(tmp_path / "b" / "out"), "/elsewhere/results"))
    assert "/elsewhere/results" in moved.read_text()
    assert planned(moved, registry) == first


def records(output: Path) -> dict[str, dict]:
    """Every record of an output folder, by the name of its run folder (which is its run id)."""
    found = {path.parent.name: json.loads(path.read_text()) for path in sorted(output.glob("runs/*/record.json"))}
    assert all(record["run_id"] == run_id for run_id, record in found.items())
    return found


def golden_matrix_file(folder: Path, output: Path) -> Path:
    """The golden store's matrix.toml in ``folder``, its results going to ``output``."""
    text = (STORE / "matrix.toml").read_text()
    assert json.dumps(OUTPUT_PLACEHOLDER) in text
    path = folder / "matrix.toml"
    path.write_text(text.replace(json.dumps(OUTPUT_PLACEHOLDER), json.dumps(str(output))))
    return path


def logs(output: Path) -> str:
    return "".join(path.read_text() for path in sorted(output.glob("runs/*/log.txt")))


#: Record fields added since the golden store was written, with the value every one of its runs has now
#: (none of them sets patience, so none stopped early).
ADDED_FIELDS = {"stopped_early": False, "stopped_at": None}


@pytest.mark.parametrize("options", [("--batch-trials", "1", "--jobs", "1", "--threads", "1"), ()],
                         ids=["one-run-one-job-one-thread", "default-options"])
def test_a_matrix_run_now_writes_the_records_the_previous_release_wrote(options, tmp_path, data_root, one_thread,
                                                                        capsys):
    """Every field of every record as the previous release wrote it, curves bitwise; batched training as well.

    The previous release trained each run alone on the CPU; the defaults now
    batch them (up to 4 at a time) in parallel jobs and write the same records.
    """
    out = tmp_path / "out"
    path = golden_matrix_file(tmp_path, out)
    assert main(["run", str(path), "--data-root", str(data_root), "--quiet", *options]) == 0
    assert "golden: 26 done" in capsys.readouterr().out
    assert ("in a batched group of" in logs(out)) == (not options)
    want, got = records(STORE), records(out)
    assert got.keys() == want.keys()
    for record in got.values():
        assert {field: record.pop(field) for field in ADDED_FIELDS} == ADDED_FIELDS
    differences = [(run_id, field) for run_id, record in want.items()
                   for field in sorted(set(record) | set(got[run_id]))
                   if field not in ENVIRONMENT_FIELDS and record.get(field, "missing") != got[run_id].get(field, "missing")]
    assert differences == []
    for run_id, record in want.items():  # the same comparison, showing the values where it fails
        assert {k: v for k, v in got[run_id].items() if k not in ENVIRONMENT_FIELDS} == {
            k: v for k, v in record.items() if k not in ENVIRONMENT_FIELDS}, run_id
    matrix = normalised_matrix(json.loads((out / "matrix.json").read_text()))
    golden = json.loads((STORE / "matrix.json").read_text())
    # the one field added since: which pruner's cells a control cell copies (Pruner.mimics)
    assert {cell["pruner"]: cell.pop("control_of") for cell in matrix["cells"]} == {
        "layerwise_magnitude": None, "random": "layerwise_magnitude"}
    # changed since: a cell's label names only the training keys that vary among its experiment's cells (none here)
    assert [cell.pop("label") for cell in matrix["cells"]] == ["", ""]
    for cell in golden["cells"]:
        cell.pop("label")
    for description in (matrix, golden):
        description.pop("versions")
        description.pop("history", None)  # added since: one entry per invocation of lthbench run
        description["benchmark"].pop("device")
    assert matrix == golden


def status_rows(text: str) -> list[dict[str, str]]:
    """The rows of ``lthbench status``'s table, by column name (a cell's wrapped lines are skipped)."""
    lines = text.splitlines()
    header = next(line for line in lines if line.startswith("┃") and "experiment" in line)
    columns = [cell.strip() for cell in header.strip("┃").split("┃")]
    rows = []
    for line in lines:
        cells = [cell.strip() for cell in line.strip("│").split("│")]
        if line.startswith("│") and cells[0]:
            rows.append(dict(zip(columns, cells)))
    return rows


def test_a_store_written_by_the_previous_release_is_read_by_run_status_and_report(tmp_path, data_root, capsys):
    """A finished store of the previous release: run trains nothing, status says done, report shows every initializer."""
    store = tmp_path / "store"
    shutil.copytree(STORE, store)
    path = golden_matrix_file(store, store)
    labels = ("original", "reinit", "rewind(iteration=20)")

    assert main(["report", str(store), "-o", str(tmp_path / "before.html")]) == 0  # the old matrix.json
    assert "26 done" in capsys.readouterr().out
    html = (tmp_path / "before.html").read_text(encoding="utf-8")
    assert all(label in html for label in labels)

    files = {p.relative_to(store): p.read_bytes() for p in store.rglob("*") if p.is_file() and p.name != "matrix.json"}
    assert main(["run", str(path), "--data-root", str(data_root), "--quiet"]) == 0
    assert "golden: 26 done" in capsys.readouterr().out
    after = {p.relative_to(store): p.read_bytes() for p in store.rglob("*") if p.is_file() and p.name != "matrix.json"}
    assert after == files  # no tensors, logs, locks or checkpoints; every record byte for byte
    matrix = json.loads((store / "matrix.json").read_text())
    assert matrix["finished"] and matrix["started"] == "2000-01-01T00:00:00+00:00"  # the first start is kept
    assert [entry["argv"] is None for entry in matrix["history"]] == [True, False]  # the old file, then this run

    assert main(["status", str(path)]) == 0
    rows = status_rows(capsys.readouterr().out)
    assert [row["pruner"] for row in rows] == ["layerwise_magnitude", "random"]
    for row in rows:
        assert row["done"] == "14"  # the 2 dense runs (shared by both cells) and 2 seeds × 2 rounds × 3
        assert all(row[column] == "0" for column in ("running", "diverged", "failed", "blocked", "pending",
                                                     "iterations left"))

    assert main(["report", str(store), "-o", str(tmp_path / "report" / "x.html")]) == 0
    assert "26 done" in capsys.readouterr().out
    html = (tmp_path / "report" / "x.html").read_text(encoding="utf-8")
    assert all(label in html for label in labels)
