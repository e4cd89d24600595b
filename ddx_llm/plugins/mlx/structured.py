"""Structured output for one loaded model: its llguidance tokenizer and its compiled grammars.

:class:`StructuredDecoding` lives on the model's handle.  :meth:`~StructuredDecoding.compile`
(blocking: the backend runs it in a thread, never on the event loop) turns a request's
:class:`~ddx_llm.plugins.structured_output.requested.Constraint` into a
:class:`CompiledGrammar`, whose :meth:`~CompiledGrammar.processor` the MLX worker calls when
the sequence joins the batch — each request gets its own copy of the grammar state.

What is constrained (the grammar starts at the first generated token):

- ``response_format`` ``json_schema`` / ``json_object``: the answer is one JSON value of the
  schema (compact: no free whitespace), then the end of turn.  With usable ``tools`` (and
  ``tool_choice`` ``auto``) the model may instead make one tool call in its own format.
- ``tool_choice`` ``required`` / a named function: exactly one call, in the model's own
  tool-call format (:mod:`.tool_grammar`), to the named tool or to any of ``tools``, with
  arguments valid against the tool's ``parameters``.

Refused with 422 ``request_invalid`` naming the field: a schema llguidance cannot compile or
enforce (from :func:`~ddx_llm.plugins.structured_output.requested.grammar`, cached per schema),
a forced tool call (or ``response_format`` with tools) on a model whose tool-call format is not
JSON, and any request for structure on a tokenizer llguidance cannot read (a slow,
non-``tokenizers`` one).

Costs, paid once: the llguidance tokenizer (about 0.3 s for SmolLM2's 49k vocabulary, ~1 s for
150k) is built on the first structured request of a model; a grammar is compiled against it
once and kept (LRU, :data:`GRAMMAR_CACHE` per model), and each request copies it (microseconds).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

from ddx_llm.plugins.structured_output.requested import (
    ANY_OBJECT,
    COMPILE_OPTIONS,
    Constraint,
    grammar,
    invalid,
)
from ddx_llm.schemas import ChatCompletionRequest

from .constrained import GrammarProcessor
from .tool_grammar import SUPPORTED_PARSERS, ToolFormat, calls_lark, json_rule, parser_name
from .tool_grammar import tool_format as find_tool_format

GRAMMAR_CACHE = 64
"""Compiled grammars kept per model (least recently used go first)."""


@dataclass
class CompiledGrammar:
    """A grammar compiled against a model's tokenizer: ``template`` is a matcher that never
    consumes anything; each sequence gets a copy of it."""

    template: Any
    vocab_size: int
    end_tokens: tuple[int, ...]
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def processor(self) -> GrammarProcessor:
        """A fresh grammar state for one sequence (call in the MLX worker thread)."""
        with self.lock:
            matcher = self.template.deep_copy()
        return GrammarProcessor(matcher, self.vocab_size, self.end_tokens)


class StructuredDecoding:
    """Structured output for the model of ``tokenizer`` (mlx-lm's ``TokenizerWrapper``)."""

    def __init__(self, tokenizer: Any, model_id: str, cache_entries: int = GRAMMAR_CACHE) -> None:
        self.tokenizer = tokenizer
        self.model_id = model_id
        self.cache_entries = cache_entries
        self.end_tokens = tuple(sorted(tokenizer.eos_token_ids or [tokenizer.eos_token_id]))
        self._ll: Any = None
        self._ll_error: str | None = None
        self._format: ToolFormat | None = None
        self._ll_lock = threading.Lock()
        self._lock = threading.Lock()
        self._cache: OrderedDict[str, CompiledGrammar] = OrderedDict()
        self.compiled = 0
        self.hits = 0

    # ------------------------------------------------------------------ requests (threads)

    def compile(
        self, item: Constraint, request: ChatCompletionRequest, use_tools: bool
    ) -> CompiledGrammar:
        """The compiled grammar of ``item`` for this model (blocking).  ``use_tools``: the
        request's tools are offered to the model (given, ``tool_choice`` not ``none``).
        Raises RequestInvalid naming the field (see the module docstring)."""
        if item.kind == "tool_call":
            return self._get(self._tool_lark(item, request), item.field)
        text = grammar(item)  # checks the schema first: its errors name response_format
        if use_tools:
            text = self._answer_or_call(item, request)
        return self._get(text, item.field)

    def _tool_lark(self, item: Constraint, request: ChatCompletionRequest) -> str:
        fmt = self._tool_format(item.field)
        tools = self._parameters(request)
        chosen = {item.tool: tools[item.tool]} if item.tool else tools
        return "start: call\n" + calls_lark(fmt, chosen)

    def _answer_or_call(self, item: Constraint, request: ChatCompletionRequest) -> str:
        fmt = self._tool_format(item.field, with_answer=True)
        answer = json_rule(item.schema, COMPILE_OPTIONS)
        calls = calls_lark(fmt, self._parameters(request))
        return f"start: answer | call\nanswer: {answer}\n{calls}"

    def _parameters(self, request: ChatCompletionRequest) -> dict[str, dict[str, Any]]:
        """Each tool's ``parameters`` (checked like a response schema: a schema llguidance
        cannot enforce is 422 naming that tool's parameters)."""
        tools = {}
        for index, tool in enumerate(request.tools or []):
            schema = tool.function.parameters or ANY_OBJECT
            grammar(Constraint("tool_call", schema, f"tools.{index}.function.parameters"))
            tools[tool.function.name] = schema
        return tools

    def _tool_format(self, field_name: str, *, with_answer: bool = False) -> ToolFormat:
        self.ll_tokenizer(field_name)
        if self._format is None:
            parser = parser_name(self.tokenizer)
            what = "response_format with tools" if with_answer else "forcing a tool call"
            raise invalid(
                field_name,
                f"{what} needs a JSON tool-call format ({', '.join(SUPPORTED_PARSERS)} parsers); "
                f"{self.model_id} uses mlx-lm's {parser!r} parser",
            )
        return self._format

    def ll_tokenizer(self, field_name: str = "response_format") -> Any:
        """The llguidance tokenizer of this model, built on first use (blocking, ~0.3-1 s).
        Raises RequestInvalid when llguidance cannot read the tokenizer."""
        with self._ll_lock:
            if self._ll is None and self._ll_error is None:
                self._build_tokenizer()
        if self._ll is None:
            raise invalid(field_name, self._ll_error or "no grammar tokenizer")
        return self._ll

    def _build_tokenizer(self) -> None:
        import llguidance.hf

        try:
            self._ll = llguidance.hf.from_tokenizer(
                self.tokenizer._tokenizer, eos_token=list(self.end_tokens)
            )
        except Exception as exc:  # a slow tokenizer, or one the Rust side cannot read
            self._ll_error = (
                f"structured output needs a tokenizer llguidance can read; {self.model_id}'s "
                f"cannot be ({type(exc).__name__}: {exc})"
            )
            return
        self._format = find_tool_format(self.tokenizer, self._ll)

    def _get(self, text: str, field_name: str) -> CompiledGrammar:
        with self._lock:
            found = self._cache.get(text)
            if found is not None:
                self._cache.move_to_end(text)
                self.hits += 1
                return found
        compiled = self._compile(text, field_name)  # outside the lock: may take a while
        with self._lock:
            self.compiled += 1
            self._cache[text] = compiled
            while len(self._cache) > self.cache_entries:
                self._cache.popitem(last=False)
        return compiled

    def _compile(self, text: str, field_name: str) -> CompiledGrammar:
        import llguidance

        tokenizer = self.ll_tokenizer(field_name)
        limits = llguidance.LLParserLimits(verbose_errors=False)
        matcher = llguidance.LLMatcher(tokenizer, text, log_level=0, limits=limits)
        if matcher.is_error():
            raise invalid(field_name, f"the grammar cannot be enforced: {matcher.get_error()}")
        return CompiledGrammar(matcher, tokenizer.vocab_size, self.end_tokens)

    def status(self) -> dict[str, Any]:
        """``/health`` → ``mlx.structured``: the grammar tokenizer and the grammar cache."""
        return {
            "tokenizer_ready": self._ll is not None,
            "tool_parser": parser_name(self.tokenizer),
            "forced_tool_calls": self._format is not None if self._ll is not None else None,
            "grammars_cached": len(self._cache),
            "grammars_compiled": self.compiled,
            "grammar_cache_hits": self.hits,
        }
