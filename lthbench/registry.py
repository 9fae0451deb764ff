"""The plugin manager and the typed facade the engine calls instead of raw hooks."""

from __future__ import annotations

import dataclasses
import importlib.metadata
import os
from dataclasses import dataclass
from functools import cache
from typing import Any, Generic, TypeVar

import pluggy

from lthbench import hookspecs
from lthbench.errors import PluginError, suggest
from lthbench.protocols import Architecture, Dataset, Initializer, Plugin, Pruner

#: Set to any non-empty value to load only lthbench's own plugins.
DISABLE_AUTOLOAD_ENV = "LTHBENCH_DISABLE_PLUGIN_AUTOLOAD"
#: Comma-separated local plugins to load without packaging: files (``path/to/plugin.py``) or importable modules
#: (``package.module``). ``--plugin`` adds to it for the command's duration, so worker processes load them too.
PLUGINS_ENV = "LTHBENCH_PLUGINS"
ENTRY_POINT_GROUP = "lthbench"
BUILTIN_MODULES = (
    "lthbench_plugins.architectures",
    "lthbench_plugins.datasets",
    "lthbench_plugins.pruners",
    "lthbench_plugins.initializers",
)

P = TypeVar("P", bound=Plugin)

KINDS: dict[str, tuple[str, type[Plugin]]] = {
    "pruner": ("lthbench_pruners", Pruner),
    "initializer": ("lthbench_initializers", Initializer),
    "architecture": ("lthbench_architectures", Architecture),
    "dataset": ("lthbench_datasets", Dataset),
}


@dataclass(frozen=True)
class Entry(Generic[P]):
    """One registered implementation and where it came from."""

    kind: str
    name: str
    implementation: P
    plugin: str
    distribution: str
    version: str

    @property
    def description(self) -> str:
        """The implementation's one-line description."""
        return type(self.implementation).description

    @property
    def parameters(self) -> list[dict[str, Any]]:
        """The parameters of the implementation (its ``Params`` dataclass): name, type and default, in order.

        A parameter without a default has ``required`` set; a ``Params`` that
        is not a dataclass gives no parameters.
        """
        params = type(self.implementation).Params
        if not dataclasses.is_dataclass(params):
            return []
        described = []
        for f in dataclasses.fields(params):
            if not f.init:
                continue
            kind = f.type if isinstance(f.type, str) else getattr(f.type, "__name__", str(f.type))
            if f.default is not dataclasses.MISSING:
                default, required = f.default, False
            elif f.default_factory is not dataclasses.MISSING:
                default, required = f.default_factory(), False
            else:
                default, required = None, True
            described.append({"name": f.name, "type": kind, "default": default, "required": required})
        return described


