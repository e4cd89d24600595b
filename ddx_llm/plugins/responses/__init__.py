"""The ``responses`` plugin: OpenAI's Responses API on the core's chat pipeline.

Routes (each ``protected``: the auth plugin asks for a key; surface ``responses``):

- ``POST /v1/responses`` — :mod:`.create` (request: :mod:`.request`, :mod:`.items`,
  :mod:`.convert`; answer and events: :mod:`.shaping`, :mod:`.stream`);
- ``GET`` / ``DELETE /v1/responses/{response_id}``, ``GET …/{response_id}/input_items`` —
  :mod:`.stored`.

Stored responses live in SQLite by default, or Redis (:mod:`.store`, :mod:`.sqlite_store`,
:mod:`.redis_store`), opened at start-up by the lifespan hook and kept as this plugin's state
(``app.state("responses")``).  Disable the whole surface with ``disabled_plugins =
["responses"]``.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from ddx_llm import hookimpl
from ddx_llm.config import require_modules
from ddx_llm.routing import Route

from .create import create_response
from .openapi import amend
from .settings import SECTION, ResponsesSettings
from .storage import open_store
from .store import StoreUnavailable
from .stored import delete_response, list_input_items, retrieve_response

logger = logging.getLogger("ddx_llm.plugins.responses")


@hookimpl
def ddx_llm_settings() -> tuple[str, type]:
    return (SECTION, ResponsesSettings)


@hookimpl
def ddx_llm_routes(app: Any) -> list[Route]:
    if app.settings.section(SECTION).storage_uri:  # say so at start-up, not at the first request
        require_modules(
            "redis",
            feature="Redis storage of responses",
            install='pip install "ddx-llm[responses]"',
        )

    def route(path: str, endpoint: Any, method: str) -> Route:
        return Route(path, endpoint, methods=[method], protected=True, surface=SECTION)

    return [
        route("/v1/responses", create_response, "POST"),
        route("/v1/responses/{response_id}", retrieve_response, "GET"),
        route("/v1/responses/{response_id}", delete_response, "DELETE"),
        route("/v1/responses/{response_id}/input_items", list_input_items, "GET"),
    ]


@hookimpl
def ddx_llm_lifespan(app: Any) -> Any:
    return _storage(app)


@asynccontextmanager
async def _storage(app: Any) -> AsyncIterator[None]:
    """Open the storage at start-up (the state handlers use), close it at shutdown.  An
    SQLite file that cannot be opened stops start-up; a Redis that does not answer yet is
    logged, and requests that need it get 503 ``store_unavailable`` until it does."""
    store = open_store(app.settings.section(SECTION), app.settings.resolve_path)
    app.state(SECTION, lambda: store)
    try:
        await store.check()
        logger.info("responses: stored in %s", store.describe())
    except StoreUnavailable as exc:
        if store.kind == "sqlite":
            cause = exc.__cause__
            raise RuntimeError(f"responses: cannot open {store.describe()}: {cause}") from cause
        logger.warning("responses: %s does not answer yet (%s)", store.describe(), exc.detail)
    try:
        yield
    finally:
        await store.close()


@hookimpl
def ddx_llm_openapi(document: dict[str, Any]) -> None:
    amend(document)
