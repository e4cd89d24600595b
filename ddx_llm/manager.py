"""The plugin manager: built-in plugins, the ``ddx_llm`` entry-point group and the drop-in folder.

Plugins load in that order.  Any plugin is disabled by listing its name in ``[core]
disabled_plugins`` (``DDX_LLM_DISABLED_PLUGINS``): built-ins by their module name, entry points by
their entry-point name, drop-ins by their file name without ``.py``.  Nothing happens at import:
:func:`build_plugin_manager` does the work.

Every mistake a plugin author can make here stops start-up with a message naming the plugin:
a function named like a hook but misspelled (with a "did you mean"), one named right but not
decorated with ``@hookimpl`` (pluggy would silently ignore it), a disabled name that matches no
plugin, a plugins folder that was configured but does not exist.
"""

from __future__ import annotations

import difflib
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
from .config import ConfigError

logger = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "ddx_llm"
DROPIN_PACKAGE = "ddx_llm_dropins"

BUILTIN_PLUGINS: dict[str, str] = {
    "request_id": "ddx_llm.plugins.request_id",
    "cors": "ddx_llm.plugins.cors",
    "metrics": "ddx_llm.plugins.metrics",
    "auth": "ddx_llm.plugins.auth",
    "mock": "ddx_llm.plugins.mock",
    "mlx": "ddx_llm.plugins.mlx",
    "omni": "ddx_llm.plugins.omni",
    "responses": "ddx_llm.plugins.responses",
    "messages": "ddx_llm.plugins.messages",
    "playground": "ddx_llm.plugins.playground",
    "completions": "ddx_llm.plugins.completions",
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
        self.versions: dict[str, str] = {}
        self.tracing = False

    def get_plugin_infos(self) -> list[PluginInfo]:
        """Every registered plugin: name, source, version and the hooks it implements."""
        infos = []
        for name, plugin in self.list_name_plugin():
            if plugin is None:  # blocked
                continue
            hooks = tuple(sorted(caller.name for caller in self.get_hookcallers(plugin) or []))
            source = self.sources.get(name, "registered")
            infos.append(PluginInfo(name, source, self.versions.get(name), hooks))
        return infos

    def blocked_names(self) -> list[str]:
        return sorted(name for name, plugin in self.list_name_plugin() if plugin is None)

    def results(self, hook_name: str, **kwargs: Any) -> list[tuple[str, Any]]:
        """Call hook ``hook_name`` implementation by implementation, in pluggy's order, and
        return ``(plugin name, result)`` for every non-None result, so the core can name the
        plugin behind an answer it cannot use.  An implementation gets the arguments it
        declares out of ``kwargs``."""
        answers = []
        for impl in reversed(getattr(self.hook, hook_name).get_hookimpls()):
            result = impl.function(**{name: kwargs[name] for name in impl.argnames})
            if self.tracing:
                logger.info("hook trace: %s.%s -> %r", impl.plugin_name, hook_name, result)
            if result is not None:
                answers.append((impl.plugin_name, result))
        return answers

    def register_checked(self, plugin: Any, name: str, source: str) -> None:
        """Register ``plugin`` after :func:`check_hook_names`, and note where it came from."""
        check_hook_names(plugin, name)
        self.register(plugin, name=name)
        self.sources[name] = source


HOOK_NAMES = frozenset(name for name in dir(hookspecs) if name.startswith("ddx_llm_"))
IMPL_MARKER = f"{hookspecs.PROJECT}_impl"


def check_hook_names(plugin: Any, name: str) -> None:
    """Raise ConfigError for a ``ddx_llm_*`` attribute of ``plugin`` that pluggy would silently
    ignore or reject without a hint: a name that is no hook, or a hook not marked @hookimpl."""
    for attr in dir(plugin):
        if not attr.startswith("ddx_llm_"):
            continue
        function = getattr(plugin, attr, None)
        if not callable(function):
            continue
        if attr not in HOOK_NAMES:
            near = difflib.get_close_matches(attr, HOOK_NAMES, n=1)
            hint = f"; did you mean {near[0]}?" if near else ""
            raise ConfigError(f"plugin {name}: {attr} is not a ddx-llm hook{hint}")
        if not hasattr(function, IMPL_MARKER):
            raise ConfigError(
                f"plugin {name}: {attr} is not decorated with @ddx_llm.hookimpl, so it would "
                "never be called; decorate it (from ddx_llm import hookimpl)"
            )


def build_plugin_manager(
    *,
    disabled: list[str] | tuple[str, ...] = (),
    plugins_dir: Path | None = None,
    plugins_dir_required: bool = False,
    extra_plugins: list[tuple[str, Any]] | tuple[tuple[str, Any], ...] = (),
    entry_points: bool = True,
    trace: bool = False,
) -> PluginManager:
    """Build a manager with the built-ins, entry points, drop-ins and ``extra_plugins`` loaded.

    ``plugins_dir_required``: the folder was configured explicitly, so its absence is an error.
    ``entry_points`` False skips installed plugins (tests that want only explicit ones).  An
    extra plugin that is already registered (the same object, e.g. found by its entry point)
    is kept once.  Raises ConfigError (or pluggy's ``PluginValidationError``, for a hook
    implementation with arguments its hook does not offer), naming the plugin.
    """
    pm = PluginManager()
    pm.tracing = trace
    for name in disabled:
        pm.set_blocked(name)
    known = set(BUILTIN_PLUGINS) | {name for name, _ in extra_plugins}
    for name, module_path in BUILTIN_PLUGINS.items():
        if not pm.is_blocked(name):
            pm.register_checked(importlib.import_module(module_path), name, "builtin")
    if entry_points:
        known |= _load_entry_points(pm)
    if plugins_dir is not None:
        if plugins_dir.is_dir():
            known |= _load_dropins(pm, plugins_dir)
        elif plugins_dir_required:
            raise ConfigError(
                f"plugins folder {plugins_dir} does not exist ([core] plugins_dir or "
                "DDX_LLM_PLUGINS_DIR); create it or unset the setting"
            )
    for name, plugin in extra_plugins:
        if pm.is_blocked(name) or pm.is_registered(plugin):
            continue
        if pm.has_plugin(name):
            raise ConfigError(
                f"plugin {name}: another plugin of that name is already loaded "
                f"({pm.sources.get(name, 'registered')})"
            )
        pm.register_checked(plugin, name, "extra")
    _check_disabled(disabled, known)
    pm.check_pending()
    if trace:
        pm.trace.root.setwriter(lambda message: logger.info("hook trace: %s", message.rstrip()))
        pm.enable_tracing()
    return pm


def _check_disabled(disabled: list[str] | tuple[str, ...], known: set[str]) -> None:
    unknown = [name for name in disabled if name not in known]
    if not unknown:
        return
    hints = []
    for name in unknown:
        near = difflib.get_close_matches(name, known, n=1)
        hints.append(f"{name!r}" + (f" (did you mean {near[0]!r}?)" if near else ""))
    raise ConfigError(
        f"[core] disabled_plugins names no plugin: {', '.join(hints)}; "
        f"plugins here: {', '.join(sorted(known))}"
    )


def _load_entry_points(pm: PluginManager) -> set[str]:
    """Load the ``ddx_llm`` entry points not blocked; return every entry-point name seen."""
    names: set[str] = set()
    for dist in importlib.metadata.distributions():
        for ep in dist.entry_points:
            if ep.group != ENTRY_POINT_GROUP or ep.name in names:
                continue
            names.add(ep.name)
            if pm.is_blocked(ep.name):
                continue
            if pm.has_plugin(ep.name):
                logger.warning(
                    "entry point %r of %s is skipped: a plugin of that name is already loaded",
                    ep.name, dist.metadata["name"],
                )  # fmt: skip
                continue
            pm.register_checked(ep.load(), ep.name, f"entrypoint {dist.metadata['name']}")
            pm.versions[ep.name] = dist.version
    return names


def _load_dropins(pm: PluginManager, plugins_dir: Path) -> set[str]:
    """Load every ``*.py`` module and package (folder with ``__init__.py``) in ``plugins_dir``
    not blocked; return every drop-in name seen.

    Files starting with ``_`` or ``.`` are skipped.  A drop-in that fails to import stops
    start-up with the file named: a half-loaded plugin set is worse than none.
    """
    names: set[str] = set()
    for path in sorted(plugins_dir.iterdir()):
        if path.name.startswith(("_", ".")):
            continue
        if path.suffix == ".py":
            name, location = path.stem, path
        elif (path / "__init__.py").is_file():
            name, location = path.name, path / "__init__.py"
        else:
            continue
        names.add(name)
        if pm.is_blocked(name):
            continue
        if pm.has_plugin(name):
            raise ConfigError(
                f"drop-in plugin {path} is named {name!r} like an already loaded plugin "
                f"({pm.sources.get(name, 'registered')}); rename the file"
            )
        pm.register_checked(_import_file(name, location), name, f"dropin {path}")
    return names


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
        raise ConfigError(f"cannot load drop-in plugin {location}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as exc:
        del sys.modules[module_name]
        raise ConfigError(f"drop-in plugin {location} failed to import: {exc!r}") from exc
    return module
