"""The plugin in a running app (``ddx_llm.testing``), through HTTP, on asyncio and trio.

The plugin is named explicitly, so these tests run whether or not the distribution is installed;
when it is, the installed copy is the one loaded (once).
"""

from __future__ import annotations

import hashlib
import json
import math
import time

import anyio
import ddx_llm_token_budget
import pytest

from ddx_llm import testing
from ddx_llm.config import ConfigError

pytestmark = pytest.mark.anyio

PLUGIN = [("token_budget", ddx_llm_token_budget)]
CHAT = "/v1/chat/completions"
ECHO = {"messages": [{"role": "user", "content": "one two three"}], "mock": {"scenario": "echo"}}


def identity(key: str) -> str:
    """The identity ddx-llm's auth gives an unnamed key."""
    return "key-" + hashlib.sha256(key.encode()).hexdigest()[:8]


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


async def test_usage_is_accounted_per_key(tmp_path, monkeypatch):
    monkeypatch.setenv("DDX_LLM_API_KEYS", "k-one,k-two")
    conf = testing.write_conf(tmp_path, {"token_budget": {"tokens": 1000}})
    async with testing.serve(conf, plugins=PLUGIN) as service:
        chat = await service.client.post(CHAT, json=ECHO, headers=bearer("k-one"))
        streamed = await service.client.post(
            CHAT, json={**ECHO, "stream": True, "stream_options": {"include_usage": True}},
            headers=bearer("k-one"),
        )  # fmt: skip
        one = (await service.client.get("/v1/usage", headers=bearer("k-one"))).json()
        two = (await service.client.get("/v1/usage", headers=bearer("k-two"))).json()
    assert chat.status_code == streamed.status_code == 200
    usage = chat.json()["usage"]
    final = [json.loads(line[6:]) for line in streamed.text.splitlines() if line[6:7] == "{"]
    assert final[-1]["usage"] == usage  # the stream reports the same usage
    assert one["client"] == identity("k-one")
    assert one["used"] == 2 * usage["total_tokens"]
    assert one["prompt_tokens"] == 2 * usage["prompt_tokens"]
    assert one["completion_tokens"] == 2 * usage["completion_tokens"]
    assert (one["requests"], one["limit"], one["remaining"]) == (2, 1000, 1000 - one["used"])
    assert (two["client"], two["used"], two["requests"]) == (identity("k-two"), 0, 0)


async def test_usage_needs_a_key_when_auth_is_on(tmp_path, monkeypatch):
    monkeypatch.setenv("DDX_LLM_API_KEYS", "k-one")
    conf = testing.write_conf(tmp_path)
    async with testing.serve(conf, plugins=PLUGIN) as service:
        anonymous = await service.client.get("/v1/usage")
        wrong = await service.client.get("/v1/usage", headers=bearer("not-a-key"))
    assert anonymous.status_code == wrong.status_code == 401
    assert anonymous.json()["code"] == "unauthorized"


async def test_a_spent_budget_answers_429_until_the_period_resets(tmp_path, monkeypatch):
    monkeypatch.setenv("DDX_LLM_API_KEYS", "k-one,k-two")
    conf = testing.write_conf(tmp_path, {"token_budget": {"tokens": 20}})
    async with testing.serve(conf, plugins=PLUGIN) as service:
        first = await service.client.post(CHAT, json=ECHO, headers=bearer("k-one"))
        second = await service.client.post(CHAT, json=ECHO, headers=bearer("k-one"))
        refused = await service.client.post(CHAT, json=ECHO, headers=bearer("k-one"))
        streamed = await service.client.post(
            CHAT, json={**ECHO, "stream": True}, headers=bearer("k-one")
        )
        other = await service.client.post(CHAT, json=ECHO, headers=bearer("k-two"))
        usage = (await service.client.get("/v1/usage", headers=bearer("k-one"))).json()
    spent = first.json()["usage"]["total_tokens"] + second.json()["usage"]["total_tokens"]
    assert first.status_code == second.status_code == 200  # 12 each: the 2nd starts at 12 of 20
    assert refused.status_code == streamed.status_code == 429  # a stream is refused up front
    until_midnight = math.ceil(86_400 - time.time() % 86_400)
    assert abs(int(refused.headers["retry-after"]) - until_midnight) <= 2
    assert refused.headers["x-request-id"]
    body = refused.json()
    retry_after = int(refused.headers["retry-after"])
    assert body == {
        "code": "budget_exhausted",
        "message": f"token budget of 20 per 86400 s spent; it resets in {retry_after} s",
        "detail": {
            "client": identity("k-one"), "limit": 20, "used": spent, "retry_after": retry_after,
        },
        "error": {
            "message": body["message"], "type": "budget_exhausted", "code": "budget_exhausted",
            "param": None,
        },
    }  # fmt: skip
    assert other.status_code == 200  # another key's budget is its own
    assert (usage["used"], usage["remaining"], usage["requests"]) == (spent, 0, 2)


async def test_the_budget_resets_with_the_period(tmp_path, monkeypatch):
    monkeypatch.setenv("DDX_LLM_API_KEYS", "k-one")
    conf = testing.write_conf(tmp_path, {"token_budget": {"tokens": 1, "period_seconds": 1}})
    async with testing.serve(conf, plugins=PLUGIN, headers=bearer("k-one")) as service:
        await anyio.sleep(1.02 - time.time() % 1)  # the start of a period: a second to work
        assert (await service.client.post(CHAT, json=ECHO)).status_code == 200
        refused = await service.client.post(CHAT, json=ECHO)
        assert refused.status_code == 429
        assert refused.headers["retry-after"] == "1"
        await anyio.sleep(1.02 - time.time() % 1)
        usage = (await service.client.get("/v1/usage")).json()
        again = await service.client.post(CHAT, json=ECHO)
    assert (usage["used"], usage["remaining"]) == (0, 1)
    assert again.status_code == 200


