"""The auth middleware: identify the presented key, refuse protected routes without a valid one.

A route is protected when it declares ``protected=True`` (:class:`ddx_llm.routing.Route`; the
core's chat and model-load routes do) or when an ``[auth] auth_protected`` rule matches it.
``OPTIONS`` (CORS preflight) is never refused.  A recognised key's identity goes into
``scope["state"]["client_id"]``, on open routes too; the key itself never does.
"""

from __future__ import annotations

from dataclasses import dataclass

from starlette.types import ASGIApp, Receive, Scope, Send

from ddx_llm.errors import LlmError
from ddx_llm.events import CLIENT_ID
from ddx_llm.routing import matched_route, route_path

from .keys import KeyRing, presented_key

REALM = "ddx-llm"
METHODS = {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "*"}
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


class AuthMiddleware:
    """Identify the presented key; refuse protected routes without a valid one."""

    def __init__(self, app: ASGIApp, keyring: KeyRing, rules: tuple[Rule, ...]) -> None:
        self.app = app
        self.keyring = keyring
        self.rules = rules

    def protects(self, scope: Scope) -> bool:
        method = scope["method"]
        if method == "OPTIONS":
            return False
        if matched_route(scope).protected:
            return True
        path = route_path(scope)
        return any(rule.matches(method, path) for rule in self.rules)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        state = scope.setdefault("state", {})
        state.pop(CLIENT_ID, None)  # never trust a value from outside this request
        key = presented_key(scope) if self.keyring else None
        identity = self.keyring.identify(key) if key is not None else None
        if identity is not None:
            state[CLIENT_ID] = identity
        elif self.keyring and self.protects(scope):
            raise refusal(missing=key is None)
        await self.app(scope, receive, send)


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
