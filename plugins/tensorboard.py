"""A TensorBoard logger: every evaluation of every run as scalars, one TensorBoard run per training run.

Not loaded by default; enable it for a command with
``lthbench run benchmarks.toml --plugin lthbench_plugins.tensorboard`` (or
``LTHBENCH_PLUGINS=lthbench_plugins.tensorboard``) after
``pip install -e ".[tensorboard]"``. Event files go to ``$LTHBENCH_TENSORBOARD``
(default: ``tensorboard`` in the current folder), one folder per training run
named by its experiment, round, initializer, seed and run id; view them with
``tensorboard --logdir tensorboard``. The scalars ``train_loss``,
``val_loss``, ``val_accuracy`` and ``test_accuracy`` at each evaluated
iteration are the values of the run's record's curves.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from lthbench import hookimpl
from lthbench.errors import PluginError

#: The folder the event files go to.
FOLDER_ENV = "LTHBENCH_TENSORBOARD"
#: The metrics written, in this order, as scalars of the same names.
METRICS = ("train_loss", "val_loss", "val_accuracy", "test_accuracy")

_writers: dict[str, Any] = {}


def log_dir(run: dict[str, Any]) -> Path:
    """Where a training run's event files go."""
    name = f"{run['experiment']}-round{run['round']}-{run['initializer']}-seed{run['seed']}-{run['run_id']}"
    return Path(os.environ.get(FOLDER_ENV) or "tensorboard") / re.sub(r"[^\w.=+-]+", "_", name)


def _writer(run: dict[str, Any]) -> Any:
    if run["run_id"] not in _writers:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError as error:
            raise PluginError("the TensorBoard logger needs the tensorboard package: "
                              'pip install "lthbench[tensorboard]"') from error
        _writers[run["run_id"]] = SummaryWriter(log_dir=str(log_dir(run)))
    return _writers[run["run_id"]]


@hookimpl
def lthbench_evaluation(run: dict[str, Any], iteration: int, metrics: dict[str, float]) -> None:
    """Write the evaluation's metrics as scalars at step ``iteration``, flushed at once."""
    writer = _writer(run)
    for name in METRICS:
        writer.add_scalar(name, metrics[name], iteration)
    writer.flush()


@hookimpl
def lthbench_run_finished(run: dict[str, Any], record: dict[str, Any]) -> None:
    """Close the run's event file."""
    writer = _writers.pop(run["run_id"], None)
    if writer is not None:
        writer.close()
