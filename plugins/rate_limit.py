"""``rate_limit``: per-key rate limiting of the LLM routes, built on the ``limits`` library.

A drop-in plugin written only against ddx-llm's public plugin API (guide: ``plugins/README.md``).
Requests to the counted routes (default ``POST /v1/chat/completions``) are counted per identity:
the key id the auth plugin puts in ``scope["state"]["client_id"]``, else the client address.
Over the limit: 429 ``rate_limited`` with ``Retry-After`` (seconds until a request is allowed).
Limits (``"60/minute"``, ``"10/second;500/hour"``) come from ``[rate_limit]``: ``default`` plus
``per_client`` overrides.  Counters live in memory, or in Redis (``storage_uri =
"redis://host:6379/0"``) so that replicas behind a load balancer share one limit per key.

Order 550: inside auth (500), which sets the identity and refuses bad keys before they spend
anyone's quota; inside the core's error layer (400), which turns the raised 429 into the
documented body.  The app's limiter is kept with ``app.state("rate_limit", ...)``.

The async storages of ``limits`` are asyncio-only (``asyncio.Lock``, ``redis.asyncio``) and fail
under Hypercorn's trio worker, so the synchronous ones are used: memory counters inline (no I/O,
a lock held for microseconds), network storages in worker threads (``anyio.to_thread``, with a
capacity limiter of their own) so a slow Redis never blocks the event loop.
"""

from __future__ import annotations

import logging
import math
import re
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

import anyio
import anyio.to_thread
from pydantic import AfterValidator, field_validator
from starlette.types import ASGIApp, Receive, Scope, Send

from ddx_llm import hookimpl
from ddx_llm.config import CommaList, ConfigError, SectionSettings
from ddx_llm.errors import LlmError
from ddx_llm.middleware import MiddlewareSpec
from ddx_llm.routing import route_path

logger = logging.getLogger("ddx_llm.plugins.rate_limit")

ORDER = 550
"""After auth (500), which sets the identity; inside the error layer (400), which shapes the 429."""

SECTION = "rate_limit"
UNLIMITED = "unlimited"
INSTALL_HINT = (
    "the rate_limit plugin needs the 'limits' package: pip install 'ddx-llm[ratelimit]' "
    "(or add rate_limit to [core] disabled_plugins)"
)
NETWORK_TIMEOUT = 2.0
"""Default socket timeouts for Redis-like storages, so a hung server cannot hang requests."""
STORAGE_THREADS = 16
WARN_EVERY_SECONDS = 10.0
ROUTE = re.compile(r"^(?:(?P<method>[A-Z]+)\s+)?(?P<path>/\S*)$")


class RateLimited(LlmError):
    """The identity spent its allowance; ``Retry-After`` says when to try again."""

    status = 429
    code = "rate_limited"


class RateLimitUnavailable(LlmError):
    """The counter storage does not answer and ``fail_open`` is off."""

    status = 503
    code = "rate_limit_unavailable"


def parse_limits(value: str) -> list[Any]:
    """``"10/second;500/hour"`` → ``limits`` items; ``"unlimited"`` → no limit (empty list).

    Raises ValueError for a string ``limits`` cannot parse or when ``limits`` is not installed.
    """
    try:
        import limits
    except ImportError:
        raise ValueError(INSTALL_HINT) from None
    if value.strip().lower() == UNLIMITED:
        return []
    return limits.parse_many(value)


def _valid_limit(value: str) -> str:
    parse_limits(value)
    return value


Limit = Annotated[str, AfterValidator(_valid_limit)]


