"""A client that is gone when a stream's headers go out: the generation behind the stream is
closed all the same, on every API surface — its model lease and generation slot come back.

The stream's source (the surface's shaper) never started, so it never ran the code that closes
what it wraps; :class:`ddx_llm.sse.EventStreamResponse` closes the generation itself
(``closes``).  Called in process, as a server would: the ``send`` of the response's start
raises ``OSError`` (ASGI 2.4: a failing send means the client left)."""

from __future__ import annotations

import json

import anyio
import pytest
from support import running_app, write_conf

pytestmark = pytest.mark.anyio

USER = [{"role": "user", "content": "one two three"}]
SURFACES = {
    "chat": ("/v1/chat/completions", {"messages": USER, "stream": True}),
    "completions": ("/v1/completions", {"prompt": "one two three", "stream": True}),
    "messages": ("/v1/messages", {"messages": USER, "max_tokens": 8, "stream": True}),
    "responses": ("/v1/responses", {"input": "one two three", "stream": True}),
}


@pytest.mark.parametrize("surface", SURFACES)
async def test_a_stream_refused_at_its_headers_gives_back_its_slot(conf_dir, surface):
    write_conf(conf_dir, {"core": {"max_running": 1}, "completions": {"enabled": True}})
    path, body = SURFACES[surface]
    async with running_app(conf_dir) as (app, client):
        body = {**body, "model": app.context.host.default_model, "mock": {"scenario": "echo"}}
        raw = json.dumps(body).encode()
        messages = [{"type": "http.request", "body": raw, "more_body": False}]

        async def receive():
            if messages:
                return messages.pop()
            await anyio.sleep_forever()

        async def send(message):
            if message["type"] == "http.response.start":
                raise OSError("the client disconnected")

        scope = {
            "type": "http", "asgi": {"version": "3.0", "spec_version": "2.4"},
            "http_version": "1.1", "method": "POST", "scheme": "http", "path": path,
            "raw_path": path.encode(), "root_path": "", "query_string": b"",
            "headers": [(b"host", b"testserver"), (b"content-type", b"application/json"),
                        (b"content-length", str(len(raw)).encode())],
            "client": ("127.0.0.1", 1), "server": ("testserver", 80),
        }  # fmt: skip
        with anyio.fail_after(10):
            await app(scope, receive, send)
        admission = app.context.host.admission
        assert (admission.running, admission.waiting) == (0, 0), surface
        # the one generation slot serves the next request at once
        with anyio.fail_after(10):
            answer = await client.post(path, json={**body, "stream": False})
        assert answer.status_code == 200, answer.text
