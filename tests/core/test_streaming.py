"""SSE and disconnects at the ASGI level: the backend's generator is always closed."""

from __future__ import annotations

import json

import anyio
import pytest
from support import running_app, write_conf

from ddx_llm import hookimpl
from ddx_llm.backend import BackendBase, Delta, Prompt, Usage

pytestmark = pytest.mark.anyio


class EndlessBackend(BackendBase):
    """Generates until closed; records how many pieces it made and whether it was closed."""

    name = "endless"
    real_model_mode = False

    def __init__(self) -> None:
        self.made = 0
        self.closed = anyio.Event()

    async def load(self, entry):
        return entry

    async def unload(self, handle):
        return None

    async def prepare(self, handle, entry, request):
        return Prompt(tokens=1)

    async def generate(self, handle, entry, prompt, request):
        try:
            while True:
                await anyio.sleep(0.01)
                self.made += 1
                yield Delta(content="x", tokens=1)
                if self.made > 10_000:  # a safety net for a broken test, never reached
                    yield Delta(finish_reason="length", usage=Usage(1, self.made))
                    return
        finally:
            self.closed.set()


class EndlessPlugin:
    def __init__(self) -> None:
        self.backend = EndlessBackend()

    @hookimpl
    def ddx_llm_backends(self):
        return {"endless": lambda app: self.backend}


async def call_and_leave(
    app, body: dict, *, leave_after_chunks: int = 0, leave_after_seconds: float = 0.0
) -> list[dict]:
    """Drive the ASGI app directly; disconnect after ``leave_after_chunks`` body messages
    (streams) or ``leave_after_seconds`` (non-streamed answers)."""
    sent: list[dict] = []
    raw = json.dumps(body).encode()
    request_sent = False
    enough = anyio.Event()

    async def receive():
        nonlocal request_sent
        if not request_sent:
            request_sent = True
            return {"type": "http.request", "body": raw, "more_body": False}
        if leave_after_seconds:
            await anyio.sleep(leave_after_seconds)
        else:
            await enough.wait()
        return {"type": "http.disconnect"}

    async def send(message):
        sent.append(message)
        bodies = [m for m in sent if m["type"] == "http.response.body"]
        if len(bodies) >= leave_after_chunks:
            enough.set()

    scope = {
        "type": "http", "asgi": {"version": "3.0", "spec_version": "2.1"}, "http_version": "1.1",
        "method": "POST", "scheme": "http", "path": "/v1/chat/completions", "raw_path": b"",
        "query_string": b"", "root_path": "", "headers": [(b"content-type", b"application/json")],
        "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 80),
    }  # fmt: skip
    with anyio.fail_after(5):
        await app(scope, receive, send)
    return sent


@pytest.fixture
def endless(conf_dir):
    write_conf(conf_dir, {"core": {"backend": "endless"}})
    return EndlessPlugin()


async def test_disconnect_mid_stream_closes_the_backend_generator(conf_dir, endless):
    async with running_app(conf_dir, extra_plugins=[("endless", endless)]) as (app, _):
        body = {"messages": [{"role": "user", "content": "go"}], "stream": True}
        sent = await call_and_leave(app, body, leave_after_chunks=3)
        with anyio.fail_after(2):
            await endless.backend.closed.wait()
        made = endless.backend.made
        await anyio.sleep(0.1)
        assert endless.backend.made == made  # nothing generates any more
        assert sent[0]["status"] == 200
        assert not any(m.get("body") == b"data: [DONE]\n\n" for m in sent)


async def test_disconnect_during_a_non_streamed_answer_closes_it_too(conf_dir, endless):
    async with running_app(conf_dir, extra_plugins=[("endless", endless)]) as (app, _):
        body = {"messages": [{"role": "user", "content": "go"}]}
        sent = await call_and_leave(app, body, leave_after_seconds=0.1)
        with anyio.fail_after(2):
            await endless.backend.closed.wait()
        made = endless.backend.made
        await anyio.sleep(0.1)
        assert endless.backend.made == made
        assert 0 < made < 50
        assert sent[0]["status"] == 499  # only metrics and logs see it: the client is gone


async def test_include_usage_false_sends_no_usage_chunk(conf_dir):
    async with running_app(conf_dir) as (_, client):
        body = {"messages": [{"role": "user", "content": "hi"}], "stream": True}
        text = (await client.post("/v1/chat/completions", json=body)).text
    chunks = [json.loads(b[6:]) for b in text.strip().split("\n\n")[:-1]]
    assert all("usage" not in chunk for chunk in chunks)
    assert all(chunk["choices"] for chunk in chunks)
