"""The plugin manager: built-in plugins, the ``ddx_llm`` entry-point group and the drop-in folder.

Plugins load in that order.  Any plugin is disabled by listing its name in ``[core]
disabled_plugins`` (``DDX_LLM_DISABLED_PLUGINS``): built-ins by their module name, entry points by
their entry-point name, drop-ins by their file name without ``.py``.  Nothing happens at import:
:func:`build_plugin_manager` does the work.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import logging
import sys
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import pluggy

from . import hookspecs

logger = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "ddx_llm"
DROPIN_PACKAGE = "ddx_llm_dropins"

BUILTIN_PLUGINS: dict[str, str] = {
    "request_id": "ddx_llm.plugins.request_id",
    "cors": "ddx_llm.plugins.cors",
    "metrics": "ddx_llm.plugins.metrics",
    "errors": "ddx_llm.plugins.errors",
    "auth": "ddx_llm.plugins.auth",
    "mock": "ddx_llm.plugins.mock",
    "mlx": "ddx_llm.plugins.mlx",
    "omni": "ddx_llm.plugins.omni",
}
"""Built-in plugins by name.  Their modules import nothing heavy at import time."""


@dataclass(frozen=True)
class PluginInfo:
    """What ``ddx-llm plugins`` shows for one plugin."""

    name: str
    source: str  # "builtin", "entrypoint <dist>", "dropin <path>"
    version: str | None
    hooks: tuple[str, ...]


class PluginManager(pluggy.PluginManager):
    """pluggy's manager plus where each plugin came from."""

    def __init__(self) -> None:
        super().__init__(hookspecs.PROJECT)
        self.add_hookspecs(hookspecs)
        self.sources: dict[str, str] = {}

    def get_plugin_infos(self) -> list[PluginInfo]:
        """Every registered plugin: name, source, version and the hooks it implements."""
        versions = {
            self.get_name(plugin): dist.version for plugin, dist in self.list_plugin_distinfo()
        }
        infos = []
        for name, plugin in self.list_name_plugin():
            if plugin is None:  # blocked
                continue
            hooks = tuple(sorted(caller.name for caller in self.get_hookcallers(plugin) or []))
            source = self.sources.get(name, "registered")
            infos.append(PluginInfo(name, source, versions.get(name), hooks))
        return infos

    def blocked_names(self) -> list[str]:
        return sorted(name for name, plugin in self.list_name_plugin() if plugin is None)


def build_plugin_manager(
    *,
    disabled: list[str] | tuple[str, ...] = (),
    plugins_dir: Path | None = None,
    extra_plugins: list[tuple[str, Any]] | tuple[tuple[str, Any], ...] = (),
    trace: bool = False,
) -> PluginManager:
    """Build a manager with the built-ins, entry points, drop-ins and ``extra_plugins`` loaded.

    Raises pluggy's ``PluginValidationError`` for a hook implementation that matches no
    specification (a misspelled hook name) or has the wrong arguments.
    """
    pm = PluginManager()
    for name in disabled:
        pm.set_blocked(name)
    for name, module_path in BUILTIN_PLUGINS.items():
        if not pm.is_blocked(name):
            pm.register(importlib.import_module(module_path), name=name)
            pm.sources[name] = "builtin"
    _load_entry_points(pm)
    if plugins_dir is not None:
        _load_dropins(pm, plugins_dir)
    for name, plugin in extra_plugins:
        if not pm.is_blocked(name):
            pm.register(plugin, name=name)
            pm.sources[name] = "extra"
    pm.check_pending()
    if trace:
        pm.trace.root.setwriter(lambda message: logger.info("hook trace: %s", message.rstrip()))
        pm.enable_tracing()
    return pm


def _load_entry_points(pm: PluginManager) -> None:
    before = set(pm.get_plugins())
    for dist in importlib.metadata.distributions():
        for ep in dist.entry_points:
            if (
                ep.group == ENTRY_POINT_GROUP
                and pm.has_plugin(ep.name)
                and not pm.is_blocked(ep.name)
            ):
                logger.warning(
                    "entry point %r of %s is skipped: a plugin of that name is already loaded",
                    ep.name, dist.metadata["name"],
                )  # fmt: skip
    pm.load_setuptools_entrypoints(ENTRY_POINT_GROUP)
    for plugin, dist in pm.list_plugin_distinfo():
        if plugin not in before:
            pm.sources[pm.get_name(plugin)] = f"entrypoint {dist.project_name}"


def _load_dropins(pm: PluginManager, plugins_dir: Path) -> None:
    """Load every ``*.py`` module and package (folder with ``__init__.py``) in ``plugins_dir``.

    Files starting with ``_`` or ``.`` are skipped.  A drop-in that fails to import stops
    start-up with the file named: a half-loaded plugin set is worse than none.
    """
    if not plugins_dir.is_dir():
        logger.debug("plugins folder %s does not exist; no drop-ins", plugins_dir)
        return
    for path in sorted(plugins_dir.iterdir()):
        if path.name.startswith(("_", ".")):
            continue
        if path.suffix == ".py":
            name, location = path.stem, path
        elif (path / "__init__.py").is_file():
            name, location = path.name, path / "__init__.py"
        else:
            continue
        if pm.is_blocked(name):
            continue
        if pm.has_plugin(name):
            raise ImportError(
                f"drop-in plugin {path} is named {name!r} like an already loaded plugin "
                f"({pm.sources.get(name, 'registered')}); rename the file"
            )
        pm.register(_import_file(name, location), name=name)
        pm.sources[name] = f"dropin {path}"


def _import_file(name: str, location: Path) -> ModuleType:
    module_name = f"{DROPIN_PACKAGE}.{name}"
    spec = importlib.util.spec_from_file_location(
        module_name,
        location,
        submodule_search_locations=[str(location.parent)]
        if location.name == "__init__.py"
        else None,
    )
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load plugin {location}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as exc:
        del sys.modules[module_name]
        raise ImportError(f"plugin {location} failed to import: {exc!r}") from exc
    return module
