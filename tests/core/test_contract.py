"""The plugin contract as a plugin author meets it: events tied to their request, per-app
state, hooks that see the app, and a service that keeps working whatever is disabled."""

from __future__ import annotations

import hashlib
import json

import pytest
from support import documented, running_app, write_conf

from ddx_llm import hookimpl
from ddx_llm.errors import ErrorInfo
from ddx_llm.events import (
    FirstToken,
    RequestDone,
    RequestEvent,
    RequestQueued,
    RequestStarted,
    TokensGenerated,
    observes,
)
from ddx_llm.manager import BUILTIN_PLUGINS
from ddx_llm.middleware import MiddlewareSpec
from ddx_llm.routing import matched_route

pytestmark = pytest.mark.anyio

CHAT = "/v1/chat/completions"
MODEL = "mlx-community/Qwen3-4B-Instruct-2507-4bit"
KEY = "sk-contract-test-key-0001"
ECHO = {"model": MODEL, "messages": [{"role": "user", "content": "one two three"}],
        "mock": {"scenario": "echo"}}  # fmt: skip


class Recorder:
    """Keeps every event it observes, in this app's state."""

    @hookimpl
    def ddx_llm_observe(self, event, app):
        app.state("recorder", list).append(event)


async def test_every_request_event_says_which_request_whose_and_where(conf_dir, monkeypatch):
    digest = hashlib.sha256(KEY.encode()).hexdigest()
    monkeypatch.setenv("DDX_LLM_API_KEY_DIGESTS", json.dumps({"alice": digest}))
    async with running_app(conf_dir, (("recorder", Recorder()),)) as (app, client):
        headers = {"Authorization": f"Bearer {KEY}", "X-Request-ID": "req-42"}
        response = await client.post(CHAT, json={**ECHO, "stream": True}, headers=headers)
        unnamed = await client.post(CHAT, json=ECHO, headers={"X-API-Key": KEY})
    assert response.status_code == unnamed.status_code == 200
    events = [e for e in app.context.state("recorder") if isinstance(e, RequestEvent)]
    first = [e for e in events if e.request.id == "req-42"]
    kinds = [type(e) for e in first]
    assert kinds[:3] == [RequestQueued, RequestStarted, FirstToken]
    assert TokensGenerated in kinds and kinds[-1] is RequestDone
    assert {e.request.client for e in first} == {"alice"}
    assert {e.request.route for e in first} == {CHAT}
    assert {e.request.surface for e in first} == {"chat.completions"}
    assert {e.request.method for e in first} == {"POST"}
    assert {e.model for e in first} == {MODEL}
    # the second request: its own id, the one its response carries
    second = [e for e in events if e.request.id == unnamed.headers["x-request-id"]]
    assert [type(e) for e in second][-1] is RequestDone and len(second) >= 3


class DoneOnly:
    """Declares the one event type it takes."""

    @hookimpl
    @observes(RequestDone)
    def ddx_llm_observe(self, event, app):
        app.state("done-only", list).append(event)


async def test_an_observer_that_declares_its_events_gets_only_those(conf_dir):
    write_conf(conf_dir, {"core": {"disabled_plugins": ["rate_limit", "metrics"]}})
    plugins = (("recorder", Recorder()), ("done-only", DoneOnly()))
    async with running_app(conf_dir, plugins) as (app, client):
        await client.post(CHAT, json={**ECHO, "stream": True})
    seen = app.context.state("done-only")
    assert [type(e) for e in seen] == [RequestDone]
    assert TokensGenerated in {type(e) for e in app.context.state("recorder")}
    # without an observer that takes them, token events are not made at all
    async with running_app(conf_dir, (("done-only", DoneOnly()),)) as (app, client):
        assert not app.context.observers.takes(TokensGenerated)
        assert app.context.observers.takes(RequestDone)
        await client.post(CHAT, json={**ECHO, "stream": True})
    assert [type(e) for e in app.context.state("done-only")] == [RequestDone]
    with pytest.raises(TypeError, match="event classes"):
        observes(dict)


async def test_without_the_request_id_plugin_events_still_have_an_id(conf_dir):
    write_conf(conf_dir, {"core": {"disabled_plugins": ["rate_limit", "request_id"]}})
    async with running_app(conf_dir, (("recorder", Recorder()),)) as (app, client):
        await client.post(CHAT, json=ECHO)
        await client.post(CHAT, json=ECHO)
    done = [e for e in app.context.state("recorder") if isinstance(e, RequestDone)]
    assert len(done) == 2 and all(e.request.id for e in done)
    assert done[0].request.id != done[1].request.id


async def test_each_app_keeps_its_own_plugin_state(conf_dir):
    recorder = Recorder()  # one plugin object registered in two apps
    async with running_app(conf_dir, (("recorder", recorder),)) as (one, client_one):
        async with running_app(conf_dir, (("recorder", recorder),)) as (two, client_two):
            await client_one.post(CHAT, json=ECHO)
            await client_one.post(CHAT, json=ECHO)
            await client_two.post(CHAT, json=ECHO)
    count = lambda app: sum(isinstance(e, RequestDone) for e in app.context.state("recorder"))  # noqa: E731
    assert (count(one), count(two)) == (2, 1)
    with pytest.raises(KeyError, match="no state kept for 'nobody'"):
        one.context.state("nobody")


BACKEND = {"mock"}  # serves the requests below


