"""Our chat request → the omni upstream's (:mod:`ddx_llm.plugins.omni.request`): every refusal
with its field and reason, the body forwarded (always a stream with usage, one token more than
promised, the folder as ``model``, vendor fields along), the completion limit, the scope."""

from __future__ import annotations

import json

import pytest

from ddx_llm.errors import RequestInvalid
from ddx_llm.plugins.omni.request import (
    check_supported,
    completion_limit,
    upstream_body,
    upstream_scope,
)
from ddx_llm.schemas import ChatCompletionRequest

MESSAGES = [{"role": "user", "content": "Hi"}]
IGNORED = "the omni backend's upstream router ignores it"
FOLDER = "/srv/models/SmolLM2-135M-Instruct"
TOOLS = [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]


def chat(**fields) -> ChatCompletionRequest:
    return ChatCompletionRequest.model_validate({"messages": MESSAGES, **fields})


def refusal(request: ChatCompletionRequest, *, structured_output: bool = False) -> dict:
    with pytest.raises(RequestInvalid) as caught:
        check_supported(request, structured_output=structured_output)
    error = caught.value
    assert (error.status, error.code) == (422, "request_invalid")
    problems = {item["field"]: item["message"] for item in error.detail}
    assert error.message == f"not supported by the omni backend: {', '.join(problems)}"
    assert {item["type"] for item in error.detail} == {"unsupported"}
    return problems


@pytest.mark.parametrize(
    ("fields", "field", "reason"),
    [
        ({"stop": ["\n"]}, "stop", IGNORED),
        ({"seed": 0}, "seed", IGNORED),
        ({"logit_bias": {"42": 1.0}}, "logit_bias", IGNORED),
        ({"frequency_penalty": 0.5}, "frequency_penalty", IGNORED),
        ({"parallel_tool_calls": False}, "parallel_tool_calls", IGNORED),
        # a forced call needs tools (the request schema says so); the omni backend refuses it
        ({"tool_choice": "required", "tools": TOOLS}, "tool_choice", IGNORED),
        ({"tool_choice": "none"}, "tool_choice", IGNORED),
        ({"tool_choice": {"type": "function", "function": {"name": "f"}}, "tools": TOOLS},
         "tool_choice", IGNORED),
        ({"presence_penalty": 0.5}, "presence_penalty",
         "the omni backend's upstream router applies it as a multiplicative repetition "
         "penalty, not as OpenAI's presence penalty"),
        ({"response_format": {"type": "json_object"}}, "response_format",
         "the omni backend's upstream router ignores json_object"),
        ({"response_format": {"type": "json_schema", "json_schema": {"name": "x"}}},
         "response_format",
         "json_schema needs the structured-output add-on (outlines), which is not installed"),
        ({"adapter_path": "/tmp/lora"}, "adapter_path",
         "not accepted: models are chosen through the registry"),
        ({"draft_model": "/tmp/m"}, "draft_model",
         "not accepted: models are chosen through the registry"),
        ({"draft-model": "/tmp/m"}, "draft-model",
         "not accepted: models are chosen through the registry"),
        ({"top_logprobs": 2}, "top_logprobs",
         "needs logprobs, which the omni backend cannot report"),
    ],
)  # fmt: skip
def test_each_refusal_names_its_field_and_why(fields, field, reason):
    assert refusal(chat(**fields)) == {field: reason}


def test_logprobs_are_refused_rather_than_reported_with_tokens_missing():
    reason = refusal(chat(logprobs=True))["logprobs"]
    assert "would be missing" in reason


def test_every_refused_field_is_named_at_once():
    problems = refusal(chat(stop="x", seed=1, adapter_path="/x", logprobs=True))
    assert list(problems) == ["adapter_path", "stop", "seed", "logprobs"]


def test_what_the_upstream_honours_passes():
    tools = [{"type": "function", "function": {"name": "get_weather", "parameters": {}}}]
    for request in (
        chat(),
        chat(temperature=0, top_p=0.9, max_tokens=5, stream=True, user="u"),
        chat(tools=tools, tool_choice="auto", parallel_tool_calls=True),
        chat(presence_penalty=0, frequency_penalty=0, logprobs=False, top_logprobs=0),
        chat(response_format={"type": "text"}, extra_body={"top_k": 5}, enable_thinking=False),
    ):
        check_supported(request, structured_output=False)
    schema = {"type": "json_schema", "json_schema": {"name": "x", "schema": {}}}
    check_supported(chat(response_format=schema), structured_output=True)


def test_the_body_is_always_a_stream_with_usage_and_one_token_more():
    request = chat(
        model="SmolLM2-135M-Instruct", max_completion_tokens=5, max_tokens=9,
        stream_options={"include_usage": False, "other": 1},
        extra_body={"top_k": 5}, enable_thinking=False,
    )  # fmt: skip
    body = upstream_body(request, FOLDER, 5)
    assert body["model"] == FOLDER
    assert body["stream"] is True
    assert body["stream_options"] == {"include_usage": True, "other": 1}
    assert body["max_tokens"] == 6 and "max_completion_tokens" not in body
    assert (body["extra_body"], body["enable_thinking"]) == ({"top_k": 5}, False)
    assert body["messages"] == MESSAGES  # no null fields added
    assert json.loads(json.dumps(body)) == body
    assert "max_tokens" not in upstream_body(request, FOLDER, None)


def test_a_non_streamed_request_is_streamed_upstream():
    body = upstream_body(chat(stream=False), FOLDER, 3)
    assert (body["stream"], body["stream_options"], body["max_tokens"]) == (
        True, {"include_usage": True}, 4,
    )  # fmt: skip


def test_the_completion_limit():
    assert completion_limit(chat(max_tokens=7), 100, 8192, 2048) == 7
    assert completion_limit(chat(max_tokens=7, max_completion_tokens=3), 100, 8192, 2048) == 3
    assert completion_limit(chat(), 100, 8192, 2048) == 2048
    assert completion_limit(chat(), 8000, 8192, 2048) == 192  # what the window leaves
    assert completion_limit(chat(), 8192, 8192, 2048) == 1


def test_the_upstream_scope_carries_nothing_of_our_client():
    scope = upstream_scope(123)
    assert (scope["method"], scope["path"], scope["query_string"]) == (
        "POST", "/v1/chat/completions", b"",
    )  # fmt: skip
    assert scope["asgi"]["spec_version"] == "2.4"
    assert dict(scope["headers"])[b"content-length"] == b"123"
    assert scope["client"] is None and scope["state"] == {}


def test_top_k_and_min_p_go_where_the_upstream_reads_them():
    """The upstream router takes its sampler's top_k and min_p from a body field named
    extra_body; a client's own extra_body fields are kept beside them."""
    body = upstream_body(chat(top_k=40, min_p=0.05, extra_body={"xtc_probability": 0.1}), FOLDER, 5)
    assert body["extra_body"] == {"xtc_probability": 0.1, "top_k": 40, "min_p": 0.05}
    assert "top_k" not in body and "min_p" not in body
    assert "extra_body" not in upstream_body(chat(), FOLDER, 5)
