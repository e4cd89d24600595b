"""The ``cors`` plugin: browser clients on the allowed origins may call the API and read errors.

Starlette's ``CORSMiddleware`` at order 200: inside ``request_id`` (so preflight answers carry
the id too) and outside ``errors`` and ``auth``, so 401, 422 and 500 bodies carry the CORS
headers and a browser can read them.  Allowed: methods GET, POST, OPTIONS; request headers
``X-API-Key``, ``Authorization``, ``Content-Type`` and the Anthropic SDKs' ``anthropic-version``,
``anthropic-beta``, ``anthropic-dangerous-direct-browser-access`` (``[cors] allow_headers``) plus
the request-id header; exposed: the request-id header and ``Retry-After``.  An origin not in the
list gets no ``Access-Control-Allow-Origin``; a refused preflight answers 400 ``cors_rejected`` in
the documented error shape instead of Starlette's plain text.

Settings (``[cors]``, env ``DDX_LLM_CORS_<KEY>``): ``origins`` (``DDX_LLM_CORS_ORIGINS``,
comma-separated, default ``http://localhost:3100``; ``*`` allows any), ``allow_headers``,
``max_age``.
"""

from __future__ import annotations

import re
from typing import Any

from pydantic import Field, field_validator
from starlette.datastructures import Headers
from starlette.middleware.cors import CORSMiddleware
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp

from ddx_llm import hookimpl
from ddx_llm.config import CommaList, SectionSettings
from ddx_llm.middleware import MiddlewareSpec

ORDER = 200
METHODS = ("GET", "POST", "OPTIONS")
DEFAULT_REQUEST_ID_HEADER = "X-Request-ID"
ORIGIN = re.compile(r"\*|https?://[^/\s]+")
"""An origin is ``scheme://host[:port]`` with no path (a trailing ``/`` would never match)."""


class CorsSettings(SectionSettings):
    """``[cors]``: which browser origins may call the API."""

    origins: CommaList = ["http://localhost:3100"]
    allow_headers: CommaList = [
        "X-API-Key",
        "Authorization",
        "Content-Type",
        # the Anthropic SDKs' (the Messages surface): API version, betas, and the TypeScript
        # SDK's acknowledgement that it runs in a browser (dangerouslyAllowBrowser)
        "anthropic-version",
        "anthropic-beta",
        "anthropic-dangerous-direct-browser-access",
    ]
    max_age: int = Field(default=600, ge=0)

    @field_validator("origins")
    @classmethod
    def _origins(cls, values: list[str]) -> list[str]:
        for value in values:
            if not ORIGIN.fullmatch(value):
                raise ValueError(
                    f"{value!r} is not an origin; write scheme://host[:port] without a path, or *"
                )
        return values


class ErrorShapedCORSMiddleware(CORSMiddleware):
    """Starlette's CORS middleware, with refused preflights in the ``{code, message}`` shape."""

    def preflight_response(self, request_headers: Headers) -> Response:
        response = super().preflight_response(request_headers)
        if response.status_code < 400:
            return response
        keep = {
            key: value
            for key, value in response.headers.items()
            if key not in ("content-length", "content-type")
        }
        body = {
            "code": "cors_rejected",
            "message": "CORS preflight refused",
            "detail": bytes(response.body).decode(),  # "Disallowed CORS origin, headers"
        }
        return JSONResponse(body, status_code=response.status_code, headers=keep)


def build_cors(app: ASGIApp, cors: CorsSettings, request_id_header: str) -> ASGIApp:
    """Wrap ``app`` with the configured CORS policy."""
    return ErrorShapedCORSMiddleware(
        app,
        allow_origins=cors.origins,
        allow_methods=METHODS,
        allow_headers=[*cors.allow_headers, request_id_header],
        expose_headers=[request_id_header, "Retry-After"],
        max_age=cors.max_age,
    )


@hookimpl
def ddx_llm_settings() -> tuple[str, type]:
    return "cors", CorsSettings


@hookimpl
def ddx_llm_middleware(settings: Any) -> MiddlewareSpec:
    cors = settings.section("cors")
    # Follow the request_id plugin's header name when it is loaded.
    request_id = settings.sections.get("request_id")
    header = getattr(request_id, "header", DEFAULT_REQUEST_ID_HEADER)
    return MiddlewareSpec("cors", ORDER, lambda app: build_cors(app, cors, header))
