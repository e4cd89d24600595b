"""Deltas → Anthropic events and the Message they add up to; stop sequences across pieces."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from messages_support import EVENT, message

from ddx_llm.backend import Delta, ToolCallDelta, Usage
from ddx_llm.errors import LlmError
from ddx_llm.plugins.messages.ended_usage import EndedUsage
from ddx_llm.plugins.messages.shaping import MessageShaper
from ddx_llm.stop_strings import StopMatcher, held_suffix

pytestmark = pytest.mark.anyio


async def feed(*deltas: Delta) -> AsyncIterator[Delta]:
    for delta in deltas:
        yield delta


def shaper(stops: list[str] | None = None) -> MessageShaper:
    return MessageShaper("m", request_id="r", ended=EndedUsage(), stop_sequences=stops)


def end(reason: str = "stop") -> Delta:
    return Delta(finish_reason=reason, usage=Usage(5, 4))


def call(index: int, call_id: str | None = None, name: str | None = None, args: str = ""):
    return Delta(tool_calls=[ToolCallDelta(index, call_id, name, args)], tokens=1)


async def test_text_then_two_tool_calls():
    deltas = [
        Delta(content="Checking", tokens=1),
        call(0, "c0", "get_weather", '{"city":'),
        call(0, args='"Berlin"}'),
        call(1, "c1", "get_time"),
        end("tool_calls"),
    ]
    events = [e.model_dump(mode="json") async for e in shaper().events(feed(*deltas))]
    for event in events:
        EVENT.validate_python(event)
    kinds = [(e["type"], e.get("index")) for e in events]
    assert kinds == [
        ("message_start", None),
        ("content_block_start", 0), ("content_block_delta", 0), ("content_block_stop", 0),
        ("content_block_start", 1), ("content_block_delta", 1), ("content_block_delta", 1),
        ("content_block_stop", 1),
        ("content_block_start", 2), ("content_block_stop", 2),
        ("message_delta", None), ("message_stop", None),
    ]  # fmt: skip
    answer = message((await shaper().collect(feed(*deltas))).model_dump(mode="json"))
    assert [block.type for block in answer.content] == ["text", "tool_use", "tool_use"]
    assert answer.content[1].input == {"city": "Berlin"} and answer.content[2].input == {}
    assert (answer.stop_reason, answer.usage.input_tokens, answer.usage.output_tokens) == (
        "tool_use", 5, 4,
    )  # fmt: skip


async def test_a_stop_sequence_held_across_pieces_never_leaks():
    deltas = [Delta(content=p, tokens=1) for p in ("Hello wo", "rld! E", "ND more")] + [end()]
    answer = await shaper(["END", "xyz"]).collect(feed(*deltas))
    assert answer.content[0].text == "Hello world! "
    assert (answer.stop_reason, answer.stop_sequence) == ("stop_sequence", "END")
    assert answer.usage.output_tokens == 3  # input: 0, no core here to report RequestDone


async def test_held_text_is_released_when_the_answer_ends():
    deltas = [Delta(content="abc E", tokens=1), end("length")]
    answer = await shaper(["END"]).collect(feed(*deltas))
    assert answer.content[0].text == "abc E" and answer.stop_reason == "max_tokens"


@pytest.mark.parametrize(
    ("deltas", "words"),
    [
        ([call(0, "a", "f"), call(1, "b", "g"), call(0, args="{}"), end()], "interleaved"),
        ([call(0, args="{}"), end()], "without its id and name"),
        ([call(0, "a", "f", "[1]"), end("tool_calls")], "not a JSON object"),
        ([Delta(content="x")], "without a finish reason"),
        ([Delta(finish_reason="stop")], "without usage"),
        ([Delta(finish_reason="content_filter", usage=Usage(1, 1))], "unknown reason"),
    ],
)
async def test_backend_faults_are_errors(deltas, words):
    with pytest.raises(LlmError, match=words):
        await shaper().collect(feed(*deltas))


def test_stop_matcher():
    matcher = StopMatcher(["STOP", "ST!"])
    assert matcher.feed("a S") == ("a ", None)
    assert matcher.feed("T") == ("", None)
    assert matcher.feed("x") == ("STx", None)
    assert matcher.feed("y ST") == ("y ", None)
    assert matcher.feed("! tail") == ("", "ST!")
    assert StopMatcher(None).feed("STOP") == ("STOP", None)
    held = StopMatcher(["abc"])
    assert held.feed("xab") == ("x", None) and held.flush() == "ab"
    assert held_suffix("xxab", ["abc", "b"]) == 2
