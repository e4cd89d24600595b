"""The Responses and Messages surfaces on the omni backend, with the official SDKs: omni is a
plain backend of the core's pipeline, so every surface works on it (or refuses by name)."""

from __future__ import annotations

import anthropic
import openai
import pytest
from omni_support import BUNDLED, KEY

pytestmark = [pytest.mark.live, pytest.mark.model]

QUESTION = "What is the capital of France?"


def test_responses_create_stream_and_continue(omni_server):
    client = openai.OpenAI(base_url=omni_server.url + "/v1", api_key=KEY, max_retries=0)
    first = client.responses.create(
        model=BUNDLED, input=QUESTION, max_output_tokens=6, temperature=0
    )
    assert first.status in ("completed", "incomplete")
    assert first.output_text.strip()
    assert first.usage.output_tokens <= 6
    events = list(
        client.responses.create(
            model=BUNDLED,
            input="And of Spain?",
            previous_response_id=first.id,
            max_output_tokens=4,
            temperature=0,
            stream=True,
        )
    )
    assert events[0].type == "response.created"
    assert events[-1].type in ("response.completed", "response.incomplete")
    assert any(event.type == "response.output_text.delta" for event in events)


def test_responses_refuse_what_omni_cannot_honour_by_name(omni_server):
    client = openai.OpenAI(base_url=omni_server.url + "/v1", api_key=KEY, max_retries=0)
    with pytest.raises(openai.UnprocessableEntityError) as refused:
        client.responses.create(
            model=BUNDLED, input=QUESTION, max_output_tokens=4, extra_body={"seed": 7}
        )
    assert "seed" in str(refused.value)


def test_messages_create_and_stream(omni_server):
    client = anthropic.Anthropic(base_url=omni_server.url, api_key=KEY, max_retries=0)
    message = client.messages.create(
        model=BUNDLED,
        max_tokens=6,
        messages=[{"role": "user", "content": QUESTION}],
    )
    assert message.content[0].type == "text" and message.content[0].text.strip()
    assert message.stop_reason in ("end_turn", "max_tokens")
    with client.messages.stream(
        model=BUNDLED, max_tokens=4, messages=[{"role": "user", "content": QUESTION}]
    ) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text.strip() and final.usage.output_tokens <= 4
