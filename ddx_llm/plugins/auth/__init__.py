"""The ``auth`` plugin: API keys on the protected routes.

Its middleware (:mod:`.middleware`) sits inside ``cors`` and the core's error layer, so a 401 is
shaped and carries the CORS headers.  It reads the key a request presents — ``X-API-Key``,
``Authorization: Bearer`` (what the OpenAI SDKs send) or ``?api_key=`` — and compares it with
the configured keys in constant time (:mod:`.keys`).  A protected route — one declared with
``protected=True`` (:class:`ddx_llm.routing.Route`), or matched by an ``auth_protected`` rule —
without a valid key gets 401 ``{code: "unauthorized", message}`` with ``WWW-Authenticate:
Bearer realm="ddx-llm"``.

A recognised key's identity — its configured name, or ``key-`` + 8 hex of its SHA-256 — is put
in ``scope["state"]["client_id"]`` for later plugins and lifecycle events
(``event.request.client``), on open routes too; the key itself never reaches a log line, an
error body or the scope state.

With no keys configured every request passes and start-up logs a warning — except in
production (``[core] env = "prod"``), where building the app raises :class:`ConfigError` (so
``ddx-llm serve`` and ``ddx-llm check`` exit 2 before anything listens) unless the deployment
says ``[auth] allow_no_auth = true``; it then starts with the warning.  At start-up the plugin
also installs :class:`.log_redaction.RedactSecrets` on Hypercorn's access log.

Settings (``[auth]``; environment prefix ``DDX_LLM_``):
``api_keys`` (``DDX_LLM_API_KEYS``, comma-separated), ``api_key_digests`` (name → SHA-256 hex of
a key; ``DDX_LLM_API_KEY_DIGESTS`` as JSON), ``auth_protected`` (``DDX_LLM_AUTH_PROTECTED``,
comma-separated ``[METHOD ]/path[*]`` rules protecting routes beyond those that declare it),
``allow_no_auth`` (``DDX_LLM_ALLOW_NO_AUTH``; production without keys: start anyway).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from pydantic import field_validator
from pydantic_settings import SettingsConfigDict

from ddx_llm import hookimpl
from ddx_llm.config import CommaList, ConfigError, SectionSettings
from ddx_llm.middleware import MiddlewareSpec

from . import log_redaction
from .keys import KeyRing, check_key, parse_digest
from .middleware import AuthMiddleware, Rule, Unauthorized

logger = logging.getLogger(__name__)

PRODUCTION = frozenset({"prod", "production"})
"""``[core] env`` values that mean production (compared without case)."""
ORDER = 500
"""Inside cors (200) and the core's error layer (400): a 401 is shaped and readable by browsers."""
SECURITY_SCHEMES = {
    "APIKeyHeader": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
    "APIKeyQuery": {"type": "apiKey", "in": "query", "name": "api_key"},
    "HTTPBearer": {"type": "http", "scheme": "bearer"},
}

__all__ = ["AuthMiddleware", "AuthSettings", "Rule", "Unauthorized"]


class AuthSettings(SectionSettings):
    """``[auth]``: the accepted keys and the routes that need one beyond those that say so."""

    model_config = SettingsConfigDict(env_prefix="DDX_LLM_")

    api_keys: CommaList = []
    api_key_digests: dict[str, str] = {}
    auth_protected: CommaList = []
    allow_no_auth: bool = False
    """In production (``[core] env = "prod"``) start without any key, every route open.
    Without it, production without keys is a configuration error."""

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

    def keyring(self) -> KeyRing:
        return KeyRing.build(self.api_keys, self.api_key_digests)

    def rules(self) -> tuple[Rule, ...]:
        return tuple(Rule.parse(rule) for rule in self.auth_protected)


class Auth:
    """The auth state of one app: the hashed keys and the extra rules, made once."""

    def __init__(self, settings: AuthSettings) -> None:
        self.keyring = settings.keyring()
        self.rules = settings.rules()
        self.allow_no_auth = settings.allow_no_auth


