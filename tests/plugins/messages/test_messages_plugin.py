"""The ``messages`` plugin as a whole: its routes in ``/openapi.json``, a browser's preflight
with the Anthropic SDKs' headers, disabling it by name, its settings."""

from __future__ import annotations

import pytest
from openapi_spec_validator import validate

from ddx_llm import testing
from ddx_llm.config import ConfigError

pytestmark = pytest.mark.anyio

ORIGIN = "http://localhost:3100"
BODY = {"model": "test-model", "max_tokens": 8, "messages": [{"role": "user", "content": "hi"}]}


async def test_openapi_documents_both_routes(tmp_path):
    conf = testing.write_conf(tmp_path, {"auth": {"api_keys": ["sk-openapi-0123456789"]}})
    async with testing.serve(conf) as service:
        document = (await service.client.get("/openapi.json")).json()
    validate(document)
    schemas = document["components"]["schemas"]
    create = document["paths"]["/v1/messages"]["post"]
    count = document["paths"]["/v1/messages/count_tokens"]["post"]
    body_ref = create["requestBody"]["content"]["application/json"]["schema"]["$ref"]
    request = schemas[body_ref.rsplit("/", 1)[1]]
    assert {
        "model",
        "max_tokens",
        "messages",
        "system",
        "stop_sequences",
        "tools",
        "tool_choice",
        "metadata",
        "stream",
        "thinking",
    } <= set(request["properties"])
    assert set(request["required"]) == {"model", "max_tokens", "messages"}
    assert "text/event-stream" in create["responses"]["200"]["content"]
    item = create["responses"]["200"]["content"]["text/event-stream"]["itemSchema"]
    events = [option["contentSchema"]["$ref"] for option in item["properties"]["data"]["anyOf"]]
    assert len(events) == 8 and all(ref.rsplit("/", 1)[1] in schemas for ref in events)
    assert "ping" in item["properties"]["event"]["enum"]
    assert [p["name"] for p in create["parameters"]] == ["anthropic-version", "anthropic-beta"]
    for operation in (create, count):
        assert operation["security"]  # the auth plugin sees the protected routes
        for status in ("400", "401", "404", "408", "413", "415", "500", "503", "529"):
            schema = operation["responses"][status]["content"]["application/json"]["schema"]
            assert schema["$ref"].endswith("/AnthropicErrorResponse"), (status, schema)
    token_ref = count["responses"]["200"]["content"]["application/json"]["schema"]["$ref"]
    assert schemas[token_ref.rsplit("/", 1)[1]]["required"] == ["input_tokens"]
    chat = document["paths"]["/v1/chat/completions"]["post"]
    assert chat["responses"]["422"]["content"]["application/json"]["schema"]["$ref"].endswith(
        "/ErrorBody"
    )  # the core's own components are untouched


async def test_a_browser_preflight_with_the_anthropic_sdk_headers(tmp_path):
    headers = (
        "x-api-key, content-type, anthropic-version, anthropic-beta, "
        "anthropic-dangerous-direct-browser-access"
    )
    async with testing.serve(testing.write_conf(tmp_path)) as service:
        response = await service.client.options(
            "/v1/messages",
            headers={
                "Origin": ORIGIN,
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": headers,
            },
        )
        answer = await service.client.post("/v1/messages", json=BODY, headers={"Origin": ORIGIN})
    assert response.status_code == 200
    assert response.headers["access-control-allow-origin"] == ORIGIN
    assert answer.status_code == 200 and answer.headers["access-control-allow-origin"] == ORIGIN


async def test_disabled_by_name(tmp_path):
    conf = testing.write_conf(tmp_path, {"core": {"disabled_plugins": ["messages"]}})
    async with testing.serve(conf) as service:
        response = await service.client.post("/v1/messages", json=BODY)
        document = (await service.client.get("/openapi.json")).json()
    assert response.status_code == 404 and response.json()["code"] == "not_found"
    assert "/v1/messages" not in document["paths"]


async def test_ping_seconds_is_validated(tmp_path):
    conf = testing.write_conf(tmp_path, {"messages": {"ping_seconds": 0}})
    with pytest.raises(ConfigError, match="ping_seconds"):
        async with testing.serve(conf):
            pass


async def test_metrics_count_the_surface_like_chat(tmp_path):
    echo = {**BODY, "mock": {"scenario": "echo"}}
    async with testing.serve(testing.write_conf(tmp_path)) as service:
        await service.client.post("/v1/messages", json=echo)
        await service.client.post("/v1/messages", json={**echo, "stream": True})
        await service.client.post("/v1/messages", json={**BODY, "model": "nope"})
        text = (await service.client.get("/metrics")).text
    lines = set(text.splitlines())
    assert 'ddx_llm_requests_total{method="POST",route="/v1/messages",status="200"} 2.0' in lines
    assert 'ddx_llm_requests_total{method="POST",route="/v1/messages",status="404"} 1.0' in lines
    finished = 'ddx_llm_request_success_total{finished_reason="stop",model_name="test-model"} 2.0'
    assert finished in lines
    assert 'ddx_llm_generation_tokens_total{model_name="test-model"} 2.0' in lines
