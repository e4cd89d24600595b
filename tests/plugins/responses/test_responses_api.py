"""``POST /v1/responses`` in process on the mock backend (asyncio and trio): bodies, the event
sequence, reasoning, limits, failures, continuation, references, and the official SDK.

Every body is validated as the OpenAI SDK's ``Response`` and every event as its
``ResponseStreamEvent`` (responses_support); the SDK's own streaming helper, which checks the
order of events strictly, reads the streams of the SDK tests.
"""

from __future__ import annotations

import json

import pytest
from openai import NotFoundError
from responses_support import (
    MODEL,
    echo,
    sdk,
    sse_events,
    types,
    valid_item_list,
    valid_response,
)

from ddx_llm import testing

pytestmark = pytest.mark.anyio

URL = "/v1/responses"
TEXT = "the quick brown fox"
WEATHER_TOOL = {
    "type": "function",
    "name": "get_weather",
    "description": "The weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
}


async def test_a_response_object_answers_and_is_stored(conf_dir):
    async with testing.serve(conf_dir) as service:
        answer = await service.client.post(URL, json=echo(TEXT, metadata={"app": "test"}))
        assert answer.status_code == 200, answer.text
        body = answer.json()
        stored = await service.client.get(f"{URL}/{body['id']}")
    response = valid_response(body)
    assert response.output_text == TEXT
    assert (response.status, response.store, response.model) == ("completed", True, MODEL)
    assert response.metadata == {"app": "test"}
    assert response.usage.total_tokens == response.usage.input_tokens + 4
    assert response.usage.output_tokens == 4
    assert response.completed_at is not None
    assert stored.json() == body


async def test_text_streams_as_the_full_event_sequence(conf_dir):
    async with testing.serve(conf_dir) as service:
        answer = await service.client.post(URL, json=echo(TEXT, stream=True))
        assert answer.headers["content-type"].startswith("text/event-stream")
        events = sse_events(answer.text)
        stored = (await service.client.get(f"{URL}/{events[0]['response']['id']}")).json()
    assert types(events) == [
        "response.created", "response.in_progress", "response.output_item.added",
        "response.content_part.added", *["response.output_text.delta"] * 4,
        "response.output_text.done", "response.content_part.done", "response.output_item.done",
        "response.completed",
    ]  # fmt: skip
    item = events[2]["item"]
    assert (item["type"], item["status"], item["content"]) == ("message", "in_progress", [])
    deltas = [e for e in events if e["type"] == "response.output_text.delta"]
    assert {e["item_id"] for e in deltas} == {item["id"]}
    assert "".join(e["delta"] for e in deltas) == TEXT
    assert events[-4]["text"] == TEXT
    assert events[-2]["item"]["status"] == "completed"
    assert events[-1]["response"] == stored
    assert valid_response(stored).output_text == TEXT


async def test_function_calls_stream_their_arguments(conf_dir):
    body = {"model": MODEL, "input": "Weather in Berlin?", "tools": [WEATHER_TOOL], "stream": True}
    async with testing.serve(conf_dir) as service:
        events = sse_events((await service.client.post(URL, json=body)).text)
    assert types(events)[2:] == [
        "response.output_item.added", "response.function_call_arguments.delta",
        "response.function_call_arguments.delta", "response.function_call_arguments.done",
        "response.output_item.done", "response.completed",
    ]  # fmt: skip
    call = events[-1]["response"]["output"][0]
    assert call["type"] == "function_call" and call["status"] == "completed"
    assert (call["call_id"], call["name"]) == ("call_0", "get_weather")
    assert json.loads(call["arguments"]) == {"city": "Berlin"}
    assert events[5]["arguments"] == call["arguments"] and events[5]["name"] == "get_weather"
    assert events[-1]["response"]["tools"][0]["name"] == "get_weather"


async def test_a_reasoning_model_thinks_in_a_reasoning_item(conf_dir):
    body = {**echo(TEXT, stream=True), "mock": {"scenario": "reasoning"}}
    async with testing.serve(conf_dir) as service:
        events = sse_events((await service.client.post(URL, json=body)).text)
        plain = (await service.client.post(URL, json={**body, "stream": False})).json()
    thinking = "".join(e["delta"] for e in events if e["type"] == "response.reasoning_text.delta")
    assert thinking == f"Thinking about: {TEXT}"
    reasoning, message = events[-1]["response"]["output"]
    assert reasoning["type"] == "reasoning" and reasoning["summary"] == []
    assert reasoning["content"] == [{"type": "reasoning_text", "text": thinking}]
    assert message["content"][0]["text"] == TEXT
    usage = events[-1]["response"]["usage"]
    assert usage["output_tokens_details"]["reasoning_tokens"] == len(thinking.split())
    assert usage["output_tokens"] == len(thinking.split()) + len(TEXT.split())
    assert valid_response(plain).output[0].content[0].text == thinking


