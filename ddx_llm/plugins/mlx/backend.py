"""The ``mlx`` backend: real generation with mlx-lm, one resident model in its worker thread.

``load`` starts a :class:`~.worker.ModelWorker` (conversion of the bundled model and
``mlx_lm.load`` happen on that thread, never on the event loop); ``prepare`` checks the request
and renders the prompt with the real tokenizer in a thread (so ``Prompt.tokens`` is exact and the
core's ``context_too_long`` check is too); ``generate`` submits a job and turns the worker's
events into :class:`~ddx_llm.backend.Delta` pieces, parsing tool calls on the way.  Its
``finally`` sets the job's cancel flag, so a disconnect or early close stops the worker within a
token.

Usage: ``prompt_tokens`` is the rendered prompt's length; ``completion_tokens`` every token the
model generated, the end-of-turn token included (as OpenAI, vLLM and mlx-lm's server count).
"""

from __future__ import annotations

import functools
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import anyio

from ddx_llm.backend import Delta, Prompt, ToolCallDelta, Usage
from ddx_llm.errors import LlmError, ModelUnavailable
from ddx_llm.registry import ModelEntry, Registry
from ddx_llm.schemas import ChatCompletionRequest, TokenLogprob

from .bundled import BUNDLED_MODEL_ID
from .prompt import check_request, render_prompt, template_messages, template_tools
from .sampling import SamplingParams, sampling_params
from .source import ModelSource, load_model, model_source
from .tools import ToolCallStream
from .worker import Failed, Finished, Job, ModelWorker, Piece

if TYPE_CHECKING:
    from ddx_llm.config import Settings

    from . import MlxSettings

logger = logging.getLogger(__name__)


@dataclass
class MlxHandle:
    """A loaded model: its worker thread and its tokenizer (thread-safe for encoding)."""

    entry: ModelEntry
    source: ModelSource
    worker: ModelWorker
    tokenizer: Any


@dataclass(frozen=True)
class Prepared:
    tokens: list[int]
    params: SamplingParams
    tools: list[dict[str, Any]] | None
    parallel_tool_calls: bool


class MlxBackend:
    """The backend offered as ``mlx`` (see the module docstring)."""

    name = "mlx"
    real_model_mode = True

    def __init__(self, settings: Settings, registry: Registry, hook: Any = None) -> None:
        self.options: MlxSettings = settings.section("mlx")
        self.models_dir = settings.resolve_path(settings.core.models_dir)
        models_toml = str(settings.conf_dir / "models.toml")
        self.sources = {
            entry.id: model_source(entry, settings.resolve_path, models_toml) for entry in registry
        }
        self.handle: MlxHandle | None = None
        """The resident model (for ``/health``)."""

    def default_model(self, registry: Registry) -> str | None:
        """The bundled SmolLM2 when it is registered: it needs no download."""
        return BUNDLED_MODEL_ID if BUNDLED_MODEL_ID in registry else None

    # ------------------------------------------------------------------ lifecycle

    async def load(self, entry: ModelEntry) -> MlxHandle:
        source = self.sources[entry.id]
        loader = functools.partial(
            load_model, source, self.models_dir, allow_download=self.options.allow_download
        )
        worker = ModelWorker(
            loader,
            name=f"mlx-worker[{entry.id}]",
            prefill_step_size=self.options.prefill_step_size,
        )
        worker.start()
        try:
            tokenizer = await anyio.to_thread.run_sync(worker.loaded.result, abandon_on_cancel=True)
        except LlmError:
            raise
        except Exception as exc:
            raise ModelUnavailable(
                f"model {entry.id!r} failed to load", detail=f"{type(exc).__name__}: {exc}"
            ) from exc
        finally:
            if not worker.loaded.done() or worker.loaded.exception() is not None:
                worker.stop()  # a cancelled load: the thread exits once loading is over
        self.handle = MlxHandle(entry, source, worker, tokenizer)
        return self.handle

    async def unload(self, handle: MlxHandle) -> None:
        """Stop the worker and wait until it has dropped the model and cleared MLX's cache."""
        if self.handle is handle:
            self.handle = None
        handle.worker.stop()
        await anyio.to_thread.run_sync(handle.worker.join)

    def status(self) -> dict[str, Any] | None:
        """The worker's counters for ``/health`` (None when no model is loaded)."""
        return self.handle.worker.status() if self.handle else None

    # ------------------------------------------------------------------ requests

    async def prepare(
        self, handle: MlxHandle, entry: ModelEntry, request: ChatCompletionRequest
    ) -> Prompt:
        use_tools = check_request(request, handle.tokenizer, entry.id)
        tools = template_tools(request) if use_tools else None
        tokens = await anyio.to_thread.run_sync(
            render_prompt,
            handle.tokenizer,
            template_messages(request),
            tools,
            handle.source.chat_template_kwargs,
        )
        params = sampling_params(
            request,
            prompt_tokens=len(tokens),
            context_window=entry.context_window,
            vocab_size=len(handle.tokenizer),
            default_max_tokens=self.options.max_tokens,
            default_temperature=self.options.temperature,
            penalty_context_size=self.options.penalty_context_size,
        )
        parallel = request.parallel_tool_calls is not False
        return Prompt(tokens=len(tokens), data=Prepared(tokens, params, tools, parallel))

    async def generate(
        self, handle: MlxHandle, entry: ModelEntry, prompt: Prompt, request: ChatCompletionRequest
    ) -> AsyncIterator[Delta]:
        prepared: Prepared = prompt.data
        job = handle.worker.submit(Job(prepared.tokens, prepared.params))
        tokenizer = handle.tokenizer
        calls = None
        if prepared.tools is not None:
            calls = ToolCallStream(
                tokenizer.tool_call_start,
                tokenizer.tool_call_end,
                tokenizer.tool_parser,
                prepared.tools,
                max_calls=None if prepared.parallel_tool_calls else 1,
            )
        builder = DeltaBuilder(calls, want_logprobs=prepared.params.logprobs)
        limiter = anyio.CapacityLimiter(1)  # this request's own waiter thread, not the shared pool
        try:
            while True:
                events = await anyio.to_thread.run_sync(
                    job.wait, abandon_on_cancel=True, limiter=limiter
                )
                for delta in builder.feed(events):
                    yield delta
                    if delta.finish_reason:
                        return
                if calls is not None and calls.closed:
                    job.cancel.set()  # the one call asked for is made: stop generating
        finally:
            job.cancel.set()


