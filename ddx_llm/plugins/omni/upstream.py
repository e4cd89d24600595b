"""The upstream mlx-omni-server (0.5.3): its import, its chat app, its model cache, and the
prompt count of a request (:func:`prompt_tokens`, as its own generation will count it).

Every function here blocks and touches MLX: call them on the upstream thread only
(:meth:`.bridge.UpstreamThread.run_sync`).

Import side effects, and what we do about them.  Any ``mlx_omni_server`` module imports
``mlx_omni_server.utils.logger``, which (1) creates ``./logs/`` in the current directory and
(2) runs ``logging.basicConfig(level=NOTSET, handlers=[RichHandler(tracebacks_show_locals=True)])``
on the ROOT logger: every library's DEBUG records get printed, ours twice, prompts are logged at
INFO and tracebacks with their local variables (prompts again) at ERROR.  The chat code only
takes ``logger`` from that module, so :func:`install_logger_shim` puts a stand-in module under
that name first: a plain ``logging.getLogger("mlx_omni")`` at the configured level, no handler of
its own, no directory, root untouched.  Nothing of the upstream's own code is changed.

The model cache (``mlx_omni_server.chat.mlx.wrapper_cache.wrapper_cache``) is keyed by the
``model`` string of a request.  We configure it for one model and no idle eviction (its default
evicts a model after 300 s idle and reloads it silently on the next request), load the folder
path we later forward as ``model``, and unload by clearing it.  Its own memory release only
calls ``mlx.metal.clear_cache``, a no-op off Apple GPUs, so we release memory as the mlx
backend does (:func:`ddx_llm.plugins.mlx_models.memory.release`: ``mx.clear_cache()`` and, on
glibc, ``malloc_trim``).
"""

from __future__ import annotations

import copy
import logging
import sys
import types
from typing import Any

from ddx_llm.plugins.mlx_models import memory

logger = logging.getLogger(__name__)

UPSTREAM_LOGGER = "mlx_omni"
LOGGER_MODULE = "mlx_omni_server.utils.logger"


def install_logger_shim(level: str) -> None:
    """Register the stand-in for ``mlx_omni_server.utils.logger`` (see the module docstring)
    and set the upstream logger's level.  Idempotent."""
    upstream_logger = logging.getLogger(UPSTREAM_LOGGER)
    upstream_logger.setLevel(level.upper())
    existing = sys.modules.get(LOGGER_MODULE)
    if existing is not None:
        if not getattr(existing, "ddx_llm_shim", False):
            logger.warning(
                "mlx_omni_server was imported before the omni backend started: its logging "
                "set-up (root handler, ./logs/) is already in place"
            )
        return

    def get_logger(name: str | None = None) -> logging.Logger:
        return logging.getLogger(name or UPSTREAM_LOGGER)

    def set_logger_level(target: logging.Logger, new_level: str) -> None:
        target.setLevel(new_level.upper())  # its own logger only, never root

    shim = types.ModuleType(LOGGER_MODULE, "ddx-llm's stand-in: plain logging, no side effects")
    shim.ddx_llm_shim = True  # type: ignore[attr-defined]
    shim.logger = upstream_logger  # type: ignore[attr-defined]
    shim.get_logger = get_logger  # type: ignore[attr-defined]
    shim.set_logger_level = set_logger_level  # type: ignore[attr-defined]
    sys.modules[LOGGER_MODULE] = shim


def build_app(log_level: str) -> Any:
    """Import the upstream chat router (never ``mlx_omni_server.main``: it downloads a spaCy
    model at import) and mount it in a bare FastAPI app; configure the model cache."""
    install_logger_shim(log_level)
    from fastapi import FastAPI
    from mlx_omni_server.chat.mlx.wrapper_cache import wrapper_cache
    from mlx_omni_server.chat.openai.router import router

    wrapper_cache.configure(1, 0)  # one model; ttl 0 = no idle eviction, no cleanup thread
    app = FastAPI(openapi_url=None, docs_url=None, redoc_url=None)
    app.include_router(router)
    return app


def clear() -> dict[str, Any]:
    """Drop every cached model and hand its memory back; returns the figures before and after
    (:func:`ddx_llm.plugins.mlx_models.memory.figures`, in MB of 10^6 bytes, as under mlx)."""
    from mlx_omni_server.chat.mlx.wrapper_cache import wrapper_cache

    before = memory.figures()
    dropped = wrapper_cache.clear_cache()  # drops the cache's references, then gc.collect()
    memory.release()
    return {"models_dropped": dropped, "before": before, "after": memory.figures()}


def load(folder: str) -> dict[str, Any]:
    """Make ``folder`` the only cached model; returns the memory figures.  Raises what the
    upstream raises (``RuntimeError``, ``OSError``, ...) when it cannot load it."""
    from mlx_omni_server.chat.mlx.chat_generator import ChatGenerator

    cleared = clear()
    ChatGenerator.get_or_create(folder)
    return {"cleared": cleared, "loaded": memory.figures()}


def prompt_tokens(folder: str, body: dict[str, Any]) -> int:
    """The exact prompt length of the upstream request ``body`` for the model cached under
    ``folder``: the body validated as the router validates it (raises pydantic's
    ``ValidationError``), its messages, tools and template arguments prepared by the router's
    own adapter, the prompt rendered by the model's chat template and encoded by its tokenizer,
    exactly as the upstream's generation does.

    The upstream's ``ChatTemplate`` keeps per-call state on the shared model (thinking parse
    mode, tool schemas): the prompt is rendered with copies of it, so counting changes nothing
    for the requests being generated.
    """
    from mlx_omni_server.chat.mlx.chat_generator import ChatGenerator
    from mlx_omni_server.chat.openai.openai_adapter import OpenAIAdapter
    from mlx_omni_server.chat.openai.schema import ChatCompletionRequest

    request = ChatCompletionRequest.model_validate(body)
    generator = ChatGenerator.get_or_create(folder)
    params = OpenAIAdapter(generator)._prepare_generation_params(request)
    template = copy.copy(generator.chat_template)
    template.tools_parser = copy.copy(template.tools_parser)
    detached = copy.copy(generator)
    detached.chat_template = template
    prompt = detached._prepare_prompt(
        params["messages"], params["tools"], params["template_kwargs"], params["json_schema"]
    )
    return len(generator.tokenizer.encode(prompt))
