"""Read a benchmark TOML file, validate every key, and expand the comparison matrix.

Validation refuses, before anything trains, whatever a run would fail on
or silently change: values nested deeper than :data:`MAX_DEPTH`, integers
outside TOML's 64-bit range, non-finite numbers, matrices of more than
:data:`MAX_RUNS` runs, sizes beyond a data set that declares its size, a
training of no iteration, and pruner settings that do not fit the network
(asked of the pruner with the network built on PyTorch's ``meta`` device).
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import reprlib
import tomllib
import types
import typing
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from lthbench.errors import ConfigError, DataNotFound, PluginError, UserError, suggest
from lthbench.protocols import Dataset, Network
from lthbench.registry import Registry
from lthbench.run.plan import iterations_per_epoch, rewind_iteration, training_length
from lthbench.config.devices import DEVICE_CHOICES, is_device
from lthbench.config.settings import TICKET, Benchmark, Cell, PluginRef, Report, Schedule, Training

BENCHMARK_KEYS = {"name", "seeds", "output", "device", "download", "data_root", "threads"}
CELL_KEYS = {"dataset", "architecture", "pruner", "initializer", "training", "schedule"}
EXPERIMENT_KEYS = CELL_KEYS | {"name"}
TOP_KEYS = {"benchmark", "defaults", "experiment", "report", "execution"}
EXECUTION_KEYS = {"backend", "address"}
#: Where a matrix's runs execute: worker processes on this machine, or tasks on a Ray cluster.
BACKENDS = ("local", "ray")
#: Deepest nesting of arrays and tables a benchmark file may use (its deepest key, a plugin parameter
#: list expanded as a list of lists inside an experiment, needs 6).
MAX_DEPTH = 32
#: Most training runs one benchmark file may expand to, counted before cells share their dense runs.
MAX_RUNS = 100_000
#: The integers TOML promises to hold losslessly.
INT64 = range(-(2**63), 2**63)
#: The two keys that give a training's length; one table gives at most one of them.
LENGTH_KEYS = ("iterations", "epochs")

_short = reprlib.Repr()
_short.maxstring, _short.maxother, _short.maxlist, _short.maxdict, _short.maxlevel = 60, 60, 6, 4, 3


def shown(value: Any) -> str:
    """``repr(value)`` cut to a readable length, so no error sentence echoes a huge value whole."""
    return _short.repr(value)


class _Source:
    """The file being read, so every error names it."""

    def __init__(self, path: Path):
        self.path = path

    def error(self, where: str, message: str) -> ConfigError:
        return ConfigError(f"{self.path}: {where}: {message}")


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", str(tp)).replace("NoneType", "none")


def _check_values(raw: dict[str, Any], src: _Source) -> None:
    """Refuse nesting deeper than :data:`MAX_DEPTH` and integers outside :data:`INT64`, first in file order.

    Walks the parsed file with a stack rather than by recursion, so no
    nesting can exhaust Python's stack.
    """
    stack: list[tuple[Any, str, int]] = [(raw, "", 0)]
    while stack:
        value, where, depth = stack.pop()
        if isinstance(value, dict | list):
            if depth > MAX_DEPTH:
                raise src.error(where, f"arrays or tables nested more than {MAX_DEPTH} levels deep; no key of a "
                                "benchmark file needs that many inside each other")
            if isinstance(value, dict):
                children = [(v, f"{where}.{k}" if where else k, depth + 1) for k, v in value.items()]
            else:
                children = [(v, f"{where}[{i}]", depth + 1) for i, v in enumerate(value)]
            stack.extend(reversed(children))
        elif isinstance(value, int) and not isinstance(value, bool) and value not in INT64:
            raise src.error(where, f"{shown(value)} is outside TOML's 64-bit integer range "
                            f"[{INT64.start}, {INT64.stop - 1}]")


def _finite(value: Any) -> bool:
    """Whether every float in ``value`` (a coerced field: a scalar or nested tuples) is finite."""
    if isinstance(value, tuple):
        return all(_finite(v) for v in value)
    return not isinstance(value, float) or math.isfinite(value)


def _coerce(value: Any, tp: Any, where: str, src: _Source) -> Any:
    """Check ``value`` against a dataclass field type and convert lists to tuples."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(tp)
        for option in options:
            if option is type(None):
                continue
            try:
                return _coerce(value, option, where, src)
            except ConfigError:
                pass
        allowed = " or ".join(_type_name(o) for o in options if o is not type(None))
        raise src.error(where, f"{shown(value)} has the wrong type; expected {allowed}")
    if origin is tuple:
        args = typing.get_args(tp)
        if not isinstance(value, list):
            raise src.error(where, f"{shown(value)} has the wrong type; expected a list")
        item_types = [args[0]] * len(value) if len(args) == 2 and args[1] is Ellipsis else list(args)
        if len(item_types) != len(value):
            raise src.error(where, f"{shown(value)} must have {len(item_types)} items")
        return tuple(_coerce(v, t, f"{where}[{i}]", src) for i, (v, t) in enumerate(zip(value, item_types)))
    if tp is float and isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if tp is int and isinstance(value, int) and not isinstance(value, bool):
        return value
    if tp in (str, bool) and isinstance(value, tp):
        return value
    raise src.error(where, f"{shown(value)} has the wrong type; expected {_type_name(tp)}")


