"""Bad request bodies get the client's error, never a 500: content types (415), deep nesting and
lone surrogates (422, before a stream starts), strict types (422), a client that leaves mid-body
(499, no ERROR line).  In process, on asyncio and trio."""

from __future__ import annotations

import json
import logging

import pytest
from support import documented, running_app, write_conf

from ddx_llm import hookimpl
from ddx_llm.api.json_body import MAX_DEPTH, read_model
from ddx_llm.routing import Route
from ddx_llm.schemas import LoadRequest

pytestmark = pytest.mark.anyio

CHAT = "/v1/chat/completions"
USER = [{"role": "user", "content": "the weather in Berlin"}]
ECHO = {"mock": {"scenario": "echo"}}
JSON = {"content-type": "application/json"}


class EchoLoad:
    """A plugin with a JSON route of its own, read through the core's helpers."""

    @hookimpl
    def ddx_llm_routes(self):
        async def handler(request):
            from starlette.responses import JSONResponse

            body = await read_model(request, LoadRequest)
            return JSONResponse({"model_id": body.model_id})

        return [Route("/plugin/echo", handler, methods=["POST"])]


@pytest.fixture
async def client(conf_dir):
    async with running_app(conf_dir, extra_plugins=(("echo_load", EchoLoad()),)) as (_, client):
        yield client


@pytest.mark.parametrize(
    "content_type",
    [None, "text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x",
     "application/jsonx", "json", "application/xml", ""],
)  # fmt: skip
@pytest.mark.parametrize("path", [CHAT, "/plugin/echo"])
async def test_json_routes_refuse_other_content_types_with_415(client, path, content_type):
    headers = {} if content_type is None else {"content-type": content_type}
    body = json.dumps({"messages": USER, "model_id": "x"}).encode()
    response = await client.post(path, content=body, headers=headers)
    assert response.status_code == 415, response.text
    error = documented(response.json())
    assert error["code"] == "unsupported_media_type"
    assert "application/json" in error["detail"]


@pytest.mark.parametrize(
    "content_type",
    ["application/json", "application/json; charset=utf-8", "APPLICATION/JSON",
     "application/vnd.ddx+json", "application/merge-patch+json; charset=UTF-8"],
)  # fmt: skip
async def test_json_and_plus_json_types_with_parameters_are_accepted(client, content_type):
    body = json.dumps({"messages": USER, **ECHO}).encode()
    response = await client.post(CHAT, content=body, headers={"content-type": content_type})
    assert response.status_code == 200, response.text
    echoed = await client.post(
        "/plugin/echo", content=b'{"model_id": "m"}', headers={"content-type": content_type}
    )
    assert echoed.json() == {"model_id": "m"}


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b'{"messages": ' + b"[" * 1000 + b"]" * 1000 + b"}", "nested too deeply"),
        (b'{"messages": ' + b"[" * 200_000 + b"]" * 200_000 + b"}", "nested too deeply"),
        (b'{"messages": [{"role": "user", "content": "\\ud800"}]}', "lone UTF-16 surrogate"),
        (b'{"messages": [{"role": "user", "content": [{"type": "text", "text": "a\\udfff"}]}]}',
         "lone UTF-16 surrogate"),
        (b'{"messages": [{"role": "user", "content": "x"}], "temperature": NaN}', "malformed"),
        # JSON in UTF-16 (json.loads accepts it): its escapes are not the bytes of UTF-8's
        ('{"messages": [{"role": "user", "content": "\\ud800"}]}'.encode("utf-16"),
         "lone UTF-16 surrogate"),
    ],
)  # fmt: skip
async def test_input_that_breaks_parsers_is_422_not_500(client, raw, message, stream):
    if raw.startswith(b"\xff\xfe"):  # UTF-16: the stream flag in the same encoding
        text = raw.decode("utf-16")
        raw = text.replace("{", '{"stream": ' + json.dumps(stream) + ", ", 1).encode("utf-16")
        response = await client.post(CHAT, content=raw, headers=JSON)
        assert response.status_code == 422, response.text[:300]
        assert message in documented(response.json())["message"]
        return
    payload = b'{"stream": ' + json.dumps(stream).encode() + b", " + raw[1:]
    response = await client.post(CHAT, content=payload, headers=JSON)
    assert response.status_code == 422, response.text[:300]
    assert response.headers["content-type"] == "application/json"  # refused before any stream
    error = documented(response.json())
    assert error["code"] == "request_invalid"
    assert message in error["message"]


