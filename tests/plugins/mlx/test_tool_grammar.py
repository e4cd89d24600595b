"""Forced tool calls in the model's own format: whatever a walk through the grammar produces,
the model's own mlx-lm tool parser reads back one call whose arguments validate against the
tool's ``parameters`` (random logits stand in for the model, see ``structured_support.walk``)."""

from __future__ import annotations

import json

import jsonschema
import pytest
from structured_support import CLOCK, PARAMETERS, SCHEMAS, TOOLS, WEATHER, json_format, walk

from ddx_llm.errors import RequestInvalid
from ddx_llm.plugins.mlx.structured import StructuredDecoding
from ddx_llm.plugins.mlx.tools import ToolCallStream
from ddx_llm.plugins.mlx_models import bundled
from ddx_llm.plugins.structured_output.requested import constraint
from ddx_llm.schemas import ChatCompletionRequest

pytestmark = pytest.mark.model

NAMED = {"type": "function", "function": {"name": "get_time"}}


def chat(**fields) -> ChatCompletionRequest:
    return ChatCompletionRequest(messages=[{"role": "user", "content": "hi"}], **fields)


def forced_calls(tokenizer, seeds=range(3), **fields) -> list[tuple[str, dict, str]]:
    """``(name, arguments, text)`` of the call each seed's walk makes, read back through the
    backend's tool-call stream with the tokenizer's own parser."""
    structured = StructuredDecoding(tokenizer, "m")
    request = chat(tools=TOOLS, **fields)
    grammar = structured.compile(constraint(request), request, True)
    calls = []
    for seed in seeds:
        tokens = walk(grammar.processor(), len(tokenizer), seed)
        assert tokens[-1] in structured.end_tokens
        text = tokenizer.decode(tokens[:-1])
        stream = ToolCallStream(
            tokenizer.tool_call_start, tokenizer.tool_call_end, tokenizer.tool_parser, TOOLS
        )
        header, arguments = stream.feed(text) + stream.finish()
        calls.append((header.name, json.loads(arguments.arguments), text))
    return calls


def test_a_named_call_is_that_call_with_valid_arguments(tools_tokenizer):
    for name, arguments, text in forced_calls(tools_tokenizer, tool_choice=NAMED):
        assert name == "get_time"
        jsonschema.validate(arguments, CLOCK["function"]["parameters"])
        assert text.startswith('<tool_call>\n{"name": "get_time", "arguments": {')
        assert text.endswith("}}\n</tool_call>")


def test_required_calls_one_of_the_tools_with_valid_arguments(tools_tokenizer):
    calls = forced_calls(tools_tokenizer, seeds=range(4), tool_choice="required")
    for name, arguments, _ in calls:
        jsonschema.validate(arguments, PARAMETERS[name])
    assert {name for name, _, _ in calls} == {"get_weather", "get_time"}


def test_the_templates_own_rendering_of_a_call_is_in_the_grammar(tools_tokenizer):
    call = {"id": "c", "type": "function",
            "function": {"name": "get_weather", "arguments": {"city": "Paris"}}}  # fmt: skip
    messages = [{"role": "user", "content": "hi"},
                {"role": "assistant", "content": "", "tool_calls": [call]}]  # fmt: skip
    rendered = tools_tokenizer.apply_chat_template(messages, tokenize=False)
    text = rendered[rendered.index("<tool_call>") : rendered.index("</tool_call>") + 12]
    structured = StructuredDecoding(tools_tokenizer, "m")
    request = chat(
        tools=TOOLS, tool_choice={"type": "function", "function": {"name": "get_weather"}}
    )
    matcher = structured.compile(constraint(request), request, True).processor().matcher
    assert matcher.consume_tokens(tools_tokenizer.encode(text, add_special_tokens=False))
    assert matcher.is_accepting()


@pytest.mark.parametrize("template", [None, "{{ 'name[ARGS]{} (v11)' }}"])
def test_mistral_calls_in_both_of_its_styles_are_read_back(mlx_models_dir, template):
    from mlx_lm.utils import load_tokenizer

    config = {"tool_parser_type": "mistral"}
    if template:
        config["chat_template"] = template
    tokenizer = load_tokenizer(mlx_models_dir / bundled.BUNDLED_MODEL_ID, config)
    for name, arguments, text in forced_calls(tokenizer, seeds=range(2), tool_choice="required"):
        jsonschema.validate(arguments, PARAMETERS[name])
        assert text.startswith(f"[TOOL_CALLS]{name}[ARGS]{{" if template else "[TOOL_CALLS][{")


def test_a_json_answer_may_be_a_call_when_tools_are_offered(tools_tokenizer):
    structured = StructuredDecoding(tools_tokenizer, "m")
    request = chat(tools=[WEATHER], response_format=json_format(SCHEMAS["enum"]))
    grammar = structured.compile(constraint(request), request, True)
    texts = [tools_tokenizer.decode(walk(grammar.processor(), len(tools_tokenizer), s)[:-1])
             for s in range(6)]  # fmt: skip
    answers = [json.loads(text) for text in texts if text.startswith("{")]
    calls = [text for text in texts if text.startswith("<tool_call>")]
    assert answers and calls and len(answers) + len(calls) == len(texts)
    for answer in answers:
        jsonschema.validate(answer, SCHEMAS["enum"])
    for text in calls:
        stream = ToolCallStream("<tool_call>", "</tool_call>", tools_tokenizer.tool_parser)
        header, arguments = stream.feed(text)
        assert header.name == "get_weather"
        jsonschema.validate(json.loads(arguments.arguments), PARAMETERS["get_weather"])


@pytest.mark.parametrize("fields", [{"tool_choice": "required"},
                                    {"response_format": {"type": "json_object"}}])  # fmt: skip
def test_a_tool_format_that_is_not_json_is_422_naming_the_parser(mlx_models_dir, fields):
    from mlx_lm.utils import load_tokenizer

    tokenizer = load_tokenizer(
        mlx_models_dir / bundled.TOOLS_MODEL_ID, {"tool_parser_type": "qwen3_coder"}
    )
    structured = StructuredDecoding(tokenizer, "coder")
    request = chat(tools=TOOLS, **fields)
    with pytest.raises(RequestInvalid) as caught:
        structured.compile(constraint(request), request, True)
    field = "tool_choice" if "tool_choice" in fields else "response_format"
    assert caught.value.detail[0]["field"] == field
    assert "qwen3_coder" in caught.value.detail[0]["message"]
    plain = chat(tools=TOOLS, tool_choice="none", response_format={"type": "json_object"})
    assert structured.compile(constraint(plain), plain, False) is not None  # tools not offered
