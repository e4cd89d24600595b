"""Auth, request-ID and CORS under a real Hypercorn process (asyncio and trio workers), with
``conf/hypercorn.toml``: the browser's preflight-then-call sequence, 401s a browser can read,
streams with the request id, a redacted access log, and the official OpenAI SDK with Bearer."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import httpx
import openai
import pytest
from support import LiveServer, copy_project_conf, write_conf

pytestmark = pytest.mark.live

CHAT = "/v1/chat/completions"
MODEL = "mlx-community/Qwen3-4B-Instruct-2507-4bit"
USER = [{"role": "user", "content": "What is the weather in Berlin?"}]
TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Current weather for a city",
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string"}},
                "required": ["city"],
            },
        },
    }
]
KEY = "sk-live-middleware-0123456789abcdef"
WRONG = "sk-wrong-middleware-5555555555555555"
APP_ORIGIN = "http://localhost:3100"
# A format that would print every place a key travels; the redaction must hold even so.
REVEALING_FORMAT = (
    '%(h)s "%(R)s" %(s)s rid=%({x-request-id}o)s q=%(q)s k=%({x-api-key}i)s '
    "a=%({authorization}i)s e=%({ddx_llm_api_keys}e)s"
)


def start_server(tmp_path_factory, worker: str, disabled: list[str] = ()) -> LiveServer:
    """A server with conf/hypercorn.toml, one API key, and the revealing access-log format."""
    conf_dir = tmp_path_factory.mktemp("live") / "conf"
    copy_project_conf(conf_dir)
    write_conf(conf_dir, {"core": {"disabled_plugins": list(disabled)}})
    hypercorn_conf = ("--config", str(conf_dir / "hypercorn.toml"))
    server = LiveServer(
        conf_dir,
        args=(*hypercorn_conf, "-k", worker, "--access-logformat", REVEALING_FORMAT),
        env={"DDX_LLM_API_KEYS": KEY},
    )
    # Module-scoped: drop DDX_LLM_* variables of the outer environment by hand.
    server.env = {
        name: value
        for name, value in server.env.items()
        if not name.startswith("DDX_LLM_") or name in ("DDX_LLM_API_KEYS", "DDX_LLM_CONF_DIR")
    }
    return server.start()


@pytest.fixture(scope="module", params=["asyncio", "trio"])
def server(request, tmp_path_factory) -> Iterator[LiveServer]:
    live = start_server(tmp_path_factory, request.param)
    try:
        yield live
    finally:
        live.stop()


def access_line(server: LiveServer, request_id: str, timeout: float = 5.0) -> str:
    """The access-log line of the request with ``request_id`` (Hypercorn writes it after the
    response, so wait for it)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for line in server.log().splitlines():
            if f"rid={request_id} " in line:
                return line
        time.sleep(0.05)
    raise AssertionError(f"no access-log line for {request_id}:\n{server.log()[-3000:]}")


def test_401_is_readable_by_the_browser_and_carries_the_request_id(server):
    response = httpx.post(
        server.url + CHAT,
        json={"messages": USER},
        headers={"Origin": APP_ORIGIN, "X-Request-ID": "live-401"},
    )
    assert response.status_code == 401
    assert response.json()["code"] == "unauthorized"
    assert response.headers["www-authenticate"] == 'Bearer realm="ddx-llm"'
    assert response.headers["access-control-allow-origin"] == APP_ORIGIN
    assert "x-request-id" in response.headers["access-control-expose-headers"].lower()
    assert response.headers["x-request-id"] == "live-401"


def test_browser_preflight_then_call(server):
    with httpx.Client(base_url=server.url) as browser:
        preflight = browser.options(
            CHAT,
            headers={
                "Origin": APP_ORIGIN,
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "authorization,content-type,x-request-id",
            },
        )
        assert preflight.status_code == 200
        assert preflight.headers["access-control-allow-origin"] == APP_ORIGIN
        allowed = preflight.headers["access-control-allow-headers"].lower()
        assert all(h in allowed for h in ("authorization", "content-type", "x-request-id"))
        assert "POST" in preflight.headers["access-control-allow-methods"]
        call = browser.post(
            CHAT,
            json={"messages": USER},
            headers={"Origin": APP_ORIGIN, "Authorization": f"Bearer {KEY}"},
        )
        assert call.status_code == 200
        assert call.headers["access-control-allow-origin"] == APP_ORIGIN
        exposed = call.headers["access-control-expose-headers"].lower()
        assert "x-request-id" in exposed and call.headers["x-request-id"]
        stranger = browser.post(
            CHAT,
            json={"messages": USER},
            headers={"Origin": "http://evil.example", "Authorization": f"Bearer {KEY}"},
        )
        assert "access-control-allow-origin" not in stranger.headers


