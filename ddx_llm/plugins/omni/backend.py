"""The ``omni`` backend: mlx-omni-server's chat stack as a backend of the core's protocol.

The core's chat route does for omni what it does for every backend: validation, admission, the
model lease, the context check, lifecycle events and every response shape.  This backend

- ``load`` / ``unload``: drives the upstream's model cache on the upstream thread
  (:mod:`.bridge`); the first load imports the upstream and builds its app there
  (:mod:`.upstream`).  The handle keeps the folder the upstream cached the model under, the
  ``model`` every upstream request names;
- ``prepare``: refuses what the upstream would ignore or misapply (:mod:`.request`), then
  counts the prompt exactly, on the upstream thread, with the upstream's own request
  validation, adapter, chat template and tokenizer (:func:`.upstream.prompt_tokens`), so
  ``context_too_long`` is decided as for mlx; fixes the completion limit;
- ``generate``: sends the request to the upstream router, always as a stream with usage
  (whatever the client asked for), and turns its chunks into deltas (:mod:`.response`).  The
  core closes the generator when the client leaves (streamed or not) or the answer is
  complete; closing the exchange cancels the upstream request, which stops after the token
  being generated, and waits until it has stopped, so the lease is released only then.

Models are found as the mlx backend finds them (``options.bundled``, ``path``, or a Hugging Face
id already in the local cache; see :mod:`ddx_llm.plugins.mlx_models.source`); nothing is
downloaded.
"""

from __future__ import annotations

import functools
import importlib.util
import json
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
from pydantic import ValidationError

from ddx_llm.backend import BackendBase, Delta, Prompt
from ddx_llm.errors import LlmError, ModelUnavailable, validation_detail
from ddx_llm.plugins.mlx_models.bundled import BUNDLED_MODEL_ID
from ddx_llm.plugins.mlx_models.convert import ConversionError, check_mlx_version, is_complete
from ddx_llm.plugins.mlx_models.source import TABLE_OPTIONS, ModelSource, model_folder, model_source

from . import upstream as omni_upstream
from .bridge import UpstreamStopped, UpstreamThread
from .request import check_supported, completion_limit, upstream_body, upstream_scope
from .response import StreamReader, invalid_request, upstream_error

if TYPE_CHECKING:
    from ddx_llm.config import Settings
    from ddx_llm.registry import ModelEntry, Registry
    from ddx_llm.schemas import ChatCompletionRequest

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class OmniHandle:
    """A loaded model: its registry entry and the folder the upstream cached it under."""

    entry: ModelEntry
    folder: str


@dataclass(frozen=True)
class Prepared:
    """A prepared request: the upstream body and the completion limit promised."""

    body: dict[str, Any]
    limit: int


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


def not_running(exc: UpstreamStopped) -> ModelUnavailable:
    return ModelUnavailable("the omni upstream is not running", detail=str(exc))


class OmniBackend(BackendBase):
    """The backend offered as ``omni`` (see the module docstring).

    Args:
        settings: the app's settings (``[omni]``, ``[core] models_dir``, the conf folder).
        registry: the model registry.
        app: the upstream ASGI app; None (the default): built by the first load.
    """

    name = "omni"
    real_model_mode = True

    def __init__(self, settings: Settings, registry: Registry, app: Any = None) -> None:
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
        self.app: Any = app
        self.last_load: dict[str, Any] | None = None
        self.last_unload: dict[str, Any] | None = None

    def default_model(self, registry: Registry) -> str | None:
        """The bundled SmolLM2 when it is registered: it needs no download."""
        return BUNDLED_MODEL_ID if BUNDLED_MODEL_ID in registry else None

    # ------------------------------------------------------------------ lifecycle

    async def load(self, entry: ModelEntry) -> OmniHandle:
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
        figures = await self.upstream.run_sync(omni_upstream.clear)
        self.last_unload = {"model": handle.entry.id, **figures}
        logger.info("omni: %s unloaded; MLX active memory %.1f MB -> %.1f MB", handle.entry.id,
                    figures["before"]["active_mb"], figures["after"]["active_mb"])  # fmt: skip

    async def close(self) -> None:
        """At shutdown, after the host has unloaded the model: stop and join the upstream
        thread."""
        with anyio.CancelScope(shield=True):
            await anyio.to_thread.run_sync(self.upstream.stop)

    def status(self, handle: OmniHandle | None) -> dict[str, Any]:
        """The ``omni`` field of ``/health``."""
        return {
            "upstream_thread": "running" if self.upstream.alive else "stopped",
            "in_flight": self.upstream.in_flight,
            "structured_output": self.structured_output,
            "last_load": self.last_load,
            "last_unload": self.last_unload,
        }

    def not_ready_reason(self, handle: OmniHandle | None) -> str | None:
        if handle is not None and not self.upstream.alive:
            return "the omni upstream thread has stopped"
        return None

    # ------------------------------------------------------------------ requests

    async def prepare(
        self, handle: OmniHandle, entry: ModelEntry, request: ChatCompletionRequest
    ) -> Prompt:
        check_supported(request, structured_output=self.structured_output)
        body = upstream_body(request, handle.folder, None)
        count = functools.partial(omni_upstream.prompt_tokens, handle.folder, body)
        try:
            tokens = await self.upstream.run_sync(count)
        except UpstreamStopped as exc:
            raise not_running(exc) from exc
        except ValidationError as exc:  # what the router would answer with a FastAPI 422
            raise invalid_request(validation_detail(exc)) from None
        except Exception as exc:
            raise upstream_error(None, b"", exc) from exc
        limit = completion_limit(request, tokens, entry.context_window, self.options.max_tokens)
        return Prompt(tokens, Prepared(upstream_body(request, handle.folder, limit), limit))

    async def generate(
        self, handle: OmniHandle, entry: ModelEntry, prompt: Prompt, request: ChatCompletionRequest
    ) -> AsyncIterator[Delta]:
        prepared: Prepared = prompt.data
        body = json.dumps(prepared.body).encode()
        reader = StreamReader(prompt_tokens=prompt.tokens, limit=prepared.limit)
        try:
            async with self.upstream.exchange(
                self.app, upstream_scope(len(body)), body
            ) as exchange:
                while (deltas := await self._next(exchange, reader)) is not None:
                    for delta in deltas:
                        yield delta
        except UpstreamStopped as exc:
            raise not_running(exc) from exc
        yield reader.end()

    @staticmethod
    async def _next(exchange: Any, reader: StreamReader) -> list[Delta] | None:
        """The deltas of the upstream's next message (None: it has answered); what it raised
        as our error."""
        try:
            message = await exchange.receive()
            return None if message is None else reader.feed(message)
        except UpstreamStopped:
            raise
        except Exception as exc:
            error = reader.error(exc)
            logger.error("omni upstream failed: %s", error.detail or error.message)
            raise error from exc