def build_dataclass(cls: type, table: dict[str, Any], where: str, src: _Source) -> Any:
    """Build ``cls`` from a TOML table, with one clear error for any bad key or value.

    The class's own checks (``__post_init__``) speak first; any value they
    let through that holds an infinity or a NaN is refused after them.
    """
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    values = {}
    for key, value in table.items():
        if key not in names:
            allowed = ", ".join(names) if names else "none"
            raise src.error(f"{where}.{key}", f"unknown key{suggest(key, names)}; allowed keys: {allowed}")
        values[key] = _coerce(value, hints[key], f"{where}.{key}", src)
    try:
        built = cls(**values)
    except ValueError as error:
        raise src.error(where, str(error)) from None
    for key, value in values.items():
        if not _finite(value):
            raise src.error(f"{where}.{key}", f"{key} = {shown(value)} is not allowed; it must be a finite number")
    return built


def _plugin_ref(kind: str, spec: Any, where: str, src: _Source, registry: Registry) -> PluginRef:
    """Resolve ``"name"`` or ``{ name = ..., param = ... }`` to a validated plugin reference."""
    if isinstance(spec, str):
        name, table = spec, {}
    elif isinstance(spec, dict):
        table = dict(spec)
        name = table.pop("name", None)
        if not isinstance(name, str):
            raise src.error(where, f"a {kind} given as a table needs a 'name' string")
    else:
        raise src.error(where, f"{spec!r} has the wrong type; expected a {kind} name or a table with 'name'")
    try:
        plugin = registry.get(kind, name)
    except PluginError as error:
        raise src.error(where, str(error).replace(repr(name), shown(name))) from None
    if plugin.name.endswith(":*"):
        table.setdefault("model", name.split(":", 1)[1])
    params = build_dataclass(plugin.Params, table, f"{where}({name})", src)
    return PluginRef(name, params)


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def _training_axes(table: dict[str, Any], where: str, src: _Source) -> list[list[tuple[str, Any]]]:
    """The axes of the training keys: a list-valued key's values, a single value otherwise.

    A key whose type is itself a list (``lr_milestones``, ``betas``) expands
    only when given a list of lists. The matrix's trainings are the product
    of the axes, built only once :class:`_RunBudget` has counted it.
    """
    hints = typing.get_type_hints(Training)
    axes: list[list[tuple[str, Any]]] = []
    for key, value in table.items():
        if key not in hints:
            names = list(hints)
            raise src.error(f"{where}.{key}", f"unknown key{suggest(key, names)}; allowed keys: {', '.join(names)}")
        is_sequence_field = typing.get_origin(hints[key]) is tuple
        expands = isinstance(value, list) and (not is_sequence_field or (value and isinstance(value[0], list)))
        if expands and not value:
            raise src.error(f"{where}.{key}", "an empty list expands to no runs; give at least one value")
        axes.append([(key, v) for v in value] if expands else [(key, value)])
    return axes


