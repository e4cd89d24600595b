"""The ``omni`` backend: the model lifecycle of the upstream mlx-omni-server, driven by our host.

The :class:`ddx_llm.host.ModelHost` calls :meth:`OmniBackend.load` and :meth:`~OmniBackend.unload`
as for any backend, so ``/v1/models/load``, ``/v1/models/current`` and ``/health`` stay ours.
Both run on the upstream thread (:mod:`.omni_bridge`): the first load imports the upstream and
builds its app there; a load clears the upstream's model cache, hands the memory back and loads
the entry's folder; an unload clears the cache.  The handle is the folder path, the cache key
that chat requests must carry as ``model`` upstream (:mod:`.omni_proxy` rewrites it).

Models are found as the mlx backend finds them (``options.bundled``, ``path``, or a Hugging Face
id already in the local cache; see :mod:`ddx_llm.plugins.mlx.source`); nothing is downloaded.
``prepare``/``generate`` are never reached: the proxy middleware answers chat requests first.
"""

from __future__ import annotations

import importlib.util
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio

from ddx_llm.errors import LlmError, ModelUnavailable
from ddx_llm.plugins.mlx_models.bundled import BUNDLED_MODEL_ID
from ddx_llm.plugins.mlx_models.convert import ConversionError, check_mlx_version, is_complete
from ddx_llm.plugins.mlx_models.source import TABLE_OPTIONS, ModelSource, model_folder, model_source

from .bridge import UpstreamThread

if TYPE_CHECKING:
    from ddx_llm.config import Settings
    from ddx_llm.registry import ModelEntry, Registry

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class OmniHandle:
    """A loaded model: its registry entry and the folder the upstream cached it under."""

    entry: ModelEntry
    folder: str


def check_conversion(source: ModelSource, models_dir: Path) -> None:
    """Refuse to convert the bundled GGUF with mlx < 0.32 (macOS, where mlx-omni-server pins
    mlx < 0.32): those versions read its Q4_1 tensors wrongly (ml-explore/mlx#3664) and the
    model would answer gibberish.  A folder converted elsewhere is used as it is."""
    if source.bundled is None or is_complete(models_dir / source.bundled):
        return
    try:
        check_mlx_version()
    except ConversionError as exc:
        raise ModelUnavailable(
            f"model {source.model_id!r} cannot be converted here",
            detail=f"{exc}: ddx-llm convert <gguf> {models_dir / source.bundled}",
        ) from None


class OmniBackend:
    """The backend offered as ``omni`` (see the module docstring)."""

    name = "omni"
    real_model_mode = True

    def __init__(self, settings: Settings, registry: Registry, hook: Any = None) -> None:
        self.options = settings.section("omni")
        self.models_dir = settings.resolve_path(settings.core.models_dir)
        models_toml = str(settings.conf_dir / "models.toml")
        self.sources = {}
        for entry in registry:
            self.sources[entry.id] = model_source(entry, settings.resolve_path, models_toml)
            unused = [name for name in TABLE_OPTIONS if entry.options.get(name)]
            if unused:
                logger.warning("model %s: options %s are not used by the omni backend",
                               entry.id, unused)  # fmt: skip
        self.structured_output = importlib.util.find_spec("outlines") is not None
        """``response_format: json_schema`` needs outlines (and torch) in the environment."""
        self.upstream = UpstreamThread()
        self.app: Any = None
        """The upstream FastAPI app, built on the upstream thread by the first load."""
        self.last_load: dict[str, Any] | None = None
        self.last_unload: dict[str, Any] | None = None

    def default_model(self, registry: Registry) -> str | None:
        """The bundled SmolLM2 when it is registered: it needs no download."""
        return BUNDLED_MODEL_ID if BUNDLED_MODEL_ID in registry else None

    async def load(self, entry: ModelEntry) -> OmniHandle:
        from . import upstream as omni_upstream

        source = self.sources[entry.id]

        def work() -> tuple[str, dict[str, Any]]:
            if self.app is None:
                started = time.monotonic()
                self.app = omni_upstream.build_app(self.options.log_level)
                logger.info("omni: upstream router imported in %.1f s", time.monotonic() - started)
            check_conversion(source, self.models_dir)
            folder = model_folder(source, self.models_dir, allow_download=False)
            return folder, omni_upstream.load(folder)

        try:
            folder, figures = await self.upstream.run_sync(work)
        except LlmError:
            raise
        except Exception as exc:
            raise ModelUnavailable(
                f"model {entry.id!r} failed to load", detail=f"{type(exc).__name__}: {exc}"
            ) from exc
        self.last_load = {"model": entry.id, **figures}
        return OmniHandle(entry, folder)

    async def unload(self, handle: OmniHandle) -> None:
        from . import upstream as omni_upstream

        figures = await self.upstream.run_sync(omni_upstream.clear)
        self.last_unload = {"model": handle.entry.id, **figures}
        logger.info("omni: %s unloaded; MLX active memory %.1f MB -> %.1f MB", handle.entry.id,
                    figures["before"]["active_mb"], figures["after"]["active_mb"])  # fmt: skip

    async def prepare(self, handle: Any, entry: Any, request: Any) -> Any:
        raise LlmError("the omni backend serves chat through its middleware only")

    def generate(self, handle: Any, entry: Any, prompt: Any, request: Any) -> Any:
        raise LlmError("the omni backend serves chat through its middleware only")

    async def close(self) -> None:
        """At shutdown, after the host has unloaded the model: stop and join the upstream
        thread."""
        with anyio.CancelScope(shield=True):
            await anyio.to_thread.run_sync(self.upstream.stop)

    async def preflight(self, entry: Any, resident: Any) -> None:
        return None

    def status(self, handle: Any) -> dict[str, Any]:
        """The ``omni`` field of ``/health``."""
        return {
            "upstream_thread": "running" if self.upstream.alive else "stopped",
            "in_flight": self.upstream.in_flight,
            "structured_output": self.structured_output,
            "last_load": self.last_load,
            "last_unload": self.last_unload,
        }

    def not_ready_reason(self, handle: Any) -> str | None:
        if self.app is not None and not self.upstream.alive:
            return "the omni upstream thread has stopped"
        return None