async def test_the_depth_limit_is_exactly_max_depth(client):
    def nested(depth: int) -> dict:
        value: object = "deep"
        for _ in range(depth - 3):  # the body, messages[0] and the message are three levels
            value = {"x": value}
        return {"messages": [{"role": "user", "content": "hi", "meta": value}], **ECHO}

    accepted = await client.post(CHAT, json=nested(MAX_DEPTH))
    refused = await client.post(CHAT, json=nested(MAX_DEPTH + 1))
    assert accepted.status_code == 200, accepted.text
    assert refused.status_code == 422 and "nested too deeply" in refused.json()["message"]


async def test_a_lone_surrogate_is_named_by_its_field(client):
    raw = (
        b'{"messages": [{"role": "user", "content": "ok"}, {"role": "user", "content": "\\udc00"}]}'
    )
    error = (await client.post(CHAT, content=raw, headers=JSON)).json()
    assert error["detail"][0]["field"] == "messages.1.content"
    paired = b'{"messages": [{"role": "user", "content": "\\ud83d\\ude00"}], "mock": {"scenario": '
    paired += b'"echo"}}'
    answer = await client.post(CHAT, content=paired, headers=JSON)
    assert answer.json()["choices"][0]["message"]["content"] == "\N{GRINNING FACE}"


@pytest.mark.parametrize(
    ("field", "value"),
    [("max_tokens", "10"), ("max_tokens", True), ("max_tokens", 10.5), ("temperature", "1"),
     ("temperature", True), ("stream", "true"), ("stream", 1), ("top_logprobs", "2"),
     ("seed", 2**64), ("n", "1"), ("logprobs", "yes"), ("stop", ""), ("stop", ["a"] * 5),
     ("logit_bias", {"x": 1}), ("logit_bias", {"7": -101}), ("response_format", {"type": "xml"}),
     ("tool_choice", "required"), ("messages", [{"role": "user"}])],
)  # fmt: skip
async def test_types_are_strict_as_in_openais_api(client, field, value):
    response = await client.post(CHAT, json={"messages": USER, field: value})
    assert response.status_code == 422, response.text
    error = documented(response.json())
    assert error["code"] == "request_invalid"
    assert any(item["field"].startswith(field) for item in error["detail"]), error


@pytest.mark.parametrize(
    "extra",
    [{"max_tokens": 10.0}, {"temperature": 1}, {"n": 1}, {"stop": "x"}, {"stop": []},
     {"logit_bias": {"42": -100}}, {"seed": -(2**63)}, {"response_format": {"type": "text"}},
     {"messages": [{"role": "assistant", "tool_calls": [
         {"id": "c", "type": "function", "function": {"name": "f", "arguments": "{}"}}]},
         {"role": "user", "content": "go on"}]}],
)  # fmt: skip
async def test_what_the_document_allows_is_accepted(client, extra):
    response = await client.post(CHAT, json={"messages": USER, **extra})
    assert response.status_code == 200, response.text


async def test_a_client_that_leaves_mid_body_is_499_not_an_error(conf_dir, caplog):
    write_conf(conf_dir, {"metrics": {"path": "/metrics"}})
    async with running_app(conf_dir) as (app, client):
        messages = [
            {"type": "http.request", "body": b'{"messages": [', "more_body": True},
            {"type": "http.disconnect"},
        ]
        sent = []

        async def receive():
            return messages.pop(0) if messages else {"type": "http.disconnect"}

        async def send(message):
            sent.append(message)

        scope = {
            "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
            "scheme": "http", "path": CHAT, "raw_path": CHAT.encode(), "query_string": b"",
            "root_path": "", "client": ("127.0.0.1", 1), "server": ("testserver", 80),
            "headers": [(b"content-type", b"application/json"), (b"content-length", b"500"),
                        (b"host", b"testserver")],
        }  # fmt: skip
        with caplog.at_level(logging.INFO):
            await app(scope, receive, send)
        metrics = (await client.get("/metrics")).text
    assert sent[0]["status"] == 499
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert "-> 499 client_closed" in caplog.text and "Traceback" not in caplog.text
    counted = [line for line in metrics.splitlines() if line.startswith("ddx_llm_requests_total{")]
    assert any('status="499"' in line and CHAT in line for line in counted), counted
    assert not any('status="500"' in line for line in counted), counted
