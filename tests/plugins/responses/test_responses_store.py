"""The storages of responses, SQLite and Redis (a real ``redis-server``, tools.redis_server):
the same contract for both — per-owner records and items, deletion, retention by count and by
age — and, through the app, replicas sharing conversations and a storage that is down."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import pytest
from responses_support import echo, valid_response
from support import documented, free_port, write_conf
from tools.redis_server import redis_server, redis_url  # noqa: F401 (fixtures)

from ddx_llm import testing
from ddx_llm.errors import leaf_exception
from ddx_llm.plugins.responses.settings import ResponsesSettings
from ddx_llm.plugins.responses.storage import open_store
from ddx_llm.plugins.responses.store import StoredResponse, StoreUnavailable

pytestmark = pytest.mark.anyio

URL = "/v1/responses"


def record(number: int) -> StoredResponse:
    """A stored response whose input is one user message and whose output one answer."""
    user = {"id": f"msg_in_{number}", "type": "message", "role": "user", "status": "completed",
            "content": [{"type": "input_text", "text": f"question {number}"}]}  # fmt: skip
    answer = {"id": f"msg_out_{number}", "type": "message", "role": "assistant",
              "status": "completed", "content": [{"type": "output_text", "text": "answer",
                                                   "annotations": [], "logprobs": []}]}  # fmt: skip
    response = {"id": f"resp_{number}", "object": "response", "output": [answer]}
    return StoredResponse(response, [user], [user["id"], answer["id"]])


@pytest.fixture(params=["sqlite", "redis"])
async def make_store(request, tmp_path: Path):
    """``make_store(**settings)``: an open store of the parametrized kind, closed at the end."""
    url = request.getfixturevalue("redis_url") if request.param == "redis" else ""
    opened = []

    async def make(**settings):
        store = open_store(ResponsesSettings(storage_uri=url, **settings), tmp_path.joinpath)
        await store.check()
        opened.append(store)
        return store

    yield make
    for store in opened:
        await store.close()


async def test_records_and_items_belong_to_their_owner(make_store):
    store = await make_store()
    await store.put("alice", record(1))
    got = await store.get("alice", "resp_1")
    assert got is not None and got.response == record(1).response
    assert got.conversation() == [*record(1).input_items, *record(1).response["output"]]
    assert await store.get("bob", "resp_1") is None
    items = await store.items("alice", ["msg_in_1", "msg_out_1", "msg_nope"])
    assert set(items) == {"msg_in_1", "msg_out_1"}
    assert items["msg_out_1"] == record(1).response["output"][0]
    assert await store.items("bob", ["msg_in_1"]) == {}
    assert await store.delete("bob", "resp_1") is False
    assert await store.delete("alice", "resp_1") is True
    assert await store.get("alice", "resp_1") is None
    assert await store.items("alice", ["msg_in_1", "msg_out_1"]) == {}
    assert await store.delete("alice", "resp_1") is False


async def test_each_owner_keeps_its_newest_max_count(make_store):
    store = await make_store(max_count=3)
    for number in range(5):
        await store.put("alice", record(number))
    await store.put("bob", record(9))
    kept = [n for n in range(5) if await store.get("alice", f"resp_{n}") is not None]
    assert kept == [2, 3, 4]
    assert await store.items("alice", ["msg_out_1", "msg_out_2"]) == {
        "msg_out_2": record(2).response["output"][0]
    }
    assert await store.get("bob", "resp_9") is not None  # alice's traffic never evicts bob's


async def test_responses_older_than_max_age_are_gone(make_store):
    store = await make_store(max_age_hours=0.5 / 3600)  # half a second
    await store.put("alice", record(1))
    assert await store.get("alice", "resp_1") is not None
    await anyio.sleep(0.7)
    assert await store.get("alice", "resp_1") is None
    assert await store.items("alice", ["msg_in_1"]) == {}


async def test_an_item_stays_with_the_response_that_introduced_it(make_store):
    store = await make_store()
    first, second = record(1), record(2)
    second.input_items = [*first.conversation(), *second.input_items]  # continues the first
    await store.put("alice", first)
    await store.put("alice", second)
    assert await store.delete("alice", "resp_2")
    assert set(await store.items("alice", ["msg_in_1", "msg_out_1"])) == {"msg_in_1", "msg_out_1"}


def redis_conf(conf_dir: Path, url: str, **extra) -> Path:
    write_conf(conf_dir, {"responses": {"storage_uri": url, **extra}})
    return conf_dir


@pytest.fixture
async def two_replicas(conf_dir: Path, redis_url: str) -> AsyncIterator[tuple]:  # noqa: F811
    """Two apps (replicas) on one Redis."""
    redis_conf(conf_dir, redis_url)
    async with testing.serve(conf_dir) as one, testing.serve(conf_dir) as two:
        yield one, two


async def test_replicas_share_conversations_through_redis(two_replicas):
    one, two = two_replicas
    first = (await one.client.post(URL, json=echo("one two"))).json()
    second = await two.client.post(URL, json=echo("three", previous_response_id=first["id"]))
    assert second.status_code == 200, second.text
    items = (await one.client.get(f"{URL}/{second.json()['id']}/input_items")).json()
    assert [item["id"] for item in items["data"]][1] == first["output"][0]["id"]
    assert (await two.client.delete(f"{URL}/{first['id']}")).status_code == 200
    assert (await one.client.get(f"{URL}/{first['id']}")).status_code == 404
    assert one.app.state("responses").kind == two.app.state("responses").kind == "redis"


async def test_redis_down_answers_503_and_unstored_responses_still_work(conf_dir):
    redis_conf(conf_dir, f"redis://127.0.0.1:{free_port()}/0", socket_timeout=0.5)
    async with testing.serve(conf_dir) as service:
        stored = await service.client.post(URL, json=echo("hi"))
        unstored = await service.client.post(URL, json=echo("hi", store=False))
        streamed = await service.client.post(URL, json=echo("hi", stream=True))
    assert stored.status_code == 503
    assert stored.headers["retry-after"] == "5"
    assert documented(stored.json())["code"] == "store_unavailable"
    assert valid_response(unstored.json()).output_text == "hi"
    final = [line for line in streamed.text.split("\n\n") if "response.failed" in line]
    assert final and "store_unavailable" in final[0]


async def test_sqlite_workers_on_one_host_share_the_file(conf_dir):
    async with testing.serve(conf_dir) as one, testing.serve(conf_dir) as two:
        first = (await one.client.post(URL, json=echo("one"))).json()
        fetched = await two.client.get(f"{URL}/{first['id']}")
    assert fetched.json() == first
    assert (conf_dir.parent / "data" / "responses" / "responses.sqlite3").is_file()


async def test_an_unusable_sqlite_folder_stops_start_up(conf_dir, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    write_conf(conf_dir, {"responses": {"data_dir": str(blocker / "responses")}})
    with pytest.raises(Exception) as caught:  # trio's lifespan runner wraps it in a group
        async with testing.serve(conf_dir):
            pass
    failure = leaf_exception(caught.value)
    assert isinstance(failure, RuntimeError)
    assert str(failure).startswith("responses: cannot open sqlite")


def test_settings_refuse_other_storage_uris():
    with pytest.raises(ValueError, match="Redis URL"):
        ResponsesSettings(storage_uri="postgres://db/responses")


async def test_a_failing_storage_is_store_unavailable(tmp_path):
    store = open_store(ResponsesSettings(), tmp_path.joinpath)
    await store.check()
    store.path.unlink()
    store.path.mkdir()  # the database is now a folder: every statement fails
    await store.close()
    with pytest.raises(StoreUnavailable):
        await store.get("alice", "resp_1")
    await store.close()


async def test_redis_keys_are_namespaced_per_owner_and_expire(tmp_path, redis_url):  # noqa: F811
    import redis

    settings = ResponsesSettings(storage_uri=redis_url, namespace="team-a", max_age_hours=2)
    store = open_store(settings, tmp_path.joinpath)
    try:
        await store.put("alice", record(1))
    finally:
        await store.close()
    client = redis.Redis.from_url(redis_url)
    prefix = "team-a:responses:{alice}"
    assert sorted(key.decode() for key in client.keys("*")) == [
        f"{prefix}:i:msg_in_1", f"{prefix}:i:msg_out_1", f"{prefix}:order", f"{prefix}:r:resp_1",
    ]  # fmt: skip
    for key in client.keys("*"):
        assert 0 < client.pttl(key) <= 2 * 3600 * 1000