class Registry:
    """Registered plugins by kind, plus methods that call the lifecycle hooks."""

    def __init__(self, manager: pluggy.PluginManager, origins: dict[str, tuple[str, str]]):
        self.manager = manager
        self._entries: dict[str, dict[str, Entry]] = {kind: {} for kind in KINDS}
        for kind, (hook_name, base) in KINDS.items():
            hook = getattr(manager.hook, hook_name)
            for impl in hook.get_hookimpls():
                plugin_name = manager.get_name(impl.plugin) or repr(impl.plugin)
                dist, version = origins.get(plugin_name, ("unknown", "unknown"))
                where = f"plugin {plugin_name!r} ({dist} {version})"
                try:
                    items = impl.function()
                except Exception as error:  # third-party code: name it instead of a bare traceback
                    raise PluginError(f"{where} raised from its {kind} hook: {type(error).__name__}: {error}"
                                      ) from error
                if items is not None and not isinstance(items, (list, tuple)):
                    raise PluginError(f"{where} returned {items!r} from its {kind} hook; "
                                      f"it must return a list of {base.__name__} objects")
                for item in items or []:
                    self._add(kind, base, item, plugin_name, dist, version)

    def _add(self, kind: str, base: type, item: Any, plugin: str, dist: str, version: str) -> None:
        if not isinstance(item, base):
            raise PluginError(
                f"plugin {plugin!r} ({dist} {version}) returned {item!r} from its {kind} hook, "
                f"which is not a {base.__module__}.{base.__name__}"
            )
        name = item.name
        if name in self._entries[kind]:
            other = self._entries[kind][name]
            raise PluginError(
                f"{kind} name {name!r} is registered twice: by plugin {other.plugin!r} "
                f"({other.distribution} {other.version}) and by plugin {plugin!r} ({dist} {version})"
            )
        self._entries[kind][name] = Entry(kind, name, item, plugin, dist, version)

    # ----------------------------------------------------------------- lookup

    def entries(self) -> list[Entry]:
        """Every registered implementation, sorted by kind and name."""
        return [self._entries[kind][name] for kind in KINDS for name in sorted(self._entries[kind])]

    def get(self, kind: str, name: str) -> Plugin:
        """The implementation called ``name``; a family entry ``timm`` answers ``timm:<x>``."""
        entries = self._entries[kind]
        if name in entries:
            return entries[name].implementation
        family = name.split(":", 1)[0] + ":*"
        if ":" in name and family in entries:
            return entries[family].implementation
        raise PluginError(
            f"unknown {kind} {name!r}{suggest(name, entries)}; installed: {', '.join(sorted(entries))}"
        )

    def pruner(self, name: str) -> Pruner:
        """The pruner called ``name``."""
        return self.get("pruner", name)  # type: ignore[return-value]

    def initializer(self, name: str) -> Initializer:
        """The initializer called ``name``."""
        return self.get("initializer", name)  # type: ignore[return-value]

    def architecture(self, name: str) -> Architecture:
        """The architecture called ``name`` (or ``timm:<model>``)."""
        return self.get("architecture", name)  # type: ignore[return-value]

    def dataset(self, name: str) -> Dataset:
        """The data set called ``name``."""
        return self.get("dataset", name)  # type: ignore[return-value]

    # ----------------------------------------------------------------- lifecycle

    def run_started(self, run: dict[str, Any]) -> None:
        """Tell observers a training run starts."""
        self.manager.hook.lthbench_run_started(run=run)

    def run_finished(self, run: dict[str, Any], record: dict[str, Any]) -> None:
        """Tell observers a training run ended and its record is stored."""
        self.manager.hook.lthbench_run_finished(run=run, record=record)

    def evaluation(self, run: dict[str, Any], iteration: int, metrics: dict[str, float]) -> None:
        """Tell observers a training run was evaluated (skipped when no plugin listens)."""
        hook = self.manager.hook.lthbench_evaluation
        if hook.get_hookimpls():
            hook(run=run, iteration=iteration, metrics=metrics)

    def matrix_finished(self, output: Any, records: list[dict[str, Any]]) -> None:
        """Tell observers the whole matrix has been worked through."""
        self.manager.hook.lthbench_matrix_finished(output=output, records=records)

    def report_sections(self, frame: Any, stats: Any) -> list[dict[str, str]]:
        """Collect extra report sections from plugins, in registration order."""
        results = self.manager.hook.lthbench_report_sections(frame=frame, stats=stats)
        return [section for sections in reversed(results) for section in sections or []]


def _load_entry_points(manager: pluggy.PluginManager, origins: dict[str, tuple[str, str]]) -> None:
    only_own = bool(os.environ.get(DISABLE_AUTOLOAD_ENV))
    for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        dist = ep.dist.name if ep.dist else "unknown"
        version = ep.dist.version if ep.dist else "unknown"
        if only_own and dist != "lthbench":
            continue
        plugin_name = f"{dist}:{ep.name}"
        if manager.has_plugin(plugin_name):
            continue
        try:
            plugin = ep.load()
        except Exception as error:  # any import failure of third-party code
            raise PluginError(
                f"plugin {ep.name!r} ({dist} {version}, entry point {ep.value!r}) failed to import: "
                f"{type(error).__name__}: {error}"
            ) from error
        if manager.is_registered(plugin):
            continue
        _register(manager, plugin, plugin_name, f"plugin {ep.name!r} ({dist} {version}, entry point {ep.value!r})")
        origins[plugin_name] = (dist, version)


def _register(manager: pluggy.PluginManager, plugin: Any, name: str, described: str) -> None:
    try:
        manager.register(plugin, name=name)
    except pluggy.PluginValidationError as error:  # e.g. a hook with arguments its spec does not have
        raise PluginError(f"{described} does not match lthbench's hooks: {error}") from error


