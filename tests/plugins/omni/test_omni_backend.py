"""``OmniBackend.generate`` against a plain ASGI app that answers as mlx-omni-server 0.5.3's chat
router streams (one SSE chunk a token, generated synchronously; N-1 tokens for ``max_tokens``
N; the finish chunk, the usage chunk, ``[DONE]``), on asyncio and trio: what it is sent, the
deltas it yields (through the core's own shaper), ``length``, a client leaving (the generator
closed, or cancelled while it waits) stopping the upstream before the lease goes, and the
upstream's failures as our errors."""

from __future__ import annotations

import json
import threading
import time

import anyio
import pytest
from support import ROOT

from ddx_llm.api.shaping import CompletionShaper
from ddx_llm.backend import Prompt
from ddx_llm.config import add_sections, load_core
from ddx_llm.errors import LlmError, ModelUnavailable
from ddx_llm.plugins.omni import OmniSettings
from ddx_llm.plugins.omni.backend import OmniBackend, OmniHandle, Prepared
from ddx_llm.plugins.omni.request import upstream_body
from ddx_llm.registry import ModelEntry
from ddx_llm.schemas import ChatCompletionRequest

pytestmark = pytest.mark.anyio

FOLDER = "/srv/models/SmolLM2-135M-Instruct"
WORDS = ["Once", " upon", " a", " time", ",", " a", " cat"]


class FakeRouter:
    """Streams ``WORDS`` (then stops) as the upstream does, each after ``step`` s of blocking
    work; raises after ``fail_after`` tokens.  Records the body and how it ended."""

    def __init__(self, step: float = 0.0, fail_after: int | None = None) -> None:
        self.step, self.fail_after = step, fail_after
        self.body: dict | None = None
        self.produced = 0
        self.outcome: str | None = None
        self.finished = threading.Event()

    async def __call__(self, scope, receive, send) -> None:
        try:
            self.body = json.loads((await receive())["body"])
            headers = [(b"content-type", b"text/event-stream; charset=utf-8")]
            await send({"type": "http.response.start", "status": 200, "headers": headers})
            for word in WORDS[: self.body["max_tokens"] - 1]:  # the upstream's N-1
                time.sleep(self.step)  # noqa: ASYNC251 - generating blocks, as upstream
                if self.produced == self.fail_after:
                    raise RuntimeError("Stream generation failed: boom")
                self.produced += 1
                await self.event(send, {"delta": {"role": "assistant", "content": word}})
            final = {"delta": {"role": "assistant"}, "finish_reason": "stop"}
            await self.event(send, final)
            usage = {"prompt_tokens": 99, "completion_tokens": self.produced,
                     "total_tokens": 99 + self.produced}  # fmt: skip
            await self.event(send, final, usage=usage)
            await send({"type": "http.response.body", "body": b"data: [DONE]\n\n",
                        "more_body": True})  # fmt: skip
            await send({"type": "http.response.body", "body": b"", "more_body": False})
            self.outcome = "complete"
        except BaseException as exc:
            self.outcome = type(exc).__name__
            raise
        finally:
            self.finished.set()

    async def event(self, send, choice: dict, **extra) -> None:
        data = {"id": "chatcmpl-x", "object": "chat.completion.chunk", "created": 1,
                "model": self.body["model"], "choices": [{"index": 0, **choice}],
                **extra}  # fmt: skip
        body = b"data: " + json.dumps(data).encode() + b"\n\n"
        await send({"type": "http.response.body", "body": body, "more_body": True})


@pytest.fixture
def backend(tmp_path):
    """The backend with the project's models and no conf of its own, the fake as its app."""
    (tmp_path / "models.toml").write_text((ROOT / "conf" / "models.toml").read_text())
    settings = load_core(tmp_path)
    add_sections(settings, [("omni", ("omni", OmniSettings))])
    backend = OmniBackend(settings, settings.registry, app=FakeRouter())
    yield backend
    backend.upstream.stop()


