"""Settings: ``conf/ddx-llm.toml`` and ``conf/models.toml``, overridden by ``DDX_LLM_*`` variables.

The core knows only its own ``[core]`` section.  Every plugin declares its own section through the
``ddx_llm_settings`` hook with a :class:`SectionSettings` model, so plugin options are validated at
start-up without the core listing them.  Precedence, highest first: environment variable, the
TOML file, the field default.  A bad value stops start-up with a :class:`ConfigError` that names
the file, section, key and the environment variable that can set it.

Relative paths in conf resolve against the folder that holds ``conf/`` (the project root).
"""

from __future__ import annotations

import importlib.util
import inspect
import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

from pydantic import (
    BeforeValidator,
    Field,
    PositiveFloat,
    PositiveInt,
    ValidationError,
    model_validator,
)
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from .registry import ModelEntry, Registry

CONF_DIR_ENV = "DDX_LLM_CONF_DIR"
MAIN_FILE = "ddx-llm.toml"
MODELS_FILE = "models.toml"


class ConfigError(Exception):
    """The configuration is missing or invalid; the message says exactly where."""


def _split_commas(value: Any) -> Any:
    if isinstance(value, str):
        return [item.strip() for item in value.split(",") if item.strip()]
    return value


CommaList = Annotated[list[str], NoDecode, BeforeValidator(_split_commas)]
"""A list of strings that an environment variable gives comma-separated (``a,b,c``)."""


class SectionSettings(BaseSettings):
    """Base class of every conf section (the core's and each plugin's).

    Unknown keys are errors.  Environment variables override the file; the prefix is
    ``DDX_LLM_<SECTION>_`` unless the subclass sets ``model_config["env_prefix"]`` itself.
    Declare comma-separated lists with :data:`CommaList`.
    """

    model_config = SettingsConfigDict(extra="forbid", case_sensitive=False)

    @classmethod
    def settings_customise_sources(cls, settings_cls, init_settings, env_settings, **_: Any):
        # Environment first: a deployment overrides the checked-in conf without editing it.
        # A section made without a prefix (``QuotaSettings()`` in a unit test) reads no
        # variables at all, rather than unprefixed ones such as ``TOKENS``.
        if not getattr(env_settings, "env_prefix", ""):
            return (init_settings,)
        return (env_settings, init_settings)

    @classmethod
    def env_prefix_for(cls, section: str) -> str:
        """The environment prefix of this model when used for ``section``."""
        return cls.model_config.get("env_prefix") or f"DDX_LLM_{section.upper()}_"


class CoreSettings(SectionSettings):
    """The ``[core]`` section: what the core itself needs."""

    model_config = SettingsConfigDict(env_prefix="DDX_LLM_")

    backend: str = "mock"
    """Name of the backend plugin that serves chat (``mock``, ``mlx``, ``omni``, ...)."""
    use_real_model: bool = False
    """Shortcut for ``backend = "mlx"`` when backend is ``mock``.  It stays in the core, although
    it names a plugin's backend, because it is the seed contract's switch
    (``DDX_LLM_USE_REAL_MODEL=1``) and it chooses among backends, which only the core does."""
    env: str = "dev"
    """Deployment flavour; ``prod`` makes insecure set-ups warn louder."""
    default_model: str | None = None
    """Registry id loaded at start-up; default: the backend's choice, else the first entry."""
    plugins_dir: Path = Path("plugins")
    """Drop-in plugin folder: every ``*.py`` file and package in it is loaded as a plugin.  The
    default folder may be missing; a folder set explicitly must exist."""
    disabled_plugins: CommaList = []
    """Plugin names that are not loaded (built-in, entry point or drop-in).  Every name must
    be one of them.  ``DDX_LLM_DISABLED_PLUGINS`` adds names to this list (it never enables a
    plugin the conf disables)."""
    max_body_bytes: PositiveInt = 1_048_576
    """Largest accepted request body; larger ones get 413 ``request_too_large``."""
    body_timeout_seconds: PositiveFloat = 30.0
    """Longest time a client may take to send a request body, counted from the request's
    start; past it 408 ``request_timeout`` (HTTP/1.1 then closes the connection)."""
    load_wait_seconds: PositiveFloat = 30.0
    """How long a chat request waits for a model load in progress before 503 with Retry-After."""
    max_running: PositiveInt = 8
    """Requests generating at once; more wait in the queue."""
    max_waiting: int = Field(default=64, ge=0)
    """Requests allowed to wait; past that, 503 ``overloaded`` with Retry-After."""
    max_queue_seconds: PositiveFloat = 60.0
    """Longest wait in the queue before 503 ``overloaded``."""
    drain_seconds: float = Field(default=20.0, ge=0)
    """On SIGTERM (``ddx-llm serve``), how long admitted requests may go on finishing before
    they are cut (an in-band error event and ``[DONE]``, or 503); Hypercorn's own
    ``graceful_timeout`` starts after the drain."""
    models_dir: Path = Path("models/cache")
    """Where backends keep converted or downloaded model folders.  In the core, beside the
    registry it serves, because every backend that stores model files (mlx, omni) shares it:
    a model converted by one is found by the other."""
    trace_hooks: bool = False
    """Log every hook call with its arguments and result (debugging plugins)."""
    log_level: str = "INFO"

    @model_validator(mode="after")
    def _real_model_switch(self) -> CoreSettings:
        if self.use_real_model and self.backend == "mock":
            self.backend = "mlx"
        return self