class DeltaBuilder:
    """Worker events → deltas: text through the tool-call parser, logprobs kept with the text
    they belong to, and the finish delta with the finish reason and usage."""

    def __init__(self, calls: ToolCallStream | None, *, want_logprobs: bool) -> None:
        self.calls = calls
        self.want_logprobs = want_logprobs
        self._logprobs: list[TokenLogprob] = []

    def feed(self, events: list[Any]) -> list[Delta]:
        text, tokens = "", 0
        finished: Finished | None = None
        for event in events:
            if isinstance(event, Piece):
                text += event.text
                tokens += event.tokens
                self._logprobs.extend(event.logprobs or [])
            elif isinstance(event, Finished):
                finished = event
            elif isinstance(event, Failed):
                raise event.error
        items: list[str | ToolCallDelta] = [text] if text else []
        if self.calls is not None:
            items = self.calls.feed(text) + (self.calls.finish() if finished else [])
        deltas = [self._delta(item) for item in items]
        if finished is not None:
            deltas.append(self._finish(finished))
        if deltas:
            deltas[0].tokens = tokens
        elif tokens:
            deltas.append(Delta(tokens=tokens))  # held-back text: counted, nothing to show yet
        return deltas

    def _delta(self, item: str | ToolCallDelta) -> Delta:
        logprobs, self._logprobs = self._logprobs, []
        logprobs_out = logprobs if self.want_logprobs else None
        if isinstance(item, str):
            return Delta(content=item, logprobs=logprobs_out)
        return Delta(tool_calls=[item], logprobs=logprobs_out)

    def _finish(self, finished: Finished) -> Delta:
        reason = finished.reason
        made_calls = self.calls is not None and self.calls.calls > 0
        if reason == "cancelled":
            if not made_calls:  # only this backend cancels, and only after a single call
                raise LlmError("the generation was cancelled")
            reason = "stop"
        if reason == "stop" and made_calls:
            reason = "tool_calls"
        delta = Delta(
            finish_reason=reason,
            usage=Usage(finished.prompt_tokens, finished.completion_tokens),
        )
        if self._logprobs and self.want_logprobs:  # logprobs of held-back tokens: keep them
            delta.content, delta.logprobs, self._logprobs = "", self._logprobs, []
        return delta