class _RunBudget:
    """The training runs of the experiments read so far, against :data:`MAX_RUNS`."""

    def __init__(self, seeds: int, src: _Source):
        self.seeds, self.src, self.spent = seeds, src, 0

    def spend(self, where: str, cells: int, rounds: int, initializers: int) -> None:
        """Count an experiment's runs from its sizes alone; refuse it when the file would pass the bound."""
        runs = cells * self.seeds * (1 + rounds * initializers)
        if self.spent + runs > MAX_RUNS:
            before = " with the experiments before it" if self.spent else ""
            raise self.src.error(where, f"expands to {runs:,} training runs ({cells:,} cells × {self.seeds} seeds × "
                                 f"(1 dense + {rounds:,} rounds × {initializers} initializers)){before}, and a "
                                 f"benchmark file holds at most {MAX_RUNS:,}; use fewer rounds, seeds or listed "
                                 "values, or split it into several files")
        self.spent += runs


def _check_keys(table: dict[str, Any], allowed: set[str], where: str, src: _Source) -> None:
    for key in table:
        if key not in allowed:
            raise src.error(
                f"{where}.{key}" if where else key,
                f"unknown key{suggest(key, allowed)}; allowed keys: {', '.join(sorted(allowed))}",
            )


def _require_table(value: Any, where: str, src: _Source) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise src.error(where, f"{shown(value)} has the wrong type; expected a table")
    return value


def _check_name(value: Any, where: str, src: _Source, what: str) -> str:
    """A name: a printable string, not blank, without white space at either end (names must not look alike)."""
    if not isinstance(value, str) or not value:
        raise src.error(where, f"missing or empty; give {what} a name string")
    if not value.strip():
        raise src.error(where, f"{shown(value)} is blank; give {what} a name with visible characters")
    if value != value.strip():
        raise src.error(where, f"{shown(value)} starts or ends with white space; names differing only in white space "
                        "would look alike, so write it without")
    if not value.isprintable():
        raise src.error(where, f"{shown(value)} holds a character that is not printable (a control character, a line "
                        "break or an invisible space); names are shown on one line")
    return value


def _check_folder_name(name: str, src: _Source) -> None:
    """Refuse a benchmark name that is no single folder name: it makes the default output ``results/<name>``."""
    if "/" in name or "\\" in name or name in (".", ".."):
        raise src.error("benchmark.name", f"{shown(name)} is not allowed: the name is the folder of the default "
                        "output results/<name>, so it may hold no / or \\ and may not be . or ..")


def _check_path(value: Any, key: str, src: _Source) -> str:
    """A path given in ``[benchmark]``: a string without NUL characters (no file system accepts them)."""
    if not isinstance(value, str):
        raise src.error(f"benchmark.{key}", f"{shown(value)} has the wrong type; expected str")
    if "\0" in value:
        raise src.error(f"benchmark.{key}", f"{shown(value)} holds a NUL character, which no path may hold")
    return value


