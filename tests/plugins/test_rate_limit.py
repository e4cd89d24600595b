"""The ``plugins/rate_limit.py`` drop-in, in process, with the real auth plugin (asyncio and trio).

Memory storage, then a real ``redis-server`` (``tools.redis_server``) for the shared storage.
"""

from __future__ import annotations

import hashlib
import sys
import time

import anyio
import pytest
import redis
from support import documented, free_port, running_app, write_conf
from tools.rate_limit_conf import KEYS, enable_rate_limit
from tools.redis_server import redis_server, redis_url  # noqa: F401 (fixtures)

from ddx_llm.config import ConfigError
from ddx_llm.factory import create_app

pytestmark = pytest.mark.anyio

CHAT = "/v1/chat/completions"
BODY = {
    "model": "mlx-community/Qwen3-4B-Instruct-2507-4bit",
    "messages": [{"role": "user", "content": "hi"}],
}


def as_(name: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {KEYS[name]}"}


async def statuses(client, count: int, **kwargs) -> list[int]:
    return [(await client.post(CHAT, json=BODY, **kwargs)).status_code for _ in range(count)]


async def test_over_the_limit_answers_429_with_retry_after(conf_dir):
    enable_rate_limit(conf_dir, default="3/minute")
    async with running_app(conf_dir) as (app, client):
        assert await statuses(client, 3, headers=as_("alice")) == [200] * 3
        response = await client.post(CHAT, json=BODY, headers=as_("alice"))
    assert response.status_code == 429
    retry_after = int(response.headers["retry-after"])
    assert 55 <= retry_after <= 60
    assert documented(response.json()) == {
        "code": "rate_limited",
        "message": "rate limit exceeded: 3 per 1 minute",
        "detail": {"limit": "3 per 1 minute", "retry_after": retry_after},
    }
    names = [spec.name for spec in app.context.middleware]
    assert names.index("auth") < names.index("rate_limit")
    assert {spec.name: spec.order for spec in app.context.middleware}["rate_limit"] == 550


async def test_limits_are_per_key_identity_with_overrides(conf_dir):
    enable_rate_limit(
        conf_dir, default="2/minute", per_client={"alice": "1/minute", "bob": "unlimited"}
    )
    async with running_app(conf_dir) as (_, client):
        assert await statuses(client, 2, headers=as_("alice")) == [200, 429]
        assert await statuses(client, 12, headers=as_("bob")) == [200] * 12
        assert await statuses(client, 3, headers=as_("carol")) == [200, 200, 429]
        unknown = await client.post(CHAT, json=BODY, headers={"X-API-Key": "not-a-key"})
    assert unknown.status_code == 401  # auth refuses first: nobody's quota is spent


async def test_unnamed_keys_and_several_limits(conf_dir, monkeypatch):
    monkeypatch.setenv("DDX_LLM_API_KEYS", "first-unnamed-key,second-unnamed-key")
    monkeypatch.setenv("DDX_LLM_RATE_LIMIT_DEFAULT", "2/second;3/minute")
    # auth identifies an unnamed key as key-<first 8 hex of its SHA-256>
    second = "key-" + hashlib.sha256(b"second-unnamed-key").hexdigest()[:8]
    monkeypatch.setenv("DDX_LLM_RATE_LIMIT_PER_CLIENT", f'{{"{second}": "1/hour"}}')
    enable_rate_limit(conf_dir, named_keys=False)
    async with running_app(conf_dir) as (_, client):
        first = {"X-API-Key": "first-unnamed-key"}
        assert await statuses(client, 3, headers=first) == [200, 200, 429]
        refused = await client.post(CHAT, json=BODY, headers=first)
        assert refused.json()["detail"]["limit"] == "2 per 1 second"
        assert refused.headers["retry-after"] == "1"
        other = {"api_key": "second-unnamed-key"}
        assert await statuses(client, 2, params=other) == [200, 429]
        await anyio.sleep(1.05)  # the per-second window has moved on; the minute's has not
        assert await statuses(client, 1, headers=first) == [200]
        refused = await client.post(CHAT, json=BODY, headers=first)
    assert refused.status_code == 429
    assert refused.json()["detail"]["limit"] == "3 per 1 minute"
    assert 55 <= int(refused.headers["retry-after"]) <= 60


async def test_without_auth_the_client_address_is_the_identity(conf_dir, monkeypatch):
    # httpx's ASGI transport presents the client 127.0.0.1; overrides match addresses too.
    monkeypatch.setenv("DDX_LLM_RATE_LIMIT_PER_CLIENT", '{"127.0.0.1": "2/minute"}')
    enable_rate_limit(conf_dir, named_keys=False, default="50/minute")
    async with running_app(conf_dir) as (_, client):
        assert await statuses(client, 3) == [200, 200, 429]


async def test_only_the_configured_routes_are_counted(conf_dir):
    enable_rate_limit(
        conf_dir, default="1/minute", routes=["POST /v1/chat/completions", "/v1/models"]
    )
    async with running_app(conf_dir) as (_, client):
        for _ in range(5):
            assert (await client.get("/health")).status_code == 200
            assert (await client.get("/v1/models/current")).status_code == 200
        preflight = {"Origin": "http://localhost:3100", "Access-Control-Request-Method": "POST"}
        assert (await client.options(CHAT, headers=preflight)).status_code == 200
        assert await statuses(client, 2, headers=as_("alice")) == [200, 429]
        models = [(await client.get("/v1/models", headers=as_("bob"))).status_code for _ in "ab"]
    assert models == [200, 429]


async def test_a_429_carries_the_request_id_and_cors_headers(conf_dir):
    enable_rate_limit(conf_dir, default="1/minute")
    headers = {**as_("alice"), "Origin": "http://localhost:3100", "X-Request-ID": "rl-test-1"}
    async with running_app(conf_dir) as (_, client):
        await client.post(CHAT, json=BODY, headers=headers)
        response = await client.post(CHAT, json=BODY, headers=headers)
    assert response.status_code == 429
    assert response.headers["x-request-id"] == "rl-test-1"
    assert response.headers["access-control-allow-origin"] == "http://localhost:3100"


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"default": "sixty a minute"}, "DDX_LLM_RATE_LIMIT_DEFAULT"),
        ({"per_client": {"alice": "1/fortnight"}}, "alice"),
        ({"routes": ["POST v1/chat"]}, "DDX_LLM_RATE_LIMIT_ROUTES"),
        ({"storage_uri": "async+redis://localhost"}, "unknown storage scheme 'async+redis'"),
        (
            {"storage_uri": "memcached://localhost", "strategy": "sliding-window-counter"},
            "strategy",
        ),
        ({"limit": "1/second"}, "limit"),
    ],
)
async def test_bad_settings_stop_start_up(conf_dir, values, message):
    enable_rate_limit(conf_dir, **values)
    with pytest.raises(ConfigError, match="rate_limit") as raised:
        create_app(conf_dir)
    assert message in str(raised.value)


