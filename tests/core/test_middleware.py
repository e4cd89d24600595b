"""Core middleware helpers."""

from __future__ import annotations

import pytest

from ddx_llm.middleware import route_path


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
