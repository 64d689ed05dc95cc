"""Finding plugins and their components.

Plugins are found through the entry-point group `trainyard.plugins` (the built-in families are
registered there too, exactly like a third-party package). `TRAINYARD_PLUGINS` allow-lists
them: unset loads all, a comma-separated list loads only those names, an empty string loads
none. A plugin that fails to import or register is kept aside as broken, with a one-line
reason, and never affects the others.
"""

from __future__ import annotations

import os
import types
from collections.abc import Iterable
from dataclasses import dataclass, field
from importlib.metadata import EntryPoint, entry_points

import pluggy

from trainyard import hookspecs
from trainyard.components import KINDS, Component, Kind
from trainyard.environments import GYMNASIUM, gymnasium_component, is_gymnasium_id
from trainyard.errors import did_you_mean

ENTRY_POINT_GROUP = "trainyard.plugins"
ALLOW_LIST_ENV = "TRAINYARD_PLUGINS"
HOOK_OF_KIND: dict[Kind, str] = {
    "model": "register_models",
    "datamodule": "register_datamodules",
    "environment": "register_environments",
    "algorithm": "register_algorithms",
}
PLURAL: dict[Kind, str] = {"model": "models", "datamodule": "data modules",
                           "environment": "environments", "algorithm": "algorithms"}


@dataclass
class PluginInfo:
    name: str
    version: str | None
    module: str
    status: str = "ok"  # "ok", "broken" or "disabled"
    reason: str | None = None
    components: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Registered:
    """A component together with the plugin that provided it."""

    plugin: str
    component: Component
    # Components that no plugin returned (environments named by Gymnasium id) keep their own name.
    qualified_name: str | None = None

    @property
    def name(self) -> str:
        return self.qualified_name or f"{self.plugin}.{self.component.name}"

    @property
    def kind(self) -> Kind:
        return self.component.kind


class UnknownComponent(LookupError):
    """A spec names a component that no loaded plugin provides. str(exc) is one line."""


class Registry:
    """The loaded plugins and every component they provide, by kind and qualified name."""

    def __init__(self, manager: pluggy.PluginManager, plugins: dict[str, PluginInfo],
                 components: dict[Kind, dict[str, Registered]]):
        self.manager = manager
        self.plugins = plugins
        self.components = components

    @property
    def hook(self):
        return self.manager.hook

    def names(self, kind: Kind) -> list[str]:
        return sorted(self.components[kind])

    def get(self, kind: Kind, name: str) -> Registered:
        found = self.components[kind].get(name)
        if found is not None:
            return found
        if kind == "environment" and is_gymnasium_id(name):
            try:
                return Registered(GYMNASIUM, gymnasium_component(name), qualified_name=name)
            except LookupError as error:
                raise UnknownComponent(str(error)) from None
        raise UnknownComponent(self._unknown(kind, name))

    def find(self, name: str) -> Registered:
        """Look a component up by qualified name, whatever its kind."""
        for kind in KINDS:
            if name in self.components[kind]:
                return self.components[kind][name]
        if is_gymnasium_id(name):
            return self.get("environment", name)
        every = [n for kind in KINDS for n in self.components[kind]]
        raise UnknownComponent(f"unknown component {name!r}{did_you_mean(name, every)}")

    def _unknown(self, kind: Kind, name: str) -> str:
        plugin = name.split(".", 1)[0]
        info = self.plugins.get(plugin)
        if info is not None and info.status == "broken":
            return f"{name!r} comes from plugin {plugin!r}, which is broken: {info.reason}"
        if info is not None and info.status == "disabled":
            return f"{name!r} comes from plugin {plugin!r}, which {ALLOW_LIST_ENV} does not allow"
        available = self.names(kind)
        if kind == "environment":
            available.append("any Gymnasium id, e.g. FrozenLake-v1")
        if not available:
            return f"unknown {kind} {name!r}: no {PLURAL[kind]} are registered (see `trainyard plugins`)"
        return f"unknown {kind} {name!r}{did_you_mean(name, available)}; available: {', '.join(available)}"


def allowed_plugins() -> set[str] | None:
    """Names allowed by TRAINYARD_PLUGINS, or None when every plugin may load."""
    value = os.environ.get(ALLOW_LIST_ENV)
    if value is None:
        return None
    return {name.strip() for name in value.split(",") if name.strip()}


