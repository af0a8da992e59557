"""Plugin discovery and the registry of generators, tasks and commands.

Nothing is loaded at import time: :func:`get_plugin_manager` builds a manager and loads plugins from

1. the ``negmine`` entry-point group (shipped plugins and third-party packages alike), filtered by the environment
   variables ``NEGMINE_PLUGINS`` (comma-separated allow-list of entry-point names) and ``NEGMINE_DISABLE_PLUGINS``
   (block-list, shipped plugins included);
2. explicit plugins given as importable module names or paths to ``.py`` files (``negmine -p``), always loaded.

Core code talks to plugins only through the typed methods of :class:`PluginManager`, never through ``pm.hook`` by
string, so a misspelt hook is an AttributeError here rather than a silent no-op.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import attrs
import pluggy

from negmine import hookspecs
from negmine.errors import PluginError, UnknownNameError

ENTRY_POINT_GROUP = "negmine"
ALLOW_ENV = "NEGMINE_PLUGINS"
BLOCK_ENV = "NEGMINE_DISABLE_PLUGINS"


@attrs.frozen
class PluginInfo:
    """Where a loaded plugin came from."""

    name: str
    module: str
    origin: str  # "entry point" or "-p"
    distribution: str | None = None
    version: str | None = None


def _split_env(value: str | None) -> set[str]:
    return {v.strip() for v in (value or "").split(",") if v.strip()}


def _import_plugin(spec: str) -> Any:
    """Import a plugin given as a module name or a path to a .py file."""
    path = Path(spec)
    if spec.endswith(".py") or path.is_file():
        if not path.is_file():
            raise PluginError(f"plugin file {spec!r} does not exist")
        mod_name = f"negmine_local_plugin_{path.stem}_{abs(hash(str(path.resolve()))) % 10**8}"
        module_spec = importlib.util.spec_from_file_location(mod_name, path)
        if module_spec is None or module_spec.loader is None:
            raise PluginError(f"plugin file {spec!r} cannot be imported")
        module = importlib.util.module_from_spec(module_spec)
        sys.modules[mod_name] = module
        try:
            module_spec.loader.exec_module(module)
        except Exception as exc:
            sys.modules.pop(mod_name, None)
            raise PluginError(f"plugin {spec!r} failed to import: {type(exc).__name__}: {exc}") from exc
        return module
    try:
        return importlib.import_module(spec)
    except Exception as exc:
        raise PluginError(f"plugin {spec!r} failed to import: {type(exc).__name__}: {exc}") from exc


class PluginManager:
    """A pluggy manager plus a typed facade and name registries."""

    def __init__(self) -> None:
        self.pm = pluggy.PluginManager(hookspecs.PROJECT)
        self.pm.add_hookspecs(hookspecs)
        self.info: dict[str, PluginInfo] = {}
        self._generators: dict[str, tuple[type, str]] | None = None
        self._tasks: dict[str, tuple[Any, str]] | None = None

    # -- loading -------------------------------------------------------------------------------------------------------

    def load_entry_points(self, environ: Mapping[str, str] | None = None) -> None:
        from importlib.metadata import entry_points

        env = os.environ if environ is None else environ
        allow, block = _split_env(env.get(ALLOW_ENV)), _split_env(env.get(BLOCK_ENV))
        for ep in sorted(entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name):
            if ep.name in block or (allow and ep.name not in allow) or ep.name in self.info:
                continue
            try:
                module = ep.load()
            except Exception as exc:
                dist = getattr(ep.dist, "name", "?")
                raise PluginError(
                    f"plugin {ep.name!r} (entry point {ep.value!r} of distribution {dist!r}) failed to import: "
                    f"{type(exc).__name__}: {exc}. Disable it with {BLOCK_ENV}={ep.name} to continue without it."
                ) from exc
            dist = ep.dist
            self._register(
                module,
                PluginInfo(ep.name, ep.value, "entry point", getattr(dist, "name", None), getattr(dist, "version", None)),
            )

    def load_plugin(self, spec: str) -> None:
        """Load one plugin from a module name or a .py path (``negmine -p``)."""
        module = _import_plugin(spec)
        name = Path(spec).stem if spec.endswith(".py") else spec
        if name in self.info:
            return
        for info in self.info.values():
            if self.pm.get_plugin(info.name) is module:  # pluggy would refuse it with a message about its names
                dist = f" (distribution {info.distribution})" if info.distribution else ""
                raise PluginError(f"-p {spec}: the module is installed and already loaded from its entry point "
                                  f"{info.name!r}{dist}; drop -p {spec}")
        self._register(module, PluginInfo(name, getattr(module, "__name__", spec), "-p"))

    def _register(self, plugin: Any, info: PluginInfo) -> None:
        try:
            self.pm.register(plugin, name=info.name)
            self.pm.check_pending()
        except (ValueError, pluggy.PluginValidationError) as exc:
            raise PluginError(f"plugin {info.name!r} is invalid: {exc}") from exc
        self.info[info.name] = info
        self._generators = self._tasks = None

    def register(self, obj: Any, name: str | None = None) -> str:
        """Register a live object (e.g. a generator instance) so it receives lifecycle hooks; returns its name.

        A method marked ``@hookimpl`` whose name is not a hook, or whose arguments a hook does not offer, is an
        error here (pluggy alone would ignore a misspelt name until ``check_pending``).
        """
        label = name or type(obj).__name__
        try:
            registered = self.pm.register(obj, name=name)
            self.pm.check_pending()
        except (ValueError, pluggy.PluginValidationError) as exc:
            if self.pm.is_registered(obj):
                self.pm.unregister(obj)
            raise PluginError(f"{label} cannot receive negmine hooks: {exc}") from exc
        return registered

    def unregister(self, obj: Any) -> None:
        if self.pm.is_registered(obj):
            self.pm.unregister(obj)

    # -- registries ----------------------------------------------------------------------------------------------------

    def _collect(self, hook_name: str) -> list[tuple[str, Any]]:
        """Call a registration hook on every plugin separately, so each result is attributed to its plugin."""
        caller = getattr(self.pm.hook, hook_name)
        out = []
        for impl in reversed(caller.get_hookimpls()):  # registration order
            try:
                result = impl.function()
            except Exception as exc:
                raise PluginError(
                    f"plugin {impl.plugin_name!r} failed in {hook_name}: {type(exc).__name__}: {exc}"
                ) from exc
            for item in result or []:
                out.append((impl.plugin_name, item))
        return out

    def generators(self) -> dict[str, type]:
        """Registered generator classes by name."""
        if self._generators is None:
            from negmine.generator import NegativeGenerator

            found: dict[str, tuple[type, str]] = {}
            for plugin, cls in self._collect("negmine_register_generators"):
                if not (isinstance(cls, type) and issubclass(cls, NegativeGenerator)) or not cls.name:
                    raise PluginError(f"plugin {plugin!r} registered {cls!r}, which is not a named NegativeGenerator")
                if cls.name in found and found[cls.name][0] is not cls:
                    other, other_plugin = found[cls.name]
                    raise PluginError(
                        f"generator name {cls.name!r} is registered twice: {_qualname(other)} (plugin "
                        f"{other_plugin!r}) and {_qualname(cls)} (plugin {plugin!r})"
                    )
                found[cls.name] = (cls, plugin)
            self._generators = found
        return {name: cls for name, (cls, _) in self._generators.items()}

    def generator(self, name: str) -> type:
        gens = self.generators()
        if name not in gens:
            raise UnknownNameError("generator", name, gens, hint="`negmine plugins` lists what is installed.")
        return gens[name]

    def tasks(self) -> dict[str, Any]:
        """Registered :class:`negmine.TaskSpec` objects by name."""
        if self._tasks is None:
            found: dict[str, tuple[Any, str]] = {}
            for plugin, spec in self._collect("negmine_register_tasks"):
                name = getattr(spec, "name", None)
                if not name:
                    raise PluginError(f"plugin {plugin!r} registered a task without a name: {spec!r}")
                if name in found:
                    raise PluginError(
                        f"task name {name!r} is registered twice: by plugin {found[name][1]!r} and plugin {plugin!r}"
                    )
                found[name] = (spec, plugin)
            self._tasks = found
        return {name: spec for name, (spec, _) in self._tasks.items()}

    def task(self, name: str) -> Any:
        tasks = self.tasks()
        if name not in tasks:
            raise UnknownNameError("task", name, tasks, hint="`negmine plugins` lists what is installed.")
        return tasks[name]

    def commands(self) -> list[tuple[str, Any]]:
        """(plugin name, click command) pairs from every plugin."""
        return self._collect("negmine_register_commands")

    # -- lifecycle (typed facade) --------------------------------------------------------------------------------------

    def train_start(self, trainer: Any) -> None:
        self.pm.hook.negmine_train_start(trainer=trainer)

    def stage_start(self, trainer: Any, stage: Any) -> None:
        self.pm.hook.negmine_stage_start(trainer=trainer, stage=stage)

    def step_end(self, trainer: Any, step: int, metrics: dict) -> None:
        self.pm.hook.negmine_step_end(trainer=trainer, step=step, metrics=metrics)

    def evaluate(self, trainer: Any, split: str, metrics: dict) -> None:
        self.pm.hook.negmine_evaluate(trainer=trainer, split=split, metrics=metrics)

    def stage_end(self, trainer: Any, stage: Any, metrics: dict) -> None:
        self.pm.hook.negmine_stage_end(trainer=trainer, stage=stage, metrics=metrics)

    def train_end(self, trainer: Any, summary: dict) -> None:
        self.pm.hook.negmine_train_end(trainer=trainer, summary=summary)

    # -- listing -------------------------------------------------------------------------------------------------------

    def describe(self) -> list[dict[str, Any]]:
        """One dict per loaded plugin: distribution, version, generators (with options), tasks and commands."""
        from negmine.generator import option_specs

        gens = self.generators()
        tasks = self.tasks()
        commands = self.commands()
        out = []
        for name, info in self.info.items():
            entry = attrs.asdict(info)
            entry["generators"] = [
                {
                    "name": g,
                    "class": _qualname(cls),
                    "requires": sorted(str(getattr(r, "value", r)) for r in cls.requires),
                    "doc": (cls.__doc__ or "").strip().split("\n")[0],
                    "options": [_jsonable(o) for o in option_specs(cls.Options)],
                }
                for g, cls in gens.items()
                if self._generators[g][1] == name  # type: ignore[index]
            ]
            entry["tasks"] = [
                {"name": t, "profiles": dict(spec.profiles), "description": spec.description}
                for t, spec in tasks.items()
                if self._tasks[t][1] == name  # type: ignore[index]
            ]
            entry["commands"] = sorted(_command_paths(cmd) for plugin, cmd in commands if plugin == name)
            entry["commands"] = [c for group in entry["commands"] for c in group]
            out.append(entry)
        return out


def _command_paths(cmd: Any, prefix: str = "") -> list[str]:
    path = f"{prefix} {cmd.name}".strip()
    subs = getattr(cmd, "commands", None)
    if not subs:
        return [path]
    return [p for sub in subs.values() for p in _command_paths(sub, path)]


def _jsonable(spec: dict[str, Any]) -> dict[str, Any]:
    return {k: (v if isinstance(v, (str, int, float, bool, list, type(None))) else repr(v)) for k, v in spec.items()}


def _qualname(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def get_plugin_manager(
    plugins: Iterable[str] = (), *, entry_points: bool = True, environ: Mapping[str, str] | None = None
) -> PluginManager:
    """Build a plugin manager: entry points (unless disabled) plus explicit ``plugins`` (module names or .py paths)."""
    pm = PluginManager()
    if entry_points:
        pm.load_entry_points(environ)
    for spec in plugins:
        pm.load_plugin(spec)
    return pm
