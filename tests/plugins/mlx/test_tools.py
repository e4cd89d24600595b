"""The streaming tool-call parser on synthetic token texts, with mlx-lm's own parsers."""

from __future__ import annotations

import json
import re

import pytest
from support import require_module

from ddx_llm.backend import ToolCallDelta
from ddx_llm.plugins.mlx.tools import ToolCallStream, normalize_call

json_tools = require_module("mlx_lm.tool_parsers.json_tools")

CALL_ID = re.compile(r"^call_[0-9a-f]{24}$")
# How SmolLM2's tokenizer splits a Hermes-style call: the markers are plain text, many tokens.
CALL_PIECES = ["<", "tool", "_", "call", ">", "\n", '{"', "name", '":', ' "', "get", "_", "weather",
               '",', ' "', "arguments", '":', ' {"', "city", '":', ' "', "Paris", '"', "}}", "\n",
               "</", "tool", "_", "call", ">"]  # fmt: skip
CALL_TEXT = "".join(CALL_PIECES)


def stream(**kwargs) -> ToolCallStream:
    return ToolCallStream(
        json_tools.tool_call_start, json_tools.tool_call_end, json_tools.parse_tool_call, **kwargs
    )


def run(pieces: list[str], **kwargs) -> tuple[list, ToolCallStream]:
    parser = stream(**kwargs)
    out = []
    for piece in pieces:
        out.extend(parser.feed(piece))
    out.extend(parser.finish())
    return out, parser


def merged(out: list) -> list:
    """Adjacent text items joined (how many text items a split produces is not the contract)."""
    result: list = []
    for item in out:
        if isinstance(item, str) and result and isinstance(result[-1], str):
            result[-1] += item
        else:
            result.append(item)
    return result


def test_a_call_split_over_many_tokens_becomes_a_header_then_arguments():
    out, parser = run(CALL_PIECES)
    assert parser.calls == 1
    header, arguments = out
    assert isinstance(header, ToolCallDelta) and isinstance(arguments, ToolCallDelta)
    assert (header.index, header.name, header.arguments) == (0, "get_weather", "")
    assert CALL_ID.match(header.id)
    assert (arguments.index, arguments.id, arguments.name) == (0, None, None)
    assert json.loads(arguments.arguments) == {"city": "Paris"}


def test_marker_prefixes_are_held_back_until_they_resolve():
    parser = stream()
    assert parser.feed("Let me check. <") == ["Let me check. "]
    assert parser.feed("tool") == []
    assert parser.feed("box>") == ["<toolbox>"]  # not a marker after all: released as text


def test_text_around_calls_and_two_calls_keep_order_and_indexes():
    second = CALL_TEXT.replace("Paris", "Rome")
    out, parser = run(["Sure.", CALL_TEXT, "\n", second, " Done."])
    kinds = [item if isinstance(item, str) else (item.index, item.name) for item in merged(out)]
    assert kinds[0] == "Sure."
    assert kinds[1:3] == [(0, "get_weather"), (0, None)]
    assert kinds[3] == "\n"
    assert kinds[4:6] == [(1, "get_weather"), (1, None)]
    assert kinds[6] == " Done."
    assert parser.calls == 2


@pytest.mark.parametrize(
    "body",
    [
        '{"name": "get_weather", "arguments": {"city": "Par',  # truncated JSON
        "not json at all",
        '{"arguments": {"city": "Paris"}}',  # no name
        '{"name": "get_weather", "arguments": ["Paris"]}',  # arguments not an object
        '{"name": "get_weather", "arguments": "{not json"}',
        '["get_weather"]',
    ],
)
def test_a_malformed_call_comes_back_verbatim_as_text(body):
    text = f"<tool_call>{body}</tool_call>"
    out, parser = run(["Hi ", text[:7], text[7:]])
    assert merged(out) == ["Hi " + text]
    assert parser.calls == 0


def test_arguments_may_be_missing_or_a_json_string():
    out, _ = run(['<tool_call>{"name": "now"}</tool_call>'])
    assert json.loads(out[1].arguments) == {}
    out, _ = run(['<tool_call>{"name": "f", "arguments": "{\\"a\\": 1}"}</tool_call>'])
    assert json.loads(out[1].arguments) == {"a": 1}


def test_a_call_cut_off_by_the_end_of_generation_is_text():
    out, parser = run(CALL_PIECES[:12])
    assert merged(out) == ["".join(CALL_PIECES[:12])]
    assert parser.calls == 0


def test_a_parser_that_raises_anything_is_treated_as_text():
    def explode(text, tools):
        raise KeyError("arguments")

    parser = ToolCallStream("<tool_call>", "</tool_call>", explode)
    assert parser.feed("<tool_call>x</tool_call>") == ["<tool_call>x</tool_call>"]


def test_tools_are_passed_to_the_parser():
    seen = []
    parser = ToolCallStream(
        "[TOOL_CALLS]", "", lambda text, tools: seen.append(tools) or {"name": "f"}, tools=["T"]
    )
    assert parser.feed("[TOOL_CALLS]f{}") == []  # end-less format: the call runs to the end
    header, arguments = parser.finish()
    assert (header.name, arguments.arguments, seen) == ("f", "{}", [["T"]])


def test_max_calls_closes_the_stream_after_the_first_call():
    out, parser = run([CALL_TEXT + " and " + CALL_TEXT + " tail"], max_calls=1)
    assert [type(item) for item in out] == [ToolCallDelta, ToolCallDelta]
    assert parser.closed and parser.calls == 1
    assert parser.feed("more") == []


def test_normalize_call_accepts_a_list_of_calls():
    calls = normalize_call([{"name": "a", "arguments": {}}, {"name": "b", "arguments": {"x": 1}}])
    assert calls == [("a", "{}"), ("b", '{"x": 1}')]
    assert normalize_call([]) is None
    assert normalize_call(None) is None
