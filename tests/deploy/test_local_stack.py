"""The local reference deployment, live: three ``ddx-llm serve`` replicas (asyncio, trio,
asyncio) behind Debian's HAProxy, sharing one ``redis-server``, driven with deploy/local/stack.py
as an operator would.  Twenty streaming clients go through the balancer while each replica is
restarted with SIGTERM (nothing may fail) or one is killed with SIGKILL (only its own streams
may fail); a per-key rate limit holds exactly across the replicas; a stored response is read
back through any of them.  Each test prints its figures (``pytest -s``)."""

from __future__ import annotations

import hashlib
import json

import anyio
import httpx
import pytest
from deploy_support import Load, LocalStack, require_tool, stream_body

pytestmark = [pytest.mark.anyio, pytest.mark.live]

LOADER, LIMITED = "loader-key-0123456789", "limited-key-0123456789"
LIMIT = 10  # per minute, for LIMITED


def digest(key: str) -> str:
    return "sha256:" + hashlib.sha256(key.encode()).hexdigest()


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory):
    require_tool("haproxy", "ensure_haproxy.sh")
    require_tool("redis-server", "ensure_redis.sh")
    env = {
        "DDX_DEPLOY_WORKER_CLASSES": "asyncio,trio,asyncio",
        "DDX_LLM_API_KEY_DIGESTS": json.dumps(
            {"loader": digest(LOADER), "limited": digest(LIMITED)}
        ),
        "DDX_LLM_RATE_LIMIT_PER_CLIENT": json.dumps(
            {"loader": "unlimited", "limited": f"{LIMIT}/minute"}
        ),
    }
    local = LocalStack(tmp_path_factory.mktemp("stack"), env)
    try:
        local.cli("up")
        yield local
    finally:
        local.cli("down")


def report(name: str, figures: dict, stack: LocalStack) -> None:
    print(f"\n{name}: {json.dumps(figures)}")
    with (stack.run_dir / "figures.jsonl").open("a") as out:
        out.write(json.dumps({"test": name, **figures}) + "\n")


async def up(stack: LocalStack) -> None:
    """Every process running and every replica UP in HAProxy (a test may have killed one)."""
    status = await anyio.to_thread.run_sync(stack.cli, "up")
    assert {s["status"] for s in status["haproxy"].values()} == {"UP"}, status


async def test_rate_limit_per_key_holds_exactly_across_replicas(stack, anyio_backend):
    import redis

    await up(stack)
    redis.Redis.from_url(stack.redis_url).flushdb()  # a fresh window for this run
    body = {"messages": [{"role": "user", "content": "hello"}], "mock": {"scenario": "echo"}}
    headers = {"authorization": f"Bearer {LIMITED}"}
    answers: list[httpx.Response] = []
    async with httpx.AsyncClient(base_url=stack.url, timeout=30) as client:

        async def one() -> None:
            answers.append(await client.post("/v1/chat/completions", json=body, headers=headers))

        async with anyio.create_task_group() as tg:
            for _ in range(3 * LIMIT):
                tg.start_soon(one)
    statuses = sorted(a.status_code for a in answers)
    assert statuses == [200] * LIMIT + [429] * (2 * LIMIT)
    replicas = {a.headers["x-ddx-replica"] for a in answers}
    assert len(replicas) >= 2, replicas  # spread over replicas, and still exact
    refused = [a for a in answers if a.status_code == 429]
    assert all(int(a.headers["retry-after"]) >= 1 for a in refused)
    assert {a.json()["code"] for a in refused} == {"rate_limited"}
    report("rate_limit", {"sent": len(answers), "allowed": LIMIT, "replicas": sorted(replicas)},
           stack)  # fmt: skip


async def test_stored_responses_are_shared_by_the_replicas(stack, anyio_backend):
    await up(stack)
    headers = {"authorization": f"Bearer {LOADER}"}
    async with httpx.AsyncClient(base_url=stack.url, timeout=30) as client:
        created = await client.post(
            "/v1/responses", json={"input": "remember me", "mock": {"scenario": "echo"}},
            headers=headers,
        )  # fmt: skip
        assert created.status_code == 200, created.text
        response_id = created.json()["id"]
        # Each replica asked directly: the one that made it and the two that did not.
        for name, url in stack.replica_urls.items():
            read = await client.get(f"{url}/v1/responses/{response_id}", headers=headers)
            assert read.status_code == 200, (name, read.text)
            assert read.json()["output"][0]["content"][0]["text"] == "remember me"


