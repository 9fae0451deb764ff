"""Local plugins loaded without packaging (--plugin, LTHBENCH_PLUGINS), in worker processes too; the evaluation hook."""

from __future__ import annotations

import json

import pytest

from lthbench.cli import main
from lthbench.registry import PLUGINS_ENV
from helpers import tiny_matrix

#: A pruner and an evaluation observer, in one file: the observer appends one JSON line per call.
PLUGIN = '''
import json
import os

from lthbench import hookimpl
from lthbench_plugins.pruners import GlobalMagnitude


class Local(GlobalMagnitude):
    name = "local_magnitude"
    description = "global magnitude, from a file loaded with --plugin"


@hookimpl
def lthbench_pruners():
    return [Local()]


@hookimpl
def lthbench_evaluation(run, iteration, metrics):
    with open(os.environ["EVALUATIONS"], "a") as handle:
        handle.write(json.dumps({"run_id": run["run_id"], "iteration": iteration, "metrics": metrics,
                                 "pid": os.getpid()}) + "\\n")
'''


@pytest.fixture
def plugin_file(tmp_path, monkeypatch):
    monkeypatch.delenv(PLUGINS_ENV, raising=False)
    monkeypatch.setenv("EVALUATIONS", str(tmp_path / "evaluations.jsonl"))
    path = tmp_path / "my_plugin.py"
    path.write_text(PLUGIN)
    return path


def test_plugins_lists_a_plugin_given_by_file_or_by_the_environment(plugin_file, monkeypatch, capsys):
    assert main(["plugins", "--json", "--plugin", str(plugin_file)]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert {"kind": "pruner", "name": "local_magnitude", "distribution": "local"}.items() <= next(
        row for row in rows if row["name"] == "local_magnitude").items()
    assert main(["plugins", "--json"]) == 0  # --plugin lasts one command
    assert "local_magnitude" not in capsys.readouterr().out
    monkeypatch.setenv(PLUGINS_ENV, str(plugin_file))
    assert main(["plugins", "--json"]) == 0
    assert "local_magnitude" in capsys.readouterr().out


@pytest.mark.parametrize("name, says", [("missing.py", "no such file"), ("no_such_module_x", "no module named"),
                                        ("broken.py", "failed to import: ZeroDivisionError")])
def test_a_missing_or_broken_plugin_is_one_error_naming_it(name, says, tmp_path, monkeypatch, capsys):
    monkeypatch.delenv(PLUGINS_ENV, raising=False)
    (tmp_path / "broken.py").write_text("1 / 0\n")
    given = str(tmp_path / name) if name.endswith(".py") else name
    assert main(["plugins", "--plugin", given]) == 2
    error = capsys.readouterr().err
    assert error.startswith("lthbench: error: local plugin") and name in error and says in error
    assert "Traceback" not in error and len(error.strip().splitlines()) == 1


def test_workers_load_the_plugin_and_every_evaluation_of_every_run_is_told_once(plugin_file, tmp_path, data_root,
                                                                                 monkeypatch):
    """The matrix prunes with the plugin's pruner; its runs train in a worker process, two of them stacked."""
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    path = tiny_matrix.write_matrix(tmp_path, pruner="local_magnitude", initializer='["original", "reinit"]',
                                    rounds=1, iterations=40, eval_every=20)
    assert main(["validate", str(path), "--data-root", str(data_root), "--plugin", str(plugin_file)]) == 0
    assert main(["run", str(path), "--data-root", str(data_root), "--quiet", "--batch-trials", "2",
                 "--plugin", str(plugin_file)]) == 0
    assert main(["status", str(path), "--plugin", str(plugin_file)]) == 0
    calls = [json.loads(line) for line in (tmp_path / "evaluations.jsonl").read_text().splitlines()]
    records = {p.parent.name: json.loads(p.read_text()) for p in (tmp_path / "out").glob("runs/*/record.json")}
    assert len(records) == 3 and {r["initializer"] for r in records.values()} == {"dense", "original", "reinit"}
    assert "in a batched group of 2 runs" in "".join(p.read_text() for p in (tmp_path / "out").glob("runs/*/log.txt"))
    import os

    assert os.getpid() not in {call["pid"] for call in calls}  # told in the worker that trained the runs
    for run_id, record in records.items():
        told = [call for call in calls if call["run_id"] == run_id]
        assert [call["iteration"] for call in told] == record["curves"]["iteration"] == [20, 40]
        for name in ("train_loss", "val_loss", "val_accuracy", "test_accuracy"):
            assert [call["metrics"][name] for call in told] == record["curves"][name]


def test_plugins_shows_every_parameter_with_its_type_and_default(capsys):
    assert main(["plugins", "--json"]) == 0
    rows = {(row["kind"], row["name"]): row for row in json.loads(capsys.readouterr().out)}
    assert rows["initializer", "rewind"]["parameters"] == [
        {"name": "iteration", "type": "int", "default": 0, "required": False},
        {"name": "epoch", "type": "float", "default": 0.0, "required": False}]
    assert rows["pruner", "random"]["parameters"] == [
        {"name": "like", "type": "str", "default": "layerwise_magnitude", "required": False}]
    assert rows["initializer", "original"]["parameters"] == []
    assert main(["plugins"]) == 0
    assert "iteration: int = 0" in capsys.readouterr().out


def test_plugins_imports_none_of_the_heavy_libraries():
    """torchvision (its models import torch's compiler), timm, scipy, statsmodels, pandas, matplotlib: none."""
    import subprocess
    import sys

    heavy = ["torchvision", "timm", "scipy", "statsmodels", "pandas", "matplotlib"]
    code = ("import sys; from lthbench.cli import main; main(['plugins', '--json']); "
            f"print(sorted(m for m in {heavy!r} if m in sys.modules), file=sys.stderr)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "rewind" in done.stdout
    assert done.stderr.strip().splitlines()[-1] == "[]"