def test_streamed_response_carries_the_request_id(server):
    with httpx.stream(
        "POST",
        server.url + CHAT,
        json={"messages": USER, "stream": True},
        headers={"X-API-Key": KEY, "X-Request-ID": "live-stream"},
    ) as response:
        assert response.status_code == 200
        assert response.headers["x-request-id"] == "live-stream"
        assert response.headers["content-type"].startswith("text/event-stream")
        text = response.read().decode()
    assert text.endswith("data: [DONE]\n\n")


def test_access_log_never_shows_a_key(server):
    response = httpx.get(
        server.url + "/v1/models",
        params={"api_key": KEY, "x": "1"},
        headers={"X-API-Key": WRONG, "Authorization": f"Bearer {KEY}", "X-Request-ID": "live-log"},
    )
    assert response.status_code == 200
    line = access_line(server, "live-log")
    assert '"GET /v1/models?api_key=[redacted]&x=1 ' in line
    assert "k=[redacted] a=[redacted] e=[redacted]" in line
    log = server.log()
    assert KEY not in log and WRONG not in log


# --- the official OpenAI SDK, Bearer auth --------------------------------------------------


def test_openai_sdk_sync_create_stream_and_tool_calls(server):
    client = openai.OpenAI(base_url=server.url + "/v1", api_key=KEY, max_retries=0)
    completion = client.chat.completions.create(model=MODEL, messages=USER, tools=TOOLS)
    call = completion.choices[0].message.tool_calls[0]
    assert completion.choices[0].finish_reason == "tool_calls"
    assert (call.id, call.function.name) == ("call_0", "get_weather")
    assert json.loads(call.function.arguments) == {"city": "Berlin"}

    arguments, names = "", []
    for chunk in client.chat.completions.create(
        model=MODEL, messages=USER, tools=TOOLS, stream=True
    ):
        for delta_call in (chunk.choices[0].delta.tool_calls or []) if chunk.choices else []:
            names += [delta_call.function.name] if delta_call.function.name else []
            arguments += delta_call.function.arguments or ""
    assert names == ["get_weather"] and json.loads(arguments) == {"city": "Berlin"}

    with client.chat.completions.stream(model=MODEL, messages=USER, tools=TOOLS) as stream:
        final = stream.get_final_completion()
    assert final.choices[0].message.tool_calls[0].function.arguments == '{"city":"Berlin"}'

    models = client.models.list()
    assert MODEL in [model.id for model in models.data]


def test_openai_sdk_refuses_a_wrong_key(server):
    client = openai.OpenAI(base_url=server.url + "/v1", api_key=WRONG, max_retries=0)
    with pytest.raises(openai.AuthenticationError) as raised:
        client.chat.completions.create(model=MODEL, messages=USER)
    assert raised.value.status_code == 401
    assert raised.value.body["code"] == "unauthorized"
    assert WRONG not in json.dumps(raised.value.body)


@pytest.mark.anyio
async def test_openai_sdk_async_create_and_stream(server):
    client = openai.AsyncOpenAI(base_url=server.url + "/v1", api_key=KEY, max_retries=0)
    async with client:
        completion = await client.chat.completions.create(model=MODEL, messages=USER, tools=TOOLS)
        call = completion.choices[0].message.tool_calls[0]
        assert json.loads(call.function.arguments) == {"city": "Berlin"}

        raw = await client.chat.completions.with_raw_response.create(
            model=MODEL,
            messages=USER,
            stream=True,
            extra_headers={"X-Request-ID": "sdk-async"},
            extra_body={"mock": {"scenario": "echo"}},
        )
        assert raw.headers["x-request-id"] == "sdk-async"
        text = "".join(
            [chunk.choices[0].delta.content or "" async for chunk in raw.parse() if chunk.choices]
        )
        assert text.strip() == USER[0]["content"]


# --- each plugin alone ----------------------------------------------------------------------

MINE = ("auth", "request_id", "cors")


@pytest.mark.parametrize("alone", MINE)
def test_each_plugin_alone(tmp_path_factory, alone):
    """Only one of the three (plus the errors plugin and the mock backend) is loaded."""
    others = [name for name in MINE if name != alone] + ["metrics"]
    server = start_server(tmp_path_factory, "asyncio", disabled=others)
    try:
        headers = {"Origin": APP_ORIGIN, "X-Request-ID": "alone-1"}
        response = httpx.post(server.url + CHAT, json={"messages": USER}, headers=headers)
        preflight = httpx.options(
            server.url + CHAT,
            headers={**headers, "Access-Control-Request-Method": "POST"},
        )
    finally:
        server.stop()
    assert response.status_code == (401 if alone == "auth" else 200)
    assert ("www-authenticate" in response.headers) == (alone == "auth")
    assert ("x-request-id" in response.headers) == (alone == "request_id")
    assert ("access-control-allow-origin" in response.headers) == (alone == "cors")
    assert preflight.status_code == (200 if alone == "cors" else 405)
