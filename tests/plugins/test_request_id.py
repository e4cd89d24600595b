"""The ``request_id`` plugin in process: echo or replace the client's id, put it on every
response (errors, 401s and streams included), in the request state, the context variable and
every log record of the request."""

from __future__ import annotations

import logging
import re

import pytest
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from support import running_app, write_conf

from ddx_llm import hookimpl
from ddx_llm.config import ConfigError
from ddx_llm.plugins.request_id import current_request_id

pytestmark = pytest.mark.anyio

CHAT = "/v1/chat/completions"
BODY = {"messages": [{"role": "user", "content": "hi"}]}
FRESH = re.compile(r"[0-9a-f]{32}")
probe_logger = logging.getLogger("ddx_llm.test_probe")


class Probe:
    """Test plugin: ``/probe`` logs a line and answers what a handler sees; ``/boom`` fails."""

    @hookimpl
    def ddx_llm_routes(self):
        async def probe(request: Request) -> JSONResponse:
            probe_logger.info("inside the handler")
            return JSONResponse(
                {"state": request.state.request_id, "contextvar": current_request_id.get()}
            )

        async def boom(request: Request) -> JSONResponse:
            raise RuntimeError("unexpected")

        return [Route("/probe", probe), Route("/boom", boom)]


PROBE = (("probe", Probe()),)


@pytest.fixture
async def client(conf_dir):
    async with running_app(conf_dir, PROBE) as (_, client):
        yield client


async def test_fresh_id_when_the_client_sends_none(client):
    first = (await client.get("/health")).headers["x-request-id"]
    second = (await client.get("/health")).headers["x-request-id"]
    assert FRESH.fullmatch(first) and FRESH.fullmatch(second) and first != second


@pytest.mark.parametrize(
    "value", ["abc", "req-1.2_3:4", "A" * 128, "0f8fad5b-d9cb-469f-a165-70867728950e"]
)
async def test_well_formed_client_id_is_echoed(client, value):
    response = await client.get("/health", headers={"X-Request-ID": value})
    assert response.headers["x-request-id"] == value


@pytest.mark.parametrize(
    "value", ["", "A" * 129, "has space", 'quote"', "semi;colon", "new\tline", "é-accent"]
)
async def test_malformed_client_id_is_replaced(client, value):
    response = await client.get("/health", headers={"X-Request-ID": value.encode()})
    assert FRESH.fullmatch(response.headers["x-request-id"])
    assert response.headers.get_list("x-request-id") == [response.headers["x-request-id"]]


async def test_handlers_see_it_in_state_and_contextvar(client):
    response = await client.get("/probe", headers={"X-Request-ID": "trace-42"})
    assert response.json() == {"state": "trace-42", "contextvar": "trace-42"}
    assert current_request_id.get() is None  # reset when the request ends


@pytest.mark.parametrize(
    ("method", "path", "kwargs", "status"),
    [
        ("GET", "/nope", {}, 404),
        ("DELETE", "/health", {}, 405),
        (
            "POST",
            CHAT,
            {"content": b"{not json", "headers": {"content-type": "application/json"}},
            422,
        ),
        ("POST", CHAT, {"content": b"{}"}, 415),
        ("POST", CHAT, {"json": {"messages": 3}}, 422),
        ("GET", "/boom", {}, 500),
    ],
)
async def test_error_responses_carry_it(client, method, path, kwargs, status):
    kwargs = dict(kwargs)  # the parameters are shared by the asyncio and trio runs
    headers = {"X-Request-ID": "err-1", **kwargs.pop("headers", {})}
    response = await client.request(method, path, headers=headers, **kwargs)
    assert response.status_code == status
    assert "code" in response.json()
    assert response.headers["x-request-id"] == "err-1"


async def test_401_carries_it(conf_dir, monkeypatch):
    monkeypatch.setenv("DDX_LLM_API_KEYS", "sk-request-id-test-key")
    async with running_app(conf_dir) as (_, client):
        response = await client.post(CHAT, json=BODY, headers={"X-Request-ID": "no-key"})
    assert response.status_code == 401
    assert response.headers["x-request-id"] == "no-key"


async def test_streams_carry_it(client):
    async with client.stream(
        "POST", CHAT, json={**BODY, "stream": True}, headers={"X-Request-ID": "stream-7"}
    ) as response:
        assert response.headers["x-request-id"] == "stream-7"
        text = "".join([chunk async for chunk in response.aiter_text()])
    assert text.endswith("data: [DONE]\n\n")


async def test_every_log_line_of_the_request_has_it(client, caplog):
    caplog.set_level(logging.INFO)
    await client.get("/probe", headers={"X-Request-ID": "log-1"})
    await client.get("/boom", headers={"X-Request-ID": "log-2"})
    by_id: dict[str, list[str]] = {}
    for record in caplog.records:
        if record.name.startswith("ddx_llm"):
            by_id.setdefault(record.request_id, []).append(record.getMessage())
    assert by_id["log-1"] == ["inside the handler"]
    assert by_id["log-2"] == ["GET /boom -> 500 llm_error"]  # the errors plugin's line
    outside = logging.getLogger("ddx_llm").makeRecord("x", logging.INFO, "f", 1, "m", (), None)
    assert outside.request_id == "-"


async def test_header_name_is_configurable(conf_dir, monkeypatch):
    monkeypatch.setenv("DDX_LLM_REQUEST_ID_HEADER", "X-Correlation-ID")
    async with running_app(conf_dir, PROBE) as (_, client):
        response = await client.get(
            "/probe", headers={"X-Correlation-ID": "corr-1", "X-Request-ID": "ignored"}
        )
    assert response.headers["x-correlation-id"] == "corr-1"
    assert "x-request-id" not in response.headers
    assert response.json()["state"] == "corr-1"


async def test_header_name_from_conf_must_be_a_header_name(conf_dir):
    write_conf(conf_dir, {"request_id": {"header": "X Request Id"}})
    with pytest.raises(ConfigError, match="DDX_LLM_REQUEST_ID_HEADER"):
        async with running_app(conf_dir):
            pass


async def test_disabled_by_name(conf_dir):
    write_conf(conf_dir, {"core": {"disabled_plugins": ["request_id"]}})
    async with running_app(conf_dir) as (app, client):
        assert "request_id" not in [spec.name for spec in app.context.middleware]
        response = await client.get("/health", headers={"X-Request-ID": "abc"})
    assert response.status_code == 200
    assert "x-request-id" not in response.headers