def _benchmark_settings(raw: dict[str, Any], src: _Source) -> dict[str, Any]:
    """The checked ``[benchmark]`` table with its defaults filled in: the keyword arguments of :class:`Benchmark`."""
    table = _require_table(raw.get("benchmark", {}), "benchmark", src)
    _check_keys(table, BENCHMARK_KEYS, "benchmark", src)
    name = _check_name(table.get("name"), "benchmark.name", src, "the benchmark")
    _check_folder_name(name, src)
    seeds = table.get("seeds", [0])
    if not isinstance(seeds, list) or not seeds:
        raise src.error("benchmark.seeds", f"{shown(seeds)} is not allowed; give a non-empty list of integers")
    if not all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in seeds):
        raise src.error("benchmark.seeds", f"{shown(seeds)} is not allowed; seeds must be non-negative integers")
    if len(set(seeds)) != len(seeds):
        raise src.error("benchmark.seeds", f"{shown(seeds)} repeats a seed; each seed must appear once")
    device = table.get("device", "auto")
    if not is_device(device):
        raise src.error("benchmark.device", f"{shown(device)} is not allowed; use {DEVICE_CHOICES}")
    output = _check_path(table.get("output", f"results/{name}"), "output", src)
    if not output:
        raise src.error("benchmark.output", "empty; give the folder for the results, or leave the key out "
                        "for results/<name>")
    data_root = _check_path(table.get("data_root", ""), "data_root", src)
    download = table.get("download")
    if download is not None and not isinstance(download, bool):
        raise src.error("benchmark.download", f"{shown(download)} has the wrong type; expected bool")
    threads = table.get("threads", 0)
    if not isinstance(threads, int) or isinstance(threads, bool) or threads < 0:
        raise src.error("benchmark.threads", f"{shown(threads)} is not allowed; give the torch CPU threads per "
                        "worker as a positive integer, or 0 for the default")
    return {"name": name, "seeds": tuple(seeds), "device": device, "output": output,
            "download": download, "data_root": data_root, "threads": threads}


def _check_length_keys(table: dict[str, Any], where: str, src: _Source) -> None:
    """Refuse a training table that gives both ``iterations`` and ``epochs``."""
    if all(key in table for key in LENGTH_KEYS):
        raise src.error(where, "gives both iterations and epochs; give the training length once, "
                        "as iterations = N or as epochs = E")


def _merge(defaults: dict[str, Any], experiment: dict[str, Any]) -> dict[str, Any]:
    """An experiment's table over ``[defaults]``: its keys win; its training and schedule tables merge key by key.

    A training length (``iterations`` or ``epochs``) given by the
    experiment replaces the one of the defaults, whichever key that used.
    """
    merged = dict(defaults)
    for key, value in experiment.items():
        if key in ("training", "schedule") and isinstance(value, dict):
            inherited = dict(defaults.get(key, {}))
            if key == "training" and any(k in value for k in LENGTH_KEYS):  # its length replaces the defaults'
                inherited = {k: v for k, v in inherited.items() if k not in LENGTH_KEYS}
            merged[key] = {**inherited, **value}
        else:
            merged[key] = value
    return merged


