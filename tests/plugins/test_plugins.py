"""The plugin contract: built-ins, third-party distributions, collisions, broken plugins, docs."""

from __future__ import annotations

import inspect
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from lthbench import hookspecs
from lthbench.cli import main
from lthbench.errors import PluginError
from lthbench.registry import build_registry

REPO = Path(__file__).resolve().parents[2]

EXPECTED = {
    "pruner": {"layerwise_magnitude", "global_magnitude", "l1_filter", "random"},
    "initializer": {"original", "reinit", "rewind"},
    "architecture": {"lenet_300_100", "lenet5", "conv2", "conv4", "conv6", "vgg11", "vgg13", "vgg16", "vgg19",
                     "resnet20", "resnet32", "resnet56", "resnet110", "resnet18", "timm:*"},
    "dataset": {"mnist", "fashion-mnist", "cifar10", "cifar100", "cifar10-jpeg"},
}

PLUGIN_MODULE = '''
"""A third-party pruner: prune the smallest w squared in every layer."""
from lthbench import hookimpl
from lthbench.masks import prune_smallest, removal_count
from lthbench.protocols import Pruner


class SmallestSquare(Pruner):
    name = "{name}"
    description = "third-party demo pruner"

    def prune(self, context, params):
        return {{n: prune_smallest(context.weights[n] ** 2, m, removal_count(m, context.rate))
                 for n, m in context.masks.items() if n in context.network.prunable}}


@hookimpl
def lthbench_pruners():
    return [SmallestSquare()]
'''


def make_distribution(root: Path, dist: str, module: str, source: str) -> Path:
    """Write a minimal installable project declaring an ``lthbench`` entry point."""
    project = root / dist
    project.mkdir()
    (project / f"{module}.py").write_text(source)
    (project / "pyproject.toml").write_text(textwrap.dedent(f"""
        [build-system]
        requires = ["setuptools"]
        build-backend = "setuptools.build_meta"
        [project]
        name = "{dist}"
        version = "1.2.3"
        [tool.setuptools]
        py-modules = ["{module}"]
        [project.entry-points.lthbench]
        {module} = "{module}"
    """))
    return project


def install(project: Path, target: Path) -> None:
    """Install a project into ``target`` (a folder later put on PYTHONPATH)."""
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
                    "--no-index", "--target", str(target), str(project)], check=True, capture_output=True)


def lthbench(*args: str, path: Path | None = None, **env: str) -> subprocess.CompletedProcess:
    environment = {**os.environ, **env}
    if path:
        environment["PYTHONPATH"] = str(path)
    return subprocess.run([sys.executable, "-m", "lthbench.cli", *args], capture_output=True, text=True,
                          env=environment)


@pytest.fixture(scope="module")
def third_party(tmp_path_factory):
    """Two installed third-party distributions: a pruner, and one that clashes with it."""
    root = tmp_path_factory.mktemp("dists")
    good, clash, broken = root / "good", root / "clash", root / "broken"
    demo = make_distribution(root, "lthbench-demo", "lthbench_demo", PLUGIN_MODULE.format(name="smallest_square"))
    other = make_distribution(root, "other-pruners", "other_pruners", PLUGIN_MODULE.format(name="smallest_square"))
    install(demo, good)
    install(demo, clash)
    install(other, clash)
    install(make_distribution(root, "lthbench-broken", "lthbench_broken", "import not_a_module_anywhere\n"), broken)
    return good, clash, broken


def test_builtins_are_registered_through_the_entry_point_group():
    registry = build_registry()
    for kind, names in EXPECTED.items():
        assert names <= {e.name for e in registry.entries() if e.kind == kind}, kind
    entry = next(e for e in registry.entries() if e.kind == "pruner" and e.name == "global_magnitude")
    assert entry.distribution == "lthbench" and entry.description