class RateLimitSettings(SectionSettings):
    """``[rate_limit]`` (environment: ``DDX_LLM_RATE_LIMIT_<KEY>``)."""

    default: Limit = "60/minute"
    """Limit of every identity without an override; ``limits`` notation or ``"unlimited"``."""
    per_client: dict[str, Limit] = {}
    """Overrides by identity (auth's client id, or the client address when auth is off)."""
    routes: CommaList = ["POST /v1/chat/completions"]
    """Counted routes: ``"METHOD /path"`` or ``"/path"`` (any method); exact paths."""
    storage_uri: str = "memory://"
    """``memory://`` (this process) or a shared store: ``redis://[:password@]host:6379/0``,
    ``rediss://``, ``redis+sentinel://``, ``redis+cluster://``, ``valkey://``, ``memcached://``."""
    storage_options: dict[str, str | int | float | bool] = {}
    """Extra keyword arguments for the ``limits`` storage (e.g. ``socket_timeout`` for Redis)."""
    strategy: Literal["moving-window", "sliding-window-counter", "fixed-window"] = "moving-window"
    """``limits`` strategy; moving-window is exact (no double burst at a window edge)."""
    namespace: str = "ddx_llm"
    """Prefix of the counter keys: deployments sharing one Redis but not their limits differ."""
    fail_open: bool = True
    """Storage down: True lets requests through (logged), False answers 503."""

    @field_validator("routes")
    @classmethod
    def _check_routes(cls, value: list[str]) -> list[str]:
        for route in value:
            parse_route(route)
        return value

    @field_validator("storage_uri")
    @classmethod
    def _check_storage(cls, value: str) -> str:
        try:
            from limits.storage import SCHEMES
        except ImportError:
            raise ValueError(INSTALL_HINT) from None
        scheme = urlsplit(value).scheme
        if scheme not in SCHEMES or scheme.startswith("async+"):
            known = ", ".join(s for s in sorted(SCHEMES) if not s.startswith("async+"))
            raise ValueError(f"unknown storage scheme {scheme!r}; known: {known}")
        return value


def parse_route(route: str) -> tuple[str | None, str]:
    """``"POST /v1/chat/completions"`` → ``("POST", "/v1/chat/completions")``; ``"/x"`` → any
    method.  Raises ValueError for anything else."""
    match = ROUTE.match(route.strip())
    if match is None:
        raise ValueError(f"{route!r} is not 'METHOD /path' or '/path'")
    return match["method"], match["path"]


def redacted(uri: str) -> str:
    """The storage URI without credentials, for logs."""
    parts = urlsplit(uri)
    host = parts.hostname or ""
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}{parts.path}"


class Limiter:
    """Counts hits per identity in a ``limits`` storage.

    ``check`` is synchronous (the ``limits`` API); :meth:`acheck` runs it without blocking the
    event loop.  Raises :class:`ConfigError` when the storage or strategy cannot be set up.
    """

    def __init__(self, settings: RateLimitSettings) -> None:
        from limits.errors import ConfigurationError
        from limits.storage import storage_from_string
        from limits.strategies import STRATEGIES

        self.settings = settings
        self.default = parse_limits(settings.default)
        self.overrides = {key: parse_limits(value) for key, value in settings.per_client.items()}
        scheme = urlsplit(settings.storage_uri).scheme
        self.local = scheme == "memory"
        options: dict[str, Any] = dict(settings.storage_options)
        if scheme.startswith(("redis", "rediss", "valkey")):
            options.setdefault("socket_timeout", NETWORK_TIMEOUT)
            options.setdefault("socket_connect_timeout", NETWORK_TIMEOUT)
        try:
            self.storage = storage_from_string(
                settings.storage_uri, wrap_exceptions=True, **options
            )
            self.strategy = STRATEGIES[settings.strategy](self.storage)
        except (ConfigurationError, NotImplementedError, TypeError) as exc:
            raise ConfigError(
                f"[rate_limit] storage {redacted(settings.storage_uri)!r} with strategy "
                f"{settings.strategy!r}: {exc}"
            ) from None
        self._threads: anyio.CapacityLimiter | None = None
        self._last_warning = -math.inf

    def describe(self) -> str:
        limits = ", ".join(str(item) for item in self.default) or UNLIMITED
        return (
            f"default {limits}, {len(self.overrides)} per-client override(s), "
            f"storage {redacted(self.settings.storage_uri)}, strategy {self.settings.strategy}"
        )

    def check(self, kind: str, identity: str) -> tuple[Any, int] | None:
        """Count one hit; return ``(exceeded limit, retry-after seconds)`` or None if allowed."""
        items = self.overrides.get(identity, self.default)
        keys = (self.settings.namespace, kind, identity)
        for item in items:
            if not self.strategy.hit(item, *keys):
                reset = self.strategy.get_window_stats(item, *keys).reset_time
                return item, max(1, math.ceil(reset - time.time()))
        return None

    async def acheck(self, kind: str, identity: str) -> tuple[Any, int] | None:
        """:meth:`check` off the event loop; storage failures follow ``fail_open``."""
        from limits.errors import StorageError

        try:
            if self.local:
                return self.check(kind, identity)
            if self._threads is None:
                self._threads = anyio.CapacityLimiter(STORAGE_THREADS)
            return await anyio.to_thread.run_sync(self.check, kind, identity, limiter=self._threads)
        except StorageError as exc:
            self._warn(f"rate-limit storage failed ({exc.storage_error!r})")
            if self.settings.fail_open:
                return None
            raise RateLimitUnavailable(
                "rate limiting is unavailable",
                detail="the rate-limit storage does not answer",
                headers={"Retry-After": "5"},
            ) from None

    def _warn(self, message: str) -> None:
        # A storage outage under load would otherwise log once per request.
        now = time.monotonic()
        if now - self._last_warning >= WARN_EVERY_SECONDS:
            self._last_warning = now
            action = "requests pass unlimited" if self.settings.fail_open else "requests get 503"
            logger.warning("%s; %s", message, action)

    def reachable(self) -> bool:
        """Whether the storage answers (a Redis PING); blocking."""
        return bool(self.storage.check())


