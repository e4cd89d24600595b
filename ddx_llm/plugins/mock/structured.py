"""What the mock answers to a request that asks for structure: a deterministic instance.

``response_format`` ``json_schema`` → a schema-valid instance as the answer text (the same
schema always gives the same instance); ``json_object`` → ``{}``; ``tool_choice`` naming a
function (or ``required``) → a call to that function with schema-valid arguments.  The
instance comes from :mod:`ddx_llm.plugins.structured_output.instance`; it is cut by
``max_tokens`` like any answer (``finish_reason: "length"``: the text is then incomplete JSON).
"""

from __future__ import annotations

import json
from collections.abc import Iterator

from ddx_llm.backend import Delta, ToolCallDelta
from ddx_llm.errors import RequestInvalid
from ddx_llm.plugins.structured_output.instance import instance
from ddx_llm.plugins.structured_output.requested import Constraint, grammar
from ddx_llm.schemas import ChatCompletionRequest

PIECE_CHARS = 8
"""Characters per streamed piece (one completion token each)."""
CALL_ID = "call_0"


def answer_for(item: Constraint) -> str:
    """The instance ``item`` asks for (raises RequestInvalid when it cannot be made)."""
    try:
        return instance(grammar(item))
    except ValueError as exc:
        raise RequestInvalid(
            f"{item.field}: the mock cannot make an instance of this schema",
            detail=[{"field": item.field, "message": str(exc), "type": "unsupported"}],
        ) from None


def structured_pieces(
    item: Constraint, text: str, request: ChatCompletionRequest
) -> Iterator[Delta]:
    """The deltas of the instance ``text``: answer text, or one tool call."""
    limit = request.completion_limit
    pieces = [text[i : i + PIECE_CHARS] for i in range(0, len(text), PIECE_CHARS)] or [""]
    if item.kind == "tool_call":
        name, arguments = item.tool, text
        if name is None:  # required, several tools: the instance names the function
            chosen = json.loads(text)
            name, arguments = chosen["name"], json.dumps(chosen["arguments"])
        pieces = [arguments[i : i + PIECE_CHARS] for i in range(0, len(arguments), PIECE_CHARS)]
        yield Delta(tool_calls=[ToolCallDelta(0, id=CALL_ID, name=name)], tokens=1)
        limit = None if limit is None else limit - 1
    for count, piece in enumerate(pieces):
        if limit is not None and count >= limit:
            yield Delta(finish_reason="length")
            return
        if item.kind == "tool_call":
            yield Delta(tool_calls=[ToolCallDelta(0, arguments=piece)], tokens=1)
        else:
            yield Delta(content=piece, tokens=1)
    yield Delta(finish_reason="tool_calls" if item.kind == "tool_call" else "stop")
