"""The ``auth`` plugin: API keys on the protected routes.

Its middleware (order 500, inside ``cors`` and ``errors``, so a 401 is shaped by ``errors`` and
carries the CORS headers) reads the key a request presents — ``X-API-Key``, ``Authorization:
Bearer`` (what the OpenAI SDKs send) or ``?api_key=`` — and compares it with the configured keys
in constant time (:mod:`ddx_llm.plugins.auth_keys`).  On a protected route a missing or wrong
key raises :class:`Unauthorized`: 401 ``{code: "unauthorized", message}`` with
``WWW-Authenticate: Bearer realm="ddx-llm"``.  ``OPTIONS`` (CORS preflight) is never refused.

A recognised key's identity — its configured name, or ``key-`` + 8 hex of its SHA-256 — is put
in ``scope["state"]["client_id"]`` for later plugins (rate limiting, metrics), on open routes
too; the key itself never reaches a log line, an error body or the scope state.  ``client_id``
is absent when no configured key was presented.

With no keys configured every request passes and start-up logs a warning (an error, in
capitals, when ``[core] env = "prod"``).  At start-up the plugin also installs
:class:`~ddx_llm.plugins.access_log.RedactSecrets` on Hypercorn's access log.

Settings (``[auth]``; environment prefix ``DDX_LLM_``):
``api_keys`` (``DDX_LLM_API_KEYS``, comma-separated), ``api_key_digests`` (name → SHA-256 hex of
a key; ``DDX_LLM_API_KEY_DIGESTS`` as JSON), ``auth_protected`` (``DDX_LLM_AUTH_PROTECTED``,
comma-separated ``[METHOD ]/path[*]`` rules).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from functools import cached_property
from typing import Any

from pydantic import field_validator
from pydantic_settings import SettingsConfigDict
from starlette.types import ASGIApp, Receive, Scope, Send

from ddx_llm import hookimpl
from ddx_llm.config import CommaList, SectionSettings
from ddx_llm.errors import LlmError
from ddx_llm.middleware import MiddlewareSpec, route_path

from . import access_log
from .auth_keys import KeyRing, check_key, parse_digest, presented_key

logger = logging.getLogger(__name__)

ORDER = 500
REALM = "ddx-llm"
DEFAULT_PROTECTED = ["POST /v1/models/load", "POST /v1/chat/completions"]
METHODS = {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "*"}
SECURITY_SCHEMES = {
    "APIKeyHeader": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
    "APIKeyQuery": {"type": "apiKey", "in": "query", "name": "api_key"},
    "HTTPBearer": {"type": "http", "scheme": "bearer"},
}
HOW_TO = "send it as 'Authorization: Bearer <key>', 'X-API-Key: <key>' or '?api_key=<key>'"


class Unauthorized(LlmError):
    """No valid API key on a protected route."""

    status = 401
    code = "unauthorized"


@dataclass(frozen=True)
class Rule:
    """One protected-route rule: ``method`` (``*`` = any) and a path, or a path prefix."""

    method: str
    path: str
    prefix: bool

    @classmethod
    def parse(cls, text: str) -> Rule:
        """``"POST /v1/chat/completions"``, ``"/v1/models/load"`` (any method), ``"/v1/*"``."""
        method, _, path = text.strip().rpartition(" ")
        method = method.strip().upper() or "*"
        if method not in METHODS or not path.startswith("/"):
            raise ValueError(
                f"{text!r}: write '[METHOD ]/path', e.g. 'POST /v1/chat/completions' or '/v1/*'"
            )
        prefix = path.endswith("*")
        return cls(method, path.rstrip("*") if prefix else path, prefix)

    def matches(self, method: str, path: str) -> bool:
        if self.method not in ("*", method):
            return False
        return path.startswith(self.path) if self.prefix else path == self.path


class AuthSettings(SectionSettings):
    """``[auth]``: the accepted keys and the routes that need one."""

    model_config = SettingsConfigDict(env_prefix="DDX_LLM_")

    api_keys: CommaList = []
    api_key_digests: dict[str, str] = {}
    auth_protected: CommaList = DEFAULT_PROTECTED

    @field_validator("api_keys")
    @classmethod
    def _keys(cls, keys: list[str]) -> list[str]:
        return [check_key(key) for key in keys]

    @field_validator("api_key_digests")
    @classmethod
    def _digests(cls, digests: dict[str, str]) -> dict[str, str]:
        for name, value in digests.items():
            parse_digest(name, value)
        return digests

    @field_validator("auth_protected")
    @classmethod
    def _rules(cls, rules: list[str]) -> list[str]:
        for rule in rules:
            Rule.parse(rule)
        return rules

    @cached_property
    def keyring(self) -> KeyRing:
        """The keys, hashed on first use (once per app)."""
        return KeyRing.build(self.api_keys, self.api_key_digests)

    @cached_property
    def rules(self) -> tuple[Rule, ...]:
        return tuple(Rule.parse(rule) for rule in self.auth_protected)


class AuthMiddleware:
    """Identify the presented key; refuse protected routes without a valid one."""

    def __init__(self, app: ASGIApp, keyring: KeyRing, rules: tuple[Rule, ...]) -> None:
        self.app = app
        self.keyring = keyring
        self.rules = rules

    def protects(self, method: str, path: str) -> bool:
        return method != "OPTIONS" and any(rule.matches(method, path) for rule in self.rules)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        state = scope.setdefault("state", {})
        state.pop("client_id", None)  # never trust a value from outside this request
        key = presented_key(scope) if self.keyring else None
        identity = self.keyring.identify(key) if key is not None else None
        if identity is not None:
            state["client_id"] = identity
        elif self.keyring and self.protects(scope["method"], route_path(scope)):
            raise self.refusal(missing=key is None)
        await self.app(scope, receive, send)

    @staticmethod
    def refusal(*, missing: bool) -> Unauthorized:
        challenge = f'Bearer realm="{REALM}"'
        if missing:
            return Unauthorized(
                f"an API key is required: {HOW_TO}", headers={"WWW-Authenticate": challenge}
            )
        return Unauthorized(
            "invalid API key",
            headers={"WWW-Authenticate": f'{challenge}, error="invalid_token"'},
        )


@hookimpl
def ddx_llm_settings() -> tuple[str, type]:
    return "auth", AuthSettings


@hookimpl
def ddx_llm_middleware(settings: Any) -> MiddlewareSpec:
    auth: AuthSettings = settings.section("auth")
    keyring, rules = auth.keyring, auth.rules
    return MiddlewareSpec("auth", ORDER, lambda app: AuthMiddleware(app, keyring, rules))


@hookimpl
def ddx_llm_lifespan(settings: Any) -> Any:
    return _startup(settings)


@asynccontextmanager
async def _startup(settings: Any) -> AsyncIterator[None]:
    access_log.install()
    auth: AuthSettings = settings.section("auth")
    keyring = auth.keyring
    routes = ", ".join(auth.auth_protected) or "(none)"
    if keyring:
        logger.info("auth: %d API key(s); protected routes: %s", len(keyring), routes)
    elif settings.core.env == "prod":
        logger.error(
            "AUTH IS OFF IN PRODUCTION: no API keys are configured, so anyone can call %s. "
            "Set DDX_LLM_API_KEYS (or [auth] api_keys). AUTH IS OFF IN PRODUCTION.",
            routes,
        )
    else:
        logger.warning(
            "auth bypassed: no API keys configured (DDX_LLM_API_KEYS); %s are open", routes
        )
    yield


@hookimpl
def ddx_llm_openapi(document: dict[str, Any], settings: Any) -> None:
    """Add the three security schemes, and ``security`` plus a 401 response to every
    operation a rule protects."""
    rules = settings.section("auth").rules
    components = document.setdefault("components", {})
    components.setdefault("securitySchemes", {}).update(SECURITY_SCHEMES)
    unauthorized = {
        "description": "Missing or invalid API key (`unauthorized`)",
        "headers": {"WWW-Authenticate": {"schema": {"type": "string"}}},
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}},
    }
    for path, operations in document.get("paths", {}).items():
        for method, operation in operations.items():
            if method.upper() == "OPTIONS" or not isinstance(operation, dict):
                continue
            if any(rule.matches(method.upper(), path) for rule in rules):
                operation["security"] = [{name: []} for name in SECURITY_SCHEMES]
                operation.setdefault("responses", {})["401"] = unauthorized
