"""Read a benchmark TOML file, validate every key, and expand the comparison matrix."""

from __future__ import annotations

import dataclasses
import itertools
import tomllib
import types
import typing
from pathlib import Path
from typing import Any

from lthbench.errors import ConfigError, PluginError, UserError, suggest
from lthbench.registry import Registry
from lthbench.run.plan import rewind_iteration
from lthbench.config.devices import DEVICE_CHOICES, is_device
from lthbench.config.settings import TICKET, Benchmark, Cell, Execution, PluginRef, Schedule, Training

BENCHMARK_KEYS = {"name", "seeds", "output", "device", "download", "data_root"}
CELL_KEYS = {"dataset", "architecture", "pruner", "initializer", "training", "schedule"}
EXPERIMENT_KEYS = CELL_KEYS | {"name"}
TOP_KEYS = {"benchmark", "defaults", "experiment", "execution"}


class _Source:
    """The file being read, so every error names it."""

    def __init__(self, path: Path):
        self.path = path

    def error(self, where: str, message: str) -> ConfigError:
        return ConfigError(f"{self.path}: {where}: {message}")


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", str(tp)).replace("NoneType", "none")


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
        raise src.error(where, f"{value!r} has the wrong type; expected {allowed}")
    if origin is tuple:
        args = typing.get_args(tp)
        if not isinstance(value, list):
            raise src.error(where, f"{value!r} has the wrong type; expected a list")
        item_types = [args[0]] * len(value) if len(args) == 2 and args[1] is Ellipsis else list(args)
        if len(item_types) != len(value):
            raise src.error(where, f"{value!r} must have {len(item_types)} items")
        return tuple(_coerce(v, t, f"{where}[{i}]", src) for i, (v, t) in enumerate(zip(value, item_types)))
    if tp is float and isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if tp is int and isinstance(value, int) and not isinstance(value, bool):
        return value
    if tp in (str, bool) and isinstance(value, tp):
        return value
    raise src.error(where, f"{value!r} has the wrong type; expected {_type_name(tp)}")


def build_dataclass(cls: type, table: dict[str, Any], where: str, src: _Source) -> Any:
    """Build ``cls`` from a TOML table, with one clear error for any bad key or value."""
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    values = {}
    for key, value in table.items():
        if key not in names:
            allowed = ", ".join(names) if names else "none"
            raise src.error(f"{where}.{key}", f"unknown key{suggest(key, names)}; allowed keys: {allowed}")
        values[key] = _coerce(value, hints[key], f"{where}.{key}", src)
    try:
        return cls(**values)
    except ValueError as error:
        raise src.error(where, str(error)) from None


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
        raise src.error(where, str(error)) from None
    if plugin.name.endswith(":*"):
        table.setdefault("model", name.split(":", 1)[1])
    params = build_dataclass(plugin.Params, table, f"{where}({name})", src)
    return PluginRef(name, params)


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def _expand_training(table: dict[str, Any], where: str, src: _Source) -> list[dict[str, Any]]:
    """Expand list-valued training keys into the product of their values.

    A key whose type is itself a list (``lr_milestones``, ``betas``) expands
    only when given a list of lists.
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
    return [dict(combo) for combo in itertools.product(*axes)]


def _check_keys(table: dict[str, Any], allowed: set[str], where: str, src: _Source) -> None:
    for key in table:
        if key not in allowed:
            raise src.error(
                f"{where}.{key}" if where else key,
                f"unknown key{suggest(key, allowed)}; allowed keys: {', '.join(sorted(allowed))}",
            )


def _require_table(value: Any, where: str, src: _Source) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise src.error(where, f"{value!r} has the wrong type; expected a table")
    return value


def _benchmark_settings(raw: dict[str, Any], src: _Source) -> dict[str, Any]:
    """The checked ``[benchmark]`` table with its defaults filled in: the keyword arguments of :class:`Benchmark`."""
    table = _require_table(raw.get("benchmark", {}), "benchmark", src)
    _check_keys(table, BENCHMARK_KEYS, "benchmark", src)
    name = table.get("name")
    if not isinstance(name, str) or not name:
        raise src.error("benchmark.name", "missing or empty; give the benchmark a name string")
    seeds = table.get("seeds", [0])
    if not isinstance(seeds, list) or not seeds:
        raise src.error("benchmark.seeds", f"{seeds!r} is not allowed; give a non-empty list of integers")
    if not all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in seeds):
        raise src.error("benchmark.seeds", f"{seeds!r} is not allowed; seeds must be non-negative integers")
    if len(set(seeds)) != len(seeds):
        raise src.error("benchmark.seeds", f"{seeds!r} repeats a seed; each seed must appear once")
    device = table.get("device", "auto")
    if not is_device(device):
        raise src.error("benchmark.device", f"{device!r} is not allowed; use {DEVICE_CHOICES}")
    output = table.get("output", f"results/{name}")
    download = table.get("download", False)
    data_root = table.get("data_root", "")
    for key, value, tp in (("output", output, str), ("download", download, bool), ("data_root", data_root, str)):
        if not isinstance(value, tp):
            raise src.error(f"benchmark.{key}", f"{value!r} has the wrong type; expected {tp.__name__}")
    return {"name": name, "seeds": tuple(seeds), "device": device, "output": output,
            "download": download, "data_root": data_root}


def _merge(defaults: dict[str, Any], experiment: dict[str, Any]) -> dict[str, Any]:
    """An experiment's table over ``[defaults]``: its keys win; its training and schedule tables merge key by key."""
    merged = dict(defaults)
    for key, value in experiment.items():
        if key in ("training", "schedule") and isinstance(value, dict):
            merged[key] = {**defaults.get(key, {}), **value}
        else:
            merged[key] = value
    return merged