@dataclass
class Settings:
    """The validated configuration of one app instance."""

    conf_dir: Path
    core: CoreSettings
    registry: Registry
    sections: dict[str, SectionSettings] = field(default_factory=dict)
    raw: dict[str, Any] = field(default_factory=dict, repr=False)

    def section(self, name: str) -> Any:
        """The validated settings of section ``name`` (KeyError if no plugin declared it)."""
        return self.sections[name]

    def resolve_path(self, path: str | os.PathLike[str]) -> Path:
        """Resolve a path from conf (a ``str`` or a ``Path``) against the project root (the
        parent of ``conf/``)."""
        path = Path(path)
        return path if path.is_absolute() else (self.conf_dir.parent / path).resolve()


def find_conf_dir(environ: dict[str, str] | None = None) -> Path:
    """``$DDX_LLM_CONF_DIR`` if set, else ``./conf``; raises ConfigError if it does not exist."""
    environ = os.environ if environ is None else environ
    conf_dir = Path(environ.get(CONF_DIR_ENV) or "conf").resolve()
    if not conf_dir.is_dir():
        raise ConfigError(
            f"conf directory not found: {conf_dir} "
            f"(run from the project folder or set {CONF_DIR_ENV})"
        )
    return conf_dir


def read_toml(path: Path, *, required: bool) -> dict[str, Any]:
    """Parse one TOML file; a missing optional file is empty, a syntax error names the file."""
    if not path.exists():
        if required:
            raise ConfigError(f"{path} not found")
        return {}
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: {exc}") from None


def load_core(conf_dir: Path) -> Settings:
    """Read both conf files and validate ``[core]`` and the model registry.

    Plugin sections are validated later by :func:`add_sections`, once the plugins are known.
    """
    raw = read_toml(conf_dir / MAIN_FILE, required=False)
    table = raw.get("core", {})
    core = validate_section("core", CoreSettings, table, conf_dir / MAIN_FILE)
    extra = os.environ.get("DDX_LLM_DISABLED_PLUGINS")
    if extra is not None and isinstance(table, dict):
        listed = [*_split_commas(table.get("disabled_plugins", [])), *_split_commas(extra)]
        core.disabled_plugins = list(dict.fromkeys(listed))
    models_path = conf_dir / MODELS_FILE
    registry = load_registry(read_toml(models_path, required=True), source=str(models_path))
    return Settings(conf_dir=conf_dir, core=core, registry=registry, raw=raw)


