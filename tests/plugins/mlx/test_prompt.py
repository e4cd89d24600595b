"""Chat request → template messages → prompt tokens, with the bundled model's real tokenizers."""

from __future__ import annotations

import pytest

from ddx_llm.errors import RequestInvalid
from ddx_llm.plugins.mlx.prompt import (
    check_request,
    render_prompt,
    template_messages,
    template_tools,
)
from ddx_llm.schemas import ChatCompletionRequest

pytestmark = pytest.mark.model

TOOL = {"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}
HISTORY = [
    {"role": "developer", "content": "Be terse."},
    {"role": "user", "content": [{"type": "text", "text": "Weather "},
                                 {"type": "text", "text": "in Paris?"}]},
    {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {"id": "call_1", "type": "function",
             "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}},
        ],
    },
    {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
]  # fmt: skip


def request(**fields) -> ChatCompletionRequest:
    return ChatCompletionRequest(**{"messages": HISTORY, **fields})


def test_messages_are_shaped_for_chat_templates():
    messages = template_messages(request())
    assert messages[0] == {"role": "system", "content": "Be terse."}
    assert messages[1] == {"role": "user", "content": "Weather in Paris?"}
    assert messages[2]["content"] == ""
    assert messages[2]["tool_calls"][0]["function"] == {
        "name": "get_weather", "arguments": {"city": "Paris"},
    }  # fmt: skip
    assert messages[3] == {"role": "tool", "content": "sunny", "tool_call_id": "call_1"}


def test_tools_and_tool_history_reach_the_tools_template(tools_tokenizer):
    chat = request(tools=[TOOL])
    assert check_request(chat, tools_tokenizer, "tools-model") is True
    tokens = render_prompt(tools_tokenizer, template_messages(chat), template_tools(chat), {})
    text = tools_tokenizer.decode(tokens)
    assert '"name": "get_weather"' in text  # the tool list
    assert '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}' in text
    assert "<tool_response>\nsunny\n</tool_response>" in text
    assert text.endswith("<|im_start|>assistant\n")


def test_tools_on_a_model_without_a_tool_parser_are_refused_unless_tool_choice_is_none(
    tokenizer,
):
    with pytest.raises(RequestInvalid) as caught:
        check_request(request(tools=[TOOL]), tokenizer, "plain-model")
    assert caught.value.detail[0]["field"] == "tools"
    assert "plain-model" in caught.value.message + caught.value.detail[0]["message"]
    assert check_request(request(tools=[TOOL], tool_choice="none"), tokenizer, "plain") is False


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"prediction": {"type": "content", "content": "x"}}, "prediction"),
        ({"audio": {"voice": "alloy"}}, "audio"),
    ],
)
def test_unsupported_fields_are_named(tools_tokenizer, fields, field):
    with pytest.raises(RequestInvalid) as caught:
        check_request(request(tools=[TOOL], **fields), tools_tokenizer, "m")
    assert caught.value.detail[0]["field"] == field


@pytest.mark.parametrize(
    "fields",
    [
        {"tool_choice": {"type": "function", "function": {"name": "get_weather"}}},
        {"tool_choice": "required"},
        {"response_format": {"type": "json_schema", "json_schema": {"schema": {}}}},
    ],
)
def test_structured_output_passes_the_check_its_grammar_is_compiled_later(tools_tokenizer, fields):
    assert check_request(request(tools=[TOOL], **fields), tools_tokenizer, "m") is True


def test_text_response_format_and_text_modality_are_accepted(tokenizer):
    chat = request(response_format={"type": "text"}, modalities=["text"])
    assert check_request(chat, tokenizer, "m") is False


def test_a_template_that_refuses_the_conversation_is_a_422(mlx_models_dir):
    from mlx_lm.utils import load_tokenizer

    refusing = "{{ raise_exception('Conversation roles must alternate user/assistant') }}"
    tokenizer = load_tokenizer(
        mlx_models_dir / "SmolLM2-135M-Instruct", {"chat_template": refusing}
    )
    with pytest.raises(RequestInvalid) as caught:
        render_prompt(tokenizer, [{"role": "user", "content": "hi"}], None, {})
    assert "roles must alternate" in caught.value.detail[0]["message"]