async def test_without_the_limits_package_start_up_says_what_to_install(conf_dir, monkeypatch):
    enable_rate_limit(conf_dir)
    monkeypatch.setitem(sys.modules, "limits", None)  # as if not installed: import fails
    with pytest.raises(ConfigError, match=r"pip install 'ddx-llm\[ratelimit\]'") as raised:
        create_app(conf_dir)
    assert "DDX_LLM_RATE_LIMIT_DEFAULT" in str(raised.value)
    assert "disabled_plugins" in str(raised.value)


async def test_disabled_by_name_its_section_is_allowed(conf_dir):
    enable_rate_limit(conf_dir, default="1/minute")
    write_conf(conf_dir, {"core": {"disabled_plugins": ["rate_limit"]}})
    async with running_app(conf_dir) as (app, client):
        assert await statuses(client, 3, headers=as_("alice")) == [200] * 3
    assert "rate_limit" not in [spec.name for spec in app.context.middleware]


async def test_redis_storage_is_shared_by_two_apps(conf_dir, redis_url):  # noqa: F811
    # Two instances of the service (as two replicas would be) count in one Redis.
    enable_rate_limit(conf_dir, default="4/minute", storage_uri=redis_url)
    async with (
        running_app(conf_dir) as (_, first),
        running_app(conf_dir) as (_, second),
    ):
        results = []
        for client in (first, second) * 4:
            results.append((await client.post(CHAT, json=BODY, headers=as_("alice"))).status_code)
        assert await statuses(second, 1, headers=as_("bob")) == [200]
        refused = await first.post(CHAT, json=BODY, headers=as_("alice"))
    assert results == [200] * 4 + [429] * 4
    assert 55 <= int(refused.headers["retry-after"]) <= 60
    keys = [key.decode() for key in redis.Redis.from_url(redis_url).keys("*")]
    assert "LIMITS:LIMITER/ddx_llm/key/alice/4/1/minute" in keys, keys


async def test_a_slow_redis_does_not_block_the_event_loop(conf_dir, redis_url):  # noqa: F811
    enable_rate_limit(conf_dir, default="10/minute", storage_uri=redis_url)
    async with running_app(conf_dir) as (_, client):
        await client.post(CHAT, json=BODY, headers=as_("alice"))  # connection pool warmed up
        redis.Redis.from_url(redis_url).execute_command("CLIENT", "PAUSE", "600", "ALL")
        start = time.perf_counter()
        done: dict[str, tuple[int, float]] = {}

        async def timed(name, request):
            done[name] = (await request).status_code, time.perf_counter() - start

        async with anyio.create_task_group() as tg:
            tg.start_soon(timed, "chat", client.post(CHAT, json=BODY, headers=as_("alice")))
            await anyio.sleep(0.05)
            tg.start_soon(timed, "health", client.get("/health"))
    (chat_status, chat_done), (health_status, health_done) = done["chat"], done["health"]
    assert (chat_status, health_status) == (200, 200)
    assert chat_done > 0.4  # the chat waited for Redis ...
    assert health_done < chat_done - 0.25  # ... while the event loop kept serving others


@pytest.mark.parametrize(("fail_open", "expected"), [(True, 200), (False, 503)])
async def test_storage_down_fails_open_or_closed(conf_dir, fail_open, expected, caplog):
    down = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there
    enable_rate_limit(conf_dir, default="1/minute", storage_uri=down, fail_open=fail_open)
    async with running_app(conf_dir) as (_, client):
        responses = [await client.post(CHAT, json=BODY, headers=as_("alice")) for _ in "ab"]
    assert [r.status_code for r in responses] == [expected] * 2
    if not fail_open:
        assert documented(responses[0].json()) == {
            "code": "rate_limit_unavailable",
            "message": "rate limiting is unavailable",
            "detail": "the rate-limit storage does not answer",
        }
        assert responses[0].headers["retry-after"] == "5"
    warnings = [
        r.getMessage()
        for r in caplog.records
        if r.name.endswith(".rate_limit") and r.levelname == "WARNING"
    ]
    assert len(warnings) == 1  # at start-up; the failing requests do not repeat it at once
    assert f"storage {down} is down" in warnings[0]