def identify(scope: Scope) -> tuple[str, str]:
    """``("key", client_id)`` when auth set one, else ``("addr", client address)``."""
    client_id = (scope.get("state") or {}).get("client_id")
    if client_id:
        return "key", str(client_id)
    client = scope.get("client")
    return "addr", str(client[0]) if client else "unknown"


class RateLimitMiddleware:
    """Refuse requests to the counted routes once their identity is over its limit."""

    def __init__(self, app: ASGIApp, limiter: Limiter, routes: list[str]) -> None:
        self.app = app
        self.limiter = limiter
        self.routes = {parse_route(route) for route in routes}

    def counted(self, scope: Scope) -> bool:
        path = route_path(scope)  # what the router matches
        return (scope["method"], path) in self.routes or (None, path) in self.routes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and self.counted(scope):
            verdict = await self.limiter.acheck(*identify(scope))
            if verdict is not None:
                item, retry_after = verdict
                raise RateLimited(
                    f"rate limit exceeded: {item}",
                    detail={"limit": str(item), "retry_after": retry_after},
                    headers={"Retry-After": str(retry_after)},
                )
        await self.app(scope, receive, send)


@asynccontextmanager
async def storage_check(limiter: Limiter) -> AsyncIterator[None]:
    """At start-up, say whether a shared storage answers (the service starts either way)."""
    if not limiter.local:
        if await anyio.to_thread.run_sync(limiter.reachable):
            logger.info("rate_limit: storage %s answers", redacted(limiter.settings.storage_uri))
        else:
            limiter._warn(f"rate_limit: storage {redacted(limiter.settings.storage_uri)} is down")
    yield


@hookimpl
def ddx_llm_settings() -> tuple[str, type]:
    return (SECTION, RateLimitSettings)


def limiter_of(app: Any) -> Limiter:
    """This app's :class:`Limiter`, built on first use."""

    def create() -> Limiter:
        section: RateLimitSettings = app.settings.section(SECTION)
        limiter = Limiter(section)
        logger.info("rate_limit: %s; routes %s", limiter.describe(), ", ".join(section.routes))
        return limiter

    return app.state(SECTION, create)


@hookimpl
def ddx_llm_middleware(app: Any) -> MiddlewareSpec:
    limiter, routes = limiter_of(app), app.settings.section(SECTION).routes
    return MiddlewareSpec(SECTION, ORDER, lambda inner: RateLimitMiddleware(inner, limiter, routes))


@hookimpl
def ddx_llm_lifespan(app: Any) -> Any:
    return storage_check(limiter_of(app))