def load_registry(data: dict[str, Any], *, source: str) -> Registry:
    """The registry from the parsed ``models.toml`` (``[[models]]`` tables); errors name the
    entry and ``source``."""
    tables = data.get("models", [])
    if not isinstance(tables, list) or not tables:
        raise ConfigError(f"{source}: needs at least one [[models]] table")
    entries = []
    for index, table in enumerate(tables):
        try:
            entries.append(ModelEntry.model_validate(table))
        except ValidationError as exc:
            name = table.get("id", f"#{index + 1}") if isinstance(table, dict) else f"#{index + 1}"
            problems = "; ".join(
                f"{'.'.join(map(str, e['loc'])) or '(entry)'}: {e['msg']}" for e in exc.errors()
            )
            raise ConfigError(f"{source}: model {name}: {problems}") from None
    try:
        return Registry(entries)
    except ValueError as exc:
        raise ConfigError(f"{source}: {exc}") from None


def check_declaration(plugin: str, declared: Any) -> tuple[str, type[SectionSettings]]:
    """One ``ddx_llm_settings`` answer, checked: ``(section, SectionSettings subclass)``."""
    if (
        not isinstance(declared, tuple)
        or len(declared) != 2
        or not isinstance(declared[0], str)
        or not inspect.isclass(declared[1])
        or not issubclass(declared[1], SectionSettings)
    ):
        raise ConfigError(
            f"plugin {plugin}: ddx_llm_settings returned {declared!r}; expected "
            "(section name, a ddx_llm.config.SectionSettings subclass) or None"
        )
    return declared


def add_sections(settings: Settings, declared: list[tuple[str, Any]]) -> None:
    """Validate each plugin's section (``declared``: ``(plugin, ddx_llm_settings answer)``) and
    reject unknown tables in ``ddx-llm.toml``.  Two plugins declaring one section is an error
    naming both, found before any section is validated."""
    path = settings.conf_dir / MAIN_FILE
    owners: dict[str, str] = {"core": "the core"}
    checked = []
    for plugin, answer in declared:
        name, model = check_declaration(plugin, answer)
        if name in owners:
            raise ConfigError(
                f"conf section [{name}] is declared by {owners[name]} and by plugin {plugin}; "
                "each plugin needs a section of its own"
            )
        owners[name] = f"plugin {plugin}"
        checked.append((name, model))
    for name, model in checked:
        settings.sections[name] = validate_section(name, model, settings.raw.get(name, {}), path)
    known = {"core", *settings.sections}
    for name in settings.raw:
        if name not in known and name not in settings.core.disabled_plugins:
            raise ConfigError(
                f"{path}: unknown section [{name}]; known sections: {', '.join(sorted(known))}"
            )


def validate_section(
    name: str, model: type[SectionSettings], values: Any, path: Path
) -> SectionSettings:
    """Validate one section, turning pydantic's error into a message naming key and env var."""
    if not isinstance(values, dict):
        raise ConfigError(f"{path}: [{name}] must be a table")
    prefix = model.env_prefix_for(name)
    try:
        return model(_env_prefix=prefix, **values)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            key = ".".join(str(part) for part in err["loc"]) or "(section)"
            env = f"{prefix}{str(err['loc'][0]).upper()}" if err["loc"] else f"{prefix}*"
            problems.append(f"[{name}] {key}: {err['msg']} (file {path.name} or env {env})")
        raise ConfigError(f"invalid configuration in {path}:\n  " + "\n  ".join(problems)) from None


def require_modules(*modules: str, feature: str, install: str) -> None:
    """Raise ConfigError naming the missing ones when any of ``modules`` cannot be imported.

    For plugins whose heavy dependencies are optional extras: call it in the factory, before
    importing them, so start-up says what to install instead of failing with an ImportError.
    """

    def importable(module: str) -> bool:
        try:
            return importlib.util.find_spec(module) is not None
        except ModuleNotFoundError:  # its parent package is missing
            return False

    missing = [module for module in modules if not importable(module)]
    if missing:
        raise ConfigError(
            f"{feature} needs {', '.join(missing)}, not installed here; install: {install}"
        )