def _experiment_cells(
    exp: dict[str, Any], where: str, src: _Source, registry: Registry, budget: _RunBudget
) -> Iterator[Cell]:
    """The cells of one experiment (merged with the defaults): one per architecture × dataset × pruner × training.

    Plugin references and settings are validated on the way, the runs are
    counted against the budget before any cell is built, and every cell is
    checked against its network and data set (:func:`_check_cell`); each
    error names the experiment's key.
    """
    for key in ("dataset", "architecture", "pruner"):
        if key not in exp:
            raise src.error(f"{where}.{key}", "missing; give it in the experiment or in [defaults]")
    name = exp["name"]
    schedule = build_dataclass(Schedule, _require_table(exp.get("schedule", {}), f"{where}.schedule", src),
                               f"{where}.schedule", src)
    initializer_specs = _as_list(exp.get("initializer", [TICKET]))
    if not initializer_specs:
        raise src.error(f"{where}.initializer", "an empty list trains nothing after the dense run; name at least one")
    initializers = tuple(
        _plugin_ref("initializer", s, f"{where}.initializer[{i}]", src, registry)
        for i, s in enumerate(initializer_specs)
    )
    init_names = [r.name for r in initializers]
    if len(set(init_names)) != len(init_names):
        labels = [r.label for r in initializers]
        if len(set(labels)) != len(labels):
            raise src.error(f"{where}.initializer", f"{init_names!r} lists the same initializer twice")
    if schedule.mask_source and schedule.mask_source not in init_names:
        raise src.error(f"{where}.schedule.mask_source",
                        f"{schedule.mask_source!r} is not one of this experiment's initializers {init_names}")
    refs = {
        key: [_plugin_ref(key, s, f"{where}.{key}" + (f"[{i}]" if isinstance(exp[key], list) else ""), src, registry)
              for i, s in enumerate(_as_list(exp[key]))]
        for key in ("architecture", "dataset", "pruner")
    }
    for key in ("architecture", "dataset", "pruner"):
        if not refs[key]:
            raise src.error(f"{where}.{key}", "an empty list expands to no runs; name at least one")
    training_table = _require_table(exp.get("training", {}), f"{where}.training", src)
    axes = _training_axes(training_table, f"{where}.training", src)
    budget.spend(where, math.prod(len(refs[key]) for key in refs) * math.prod(len(axis) for axis in axes),
                 schedule.rounds, len(initializers))
    networks: dict[tuple[str, str], Network | None] = {}
    for arch, data, pruner, combo in itertools.product(refs["architecture"], refs["dataset"], refs["pruner"],
                                                       itertools.product(*axes)):
        overrides = dict(combo)
        training = build_dataclass(Training, overrides, f"{where}.training", src)
        varying = tuple(key for (key, _), axis in zip(combo, axes) if len(axis) > 1)
        cell = Cell(name, arch, data, pruner, initializers, schedule, training, overrides, varying)
        pair = (repr(arch.key()), data.name)
        if pair not in networks:
            networks[pair] = _meta_network(arch, registry.dataset(data.name), registry, f"{where}.architecture", src)
        _check_cell(cell, networks[pair], where, src, registry)
        yield cell


def _meta_network(ref: PluginRef, dataset: Dataset, registry: Registry, where: str, src: _Source) -> Network | None:
    """The network of ``ref`` for ``dataset``, built on the ``meta`` device: layers and shapes, no memory.

    A ``ValueError`` of the architecture (it cannot be built for this data
    set) is the configuration's error. ``None`` when the architecture cannot
    be built on the meta device: the checks on the network then happen when
    the run builds it.
    """
    import torch

    arch = registry.architecture(ref.name)
    try:
        with torch.device("meta"):
            return arch.build(dataset.input_shape, dataset.num_classes, ref.params)
    except ValueError as error:
        raise src.error(where, f"{ref.label} for {dataset.name}: {error}") from None
    except Exception:  # third-party code that needs real tensors to build: checked when the run builds it
        return None


def _check_cell(cell: Cell, network: Network | None, where: str, src: _Source, registry: Registry) -> None:
    """Refuse what the cell's runs would fail on or silently change, as far as known before training.

    Sizes are checked against the data set's declared split sizes (or
    ``train_subset``); rewinding points against the training's length (a
    point in epochs of a training in iterations is left to the dense run,
    which refuses it when it starts); the pruner, and the pruner a control
    mimics, against the network.
    """
    training, dataset = cell.training, registry.dataset(cell.dataset.name)
    train_size = _training_images(training, dataset, f"{where}.training", src)
    per_epoch = iterations_per_epoch(training, train_size)
    length = training_length(training, train_size)
    if length is not None and length < 1:
        raise src.error(f"{where}.training", f"epochs = {training.epochs:g} trains 0 iterations ({per_epoch} per "
                        "epoch); give a training of at least one iteration")
    for i, ref in enumerate(cell.initializers if length is not None else ()):  # None: epochs of an unknown size
        # A point in epochs of a training in iterations counts 0 here: the dense run refuses it when it starts.
        rewinds_to = rewind_iteration(ref, registry, per_epoch if training.epochs else None)
        if rewinds_to >= length:
            given = f"{length} iterations" if training.epochs else f"iterations = {length}"
            raise src.error(f"{where}.initializer[{i}]", f"{ref.label} rewinds to iteration {rewinds_to}, at or "
                            f"after the end of training ({given}), so its runs would train no iteration")
    if network is not None:
        _check_pruner(cell.pruner, network, f"{where}.pruner", src, registry)