def test_plugins_json_lists_every_builtin(capsys):
    assert main(["plugins", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    for kind, names in EXPECTED.items():
        assert names <= {r["name"] for r in rows if r["kind"] == kind}
    assert all(r["distribution"] and r["version"] and r["description"] for r in rows)


def test_third_party_pruner_is_listed_and_usable(third_party, tmp_path, data_root):
    good, _, _ = third_party
    out = lthbench("plugins", "--json", path=good)
    assert out.returncode == 0, out.stderr
    row = next(r for r in json.loads(out.stdout) if r["name"] == "smallest_square")
    assert (row["kind"], row["distribution"], row["version"]) == ("pruner", "lthbench-demo", "1.2.3")

    bench = tmp_path / "bench.toml"
    bench.write_text(textwrap.dedent(f"""
        [benchmark]
        name = "third-party"
        seeds = [0]
        output = "{tmp_path / 'out'}"
        device = "cpu"
        [[experiment]]
        name = "demo"
        dataset = "mnist"
        architecture = "lenet_300_100"
        pruner = "smallest_square"
        [experiment.training]
        optimizer = "adam"
        lr = 1e-3
        iterations = 20
        eval_every = 10
        validation_size = 100
        train_subset = 500
        test_subset = 200
        [experiment.schedule]
        rounds = 1
    """))
    ran = lthbench("run", str(bench), "--data-root", str(data_root), path=good)
    assert ran.returncode == 0, ran.stderr + ran.stdout
    records = [json.loads(p.read_text()) for p in (tmp_path / "out" / "runs").glob("*/record.json")]
    assert sorted(r["pruner"] for r in records) == ["smallest_square", "smallest_square"]
    assert min(r["weights_remaining"] for r in records) < 0.85


def test_autoload_can_be_disabled(third_party):
    good, _, _ = third_party
    out = lthbench("plugins", "--json", path=good, LTHBENCH_DISABLE_PLUGIN_AUTOLOAD="1")
    names = {r["name"] for r in json.loads(out.stdout)}
    assert "smallest_square" not in names and "global_magnitude" in names


def test_name_collision_names_both_plugins(third_party):
    _, clash, _ = third_party
    out = lthbench("plugins", path=clash)
    assert out.returncode == 2
    message = out.stderr.strip()
    assert "pruner name 'smallest_square' is registered twice" in message
    assert "lthbench-demo 1.2.3" in message and "other-pruners 1.2.3" in message
    assert "Traceback" not in out.stderr


def test_broken_plugin_is_reported_by_name(third_party):
    _, _, broken = third_party
    out = lthbench("plugins", path=broken)
    assert out.returncode == 2
    assert "plugin 'lthbench_broken' (lthbench-broken 1.2.3" in out.stderr
    assert "ModuleNotFoundError" in out.stderr and "Traceback" not in out.stderr


def test_collision_between_registered_objects_raises():
    class Again:
        @staticmethod
        def lthbench_initializers():
            from lthbench_plugins.initializers import Original
            return [Original()]

    from lthbench import hookimpl

    Again.lthbench_initializers = hookimpl(Again.lthbench_initializers)
    with pytest.raises(PluginError, match="initializer name 'original' is registered twice"):
        build_registry((Again,))


def test_wrong_return_type_is_rejected():
    from lthbench import hookimpl

    class Wrong:
        @staticmethod
        @hookimpl
        def lthbench_pruners():
            return ["not a pruner"]

    with pytest.raises(PluginError, match="not a lthbench.protocols.Pruner"):
        build_registry((Wrong,))


def test_a_raising_or_malformed_plugin_is_one_error_naming_it():
    from lthbench import hookimpl

    class Raising:
        @staticmethod
        @hookimpl
        def lthbench_pruners():
            raise RuntimeError("boom")

    class NotAList:
        @staticmethod
        @hookimpl
        def lthbench_pruners():
            return 5

    class WrongArguments:
        @staticmethod
        @hookimpl
        def lthbench_pruners(extra):
            return []

    class UnknownHook:
        @staticmethod
        @hookimpl
        def lthbench_pruner():
            return []

    with pytest.raises(PluginError, match="plugin 'Raising' .* raised from its pruner hook: RuntimeError: boom"):
        build_registry((Raising,))
    with pytest.raises(PluginError, match="plugin 'NotAList' .* returned 5 from its pruner hook; it must return a list"):
        build_registry((NotAList,))
    with pytest.raises(PluginError, match="plugin 'WrongArguments' does not match lthbench's hooks"):
        build_registry((WrongArguments,))
    with pytest.raises(PluginError, match="plugin 'UnknownHook' .* implements a hook lthbench does not have"):
        build_registry((UnknownHook,))


def test_every_hook_is_typed_documented_and_in_the_readme():
    readme = (REPO / "README.md").read_text()
    hooks = [f for name, f in inspect.getmembers(hookspecs, inspect.isfunction) if name.startswith("lthbench_")]
    assert len(hooks) == 9  # lthbench_evaluation added
    for hook in hooks:
        assert hook.__doc__ and "Called" in hook.__doc__, hook.__name__
        assert "return" in hook.__annotations__, hook.__name__
        assert hook.__name__ in readme, f"{hook.__name__} is not documented in README.md"


def test_plugins_table_prints_descriptions_as_written(capsys):
    assert main(["plugins"]) == 0
    out = capsys.readouterr().out
    # square brackets in a description are text, not terminal markup
    assert "exclude = [layers]" in out