async def test_rolling_restart_with_sigterm_loses_no_request(stack, anyio_backend):
    """Each replica in turn: SIGTERM (it drains: /readyz 503 at once, its refusals retried
    elsewhere by HAProxy, its streams finish), exit, start, back UP — 20 clients streaming
    all along, not one request failed."""
    await up(stack)
    load = Load(stack.url, LOADER, stream_body(words=15, delay_ms=100))
    restarts = []
    async with anyio.create_task_group() as tg:
        await tg.start(load.run)
        with anyio.fail_after(20):
            while len(load.streaming_on()) < 3:  # every replica is streaming
                await anyio.sleep(0.05)
        for replica in ("1", "2", "3"):
            restarts.append(await anyio.to_thread.run_sync(stack.cli, "restart", replica))
            await anyio.sleep(0.5)
        load.stopping = True
    status = await anyio.to_thread.run_sync(stack.cli, "status")
    failed = load.failed()
    figures = {
        "sent": len(load.outcomes),
        "failed": len(failed),
        "served_by": load.by_replica(),
        "drain_seconds": [r["drain_seconds"] for r in restarts],
        "stop_seconds": [r["stop_seconds"] for r in restarts],
        "back_in_balancer_seconds": [r["back_in_balancer_seconds"] for r in restarts],
        "haproxy_retries": sum(s["retries"] for s in status["haproxy"].values()),
        "haproxy_redispatches": sum(s["redispatches"] for s in status["haproxy"].values()),
    }
    report("rolling_restart", figures, stack)
    assert failed == [], [f.error for f in failed[:5]]
    assert len(load.outcomes) >= 3 * load.clients  # every client streamed throughout
    assert all(r["drain_seconds"] is not None for r in restarts), restarts  # each one drained
    assert set(load.by_replica()) == {"r1", "r2", "r3"}


async def test_a_killed_replica_fails_only_the_streams_it_was_serving(stack, anyio_backend):
    """SIGKILL replica 2 while every replica streams: the streams it was sending fail (their
    connections die), no other request does — those sent to it after the kill are retried on
    another replica — and HAProxy marks it DOWN within its check interval."""
    await up(stack)
    load = Load(stack.url, LOADER, stream_body(words=30, delay_ms=100))
    try:
        async with anyio.create_task_group() as tg:
            await tg.start(load.run)
            with anyio.fail_after(20):
                while min(load.streaming_on().get(r, 0) for r in ("r1", "r2", "r3")) < 2:
                    await anyio.sleep(0.05)
            serving = load.streaming_on()["r2"]
            killed = await anyio.to_thread.run_sync(stack.cli, "kill", "2")
            await anyio.sleep(4)  # long enough for every stream that was running to end
            load.stopping = True
    finally:
        await anyio.to_thread.run_sync(stack.cli, "up")  # the next test wants r2 back
    killed_at = killed["killed_at"]
    failed = load.failed()
    figures = {
        "sent": len(load.outcomes),
        "failed": len(failed),
        "r2_streams_at_kill": serving,
        "down_after_seconds": killed["down_after_seconds"],
        "sent_after_kill": sum(o.sent > killed_at for o in load.outcomes),
    }
    report("sigkill", figures, stack)
    assert failed, "the killed replica's streams cannot have completed"
    for outcome in failed:  # only streams the killed replica had answered before it died
        assert outcome.replica == "r2" and outcome.answered < killed_at, outcome
    for outcome in load.outcomes:
        if outcome.replica == "r2" and outcome.answered < killed_at and outcome.ok:
            assert outcome.ended < killed_at + 0.5, outcome  # it had finished already
    assert all(o.ok for o in load.outcomes if o.sent > killed_at)
    assert all(o.ok for o in load.outcomes if o.replica != "r2")
    # inter 1s, then fastinter 250ms, fall 2: at most 1.25 s (2 s: a busy CI machine)
    assert killed["down_after_seconds"] < 2.0