def _register_builtins(manager: pluggy.PluginManager, origins: dict[str, tuple[str, str]]) -> None:
    """Register first-party plugins directly when lthbench's entry points are not installed."""
    import importlib

    registered = set(manager.get_plugins())
    for module_name in BUILTIN_MODULES:
        module = importlib.import_module(module_name)
        if module not in registered:
            name = f"lthbench:{module_name.rsplit('.', 1)[1]}"
            manager.register(module, name=name)
            origins[name] = ("lthbench", _own_version())


def _own_version() -> str:
    from lthbench import __version__

    return __version__


def build_registry(extra_plugins: tuple[Any, ...] = (), sources: tuple[str, ...] = ()) -> Registry:
    """Build a registry: entry points of the ``lthbench`` group, built-ins, then ``extra_plugins``.

    ``sources`` names where each extra plugin came from (a local plugin's
    file or module), shown as its distribution.
    """
    manager = pluggy.PluginManager("lthbench")
    manager.add_hookspecs(hookspecs)
    origins: dict[str, tuple[str, str]] = {}
    _load_entry_points(manager, origins)
    _register_builtins(manager, origins)
    for index, plugin in enumerate(extra_plugins):
        source = sources[index] if index < len(sources) else None
        name = source or getattr(plugin, "__name__", f"extra-{index}")
        if manager.is_registered(plugin):
            continue
        _register(manager, plugin, name, f"plugin {name!r}")
        origins[name] = ("local", "-")
    try:
        manager.check_pending()
    except pluggy.PluginValidationError as error:
        name = manager.get_name(error.plugin) or repr(error.plugin)
        dist, version = origins.get(name, ("unknown", "unknown"))
        raise PluginError(f"plugin {name!r} ({dist} {version}) implements a hook lthbench does not have: "
                          f"{error}") from error
    return Registry(manager, origins)


def local_plugin_names(value: str | None = None) -> list[str]:
    """The local plugins that ``value`` (default: ``$LTHBENCH_PLUGINS``) names, in order, empty entries dropped."""
    value = os.environ.get(PLUGINS_ENV, "") if value is None else value
    return [name.strip() for name in value.split(",") if name.strip()]


def is_plugin_file(name: str) -> bool:
    """Whether a local plugin is named by its file (``.py``, or a path) rather than as an importable module."""
    return name.endswith(".py") or os.sep in name or "/" in name


def load_local_plugin(name: str) -> Any:
    """Import a local plugin: a Python file, or a module on ``sys.path``; :class:`PluginError` naming it if it fails."""
    import hashlib
    import importlib
    import importlib.util
    import sys
    from pathlib import Path

    where = f"local plugin {name!r} (--plugin or ${PLUGINS_ENV})"
    try:
        if not is_plugin_file(name):
            return importlib.import_module(name)
        path = Path(name).expanduser().resolve()
        if not path.is_file():
            raise PluginError(f"{where}: no such file {path}")
        module_name = f"lthbench_local_plugin_{path.stem}_{hashlib.sha256(str(path).encode()).hexdigest()[:8]}"
        if module_name in sys.modules:
            return sys.modules[module_name]
        spec = importlib.util.spec_from_file_location(module_name, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[module_name] = module
        try:
            spec.loader.exec_module(module)
        except BaseException:
            del sys.modules[module_name]
            raise
        return module
    except PluginError:
        raise
    except ModuleNotFoundError as error:
        if error.name and name.startswith(error.name):
            raise PluginError(f"{where}: no module named {error.name!r}; give a file path ending in .py, or a "
                              "module importable in this Python environment") from None
        raise PluginError(f"{where} failed to import: {type(error).__name__}: {error}") from error
    except (Exception, SystemExit) as error:  # any failure of the plugin's own code
        raise PluginError(f"{where} failed to import: {type(error).__name__}: {error}") from error


def default_registry() -> Registry:
    """The registry of everything installed plus the local plugins of ``$LTHBENCH_PLUGINS``, built once per value."""
    return _registry_with(tuple(local_plugin_names()))


@cache
def _registry_with(local: tuple[str, ...]) -> Registry:
    return build_registry(tuple(load_local_plugin(name) for name in local), local)