async def test_overrides_and_exemptions(tmp_path, monkeypatch):
    monkeypatch.setenv("DDX_LLM_API_KEYS", "k-small,k-exempt,k-default")
    monkeypatch.setenv("DDX_LLM_TOKEN_BUDGET_PER_CLIENT", json.dumps({identity("k-small"): 0}))
    budget = {"tokens": 20, "exempt": [identity("k-exempt")]}
    conf = testing.write_conf(tmp_path, {"token_budget": budget})
    async with testing.serve(conf, plugins=PLUGIN) as service:
        small = await service.client.post(CHAT, json=ECHO, headers=bearer("k-small"))
        default = [
            (await service.client.post(CHAT, json=ECHO, headers=bearer("k-default"))).status_code
            for _ in range(3)
        ]
        exempt = [
            (await service.client.post(CHAT, json=ECHO, headers=bearer("k-exempt"))).status_code
            for _ in range(3)
        ]
        report = (await service.client.get("/v1/usage", headers=bearer("k-exempt"))).json()
    assert small.status_code == 429  # a budget of 0 (set by the variable) refuses everything
    assert small.json()["detail"]["limit"] == 0
    assert default == [200, 200, 429]
    assert exempt == [200, 200, 200]
    assert (report["exempt"], report["limit"], report["remaining"]) == (True, None, None)
    assert report["requests"] == 3


async def test_without_auth_requests_share_the_anonymous_budget(tmp_path):
    conf = testing.write_conf(tmp_path, {"token_budget": {"tokens": 20}})
    async with testing.serve(conf, plugins=PLUGIN) as service:
        codes = [(await service.client.post(CHAT, json=ECHO)).status_code for _ in range(3)]
        usage = (await service.client.get("/v1/usage")).json()
    assert codes == [200, 200, 429]
    assert (usage["client"], usage["accounted"], usage["requests"]) == ("anonymous", True, 2)


async def test_unidentified_requests_can_be_left_alone(tmp_path):
    conf = testing.write_conf(tmp_path, {"token_budget": {"tokens": 1, "anonymous": ""}})
    async with testing.serve(conf, plugins=PLUGIN) as service:
        codes = [(await service.client.post(CHAT, json=ECHO)).status_code for _ in range(3)]
        usage = (await service.client.get("/v1/usage")).json()
    assert codes == [200, 200, 200]
    assert (usage["client"], usage["accounted"], usage["used"]) == (None, False, 0)
    assert len(service.app.state("token_budget").ledger) == 0  # no identity was charged


async def test_cancelled_and_failed_requests_count_too(tmp_path, monkeypatch):
    monkeypatch.setenv("DDX_LLM_API_KEYS", "k-one")
    conf = testing.write_conf(tmp_path)
    failing = {**ECHO, "mock": {"scenario": "error"}}
    async with testing.serve(conf, plugins=PLUGIN, headers=bearer("k-one")) as service:
        failed = await service.client.post(CHAT, json=failing)
        usage = (await service.client.get("/v1/usage")).json()
    assert failed.status_code == 500
    assert usage["requests"] == 1
    assert usage["completion_tokens"] == 2  # the two words generated before the failure
    assert usage["prompt_tokens"] > 0


async def test_apps_in_one_process_keep_their_own_counts(tmp_path):
    conf = testing.write_conf(tmp_path, {"token_budget": {"tokens": 1000}})
    async with (
        testing.serve(conf, plugins=PLUGIN) as first,
        testing.serve(conf, plugins=PLUGIN) as second,
    ):
        await first.client.post(CHAT, json=ECHO)
        one = (await first.client.get("/v1/usage")).json()
        two = (await second.client.get("/v1/usage")).json()
    assert one["requests"] == 1
    assert two["requests"] == 0


async def test_openapi_documents_the_route_and_the_429(tmp_path):
    conf = testing.write_conf(tmp_path)
    async with testing.serve(conf, plugins=PLUGIN) as service:
        document = (await service.client.get("/openapi.json")).json()
    assert document["paths"]["/v1/usage"]["get"]["operationId"] == "getUsage"
    chat = document["paths"][CHAT]["post"]["responses"]
    assert "Retry-After" in chat["429"]["headers"]


@pytest.mark.parametrize(
    ("section", "problem"),
    [
        ({"tokens": -1}, r"\[token_budget\] tokens: .*DDX_LLM_TOKEN_BUDGET_TOKENS"),
        ({"period_seconds": 0}, r"\[token_budget\] period_seconds: "),
        ({"budget": 5}, r"\[token_budget\] budget: Extra inputs are not permitted"),
        ({"exempt": ["ci"], "per_client": {"ci": 5}}, r"exempt and per_client both name ci: "),
        ({"surfaces": []}, r"\[token_budget\] surfaces: "),
    ],
)
async def test_settings_are_validated_at_start_up(tmp_path, section, problem):
    conf = testing.write_conf(tmp_path, {"token_budget": section})
    with pytest.raises(ConfigError, match=problem):
        async with testing.serve(conf, plugins=PLUGIN):
            pass
