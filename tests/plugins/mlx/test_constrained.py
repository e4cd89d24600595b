"""Grammar states as logits processors, and their compilation, on the bundled model's real
tokenizer: random logits stand in for the model (see ``structured_support.walk``), so any
answer the grammar lets through must validate, whatever the model would have preferred."""

from __future__ import annotations

import json

import jsonschema
import pytest
from structured_support import BAD_SCHEMAS, SCHEMAS, TOOLS, json_format, walk

from ddx_llm.errors import LlmError, RequestInvalid
from ddx_llm.plugins.mlx.jobs import Failed, Finished, Job
from ddx_llm.plugins.mlx.logprobs import TokenTexts
from ddx_llm.plugins.mlx.sampling import SamplingParams
from ddx_llm.plugins.mlx.sequence import Sequence
from ddx_llm.plugins.mlx.structured import StructuredDecoding
from ddx_llm.plugins.structured_output.requested import constraint
from ddx_llm.schemas import ChatCompletionRequest

pytestmark = pytest.mark.model


def chat(**fields) -> ChatCompletionRequest:
    return ChatCompletionRequest(messages=[{"role": "user", "content": "hi"}], **fields)


def compiled(structured: StructuredDecoding, request: ChatCompletionRequest):
    use_tools = bool(request.tools) and request.tool_choice != "none"
    return structured.compile(constraint(request), request, use_tools)


@pytest.fixture(scope="module")
def structured(tokenizer) -> StructuredDecoding:
    return StructuredDecoding(tokenizer, "SmolLM2")


def allowed(processor, context: list[int], vocab: int) -> set[int]:
    import mlx.core as mx

    masked = processor(mx.array(context), mx.zeros((1, vocab)))
    return set(mx.where(mx.isinf(masked[0]), -1, mx.arange(vocab)).tolist()) - {-1}


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("name", [*SCHEMAS, "json_object"])
def test_any_walk_through_a_schema_grammar_is_a_valid_answer(structured, tokenizer, name, seed):
    fmt = {"type": "json_object"} if name == "json_object" else json_format(SCHEMAS[name])
    schema = SCHEMAS.get(name, {"type": "object"})
    processor = compiled(structured, chat(response_format=fmt)).processor()
    tokens = walk(processor, len(tokenizer), seed)
    assert tokens[-1] in structured.end_tokens  # ended by the grammar, not by the limit
    answer = json.loads(tokenizer.decode(tokens[:-1]))
    jsonschema.validate(answer, schema)
    assert processor.error is None and processor.matcher.is_stopped()
    assert processor.masks == len(tokens)


def test_the_end_of_turn_is_allowed_exactly_when_the_answer_is_complete(structured, tokenizer):
    processor = compiled(structured, chat(response_format=json_format(SCHEMAS["enum"])))
    processor = processor.processor()
    vocab, end = len(tokenizer), structured.end_tokens[0]
    answer = tokenizer.encode('{"capital":"Lyon"}', add_special_tokens=False)
    context = [1]
    for token in answer:
        step = allowed(processor, context, vocab)
        assert token in step and end not in step
        context.append(token)
    assert allowed(processor, context, vocab) == {end}  # nothing may follow the object


def test_logits_wider_than_the_vocabulary_are_masked_beyond_it(structured, tokenizer):
    import mlx.core as mx

    processor = compiled(structured, chat(response_format={"type": "json_object"})).processor()
    vocab = len(tokenizer)
    masked = processor(mx.array([1]), mx.zeros((1, vocab + 64)))
    assert masked.shape == (1, vocab + 64)
    assert mx.all(mx.isinf(masked[0, vocab:])).item()
    assert not mx.all(mx.isinf(masked[0, :vocab])).item()


def test_a_refused_token_ends_the_turn_and_fails_the_request(structured, tokenizer):
    processor = compiled(structured, chat(response_format={"type": "json_object"})).processor()
    vocab = len(tokenizer)
    (letter,) = tokenizer.encode("x", add_special_tokens=False)  # an object starts with "{"
    assert letter not in allowed(processor, [1], vocab)
    assert allowed(processor, [1, letter], vocab) == set(structured.end_tokens)
    assert "x" in processor.error
    job = Job([1], SamplingParams(max_tokens=4, temperature=0))
    sequence = Sequence(job, tokenizer.detokenizer, TokenTexts(tokenizer), 0, processor)
    failed = sequence.outcome(Finished("stop", 1, 2))
    assert isinstance(failed, Failed) and isinstance(failed.error, LlmError)
    assert "constrained decoding failed" in failed.error.message
    cancelled = Finished("cancelled", 1, 2)
    assert sequence.outcome(cancelled) is cancelled  # a client gone is not a grammar failure


def test_a_grammar_is_compiled_once_and_each_sequence_gets_its_own_state(tokenizer):
    structured = StructuredDecoding(tokenizer, "SmolLM2")
    assert structured.status()["tokenizer_ready"] is False  # built on first use only
    request = chat(response_format=json_format(SCHEMAS["bounds_and_pattern"]))
    first, second = compiled(structured, request), compiled(structured, request)
    assert first is second
    status = structured.status()
    assert (status["tokenizer_ready"], status["grammars_compiled"]) == (True, 1)
    assert (status["grammars_cached"], status["grammar_cache_hits"]) == (1, 1)
    one, two = first.processor(), first.processor()
    vocab = len(tokenizer)
    opening = tokenizer.encode('{"city":"Ab"', add_special_tokens=False)
    context = [1]
    for token in opening:  # one state walks into the answer ...
        assert token in allowed(one, context, vocab)
        context.append(token)
    inside = allowed(one, context, vocab)
    start = allowed(two, [1], vocab)  # ... the other is still at its start
    assert opening[0] in start and start != inside


def test_the_grammar_cache_is_bounded(tokenizer):
    structured = StructuredDecoding(tokenizer, "SmolLM2", cache_entries=2)
    for name in SCHEMAS:
        compiled(structured, chat(response_format=json_format(SCHEMAS[name])))
    assert structured.status()["grammars_cached"] == 2
    assert structured.status()["grammars_compiled"] == len(SCHEMAS)


@pytest.mark.parametrize(("schema", "reason"), BAD_SCHEMAS)
def test_a_schema_llguidance_cannot_enforce_is_422_naming_the_field(structured, schema, reason):
    with pytest.raises(RequestInvalid) as caught:
        compiled(structured, chat(response_format=json_format(schema)))
    assert caught.value.detail[0]["field"] == "response_format"
    assert reason in caught.value.detail[0]["message"]


def test_bad_tool_parameters_are_422_naming_that_tool(tools_tokenizer):
    structured = StructuredDecoding(tools_tokenizer, "tools")
    broken = {"type": "function", "function": {"name": "f", "parameters": {"type": "strin"}}}
    with pytest.raises(RequestInvalid) as caught:
        compiled(structured, chat(tools=[*TOOLS, broken], tool_choice="required"))
    assert caught.value.detail[0]["field"] == "tools.2.function.parameters"