HANDLE = OmniHandle(ModelEntry.model_validate({
    "id": "smol", "family": "SmolLM2", "arch": "llama", "total_params_b": 0.135,
    "quantization": "q4", "context_window": 8192, "label": "SmolLM2",
}), FOLDER)  # fmt: skip


def generation(backend: OmniBackend, limit: int, **fields):
    """What the core calls after ``prepare`` (here: a 12-token prompt, ``limit`` promised)."""
    handle = HANDLE
    request = ChatCompletionRequest.model_validate(
        {"messages": [{"role": "user", "content": "A story"}], **fields}
    )
    prompt = Prompt(12, Prepared(upstream_body(request, FOLDER, limit), limit))
    return backend.generate(handle, handle.entry, prompt, request)


async def test_a_plain_answer_is_streamed_upstream_and_shaped_by_the_core(backend):
    completion = await CompletionShaper("smol").collect(generation(backend, 3, max_tokens=3))
    sent = backend.app.body
    assert (sent["model"], sent["stream"], sent["max_tokens"]) == (FOLDER, True, 4)
    assert sent["stream_options"] == {"include_usage": True}
    assert completion.choices[0].message.content == "Once upon a"
    assert completion.choices[0].finish_reason == "length"  # 3 tokens of 3
    usage = completion.usage
    assert (usage.prompt_tokens, usage.completion_tokens) == (12, 3)  # our count, not its 99
    assert backend.upstream.in_flight == 0


async def test_an_answer_that_ends_before_the_limit_is_stop(backend):
    deltas = [delta async for delta in generation(backend, 20)]
    assert "".join(d.content or "" for d in deltas) == "".join(WORDS)
    assert (deltas[-1].finish_reason, deltas[-1].usage.completion_tokens) == ("stop", 7)
    assert sum(d.tokens for d in deltas) == 7


async def test_closing_the_generation_stops_the_upstream_before_it_returns(backend):
    backend.app.step = 0.05
    deltas = generation(backend, 20, stream=True)
    assert (await deltas.__anext__()).content == "Once"
    await deltas.aclose()  # what the core does when the client leaves
    assert backend.app.finished.is_set() and backend.app.outcome != "complete"
    assert backend.app.produced <= 2 and backend.upstream.in_flight == 0


async def test_a_client_leaving_a_plain_answer_stops_the_upstream_at_once(backend):
    """The core cancels ``collect`` when a non-streamed request's client leaves."""
    backend.app.step = 0.2
    started = time.monotonic()
    with anyio.move_on_after(0.5):
        await CompletionShaper("smol").collect(generation(backend, 20))
    assert backend.app.finished.is_set() and backend.app.outcome != "complete"
    assert backend.app.produced <= 3 and time.monotonic() - started < 1.0
    assert backend.upstream.in_flight == 0


async def test_an_upstream_failure_mid_stream_is_raised_as_ours(backend):
    backend.app.fail_after = 2
    pieces = []
    with pytest.raises(LlmError) as caught:
        async for delta in generation(backend, 20):
            pieces.append(delta.content)
    assert pieces == ["Once", " upon"]
    assert (caught.value.code, caught.value.message) == ("llm_error", "the omni upstream failed")
    assert caught.value.detail == "RuntimeError: Stream generation failed: boom"


async def test_a_stopped_upstream_is_model_unavailable(backend):
    await backend.upstream.run_sync(lambda: None)  # started (by the first load)
    await anyio.to_thread.run_sync(backend.upstream.stop)
    with pytest.raises(ModelUnavailable, match="the omni upstream is not running"):
        await generation(backend, 5).__anext__()
    assert backend.not_ready_reason(HANDLE) == "the omni upstream thread has stopped"
    status = backend.status(None)
    assert (status["upstream_thread"], status["in_flight"]) == ("stopped", 0)
