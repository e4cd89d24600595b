"""The ``mlx`` backend: real generation with mlx-lm, one resident model in its worker thread.

``load`` starts a :class:`~.worker.ModelWorker`: the bundled model's conversion, the memory fit
check and ``mlx_lm.load`` happen on that thread, never on the event loop; their progress
(conversion, then weights) is ``load_progress`` for ``/health``, and a log line every 5 s.
``unload`` stops it and waits until the model's memory is freed, for the next model to reuse;
``after_load`` (the next model serves) or ``close`` give it back to the system (figures in
``/health`` → ``mlx.last_unload``: ``dropped`` when freed, ``released`` when given back).
``prepare`` checks the request and renders the prompt with the real tokenizer in a thread (so
``Prompt.tokens`` is exact and the core's ``context_too_long`` check is too) and, when the
request asks for structure (``response_format``, a forced ``tool_choice``), compiles its
grammar there too (:mod:`.structured`, cached per schema); ``generate``
submits a job to the worker's batch and turns its events into deltas.  Its ``finally`` sets the
job's cancel flag, so a disconnect or early close removes that sequence — only that one — from
the batch at the next step.

Usage: ``prompt_tokens`` is the rendered prompt's length; ``completion_tokens`` every token the
model generated, the end-of-turn token included (as OpenAI, vLLM and mlx-lm's server count).
"""

from __future__ import annotations

import functools
import logging
import time
import weakref
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import anyio

from ddx_llm.backend import BackendBase, Delta, Prompt
from ddx_llm.errors import LlmError, ModelUnavailable
from ddx_llm.plugins.mlx_models import memory
from ddx_llm.plugins.mlx_models.bundled import BUNDLED_MODEL_ID
from ddx_llm.plugins.mlx_models.progress import LoadProgress, LogProgress, tee
from ddx_llm.plugins.mlx_models.source import ModelSource, local_folder, model_source
from ddx_llm.plugins.structured_output.requested import constraint
from ddx_llm.registry import ModelEntry, Registry
from ddx_llm.schemas import ChatCompletionRequest

from .deltas import DeltaBuilder
from .jobs import Job
from .loading import load_model
from .prompt import (
    check_request,
    prompt_tokens,
    request_template_kwargs,
    template_tools,
)
from .reasoning import ThinkSplitter, starts_thinking
from .sampling import SamplingParams, sampling_params
from .structured import CompiledGrammar, StructuredDecoding
from .tools import ToolCallStream
from .worker import ModelWorker, WorkerOptions

if TYPE_CHECKING:
    from ddx_llm.context import AppContext

    from . import MlxSettings

logger = logging.getLogger(__name__)


@dataclass
class MlxHandle:
    """A loaded model: its worker thread, its tokenizer (thread-safe for encoding) and its
    structured-output state (grammar tokenizer, built on first use, and compiled grammars)."""

    entry: ModelEntry
    source: ModelSource
    worker: ModelWorker
    tokenizer: Any
    structured: StructuredDecoding


@dataclass(frozen=True)
class Prepared:
    tokens: list[int]
    params: SamplingParams
    tools: list[dict[str, Any]] | None
    parallel_tool_calls: bool
    grammar: CompiledGrammar | None = None
    thinking: bool = False
    """The rendered prompt leaves a thinking block open: the answer starts with thoughts."""
    ticket: int | None = None
    """Its announcement to the worker (``Arrivals``), forgotten when the job is queued or this
    object is dropped (a request that never generated)."""