def _experiment_cells(
    exp: dict[str, Any], where: str, src: _Source, registry: Registry
) -> list[Cell]:
    """The cells of one experiment (merged with the defaults): one per architecture × dataset × pruner × training.

    Plugin references and settings are validated on the way, and so is
    every initializer's rewind point against a training given in
    iterations; each error names the experiment's key.
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
    cells = []
    for arch, data, pruner, overrides in itertools.product(
        refs["architecture"], refs["dataset"], refs["pruner"], _expand_training(training_table, f"{where}.training", src)
    ):
        training = build_dataclass(Training, overrides, f"{where}.training", src)
        for i, ref in enumerate(initializers):
            rewinds_to = 0 if training.epochs else rewind_iteration(ref, registry)
            if rewinds_to > training.iterations:
                raise src.error(f"{where}.initializer[{i}]", f"{ref.label} rewinds to iteration "
                                f"{rewinds_to}, after the end of training (iterations = {training.iterations})")
        cells.append(Cell(name, arch, data, pruner, initializers, schedule, training, overrides))
    return cells


def parse_benchmark(text: str, path: Path, registry: Registry) -> Benchmark:
    """Validate the TOML text of a benchmark file and expand it into cells."""
    src = _Source(path)
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise src.error("TOML syntax", str(error)) from None
    _check_keys(raw, TOP_KEYS, "", src)
    settings = _benchmark_settings(raw, src)
    defaults = _require_table(raw.get("defaults", {}), "defaults", src)
    _check_keys(defaults, CELL_KEYS, "defaults", src)
    for key, settings_class in (("training", Training), ("schedule", Schedule)):
        table = _require_table(defaults.get(key, {}), f"defaults.{key}", src)
        _check_keys(table, {f.name for f in dataclasses.fields(settings_class)}, f"defaults.{key}", src)
    experiments = raw.get("experiment")
    if not isinstance(experiments, list) or not experiments:
        raise src.error("experiment", "no [[experiment]] table; declare at least one experiment")
    cells: list[Cell] = []
    seen_names: set[str] = set()
    for index, exp in enumerate(experiments):
        where = f"experiment[{index}]"
        exp = _require_table(exp, where, src)
        _check_keys(exp, EXPERIMENT_KEYS, where, src)
        name = exp.get("name")
        if not isinstance(name, str) or not name:
            raise src.error(f"{where}.name", "missing or empty; every experiment needs a name string")
        if name in seen_names:
            raise src.error(f"{where}.name", f"{name!r} is used by an earlier experiment; names must be unique")
        seen_names.add(name)
        cells.extend(_experiment_cells(_merge(defaults, exp), f"{where}({name})", src, registry))
    execution_table = _require_table(raw.get("execution", {}), "execution", src)
    execution = build_dataclass(Execution, execution_table, "execution", src)
    return Benchmark(cells=tuple(cells), source=str(path), execution=execution, raw=raw, **settings)


def load_benchmark(path: str | Path, registry: Registry) -> Benchmark:
    """Read and validate a benchmark file; every problem is a :class:`ConfigError`."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigError(f"{path}: cannot be read ({error})") from None
    return parse_benchmark(text, path, registry)


def check_data(benchmark: Benchmark, registry: Registry, root: Path, download: bool) -> None:
    """Fail with :class:`DataNotFound` naming the file if any data set of the matrix is missing."""
    for name in sorted({cell.dataset.name for cell in benchmark.cells}):
        try:
            registry.dataset(name).check(root, download or benchmark.download)
        except UserError as error:
            raise type(error)(f"{benchmark.source}: dataset {name!r}: {error}") from None
