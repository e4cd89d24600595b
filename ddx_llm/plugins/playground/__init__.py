"""The ``playground`` plugin: a chat page at ``GET /playground`` to try the service in a browser.

One static page shipped in the package (``static/``: HTML, CSS and ES modules — no build step,
no CDN, no framework) that talks to the service's own API from the browser: the registry
(``GET /v1/models``), the resident model and its state (``GET /health``, polled), swaps
(``POST /v1/models/load``) and chat completions (``POST /v1/chat/completions``, streamed).
The page itself needs no API key; the API calls the browser makes do, with the key the user
types (kept in the tab's ``sessionStorage``, sent as ``Authorization: Bearer``, never in a URL).
Every URL the page uses is relative, so it works behind a path prefix (``root_path``).

Settings (``[playground]``, env ``DDX_LLM_PLAYGROUND_<KEY>``): ``enabled`` — ``"auto"`` (the
default) serves the page when ``[core] env`` is ``dev`` (or ``development``, any case) and
not otherwise (``prod``, ``staging``, ...); ``true`` or ``false`` decide outright.
``disabled_plugins = ["playground"]`` removes the plugin entirely.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

from ddx_llm import hookimpl
from ddx_llm.config import SectionSettings

if TYPE_CHECKING:
    from ddx_llm.context import AppContext
    from ddx_llm.routing import Route

NAME = "playground"
PATH = "/playground"
DEVELOPMENT = frozenset({"dev", "development"})
"""``[core] env`` values (compared without case) in which ``enabled = "auto"`` serves the page."""


class PlaygroundSettings(SectionSettings):
    """``[playground]``: whether the page is served."""

    enabled: Literal["auto"] | bool = "auto"
    """``auto``: on when ``[core] env`` is ``dev``, off otherwise; ``true`` / ``false`` decide
    whatever the env (``DDX_LLM_PLAYGROUND_ENABLED``)."""


def serves_page(app: AppContext) -> bool:
    """True when this app serves the page (see :class:`PlaygroundSettings`)."""
    enabled = app.settings.section(NAME).enabled
    if enabled == "auto":
        return str(app.settings.core.env).strip().lower() in DEVELOPMENT
    return bool(enabled)


@hookimpl
def ddx_llm_settings() -> tuple[str, type]:
    return (NAME, PlaygroundSettings)


@hookimpl
def ddx_llm_routes(app: AppContext) -> list[Route] | None:
    if not serves_page(app):
        return None
    from .pages import playground_routes

    return playground_routes(PATH)


@hookimpl
def ddx_llm_openapi(document: dict[str, Any], app: AppContext) -> None:
    if not serves_page(app):
        return
    document["paths"][PATH] = {
        "get": {
            "summary": "The playground: a chat page for trying the service in a browser",
            "operationId": "playground",
            "tags": ["playground"],
            "description": "A static HTML page (its scripts and styles are served below "
            f"`{PATH}/`).  It needs no API key; the API calls it makes send the key typed "
            "into it as `Authorization: Bearer`.",
            "responses": {
                "200": {
                    "description": "The page",
                    "content": {"text/html": {"schema": {"type": "string"}}},
                }
            },
        }
    }
