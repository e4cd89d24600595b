"""Route matching: the one place middleware learns which route a request hits."""

from __future__ import annotations

import pytest
from starlette.routing import Mount, Router
from starlette.routing import Route as StarletteRoute

from ddx_llm.routing import UNMATCHED, Route, RouteMatcher, route_path


@pytest.mark.parametrize(
    ("root", "path", "expected"),
    [
        ("", "/v1/chat/completions", "/v1/chat/completions"),
        ("/api", "/api/v1/chat/completions", "/v1/chat/completions"),
        ("/api", "/api", ""),
        ("/api", "/api2/v1/models", "/api2/v1/models"),  # a prefix of a name is not a mount
        ("/api", "/other", "/other"),
    ],
)
def test_route_path_strips_the_mount_prefix_as_the_router_does(root, path, expected):
    assert route_path({"path": path, "root_path": root}) == expected


async def endpoint(request):  # never called: only matching is tested
    raise AssertionError


def matcher() -> RouteMatcher:
    inner = Router([Route("/items/{item_id}", endpoint, methods=["GET"], protected=True)])
    return RouteMatcher(
        [
            StarletteRoute("/health", endpoint),
            Route("/v1/chat", endpoint, methods=["POST"], protected=True, surface="chat"),
            Mount("/api", app=inner),
            Mount("/static", app=endpoint),
        ]
    )


def match(method: str, path: str, root: str = ""):
    return matcher()({"type": "http", "method": method, "path": path, "root_path": root})


def test_templates_are_joined_through_mounts():
    assert match("GET", "/api/items/42").template == "/api/items/{item_id}"
    assert match("POST", "/api/items/42").template == "/api/items/{item_id}"  # 405: the route
    assert match("GET", "/static/a/b.css").template == "/static/{path}"
    assert match("GET", "/api/other") is UNMATCHED
    assert match("GET", "/health").template == "/health"


def test_a_match_carries_what_the_route_declares():
    chat = match("POST", "/v1/chat")
    assert (chat.template, chat.protected, chat.surface) == ("/v1/chat", True, "chat")
    assert match("GET", "/api/items/1").protected  # declared inside a mounted router
    plain = match("GET", "/health")
    assert (plain.protected, plain.surface) == (False, None)
    assert match("GET", "/v1/chat").protected  # a 405 is still refused without a key


def test_matching_ignores_the_mount_prefix_of_the_app():
    assert match("POST", "/prefix/v1/chat", root="/prefix").template == "/v1/chat"


async def _answer(app, method: str, path: str, rewrite: str | None = None) -> tuple[int, bytes]:
    """Run one request through ``RouteMatcher.match`` then ``app`` (optionally rewriting the
    path in between, as a middleware may); returns the status and body."""
    scope = {"type": "http", "method": method, "path": path, "root_path": "", "headers": [],
             "query_string": b""}  # fmt: skip
    matcher = RouteMatcher(app.router.routes)
    matcher.match(scope)
    if rewrite is not None:
        scope["path"] = rewrite
    sent: list[dict] = []

    async def receive() -> dict:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict) -> None:
        sent.append(message)

    await app(scope, receive, send)
    return sent[0]["status"], b"".join(m.get("body", b"") for m in sent[1:])


@pytest.mark.anyio
async def test_the_direct_router_answers_as_starlettes_router_does():
    from starlette.responses import PlainTextResponse

    from ddx_llm.routing import DirectRouter

    async def item(request):
        return PlainTextResponse(
            f"item {request.path_params['item_id']} via {request.scope['route'].path}"
        )

    async def other(request):
        return PlainTextResponse("other")

    async def mounted(request):
        return PlainTextResponse("mounted")

    router = Router(
        [
            Route("/items/{item_id}", item, methods=["GET"]),
            Route("/other", other, methods=["GET"]),
            Mount("/api", app=Router([Route("/x", mounted)])),
        ]
    )
    direct = DirectRouter(router)
    cases = [
        ("GET", "/items/7", None),  # matched: straight to the route, its path params fresh
        ("GET", "/items/8", None),
        ("POST", "/items/7", None),  # another method: the router's 405
        ("GET", "/nothing", None),  # the router's 404
        ("GET", "/api/x", None),  # a Mount: the router
        ("GET", "/items/7", "/other"),  # rewritten by a middleware after matching: the router
    ]
    for method, path, rewrite in cases:
        expected = await _answer(_Plain(router), method, path, rewrite)
        assert await _answer(_Plain(direct, router), method, path, rewrite) == expected
    assert await _answer(_Plain(direct, router), "GET", "/items/8") == (
        200,
        b"item 8 via /items/{item_id}",
    )
    assert await _answer(_Plain(direct, router), "GET", "/items/7", "/other") == (200, b"other")


class _Plain:
    """An app with ``router.routes`` for :func:`_answer`."""

    def __init__(self, app, router=None) -> None:
        self.app = app
        self.router = router or app

    async def __call__(self, scope, receive, send) -> None:
        await self.app(scope, receive, send)


@pytest.mark.anyio
async def test_function_endpoints_answer_without_starlettes_exception_wrapper():
    """Sync endpoints run in a thread, async ones on the loop, and an exception reaches the
    layers outside as it was raised (the core's error layer answers it)."""
    import threading

    from starlette.responses import PlainTextResponse

    loop_thread = threading.get_ident()

    def sync(request):
        return PlainTextResponse("thread" if threading.get_ident() != loop_thread else "loop")

    async def failing(request):
        raise LookupError("raised as it is")

    router = Router([Route("/sync", sync), Route("/failing", failing)])
    assert await _answer(_Plain(router), "GET", "/sync") == (200, b"thread")
    with pytest.raises(LookupError, match="raised as it is"):
        await _answer(_Plain(router), "GET", "/failing")
