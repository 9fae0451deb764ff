"""The record of a training run (:class:`lthbench.store.Record`): what it was, and what it measured or raised."""

from __future__ import annotations

import socket
import traceback
from typing import Any

from lthbench.config.settings import training_key
from lthbench.lottery.prepare import PreparedRun
from lthbench.lottery.workspace import Workspace, device_label, library_versions
from lthbench.masks import count_remaining, weights_remaining
from lthbench.run.plan import SCHEMA, RunSpec, cell_fields
from lthbench.run.status import RunStatus
from lthbench.store import Record
from lthbench.train.result import TrainResult


def run_description(spec: RunSpec) -> dict[str, Any]:
    """The identifying fields shared by a run's record and its lifecycle-hook payload."""
    return {
        "schema": SCHEMA,
        "run_id": spec.run_id,
        "cell_id": spec.cell_id,
        **cell_fields(spec.cell),
        "initializer": spec.initializer_label,
        "seed": spec.seed,
        "round": spec.round,
        "depends_on": list(spec.depends_on),
        "training": training_key(spec.cell.training),
    }


def make_record(prepared: PreparedRun, result: TrainResult, ws: Workspace) -> Record:
    """The record of a run that trained to its end (``done``) or until its loss stopped being finite (``diverged``).

    A run without a single evaluation (it trained no iteration) has nothing
    to record as done: that raises ``ValueError``, so the run is recorded failed.
    """
    if not result.curves.iteration and not result.diverged:
        raise ValueError(f"the run trained no iteration (from iteration {prepared.start_iteration} to "
                         f"{result.iterations}), so it measured nothing; give a longer training")
    network, masks = prepared.network, prepared.masks
    counts = count_remaining(masks, network.prunable)
    return {
        **run_description(prepared.spec),
        "status": RunStatus.DIVERGED if result.diverged else RunStatus.DONE,
        "weights_remaining": weights_remaining(masks, network.prunable),
        "layers": {name: {"remaining": r, "total": t} for name, (r, t) in counts.items()},
        "curves": vars(result.curves),
        **result.summary(),
        "start_iteration": prepared.start_iteration,
        "iterations": result.iterations,
        "stopped_early": result.stopped_at is not None,
        "stopped_at": result.stopped_at,
        "wall_time": result.wall_time,
        "device": device_label(ws.device),
        "host": socket.gethostname(),
        "versions": library_versions(),
        "error": "loss became non-finite" if result.diverged else None,
        "traceback": None,
    }


def failure_record(spec: RunSpec, error: BaseException, host: str | None = None) -> Record:
    """The record of a run that raised: its error and traceback; nothing measured.

    ``host`` is the machine it ran on, where that is not this one's (``None``: this one).
    """
    return {
        **run_description(spec),
        "status": RunStatus.FAILED,
        "weights_remaining": None,
        "layers": {},
        "curves": {},
        "early_stop_iteration": None,
        "early_stop_test_accuracy": None,
        "early_stop_val_loss": None,
        "final_test_accuracy": None,
        "start_iteration": None,
        "iterations": None,
        "stopped_early": False,
        "stopped_at": None,
        "wall_time": None,
        "device": None,
        "host": host or socket.gethostname(),
        "versions": library_versions(),
        "error": f"{type(error).__name__}: {error}",
        "traceback": "".join(traceback.format_exception(error)),
    }