def in_production(settings: Any) -> bool:
    """Whether ``[core] env`` says production (``prod`` or ``production``, any case)."""
    return str(settings.core.env).strip().lower() in PRODUCTION


def refuse_open_production(app: Any) -> None:
    """Raise ConfigError when the app is built for production with no key and without
    ``allow_no_auth``: one line naming both ways out."""
    auth = auth_of(app)
    if auth.keyring or auth.allow_no_auth or not in_production(app.settings):
        return
    routes = ", ".join(protected_routes(app)) or "every route"
    raise ConfigError(
        f"[core] env = {app.settings.core.env!r} but no API key is configured, so anyone could "
        f"call {routes}: set DDX_LLM_API_KEYS (or [auth] api_keys, [auth.api_key_digests]), "
        "or declare that this deployment wants no auth with [auth] allow_no_auth = true "
        "(DDX_LLM_ALLOW_NO_AUTH=1)"
    )


def auth_of(app: Any) -> Auth:
    return app.state("auth", lambda: Auth(app.settings.section("auth")))


def protected_routes(app: Any) -> list[str]:
    """``METHOD path`` of every route that needs a key (for the log and the OpenAPI document)."""
    rules = auth_of(app).rules
    found = []
    for route in app.routes:
        path = getattr(route, "path", None)
        for method in sorted(getattr(route, "methods", None) or ()):
            if method != "HEAD" and (
                getattr(route, "protected", False) or any(r.matches(method, path) for r in rules)
            ):
                found.append(f"{method} {path}")
    return found


@hookimpl
def ddx_llm_settings() -> tuple[str, type]:
    return "auth", AuthSettings


@hookimpl
def ddx_llm_middleware(app: Any) -> MiddlewareSpec:
    """The auth middleware; called while the app is built, so it is also where production
    without keys is refused (:func:`refuse_open_production`)."""
    refuse_open_production(app)
    auth = auth_of(app)
    return MiddlewareSpec(
        "auth", ORDER, lambda inner: AuthMiddleware(inner, auth.keyring, auth.rules)
    )


@hookimpl
def ddx_llm_lifespan(app: Any, settings: Any) -> Any:
    return _startup(app, settings)


@asynccontextmanager
async def _startup(app: Any, settings: Any) -> AsyncIterator[None]:
    log_redaction.install()
    keyring = auth_of(app).keyring
    routes = ", ".join(protected_routes(app)) or "(none)"
    if keyring:
        logger.info("auth: %d API key(s); protected routes: %s", len(keyring), routes)
    elif in_production(settings):  # allowed explicitly: else building the app failed
        logger.warning(
            "auth is off in production, as [auth] allow_no_auth says: no API keys are "
            "configured (DDX_LLM_API_KEYS) and %s are open to anyone",
            routes,
        )
    else:
        logger.warning(
            "auth bypassed: no API keys configured (DDX_LLM_API_KEYS); %s are open", routes
        )
    yield


@hookimpl
def ddx_llm_openapi(document: dict[str, Any], app: Any) -> None:
    """Add the three security schemes, and ``security`` plus a 401 response to every
    protected operation."""
    components = document.setdefault("components", {})
    components.setdefault("securitySchemes", {}).update(SECURITY_SCHEMES)
    unauthorized = {
        "description": "Missing or invalid API key (`unauthorized`)",
        "headers": {"WWW-Authenticate": {"schema": {"type": "string"}}},
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}},
    }
    for entry in protected_routes(app):
        method, path = entry.split(" ", 1)
        operation = document.get("paths", {}).get(path, {}).get(method.lower())
        if isinstance(operation, dict):
            operation["security"] = [{name: []} for name in SECURITY_SCHEMES]
            operation.setdefault("responses", {})["401"] = unauthorized