def load_registry(found: Iterable[EntryPoint] | None = None) -> Registry:
    """Import the allowed plugins, collect their components, and set aside the broken ones."""
    manager = pluggy.PluginManager("trainyard")
    manager.add_hookspecs(hookspecs)
    allowed = allowed_plugins()
    plugins: dict[str, PluginInfo] = {}
    components: dict[Kind, dict[str, Registered]] = {kind: {} for kind in KINDS}

    # Not pluggy's load_setuptools_entrypoints: it stops at the first plugin that fails to
    # import, and this loop must isolate each plugin and remember why it broke.
    for entry_point in sorted(found if found is not None else entry_points(group=ENTRY_POINT_GROUP),
                              key=lambda ep: ep.name):
        version = entry_point.dist.version if entry_point.dist is not None else None
        info = PluginInfo(entry_point.name, version, entry_point.value)
        if info.name in plugins:
            info.status, info.reason = "broken", f"the name {info.name!r} is already used by {plugins[info.name].module}"
            plugins[f"{info.name} ({info.module})"] = info
            continue
        plugins[info.name] = info
        if allowed is not None and info.name not in allowed:
            info.status, info.reason = "disabled", f"not listed in {ALLOW_LIST_ENV}"
            continue
        try:
            plugin = entry_point.load()
            manager.register(plugin, name=info.name)
            unknown = [caller.name for caller in manager.get_hookcallers(plugin) or [] if not caller.has_spec()]
            if unknown:
                raise ValueError(f"implements unknown hook {unknown[0]!r}"
                                 f"{did_you_mean(unknown[0], HOOK_OF_KIND.values())}")
            found_here = _collect(manager, info.name)
        except Exception as error:  # noqa: BLE001 - any failure of a plugin is that plugin's alone
            info.status, info.reason = "broken", _one_line(error)
            if manager.has_plugin(info.name):
                manager.unregister(name=info.name)
            continue
        for registered in found_here:
            components[registered.kind][registered.name] = registered
            info.components.append(registered.name)
    return Registry(manager, plugins, components)


def _collect(manager: pluggy.PluginManager, plugin_name: str) -> list[Registered]:
    """Call one plugin's component hooks and check what they return."""
    others = [plugin for name, plugin in manager.list_name_plugin() if name != plugin_name]
    found: list[Registered] = []
    seen: set[str] = set()
    for kind, hook_name in HOOK_OF_KIND.items():
        for result in manager.subset_hook_caller(hook_name, remove_plugins=others)():
            if not isinstance(result, (list, tuple)):
                raise TypeError(f"{hook_name} returned {type(result).__name__}, expected a list of components")
            for item in result:
                if isinstance(item, types.ModuleType):
                    # The package's submodule of the same name replaced the decorated function
                    # when it was imported (Python sets submodules as package attributes).
                    short = item.__name__.rsplit(".", 1)[-1]
                    raise TypeError(f"{hook_name} returned the module {item.__name__}, which replaced the function "
                                    f"{short!r}: rename the function, declare it with name={short!r}")
                if not isinstance(item, Component):
                    raise TypeError(f"{hook_name} returned {item!r}, expected components declared with @trainyard.{kind}")
                if item.kind != kind:
                    raise TypeError(f"{hook_name} returned the {item.kind} {item.name!r}")
                key = f"{kind}:{item.name}"
                if key in seen:
                    raise ValueError(f"{hook_name} returned {item.name!r} twice")
                seen.add(key)
                found.append(Registered(plugin_name, item))
    return found


def _one_line(error: BaseException) -> str:
    lines = str(error).strip().splitlines()
    text = f"{type(error).__name__}: {lines[0]}" if lines else type(error).__name__
    return text if len(text) <= 200 else text[:197] + "..."


_REGISTRY: Registry | None = None


def get_registry() -> Registry:
    """The process-wide registry, loaded on first use."""
    global _REGISTRY
    if _REGISTRY is None:
        _REGISTRY = load_registry()
    return _REGISTRY


def reset_registry() -> None:
    """Forget the loaded registry (tests change TRAINYARD_PLUGINS between cases)."""
    global _REGISTRY
    _REGISTRY = None