async def test_max_output_tokens_leaves_the_response_incomplete(conf_dir):
    async with testing.serve(conf_dir) as service:
        plain = (await service.client.post(URL, json=echo(TEXT, max_output_tokens=2))).json()
        events = sse_events(
            (await service.client.post(URL, json=echo(TEXT, max_output_tokens=2, stream=True))).text
        )
    assert plain["status"] == "incomplete"
    assert plain["incomplete_details"] == {"reason": "max_output_tokens"}
    assert plain["output"][0]["status"] == "incomplete"
    assert valid_response(plain).output_text == "the quick"
    assert events[-1]["type"] == "response.incomplete"
    assert events[-2]["item"]["status"] == "incomplete"


async def test_a_generation_that_fails_midway(conf_dir):
    body = {**echo(TEXT), "mock": {"scenario": "error"}}
    async with testing.serve(conf_dir) as service:
        events = sse_events((await service.client.post(URL, json={**body, "stream": True})).text)
        failed_id = events[0]["response"]["id"]
        stored = await service.client.get(f"{URL}/{failed_id}")
        plain = await service.client.post(URL, json=body)
    assert types(events)[-5:] == [
        "response.output_text.delta", "response.output_text.done",
        "response.content_part.done", "response.output_item.done", "response.failed",
    ]  # fmt: skip
    failed = events[-1]["response"]
    assert failed["status"] == "failed" and failed["output"][0]["status"] == "incomplete"
    assert (
        failed["error"]["code"] == "server_error" and "mock failure" in failed["error"]["message"]
    )
    assert stored.json()["status"] == "failed"
    assert plain.status_code == 500
    assert plain.json()["error"]["code"] == "llm_error"


async def test_previous_response_id_continues_the_conversation(conf_dir):
    async with testing.serve(conf_dir) as service:
        client = service.client
        first = (await client.post(URL, json=echo("one two", instructions="Be brief."))).json()
        second = (
            await client.post(URL, json=echo("three four", previous_response_id=first["id"]))
        ).json()
        items = (await client.get(f"{URL}/{second['id']}/input_items?order=asc")).json()
        unknown = await client.post(URL, json=echo("x", previous_response_id="resp_nope"))
    assert valid_response(second).previous_response_id == first["id"]
    valid_item_list(items)
    assert [(i["type"], i.get("role")) for i in items["data"]] == [
        ("message", "user"), ("message", "assistant"), ("message", "user"),
    ]  # fmt: skip
    assert items["data"][1] == first["output"][0]
    assert second["instructions"] is None  # instructions are not carried over (OpenAI's rule)
    assert second["usage"]["input_tokens"] > first["usage"]["input_tokens"] - 4
    assert unknown.status_code == 404
    assert unknown.json()["error"]["code"] == "not_found"
    assert unknown.json()["detail"][0]["field"] == "previous_response_id"


async def test_item_references_resolve_stored_items(conf_dir):
    async with testing.serve(conf_dir) as service:
        client = service.client
        first = (await client.post(URL, json=echo("one two"))).json()
        user_id = (await client.get(f"{URL}/{first['id']}/input_items")).json()["data"][0]["id"]
        answer_id = first["output"][0]["id"]
        refs = [{"type": "item_reference", "id": user_id}, {"id": answer_id}]
        second = await client.post(URL, json=echo([*refs, {"role": "user", "content": "three"}]))
        items = (await client.get(f"{URL}/{second.json()['id']}/input_items?order=asc")).json()
        missing = await client.post(URL, json=echo([{"type": "item_reference", "id": "msg_x"}]))
        twice = await client.post(URL, json=echo([refs[1]], previous_response_id=first["id"]))
    assert second.status_code == 200, second.text
    assert [i["id"] for i in items["data"][:2]] == [user_id, answer_id]
    assert items["data"][1] == first["output"][0]
    assert missing.status_code == 404 and missing.json()["detail"][0]["field"] == "input.0.id"
    assert twice.status_code == 422 and "duplicate item" in twice.json()["message"]


async def test_store_false_keeps_nothing_and_delete_removes(conf_dir):
    async with testing.serve(conf_dir) as service:
        client = service.client
        unstored = (await client.post(URL, json=echo("a b", store=False))).json()
        stored = (await client.post(URL, json=echo("a b"))).json()
        missing = await client.get(f"{URL}/{unstored['id']}")
        deleted = await client.delete(f"{URL}/{stored['id']}")
        again = await client.delete(f"{URL}/{stored['id']}")
        gone = await client.get(f"{URL}/{stored['id']}/input_items")
    assert unstored["store"] is False and missing.status_code == 404
    assert deleted.json() == {"id": stored["id"], "object": "response.deleted", "deleted": True}
    assert again.status_code == 404 and gone.status_code == 404


