"""The Responses surface among the other plugins: auth and per-client storage, lifecycle events
and metrics, ``/openapi.json``, and disabling the plugin by name."""

from __future__ import annotations

import hashlib
import json

import pytest
from openapi_spec_validator import validate
from responses_support import echo
from support import documented, write_conf

from ddx_llm import hookimpl, testing
from ddx_llm.events import RequestDone, RequestEvent

pytestmark = pytest.mark.anyio

URL = "/v1/responses"
KEYS = {"alice": "sk-responses-alice-0001", "bob": "sk-responses-bob-0002"}


def as_(name: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {KEYS[name]}"}


@pytest.fixture
def named_keys(monkeypatch) -> None:
    digests = {name: hashlib.sha256(key.encode()).hexdigest() for name, key in KEYS.items()}
    monkeypatch.setenv("DDX_LLM_API_KEY_DIGESTS", json.dumps(digests))


async def test_one_key_never_sees_another_keys_responses(conf_dir, named_keys):
    async with testing.serve(conf_dir) as service:
        client = service.client
        mine = (await client.post(URL, json=echo("secret plans"), headers=as_("alice"))).json()
        rid, item = mine["id"], mine["output"][0]["id"]
        theirs = [
            await client.get(f"{URL}/{rid}", headers=as_("bob")),
            await client.get(f"{URL}/{rid}/input_items", headers=as_("bob")),
            await client.delete(f"{URL}/{rid}", headers=as_("bob")),
            await client.post(URL, json=echo("x", previous_response_id=rid), headers=as_("bob")),
            await client.post(
                URL, json=echo([{"type": "item_reference", "id": item}]), headers=as_("bob")
            ),
        ]
        unknown = await client.get(f"{URL}/resp_unknown", headers=as_("bob"))
        anonymous = await client.get(f"{URL}/{rid}")
        still_mine = await client.get(f"{URL}/{rid}", headers=as_("alice"))
    assert [r.status_code for r in theirs] == [404] * 5
    # another key's id and an unknown id are indistinguishable
    assert documented(theirs[0].json())["message"].replace(rid, "ID") == documented(unknown.json())[
        "message"
    ].replace("resp_unknown", "ID")
    assert anonymous.status_code == 401
    assert still_mine.json() == mine


class Recorder:
    @hookimpl
    def ddx_llm_observe(self, event, app):
        app.state("recorder", list).append(event)


async def test_events_and_metrics_name_the_surface(conf_dir, named_keys):
    async with testing.serve(conf_dir, plugins=[("recorder", Recorder())]) as service:
        await service.client.post(URL, json=echo("a b c", stream=True), headers=as_("alice"))
        await service.client.post(URL, json=echo("a b c"), headers=as_("alice"))
        metrics = (await service.client.get("/metrics")).text
        events = [e for e in service.app.state("recorder") if isinstance(e, RequestEvent)]
    done = [e for e in events if isinstance(e, RequestDone)]
    assert len(done) == 2 and {e.finish_reason for e in done} == {"stop"}
    assert {(e.request.surface, e.request.route, e.request.client) for e in events} == {
        ("responses", URL, "alice")
    }
    assert {e.completion_tokens for e in done} == {3}
    assert 'ddx_llm_requests_total{method="POST",route="/v1/responses",status="200"} 2.0' in metrics
    assert 'ddx_llm_request_success_total{finished_reason="stop"' in metrics


async def test_openapi_documents_the_routes(conf_dir):
    async with testing.serve(conf_dir) as service:
        document = (await service.client.get("/openapi.json")).json()
    validate(document)
    paths = document["paths"]
    assert set(paths[URL]) == {"post"}
    assert set(paths[f"{URL}/{{response_id}}"]) == {"parameters", "get", "delete"}
    assert "get" in paths[f"{URL}/{{response_id}}/input_items"]
    create = paths[URL]["post"]
    assert "text/event-stream" in create["responses"]["200"]["content"]
    assert "401" in create["responses"] and create["security"]  # the auth plugin's, as declared
    request = document["components"]["schemas"]["Responses.ResponsesRequest"]
    assert {"input", "instructions", "previous_response_id", "store"} <= set(request["properties"])


async def test_the_surface_can_be_disabled_by_name(conf_dir):
    write_conf(conf_dir, {"core": {"disabled_plugins": ["rate_limit", "responses"]}})
    async with testing.serve(conf_dir) as service:
        answer = await service.client.post(URL, json=echo("hi"))
        document = (await service.client.get("/openapi.json")).json()
    assert answer.status_code == 404
    assert documented(answer.json())["code"] == "not_found"
    assert URL not in document["paths"]
