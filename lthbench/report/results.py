"""Load lthbench output folders into one tidy table: a row per (cell, run).

The ``training`` column is the cell's label: the training settings that
vary among its experiment's cells (empty when none vary). A dense run (round 0)
shared by several cells appears once under each cell that uses it, so every
cell's rows are complete on their own. Runs listed in ``matrix.json`` without
a record are ``blocked`` when a run they depend on failed, diverged or is
blocked itself, and ``pending`` otherwise. A record that fails
:func:`lthbench.store.record_problem` (wrong types, non-finite values, ragged
curves) counts as ``failed``, its error saying why; nothing of it is used. The ``control_of`` column is the
pruner whose cell the row's cell is a control of (see
:meth:`lthbench.protocols.Pruner.mimics`), or None.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from lthbench.config.settings import PluginRef
from lthbench.errors import PluginError, UserError
from lthbench.registry import default_registry
from lthbench.run.plan import CELL_FIELDS, SCHEMA
from lthbench.run.status import RunStatus, derive_statuses
from lthbench.store import Store, record_problem

RESULT_COLUMNS = [
    "experiment", "architecture", "dataset", "training", "pruner", "initializer", "seed", "round",
    "weights_remaining", "early_stop_iteration", "iterations", "stopped_at", "early_stop_test_accuracy",
    "final_test_accuracy", "status", "error", "traceback", "wall_time", "device", "run_id", "cell_id", "mode", "rate", "control_of", "folder",
]
#: Columns of ``lthbench report --csv`` (everything but tracebacks, controls and folder paths).
CSV_COLUMNS = [c for c in RESULT_COLUMNS if c not in ("traceback", "control_of", "folder")]


@dataclass(frozen=True)
class ResultFolder:
    """One output folder: its matrix description and the records of the runs that ended."""

    path: Path
    matrix: dict[str, Any]
    records: dict[str, dict[str, Any]]


def read_folder(path: str | Path) -> ResultFolder:
    """Read ``matrix.json`` and every stored record of an output folder."""
    root = Path(path)
    if not root.is_dir():
        raise UserError(f"{path}: no such folder; pass the output folder of 'lthbench run'")
    if not (root / "matrix.json").is_file():
        raise UserError(f"{path}: no matrix.json; is this an lthbench output folder?")
    store = Store(root)
    matrix = store.matrix()
    if not _is_matrix(matrix):
        raise UserError(
            f"{root / 'matrix.json'}: corrupt or not an lthbench matrix; run 'lthbench run' again to rewrite it"
        )
    if matrix.get("schema") != SCHEMA:
        raise UserError(f"{root / 'matrix.json'}: schema {matrix.get('schema')!r}; this lthbench reads schema {SCHEMA}")
    run_ids = {run["run_id"] for run in matrix["runs"]}
    records = {run_id: _checked(run_id, record) for run_id in sorted(run_ids) if (record := store.record(run_id))}
    return ResultFolder(root, matrix, records)


def _checked(run_id: str, record: dict[str, Any]) -> dict[str, Any]:
    """``record`` if its values can be used, else a ``failed`` stand-in whose error names the problem."""
    problem = record_problem(record)
    if problem is None:
        return record
    return {"run_id": run_id, "status": RunStatus.FAILED, "layers": {}, "curves": {}, "traceback": None,
            "error": f"invalid record: {problem}; delete runs/{run_id}/record.json and rerun to train it again"}


def _is_matrix(matrix: Any) -> bool:
    """Whether ``matrix`` has the cells and runs a report needs."""
    if not isinstance(matrix, dict) or not isinstance(matrix.get("cells"), list):
        return False
    runs = matrix.get("runs")
    cell_ids = {cell.get("cell_id") for cell in matrix["cells"] if isinstance(cell, dict)}
    needed = {"run_id", "cell_id", "seed", "round", "initializer"}
    return isinstance(runs, list) and all(
        isinstance(run, dict) and needed <= run.keys() and run["cell_id"] in cell_ids for run in runs
    )


def tidy_frame(folders: Iterable[ResultFolder]) -> pd.DataFrame:
    """One row per (cell, run) over all ``folders``; a run stored in two folders counts once."""
    frame = pd.DataFrame([row for folder in folders for row in _rows(folder)], columns=RESULT_COLUMNS)
    # When the same run appears in several folders, keep a copy that has a record.
    unfinished = frame["status"].isin([RunStatus.PENDING, RunStatus.BLOCKED])
    frame = frame.loc[unfinished.sort_values(kind="stable").index]
    frame = frame.drop_duplicates(["cell_id", "run_id"]).sort_index()
    return frame.reset_index(drop=True)


def _rows(folder: ResultFolder) -> Iterator[dict[str, Any]]:
    """The frame rows of one folder, in the order of its matrix."""
    cells = {cell["cell_id"]: cell for cell in folder.matrix["cells"]}
    controls = {cell_id: _control_of(cell, folder.matrix.get("config") or {}) for cell_id, cell in cells.items()}
    statuses = _statuses(folder.matrix["runs"], folder.records)
    for run in folder.matrix["runs"]:
        cell = cells[run["cell_id"]]
        record = folder.records.get(run["run_id"], {})
        status, error = statuses[run["run_id"]]
        yield {
            **{field: cell.get(field) for field in CELL_FIELDS},
            "training": cell.get("label") or "",
            "initializer": run["initializer"],
            "seed": run["seed"],
            "round": run["round"],
            "weights_remaining": record.get("weights_remaining"),
            "early_stop_iteration": record.get("early_stop_iteration"),
            "iterations": record.get("iterations"),
            "stopped_at": record.get("stopped_at"),
            "early_stop_test_accuracy": record.get("early_stop_test_accuracy"),
            "final_test_accuracy": record.get("final_test_accuracy"),
            "status": status,
            "error": error,
            "traceback": record.get("traceback"),
            "wall_time": record.get("wall_time"),
            "device": record.get("device"),
            "run_id": run["run_id"],
            "cell_id": run["cell_id"],
            "rate": cell.get("rate"),
            "control_of": controls[run["cell_id"]],
            "folder": str(folder.path),
        }


def _control_of(cell: dict[str, Any], config: dict[str, Any]) -> str | None:
    """The cell's ``control_of``; for a matrix written before that field, asked of the installed pruner plugin.

    The pruner's parameters are those of the config's pruner entry whose label
    is the cell's; None when no entry matches or the plugin is not installed.
    """
    if "control_of" in cell:
        return cell["control_of"]
    defaults = config.get("defaults") or {}
    for experiment in config.get("experiment") or []:
        if experiment.get("name") != cell.get("experiment"):
            continue
        specs = experiment.get("pruner", defaults.get("pruner"))
        for spec in specs if isinstance(specs, list) else [specs]:
            table = {"name": spec} if isinstance(spec, str) else dict(spec)
            name = table.pop("name", None)
            try:
                pruner = default_registry().pruner(name)
                ref = PluginRef(name, pruner.Params(**table))
            except (PluginError, TypeError, ValueError):
                continue
            if ref.label == cell.get("pruner"):
                return pruner.mimics(ref.params)
    return None


def _statuses(runs: list[dict[str, Any]], records: dict[str, dict[str, Any]]) -> dict[str, tuple[str, str | None]]:
    """Status and error of every run: a record's own, else ``blocked`` (with the reason) or ``pending``."""
    derived = derive_statuses({run["run_id"]: run.get("depends_on") or [] for run in runs},
                              {run_id: record.get("status", RunStatus.FAILED) for run_id, record in records.items()})
    return {run_id: (status, records[run_id].get("error") if run_id in records else reason)
            for run_id, (status, reason) in derived.items()}