def _training_images(training: Training, dataset: Dataset, where: str, src: _Source) -> int | None:
    """The training images a run keeps once the validation images are held out; ``None`` when unknown.

    Refuses subsets larger than the data set's splits and a batch larger
    than the training images (a run never trains on a size it does not state).
    """
    for key, size, split in (("train_subset", dataset.train_size, "training"),
                             ("test_subset", dataset.test_size, "test")):
        wanted = getattr(training, key)
        if size is not None and wanted > size:
            raise src.error(where, f"{key} = {wanted} is more than the {size} {split} images of {dataset.name}")
    images = training.train_subset or dataset.train_size
    if images is None:
        return None
    if training.validation_size >= images:  # with train_subset, Training itself refuses it
        raise src.error(where, f"validation_size = {training.validation_size} leaves none of the {images} training "
                        f"images of {dataset.name} to train on")
    train_size = images - training.validation_size
    if training.batch_size > train_size:
        raise src.error(where, f"batch_size = {training.batch_size} is larger than the {train_size} training images "
                        f"({images} less validation_size = {training.validation_size}); give a batch_size of at "
                        f"most {train_size}")
    return train_size


def _check_pruner(ref: PluginRef, network: Network, where: str, src: _Source, registry: Registry) -> None:
    """Ask the pruner, and the pruner it mimics with its default parameters, whether they can prune ``network``."""
    pruner = registry.pruner(ref.name)
    checks = [(pruner, ref.params)]
    like = pruner.mimics(ref.params)
    if like is not None:
        try:
            mimicked = registry.pruner(like)
        except PluginError as error:
            raise src.error(where, f"{ref.label} mimics {error}") from None
        checks.append((mimicked, mimicked.Params()))
    for plugin, params in checks:
        try:
            plugin.check(params, network)
        except ValueError as error:
            raise src.error(where, str(error)) from None
        except Exception as error:  # third-party code: name it rather than show a bare traceback
            raise PluginError(f"{src.path}: {where}: pruner {plugin.name!r} raised from its check: "
                              f"{type(error).__name__}: {error}") from error


def parse_report(table: Any, path: Path) -> Report:
    """The ``[report]`` table of a benchmark file (``{}`` when absent) as :class:`Report`; errors name ``path``."""
    src = _Source(path)
    return build_dataclass(Report, _require_table(table, "report", src), "report", src)