async def test_input_items_pages(conf_dir):
    conversation = [{"role": "user", "content": f"message {n}"} for n in range(5)]
    async with testing.serve(conf_dir) as service:
        client = service.client
        response = (await client.post(URL, json=echo(conversation))).json()
        items = f"{URL}/{response['id']}/input_items"
        newest = (await client.get(items, params={"limit": 2})).json()
        rest = (await client.get(items, params={"limit": 5, "after": newest["last_id"]})).json()
        oldest = (await client.get(items, params={"order": "asc", "limit": 1})).json()
        bad = [
            await client.get(items, params=params)
            for params in ({"limit": 0}, {"limit": 101}, {"order": "up"}, {"after": "msg_x"},
                           {"stream": "true"}, {"include": "reasoning.encrypted_content"})
        ]  # fmt: skip
    texts = [item["content"][0]["text"] for item in newest["data"] + rest["data"]]
    assert texts == [f"message {n}" for n in (4, 3, 2, 1, 0)]
    assert newest["has_more"] is True and rest["has_more"] is False
    assert oldest["first_id"] == oldest["last_id"] == rest["data"][-1]["id"]
    valid_item_list(newest)
    assert [r.status_code for r in bad] == [422] * 6
    assert [r.json()["detail"][0]["field"] for r in bad] == [
        "limit", "limit", "order", "after", "stream", "include",
    ]  # fmt: skip


async def test_logprobs_when_included(conf_dir):
    body = echo("a b", include=["message.output_text.logprobs"], top_logprobs=1)
    async with testing.serve(conf_dir) as service:
        plain = (await service.client.post(URL, json=body)).json()
        events = sse_events((await service.client.post(URL, json={**body, "stream": True})).text)
    logprobs = valid_response(plain).output[0].content[0].logprobs
    assert [(p.token, p.logprob) for p in logprobs] == [("a", 0.0), (" b", 0.0)]
    assert [e["logprobs"][0]["token"] for e in events if e["type"].endswith("text.delta")] == [
        "a", " b",
    ]  # fmt: skip


async def test_structured_output_through_text_format(conf_dir):
    schema = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
    form = {"type": "json_schema", "name": "place", "schema": schema, "strict": True}
    async with testing.serve(conf_dir) as service:
        answer = await service.client.post(URL, json=echo("where?", text={"format": form}))
    body = answer.json()
    assert answer.status_code == 200, body
    assert isinstance(json.loads(valid_response(body).output_text)["city"], str)
    assert body["text"]["format"] == form


async def test_the_official_sdk_round_trip(conf_dir):
    async with testing.serve(conf_dir) as service:
        client = sdk(service.client)
        call = await client.responses.create(model=MODEL, input="Weather?", tools=[WEATHER_TOOL])
        function_call = call.output[0]
        assert function_call.type == "function_call" and function_call.name == "get_weather"
        follow_up = [{"type": "function_call_output", "call_id": function_call.call_id,
                      "output": "Sunny, 21 degrees"}]  # fmt: skip
        async with client.responses.stream(
            model=MODEL, input=follow_up, previous_response_id=call.id,
            tools=[WEATHER_TOOL], extra_body={"mock": {"scenario": "echo"}},
        ) as stream:  # fmt: skip
            deltas = [event.delta async for event in stream if event.type.endswith("text.delta")]
            final = await stream.get_final_response()
        assert "".join(deltas) == final.output_text == "Weather?"  # the last user message
        fetched = await client.responses.retrieve(final.id)
        assert fetched.output_text == final.output_text
        listed = await client.responses.input_items.list(final.id, order="asc")
        assert [item.type for item in listed.data] == [
            "message", "function_call", "function_call_output",
        ]  # fmt: skip
        await client.responses.delete(final.id)
        with pytest.raises(NotFoundError):
            await client.responses.retrieve(final.id)


async def test_a_client_that_leaves_stops_the_stream_and_nothing_is_stored(conf_dir):
    body = {**echo("one two three four five six", stream=True)}
    body["mock"]["token_delay_ms"] = 50
    async with testing.serve(conf_dir) as service:
        async with service.stream("POST", URL, json=body) as stream:
            received = b""
            async for chunk in stream:
                received += chunk
                if b"output_text.delta" in received:
                    break
        created = json.loads(received.split(b"\n\n")[0].removeprefix(b"data: "))
        stored = await service.client.get(f"{URL}/{created['response']['id']}")
    assert stored.status_code == 404
