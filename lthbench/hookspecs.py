"""The hooks lthbench calls: the whole plugin contract.

A plugin is a module or object with functions decorated by
``lthbench.hookimpl`` whose names match the hooks below. Register it through
the ``lthbench`` entry-point group in your package's ``pyproject.toml``::

    [project.entry-points.lthbench]
    my_pruner = "my_package.plugin"

or, to try it without packaging, load it by file or module name with
``lthbench run --plugin path/to/plugin.py`` (``validate``, ``status`` and
``plugins`` take it too; repeatable) or ``LTHBENCH_PLUGINS=a.py,pkg.mod``;
worker processes load the same plugins.

Registration hooks return the implementations a plugin provides; every
plugin's answer is collected (none wins over another), and two
implementations of the same kind with the same name are an error naming both
plugins. The classes they return are defined in :mod:`lthbench.protocols`.

Lifecycle hooks let observers (loggers, extra report sections) react to what
the engine does. An exception raised inside a hook that runs as part of a
training run fails that run only, and is recorded with its traceback.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    import pandas as pd

    from lthbench.protocols import Architecture, Dataset, Initializer, Pruner

hookspec = pluggy.HookspecMarker("lthbench")


# --------------------------------------------------------------------------- registration


@hookspec
def lthbench_pruners() -> list[Pruner]:
    """Return the pruners this plugin provides.

    Called once when the plugin manager is built. All results are collected.
    """


@hookspec
def lthbench_initializers() -> list[Initializer]:
    """Return the initializers (what surviving weights are reset to) this plugin provides.

    Called once when the plugin manager is built. All results are collected.
    """


@hookspec
def lthbench_architectures() -> list[Architecture]:
    """Return the architectures this plugin provides.

    Called once when the plugin manager is built. All results are collected.
    """


@hookspec
def lthbench_datasets() -> list[Dataset]:
    """Return the data sets this plugin provides.

    Called once when the plugin manager is built. All results are collected.
    """


# --------------------------------------------------------------------------- lifecycle


@hookspec
def lthbench_run_started(run: dict[str, Any]) -> None:
    """Called just before one training run starts, with its spec.

    ``run`` holds the run id, experiment, seed, round, pruner, initializer and
    resolved training settings. Return values are ignored. An exception fails
    this run only.
    """


@hookspec
def lthbench_evaluation(run: dict[str, Any], iteration: int, metrics: dict[str, float]) -> None:
    """Called at every evaluation of every training run (``eval_every`` iterations, and at the end).

    ``run`` is the run's spec, as for :func:`lthbench_run_started`;
    ``iteration`` the iterations trained so far; ``metrics`` holds
    ``train_loss`` (the mean since the last evaluation), ``val_loss``,
    ``val_accuracy`` and ``test_accuracy``, the values the record's curves
    get. Runs that train together in one stacked step are called once each.
    It is called in the process that trains the run (a worker process), and
    only for evaluations trained there: a resumed run is not told again of
    those before its checkpoint. Return values are ignored; an exception
    fails the run. The TensorBoard logger (``lthbench_plugins.tensorboard``)
    is a plugin of this hook.
    """


@hookspec
def lthbench_run_finished(run: dict[str, Any], record: dict[str, Any]) -> None:
    """Called after one training run ends (done, diverged or failed) and its record is stored.

    ``record`` is the stored record (see ``lthbench.store``). Return values are
    ignored.
    """


@hookspec
def lthbench_matrix_finished(output: Path, records: list[dict[str, Any]]) -> None:
    """Called once when ``lthbench run`` has worked through the whole matrix.

    ``records`` are every record of the matrix, finished or failed. Return
    values are ignored.
    """


@hookspec
def lthbench_report_sections(frame: pd.DataFrame, stats: pd.DataFrame) -> list[dict[str, str]]:
    """Called while a report is assembled; return extra sections to append.

    ``frame`` has one row per training run, ``stats`` one row per statistical
    comparison. Return a list of ``{"title": ..., "html": ...}`` dicts; the
    HTML is inserted as is (escape what you interpolate). All results are
    collected in registration order.
    """
