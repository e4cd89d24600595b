"""Two real Hypercorn processes (an asyncio and a trio worker), as two replicas behind a load
balancer, share one per-key limit through a real ``redis-server``."""

from __future__ import annotations

from pathlib import Path

import httpx
import openai
import pytest
from support import LiveServer, copy_project_conf
from tools.rate_limit_conf import KEYS, enable_rate_limit
from tools.redis_server import redis_server, redis_url  # noqa: F401 (fixtures)

pytestmark = pytest.mark.live

CHAT = "/v1/chat/completions"
MODEL = "mlx-community/Qwen3-4B-Instruct-2507-4bit"
BODY = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}]}
LIMIT = 5


def replica_conf(folder: Path, storage_uri: str) -> Path:
    conf = folder / "conf"
    copy_project_conf(conf)
    enable_rate_limit(conf, default=f"{LIMIT}/minute", storage_uri=storage_uri)
    return conf


@pytest.fixture
def replicas(tmp_path, redis_url):  # noqa: F811
    servers = [
        LiveServer(replica_conf(tmp_path / "a", redis_url)),
        LiveServer(replica_conf(tmp_path / "b", redis_url), args=("-k", "trio")),
    ]
    try:
        for server in servers:
            server.start()
        yield servers
    finally:
        for server in servers:
            server.stop()


def test_two_replicas_share_one_limit_through_redis(replicas):
    alice = {"Authorization": f"Bearer {KEYS['alice']}", "X-Request-ID": "rl-live"}
    answers: list[tuple[int, httpx.Response]] = []
    for attempt in range(12):
        index = attempt % 2  # a round-robin load balancer
        answers.append((index, httpx.post(replicas[index].url + CHAT, json=BODY, headers=alice)))
    statuses = [response.status_code for _, response in answers]
    assert statuses == [200] * LIMIT + [429] * (12 - LIMIT)
    for index in (0, 1):  # both replicas served and both refused: the count is shared
        mine = [r.status_code for i, r in answers if i == index]
        assert 200 in mine and 429 in mine
    refused = answers[-1][1]
    assert refused.json()["code"] == "rate_limited"
    assert 50 <= int(refused.headers["retry-after"]) <= 60
    assert refused.headers["x-request-id"] == "rl-live"
    bob = {"X-API-Key": KEYS["bob"]}
    assert [httpx.post(s.url + CHAT, json=BODY, headers=bob).status_code for s in replicas] == [
        200,
        200,
    ]


def test_the_openai_sdk_sees_a_rate_limit_error(replicas):
    client = openai.OpenAI(base_url=replicas[1].url + "/v1", api_key=KEYS["alice"], max_retries=0)
    for _ in range(LIMIT):
        client.chat.completions.create(model=MODEL, messages=BODY["messages"])
    with pytest.raises(openai.RateLimitError) as raised:
        client.chat.completions.create(model=MODEL, messages=BODY["messages"])
    assert raised.value.status_code == 429
    assert raised.value.body["code"] == "rate_limited"
    assert int(raised.value.response.headers["retry-after"]) > 0
