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