class MlxBackend(BackendBase):
    """The backend offered as ``mlx`` (see the module docstring)."""

    name = "mlx"
    real_model_mode = True
    raw_prompts = True
    """A ``raw_prompt`` request's text is tokenized as it is (legacy completions)."""

    def __init__(self, app: AppContext) -> None:
        settings, registry = app.settings, app.settings.registry
        self.options: MlxSettings = settings.section("mlx")
        self.models_dir = settings.resolve_path(settings.core.models_dir)
        models_toml = str(settings.conf_dir / "models.toml")
        self.sources = {
            entry.id: model_source(entry, settings.resolve_path, models_toml) for entry in registry
        }
        running = settings.core.max_running
        max_batch = self.options.max_batch or running
        if max_batch < running:
            logger.warning(
                "[mlx] max_batch = %d is below [core] max_running = %d: up to %d admitted "
                "requests wait inside the worker instead of the core's bounded queue",
                max_batch, running, running - max_batch,
            )  # fmt: skip
        self.worker_options = WorkerOptions(
            max_batch=max_batch,
            prefill_step_size=self.options.prefill_step_size,
            prefill_step_seconds=self.options.prefill_step_seconds,
            prompt_cache_entries=self.options.prompt_cache_entries,
            prompt_cache_bytes=int(self.options.prompt_cache_gb * memory.GB),
        )
        self.last_unload: dict[str, Any] | None = None
        """Memory figures of the last unload: resident, dropped, released (the next model
        resident, if one was loaded)."""
        self._unreleased = False
        """An unloaded model's memory is freed but not given back to the system yet."""
        self._loading: dict[str, LoadProgress] = {}
        """The progress of the loads under way, by model id."""

    def default_model(self, registry: Registry) -> str | None:
        """The bundled SmolLM2 when it is registered: it needs no download."""
        return BUNDLED_MODEL_ID if BUNDLED_MODEL_ID in registry else None

    # ------------------------------------------------------------------ lifecycle

    async def load(self, entry: ModelEntry) -> MlxHandle:
        source = self.sources[entry.id]
        loader = functools.partial(
            load_model,
            source,
            self.models_dir,
            allow_download=self.options.allow_download,
            headroom_gb=self.options.memory_headroom_gb,
        )
        progress = self._loading[entry.id] = LoadProgress()
        report = tee(progress, LogProgress(logger, f"loading {entry.id}"))
        worker = ModelWorker(loader, f"mlx-worker[{entry.id}]", self.worker_options, report)
        worker.start()
        try:
            tokenizer = await anyio.to_thread.run_sync(worker.loaded.result, abandon_on_cancel=True)
        except LlmError:
            raise
        except Exception as exc:
            raise ModelUnavailable(
                f"model {entry.id!r} failed to load", detail=f"{type(exc).__name__}: {exc}"
            ) from None
        finally:
            self._loading.pop(entry.id, None)
            if not worker.loaded.done() or worker.loaded.exception() is not None:
                worker.stop()  # a cancelled load: the thread exits once loading is over
        return MlxHandle(entry, source, worker, tokenizer, StructuredDecoding(tokenizer, entry.id))

    def load_progress(self, entry: ModelEntry) -> float | None:
        """How far the load of ``entry`` is (conversion, then weights), 0 to 1."""
        progress = self._loading.get(entry.id)
        return progress.fraction if progress is not None else None

    async def unload(self, handle: MlxHandle) -> None:
        """Stop the worker and wait until it has dropped the model and freed its memory (for
        the next model to reuse; :meth:`after_load` or :meth:`close` give it back)."""
        resident = memory.figures()
        started = time.monotonic()
        handle.worker.stop()
        await anyio.to_thread.run_sync(handle.worker.join)
        self._unreleased = True
        unload_ms = round((time.monotonic() - started) * 1000, 1)
        self.last_unload = {"model": handle.entry.id, "unload_ms": unload_ms, "resident": resident,
                            "dropped": handle.worker.dropped}  # fmt: skip
        logger.info("unloaded %s: %s", handle.entry.id, self.last_unload)

    async def after_load(self, handle: MlxHandle) -> None:
        """Once the next model serves: give the memory the last unload freed (and the next
        model did not reuse) back to the system."""
        await self._release()

    async def close(self) -> None:
        """At shutdown, after the last unload: give its memory back to the system."""
        await self._release()

    async def _release(self) -> None:
        if not self._unreleased:
            return
        self._unreleased = False
        released = await anyio.to_thread.run_sync(_release)
        if self.last_unload is not None:
            self.last_unload["released"] = released
        logger.info("memory given back to the system: %s", released)

    async def preflight(self, entry: ModelEntry, resident: MlxHandle | None) -> None:
        """Raise ModelUnavailable when ``entry`` cannot fit even once the ``resident`` model is
        gone (the load itself checks again)."""
        replaced = resident.source if resident is not None else None
        await anyio.to_thread.run_sync(self._check_fits, self.sources[entry.id], replaced)

    def _check_fits(self, source: ModelSource, resident: ModelSource | None) -> None:
        folder = local_folder(source, self.models_dir)
        if folder is None:
            return  # not on this machine yet: the load converts or reports it
        resident_folder = local_folder(resident, self.models_dir) if resident else None
        freed = memory.weights_bytes(resident_folder) if resident_folder else 0
        memory.check_fits(source.model_id, folder, self.options.memory_headroom_gb, freed)

    def status(self, handle: MlxHandle | None) -> dict[str, Any]:
        """``/health`` → ``mlx``: the worker's counters and heartbeat, memory figures."""
        body: dict[str, Any] = handle.worker.status() if handle else {}
        if handle is not None:
            body["structured"] = {**(body.get("structured") or {}), **handle.structured.status()}
        body["stall_seconds"] = self.options.stall_seconds
        body["memory"] = memory.figures()
        if self.last_unload is not None:
            body["last_unload"] = self.last_unload
        return body

    def not_ready_reason(self, handle: MlxHandle | None) -> str | None:
        """Why the resident model cannot serve although the host thinks it is ready: its
        worker thread died, or a step has been running for longer than ``stall_seconds``."""
        if handle is None:
            return None
        worker = handle.worker
        if not worker.is_alive():
            why = f" ({worker.crashed})" if worker.crashed else ""
            return f"the mlx generation worker of {handle.entry.id} is not running{why}"
        stalled = worker.stalled_for()
        if stalled > self.options.stall_seconds:
            return (
                f"the mlx generation worker of {handle.entry.id} is stalled: no generation "
                f"step for {stalled:.1f} s ([mlx] stall_seconds = {self.options.stall_seconds:g})"
            )
        return None

    # ------------------------------------------------------------------ requests

    async def prepare(
        self, handle: MlxHandle, entry: ModelEntry, request: ChatCompletionRequest
    ) -> Prompt:
        use_tools = check_request(request, handle.tokenizer, entry.id)
        wanted = constraint(request)  # malformed requests for structure: 422 before any work
        tools = template_tools(request) if use_tools else None
        template_kwargs = {**handle.source.chat_template_kwargs, **request_template_kwargs(request)}
        arrivals = handle.worker.arrivals
        ticket = arrivals.announce()  # a step about to start waits for this prompt (briefly)
        try:
            prepared = await self._prepare(handle, entry, request, use_tools, wanted, tools,
                                           template_kwargs)  # fmt: skip
        except BaseException:
            arrivals.forget(ticket)
            raise
        prepared = replace(prepared, ticket=ticket)
        weakref.finalize(prepared, arrivals.forget, ticket)
        return Prompt(tokens=len(prepared.tokens), data=prepared)

    async def _prepare(
        self, handle: MlxHandle, entry: ModelEntry, request: ChatCompletionRequest,
        use_tools: bool, wanted: Any, tools: Any, template_kwargs: dict[str, Any],
    ) -> Prepared:  # fmt: skip
        tokens = await anyio.to_thread.run_sync(
            prompt_tokens, handle.tokenizer, request, tools, template_kwargs
        )
        grammar = None
        if wanted is not None:
            grammar = await anyio.to_thread.run_sync(
                handle.structured.compile, wanted, request, use_tools
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
        thinking = starts_thinking(handle.tokenizer, tokens)
        return Prepared(tokens, params, tools, parallel, grammar, thinking)

    async def generate(
        self, handle: MlxHandle, entry: ModelEntry, prompt: Prompt, request: ChatCompletionRequest
    ) -> AsyncIterator[Delta]:
        prepared: Prepared = prompt.data
        job = handle.worker.submit(
            Job(prepared.tokens, prepared.params, prepared.grammar), prepared.ticket
        )
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
        splitter = None
        if getattr(tokenizer, "has_thinking", False):
            splitter = ThinkSplitter(
                tokenizer.think_start, tokenizer.think_end, thinking=prepared.thinking
            )
        builder = DeltaBuilder(calls, want_logprobs=prepared.params.logprobs, thinking=splitter)
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


def _release() -> dict[str, float]:
    """:func:`.memory.release`, then the memory figures."""
    memory.release()
    return memory.figures()
