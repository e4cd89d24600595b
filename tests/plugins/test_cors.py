"""The ``cors`` plugin in process: preflight for the API's headers, the allow-list of origins,
and CORS headers on error responses (401, 404, 422, 500) so a browser can read them."""

from __future__ import annotations

import pytest
from starlette.requests import Request
from starlette.routing import Route
from support import running_app, write_conf

from ddx_llm import hookimpl
from ddx_llm.config import ConfigError

pytestmark = pytest.mark.anyio

CHAT = "/v1/chat/completions"
BODY = {"messages": [{"role": "user", "content": "hi"}]}
APP_ORIGIN = "http://localhost:3100"
KEY = "sk-cors-test-0123456789"
JSON = {"content-type": "application/json"}


class Boom:
    @hookimpl
    def ddx_llm_routes(self):
        async def boom(request: Request):
            raise RuntimeError("unexpected")

        return [Route("/boom", boom)]


def preflight(origin: str, headers: str = "x-api-key, authorization, content-type") -> dict:
    return {
        "Origin": origin,
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": headers,
    }


@pytest.fixture
async def client(conf_dir, monkeypatch):
    monkeypatch.setenv("DDX_LLM_API_KEYS", KEY)
    async with running_app(conf_dir, (("boom", Boom()),)) as (_, client):
        yield client


async def test_preflight_allows_the_api_headers(client):
    response = await client.options(
        CHAT, headers=preflight(APP_ORIGIN, "X-API-Key, Authorization, Content-Type, X-Request-ID")
    )
    assert response.status_code == 200
    assert response.headers["access-control-allow-origin"] == APP_ORIGIN
    allowed = {
        h.strip().lower() for h in response.headers["access-control-allow-headers"].split(",")
    }
    assert {"x-api-key", "authorization", "content-type", "x-request-id"} <= allowed
    methods = response.headers["access-control-allow-methods"]
    assert [m.strip() for m in methods.split(",")] == ["GET", "POST", "OPTIONS"]
    assert response.headers["x-request-id"]  # request_id sits outside cors


async def test_preflight_from_an_unknown_origin_is_refused_in_the_error_shape(client):
    response = await client.options(CHAT, headers=preflight("http://evil.example"))
    assert response.status_code == 400
    assert response.json() == {
        "code": "cors_rejected",
        "message": "CORS preflight refused",
        "detail": "Disallowed CORS origin",
    }
    assert "access-control-allow-origin" not in response.headers


async def test_preflight_for_an_unlisted_header_is_refused(client):
    response = await client.options(CHAT, headers=preflight(APP_ORIGIN, "x-secret-header"))
    assert (response.status_code, response.json()["detail"]) == (400, "Disallowed CORS headers")


async def test_simple_call_exposes_the_request_id(client):
    response = await client.get("/v1/models", headers={"Origin": APP_ORIGIN})
    assert response.headers["access-control-allow-origin"] == APP_ORIGIN
    exposed = response.headers["access-control-expose-headers"].lower()
    assert "x-request-id" in exposed and "retry-after" in exposed
    assert "origin" in response.headers["vary"].lower()


async def test_unknown_origin_gets_no_allow_origin(client):
    response = await client.get("/v1/models", headers={"Origin": "http://evil.example"})
    assert response.status_code == 200
    assert "access-control-allow-origin" not in response.headers


@pytest.mark.parametrize(
    ("method", "path", "kwargs", "status", "code"),
    [
        ("POST", CHAT, {"json": BODY}, 401, "unauthorized"),
        ("POST", CHAT, {"json": {"messages": 3}, "headers": {"X-API-Key": KEY}}, 422, None),
        ("POST", CHAT, {"content": b"{", "headers": {"X-API-Key": KEY, **JSON}}, 422, None),
        (
            "POST",
            CHAT,
            {"content": b"{}", "headers": {"X-API-Key": KEY}},
            415,
            "unsupported_media_type",
        ),
        ("GET", "/nope", {}, 404, "not_found"),
        ("GET", "/boom", {}, 500, "llm_error"),
    ],
)
async def test_error_responses_are_readable_by_the_browser(
    client, method, path, kwargs, status, code
):
    kwargs = dict(kwargs)  # the parameters are shared by the asyncio and trio runs
    headers = {"Origin": APP_ORIGIN, **kwargs.pop("headers", {})}
    response = await client.request(method, path, headers=headers, **kwargs)
    assert response.status_code == status
    assert response.headers["access-control-allow-origin"] == APP_ORIGIN
    assert "x-request-id" in response.headers["access-control-expose-headers"].lower()
    assert response.json()["code"] == (code or "request_invalid")


async def test_origins_from_the_environment(conf_dir, monkeypatch):
    monkeypatch.setenv("DDX_LLM_CORS_ORIGINS", "https://a.example, https://b.example:8443")
    async with running_app(conf_dir) as (_, client):
        for origin in ("https://a.example", "https://b.example:8443"):
            response = await client.get("/health", headers={"Origin": origin})
            assert response.headers["access-control-allow-origin"] == origin
        default = await client.get("/health", headers={"Origin": APP_ORIGIN})
        assert "access-control-allow-origin" not in default.headers


async def test_any_origin(conf_dir):
    write_conf(conf_dir, {"cors": {"origins": ["*"]}})
    async with running_app(conf_dir) as (_, client):
        response = await client.get("/health", headers={"Origin": "http://anything.example"})
    assert response.headers["access-control-allow-origin"] == "*"


@pytest.mark.parametrize("origin", ["http://localhost:3100/", "localhost:3100", "ftp://x.example"])
async def test_a_malformed_origin_stops_start_up(conf_dir, origin):
    write_conf(conf_dir, {"cors": {"origins": [origin]}})
    with pytest.raises(ConfigError, match="DDX_LLM_CORS_ORIGINS"):
        async with running_app(conf_dir):
            pass


async def test_follows_a_renamed_request_id_header(conf_dir, monkeypatch):
    monkeypatch.setenv("DDX_LLM_REQUEST_ID_HEADER", "X-Correlation-ID")
    async with running_app(conf_dir) as (_, client):
        allowed = await client.options(CHAT, headers=preflight(APP_ORIGIN, "x-correlation-id"))
        assert allowed.status_code == 200
        response = await client.get("/health", headers={"Origin": APP_ORIGIN})
    assert "x-correlation-id" in response.headers["access-control-expose-headers"].lower()


async def test_extra_allowed_headers_from_conf(conf_dir):
    write_conf(conf_dir, {"cors": {"allow_headers": ["Authorization", "X-Stainless-OS"]}})
    async with running_app(conf_dir) as (_, client):
        response = await client.options(CHAT, headers=preflight(APP_ORIGIN, "x-stainless-os"))
    assert response.status_code == 200


async def test_disabled_by_name(conf_dir):
    write_conf(conf_dir, {"core": {"disabled_plugins": ["cors"]}})
    async with running_app(conf_dir) as (app, client):
        assert "cors" not in [spec.name for spec in app.context.middleware]
        response = await client.get("/health", headers={"Origin": APP_ORIGIN})
        assert "access-control-allow-origin" not in response.headers
        refused = await client.options(CHAT, headers=preflight(APP_ORIGIN))
    assert refused.status_code == 405