@pytest.mark.parametrize("disabled", sorted(set(BUILTIN_PLUGINS) - BACKEND))
async def test_disabling_any_builtin_leaves_a_working_service(conf_dir, disabled):
    write_conf(conf_dir, {"core": {"disabled_plugins": ["rate_limit", disabled]}})
    async with running_app(conf_dir) as (app, client):
        chat = await client.post(CHAT, json=ECHO)
        missing = await client.get("/no/such/route")
        invalid = await client.post(CHAT, json={"messages": "not a list"})
        wrong_method = await client.get(CHAT)
        health = await client.get("/health")
    assert disabled not in app.context.pm.sources
    assert chat.status_code == 200 and chat.json()["choices"][0]["message"]["content"]
    assert documented(missing.json()) == {"code": "not_found", "message": "no such route"}
    assert invalid.status_code == 422 and invalid.json()["code"] == "request_invalid"
    assert wrong_method.status_code == 405
    assert wrong_method.json()["code"] == "method_not_allowed"
    assert health.json()["status"] == "ok"


async def test_with_every_optional_builtin_disabled_errors_keep_their_shape(conf_dir):
    everything = [*sorted(set(BUILTIN_PLUGINS) - BACKEND), "rate_limit"]
    write_conf(conf_dir, {"core": {"disabled_plugins": everything}})
    async with running_app(conf_dir) as (app, client):
        missing = await client.get("/nope")
        too_large = await client.post(CHAT, content=b"x" * 2_000_000)
    assert [spec.name for spec in app.context.middleware] == ["framing", "errors"]
    assert documented(missing.json()) == {"code": "not_found", "message": "no such route"}
    assert too_large.status_code == 413 and too_large.json()["code"] == "request_too_large"


class Exploding:
    """A plugin middleware outside the core's error layer that fails on one path."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and scope["path"] == "/explode":
            raise RuntimeError("a bug in a plugin middleware, with a secret: sk-123")
        await self.app(scope, receive, send)


class ExplodingPlugin:
    @hookimpl
    def ddx_llm_middleware(self):
        return MiddlewareSpec("exploding", 150, Exploding)


async def test_an_error_escaping_an_outer_middleware_is_still_shaped(conf_dir):
    async with running_app(conf_dir, (("exploding", ExplodingPlugin()),)) as (_, client):
        response = await client.get("/explode")
        fine = await client.get("/health")
    assert response.status_code == 500
    assert documented(response.json()) == {"code": "llm_error", "message": "internal server error"}
    assert "sk-123" not in response.text
    assert fine.status_code == 200


async def test_hooks_receive_the_app(conf_dir):
    seen = {}

    class Curious:
        @hookimpl
        def ddx_llm_routes(self, app, settings):
            seen["routes"] = (app, settings)
            return []

        @hookimpl
        def ddx_llm_health(self, app, host):
            seen["health"] = (app, host)
            return {"curious": True}

        @hookimpl
        def ddx_llm_map_exception(self, exc, scope, app):
            seen["map_exception"] = app
            return None

    async with running_app(conf_dir, (("curious", Curious()),)) as (asgi, client):
        assert (await client.get("/health")).json()["curious"] is True
        await client.get("/nope")
    app = asgi.context
    assert seen["routes"] == (app, app.settings)
    assert seen["health"] == (app, app.host)
    assert seen["map_exception"] is app


class Shaper:
    """Restates every error on the chat surface in a made-up API's own shape."""

    @hookimpl
    def ddx_llm_shape_error(self, info, scope):
        if matched_route(scope).surface != "chat.completions":
            return None
        payload = {"type": "error", "error": {"kind": info.code, "text": info.message}}
        status = 529 if info.code == "overloaded" else info.status
        return ErrorInfo(status, info.code, info.message, headers=info.headers, payload=payload)


async def test_a_surface_restates_errors_in_its_own_shape(conf_dir):
    async with running_app(conf_dir, (("shaper", Shaper()),)) as (_, client):
        invalid = await client.post(CHAT, json={"messages": "not a list"})
        streamed = await client.post(
            CHAT, json={**ECHO, "stream": True, "mock": {"scenario": "error"}}
        )
        elsewhere = await client.get("/nope")
    assert invalid.status_code == 422
    assert invalid.json() == {
        "type": "error",
        "error": {"kind": "request_invalid", "text": "invalid request: messages"},
    }
    events = [line for line in streamed.text.splitlines() if line.startswith("data: {")]
    assert json.loads(events[-1].removeprefix("data: "))["error"]["error"]["kind"] == "llm_error"
    assert documented(elsewhere.json())["code"] == "not_found"  # other routes keep ours


class Failing:
    """A route that fails after its response started, and a middleware outside the core's
    error layer that fails before anything was sent."""

    @hookimpl
    def ddx_llm_routes(self):
        from ddx_llm.routing import Route

        class HalfAnswer:
            async def __call__(self, scope, receive, send):
                await send({"type": "http.response.start", "status": 200, "headers": []})
                await send({"type": "http.response.body", "body": b"half", "more_body": True})
                raise RuntimeError("failed mid-answer")

        return [Route("/half", HalfAnswer(), methods=["GET"])]

    @hookimpl
    def ddx_llm_middleware(self):
        class Outside:
            def __init__(self, inner):
                self.inner = inner

            async def __call__(self, scope, receive, send):
                if scope.get("path") == "/outside":
                    raise RuntimeError("failed outside the error layer")
                await self.inner(scope, receive, send)

        return MiddlewareSpec("outside", 120, Outside)


async def test_errors_after_the_start_end_the_answer_and_outside_ones_are_shaped(conf_dir, caplog):
    async with running_app(conf_dir, (("failing", Failing()),)) as (_, client):
        outside = await client.get("/outside")
        with pytest.raises(Exception):  # noqa: B017 - the transport reports the cut body
            await client.get("/half")
    assert outside.status_code == 500 and documented(outside.json())["code"]
    assert "failed after its response started" in caplog.text