def parse_benchmark(text: str, path: Path, registry: Registry) -> Benchmark:
    """Validate the TOML text of a benchmark file and expand it into cells."""
    src = _Source(path)
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise src.error("TOML syntax", str(error)) from None
    except RecursionError:
        raise src.error("TOML syntax", f"arrays or tables nested more than {MAX_DEPTH} levels deep; no key of a "
                        "benchmark file needs that many inside each other") from None
    _check_values(raw, src)
    _check_keys(raw, TOP_KEYS, "", src)
    settings = _benchmark_settings(raw, src)
    defaults = _require_table(raw.get("defaults", {}), "defaults", src)
    _check_keys(defaults, CELL_KEYS, "defaults", src)
    for key, settings_class in (("training", Training), ("schedule", Schedule)):
        table = _require_table(defaults.get(key, {}), f"defaults.{key}", src)
        _check_keys(table, {f.name for f in dataclasses.fields(settings_class)}, f"defaults.{key}", src)
    _check_length_keys(defaults.get("training", {}), "defaults.training", src)
    experiments = raw.get("experiment")
    if not isinstance(experiments, list) or not experiments:
        raise src.error("experiment", "no [[experiment]] table; declare at least one experiment")
    cells: list[Cell] = []
    seen_names: set[str] = set()
    budget = _RunBudget(len(settings["seeds"]), src)
    for index, exp in enumerate(experiments):
        where = f"experiment[{index}]"
        exp = _require_table(exp, where, src)
        _check_keys(exp, EXPERIMENT_KEYS, where, src)
        name = _check_name(exp.get("name"), f"{where}.name", src, "every experiment")
        if name in seen_names:
            raise src.error(f"{where}.name", f"{shown(name)} is used by an earlier experiment; names must be unique")
        seen_names.add(name)
        where = f"{where}({shown(name)[1:-1]})"
        if isinstance(exp.get("training"), dict):
            _check_length_keys(exp["training"], f"{where}.training", src)
        cells.extend(_experiment_cells(_merge(defaults, exp), where, src, registry, budget))
    report = parse_report(raw.get("report", {}), path)
    return Benchmark(cells=tuple(cells), source=str(path), raw=raw, report=report, **settings,
                     **_execution_settings(raw, src))


def _execution_settings(raw: dict[str, Any], src: _Source) -> dict[str, Any]:
    """The checked ``[execution]`` table: the ``backend`` and ``address`` keyword arguments of :class:`Benchmark`."""
    table = _require_table(raw.get("execution", {}), "execution", src)
    _check_keys(table, EXECUTION_KEYS, "execution", src)
    backend = table.get("backend", "local")
    if backend not in BACKENDS:
        raise src.error("execution.backend", f"{shown(backend)} is not allowed; use {' or '.join(map(repr, BACKENDS))}")
    address = table.get("address", "")
    if not isinstance(address, str) or "\0" in address:
        raise src.error("execution.address", f"{shown(address)} is not allowed; give a Ray address as a string "
                        "(\"auto\", or host:port)")
    if address and backend != "ray":
        raise src.error("execution.address", "is a Ray cluster's address; it needs backend = \"ray\"")
    return {"backend": backend, "address": address}


def load_benchmark(path: str | Path, registry: Registry) -> Benchmark:
    """Read and validate a benchmark file; every problem is a :class:`ConfigError`.

    A UTF-8 byte order mark at the start of the file is read as nothing.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigError(f"{path}: cannot be read ({error})") from None
    return parse_benchmark(text, path, registry)


def check_dataset(dataset: Dataset, root: Path, download: bool) -> None:
    """``dataset.check``, with a data root that cannot be looked into (permissions, a bad path) as DataNotFound."""
    try:
        dataset.check(root, download)
    except OSError as error:
        where = error.filename or root
        raise DataNotFound(f"{dataset.name}: cannot look into the data root {root}: {where}: "
                           f"{error.strerror or error}") from None


def missing_data(benchmark: Benchmark, registry: Registry, root: Path) -> list[str]:
    """The data sets of the matrix that are not under ``root`` (nothing is downloaded to find out)."""
    missing = []
    for name in sorted({cell.dataset.name for cell in benchmark.cells}):
        try:
            check_dataset(registry.dataset(name), root, False)
        except UserError:
            missing.append(name)
    return missing


def check_data(benchmark: Benchmark, registry: Registry, root: Path, download: bool) -> None:
    """Fail with :class:`DataNotFound` naming the file if any data set of the matrix is missing.

    ``download`` is the resolved permission (:func:`lthbench.data_root.resolve_download`).
    """
    for name in sorted({cell.dataset.name for cell in benchmark.cells}):
        try:
            check_dataset(registry.dataset(name), root, download)
        except UserError as error:
            raise type(error)(f"{benchmark.source}: dataset {name!r}: {error}") from None
