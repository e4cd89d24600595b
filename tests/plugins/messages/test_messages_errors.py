"""Errors of the Messages routes: Anthropic's shape and statuses on every path (validation, a
field no backend can honour, auth, routing, body size, rate limit, capacity, the context
window), our ``{code, message, detail}`` beside it, the ``request-id`` header."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from messages_support import error, message
from support import ROOT

from ddx_llm import testing

pytestmark = pytest.mark.anyio

MODEL = testing.TEST_MODEL["id"]
USER = [{"role": "user", "content": "Hello there"}]
KEY = "sk-messages-0123456789abcdef"
RESULT = {"type": "tool_result", "tool_use_id": "call_0", "content": "sunny"}


def ask(**fields: Any) -> dict[str, Any]:
    return {"model": MODEL, "max_tokens": 16, "messages": USER, **fields}


def serve(tmp_path: Path, **sections: dict):
    return testing.serve(testing.write_conf(tmp_path, sections))


@pytest.mark.parametrize(
    ("body", "field", "words"),
    [
        ({"model": MODEL, "messages": USER}, "max_tokens", "Field required"),
        (ask(max_tokens=0), "max_tokens", "greater than or equal to 1"),
        (ask(messages=[]), "messages", "at least 1 item"),
        (
            ask(messages=[{"role": "user", "content": [{"type": "tool_result"}]}]),
            "messages.0.content.0.tool_use_id",
            "Field required",
        ),
        (ask(temperature=1.5), "temperature", "less than or equal to 1"),
        (ask(frequency_penalty=1), "frequency_penalty", "Extra inputs are not permitted"),
        (ask(top_k=-1), "top_k", "greater than or equal to 0"),
        (ask(tool_choice={"type": "tool"}), "tool_choice.name", "Field required"),
        (ask(tool_choice={"type": "any"}), "tool_choice", "tools"),
        (ask(thinking={"type": "disabled"}), "thinking", "switched off"),
        (ask(thinking={"type": "enabled", "budget_tokens": 512}), "thinking.budget_tokens", "1024"),
        (ask(max_tokens="16"), "max_tokens", "valid integer"),
        (
            ask(messages=[*USER, {"role": "assistant", "content": "The answer is"}]),
            "messages.1",
            "prefill",
        ),
        (
            ask(messages=[{"role": "user", "content": [{"type": "image", "source": {}}]}]),
            "messages.0.content",
            "image blocks are not supported",
        ),
        (
            ask(messages=[{"role": "assistant", "content": [RESULT]}]),
            "messages.0.content.0",
            "'tool_result' found using 'type' does not match",
        ),
        (
            ask(tools=[{"type": "web_search_20250305", "name": "web_search"}]),
            "tools.0",
            "built-in tool 'web_search_20250305'",
        ),
        (
            ask(tools=[{"name": "f", "input_schema": {"type": "object"}, "strict": True}]),
            "tools.0.strict",
            "Input should be False",
        ),
        (ask(tools=[{"name": "bad name", "input_schema": {"type": "object"}}]), "tools.0.name", ""),
        (
            ask(tools=[{"name": "f", "input_schema": {"type": "array"}}]),
            "tools.0.input_schema.type",
            "object",
        ),
        (ask(metadata={"user_id": "u", "team": "t"}), "metadata.team", "Extra inputs"),
    ],
)
async def test_invalid_requests_are_400_naming_the_field(tmp_path, body, field, words):
    async with serve(tmp_path) as service:
        response = await service.client.post("/v1/messages", json=body)
    assert response.status_code == 400, response.text
    body = error(response.json(), "invalid_request_error")
    assert body["code"] == "request_invalid"
    assert body["message"].startswith(f"{field}: ") and words in body["message"], body
    assert response.headers["request-id"] == body["request_id"]


async def test_bodies_that_are_not_json_objects(tmp_path):
    async with serve(tmp_path) as service:
        client = service.client
        headers = {"content-type": "application/json"}
        malformed = await client.post("/v1/messages", content=b"{", headers=headers)
        a_list = await client.post("/v1/messages", json=[ask()])
        no_type = await client.post("/v1/messages", content=b"{}")
    error(malformed.json(), "invalid_request_error")
    assert malformed.status_code == a_list.status_code == 400
    assert error(a_list.json(), "invalid_request_error")["message"].endswith("a JSON object")
    assert no_type.status_code == 415
    assert error(no_type.json(), "invalid_request_error")["code"] == "unsupported_media_type"


async def test_unknown_model_and_wrong_method(tmp_path):
    async with serve(tmp_path) as service:
        unknown = await service.client.post("/v1/messages", json=ask(model="claude-opus-4"))
        counted = await service.client.post(
            "/v1/messages/count_tokens", json={"model": "claude-opus-4", "messages": USER}
        )
        wrong_method = await service.client.get("/v1/messages")
    assert unknown.status_code == counted.status_code == 404
    body = error(unknown.json(), "not_found_error")
    assert body["code"] == "model_not_found" and "claude-opus-4" in body["message"]
    error(counted.json(), "not_found_error")
    assert wrong_method.status_code == 405
    error(wrong_method.json(), "invalid_request_error")


async def test_the_context_window_is_a_400(tmp_path):
    async with serve(tmp_path) as service:
        response = await service.client.post("/v1/messages", json=ask(max_tokens=10_000))
    body = error(response.json(), "invalid_request_error")
    assert response.status_code == 400 and body["code"] == "context_too_long"
    assert body["detail"]["context_window"] == testing.TEST_MODEL["context_window"]


async def test_auth_with_x_api_key(tmp_path):
    async with serve(tmp_path, auth={"api_keys": [KEY]}) as service:
        missing = await service.client.post("/v1/messages", json=ask())
        wrong = await service.client.post("/v1/messages", json=ask(), headers={"x-api-key": "x"})
        right = await service.client.post(
            "/v1/messages",
            json=ask(),
            headers={"x-api-key": KEY, "anthropic-version": "2023-06-01"},
        )
    for refused in (missing, wrong):
        assert refused.status_code == 401 and "www-authenticate" in refused.headers
        assert error(refused.json(), "authentication_error")["code"] == "unauthorized"
    assert right.status_code == 200
    message(right.json())


async def test_a_body_over_the_limit_is_413(tmp_path):
    async with serve(tmp_path, core={"max_body_bytes": 300}) as service:
        big = ask(messages=[{"role": "user", "content": "x" * 1000}])
        response = await service.client.post("/v1/messages", json=big)
    assert response.status_code == 413
    assert error(response.json(), "request_too_large")["code"] == "request_too_large"


async def test_the_rate_limit_is_429(tmp_path):
    limited = {"default": "1/minute", "routes": ["POST /v1/messages"]}
    sections = {"core": {"plugins_dir": str(ROOT / "plugins")}, "rate_limit": limited}
    async with serve(tmp_path, **sections) as service:
        first = await service.client.post("/v1/messages", json=ask())
        second = await service.client.post("/v1/messages", json=ask())
    assert first.status_code == 200
    assert second.status_code == 429 and int(second.headers["retry-after"]) > 0
    assert error(second.json(), "rate_limit_error")["code"] == "rate_limited"


async def test_at_capacity_is_529_overloaded(tmp_path):
    slow = ask(stream=True, mock={"scenario": "echo", "token_delay_ms": 200})
    async with serve(tmp_path, core={"max_running": 1, "max_waiting": 0}) as service:
        async with service.stream("POST", "/v1/messages", json=slow) as busy:
            assert busy.status == 200
            response = await service.client.post("/v1/messages", json=ask())
    assert response.status_code == 529 and response.headers["retry-after"]
    assert error(response.json(), "overloaded_error")["code"] == "overloaded"


async def test_other_routes_keep_their_own_error_shape(tmp_path):
    async with serve(tmp_path) as service:
        chat = await service.client.post("/v1/chat/completions", json={"messages": []})
        missing = await service.client.get("/v1/messages/nope")
    assert chat.status_code == 422 and chat.json()["code"] == "request_invalid"
    assert "type" not in chat.json()
    assert missing.status_code == 404 and missing.json()["code"] == "not_found"
