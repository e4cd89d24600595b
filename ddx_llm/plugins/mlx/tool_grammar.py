"""Tool calls in the model's own tool-call format, as Lark grammars for llguidance.

A forced tool call (``tool_choice`` ``required`` or a named function) is constrained to exactly
the text the model's tool parser reads back (``tokenizer.tool_parser``, one of
``mlx_lm.tool_parsers``), with the arguments constrained by the tool's ``parameters``
(llguidance's ``%json{...}`` inside the literal frame).  Supported formats, by parser module:

- ``json_tools`` (Hermes / Qwen 2.5 / Qwen 3, the bundled SmolLM2 tools variant):
  ``<tool_call>\\n{"name": "NAME", "arguments": {...}}\\n</tool_call>``;
- ``mistral``: ``[TOOL_CALLS]NAME[ARGS]{...}`` when the chat template uses ``[ARGS]`` (v11+
  templates), else ``[TOOL_CALLS][{"name": "NAME", "arguments": {...}}]``.

Other parsers (``qwen3_coder``, ``glm47``, ``pythonic``, ``function_gemma``, …) write arguments
as XML-like or Python text rather than JSON: :func:`tool_format` returns None for them and the
caller refuses the request with 422.  A marker that is one special token of the vocabulary
(e.g. Mistral's ``[TOOL_CALLS]``) is written as that token (``<[id]>``), since special tokens
never match plain text in llguidance; any other marker is a literal, so the model may produce it
as one added token or spelled out in several.

The JSON inside a call is written as the templates render it (``json.dumps`` separators
``", "`` and ``": "``), so the model sees its own format.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

CALL_JSON_OPTIONS = {"whitespace_flexible": False, "item_separator": ", ", "key_separator": ": "}
"""How arguments are written inside a call: as chat templates render them (``tojson``)."""
SUPPORTED_PARSERS = ("json_tools", "mistral")


@dataclass(frozen=True)
class ToolFormat:
    """A model's tool-call format: ``parser`` (mlx-lm's module name) and its frame markers,
    already in Lark syntax (a quoted literal or a special token ``<[id]>``)."""

    parser: str
    start: str
    end: str
    style: str = "json"
    """``json`` (``{"name", "arguments"}`` objects) or ``header`` (Mistral's ``NAME[ARGS]``)."""
    args_marker: str = ""

    def call(self, name: str, parameters: dict[str, Any]) -> str:
        """The Lark expression of one call to ``name`` with arguments valid against
        ``parameters``."""
        arguments = json_rule(parameters, CALL_JSON_OPTIONS)
        if self.style == "header":
            return f"{self.start} {literal(name)} {self.args_marker} {arguments}"
        head = '{"name": ' + json.dumps(name, ensure_ascii=False) + ', "arguments": '
        if self.parser == "mistral":
            return f"{self.start} {literal('[' + head)} {arguments} {literal('}]')}"
        opening, closing = literal("\n" + head), literal("}\n")
        return f"{self.start} {opening} {arguments} {closing} {self.end}"


def parser_name(tokenizer: Any) -> str | None:
    """The name of the tokenizer's mlx-lm tool parser (``json_tools``, ``mistral``, …)."""
    parser = getattr(tokenizer, "tool_parser", None)
    module = getattr(parser, "__module__", None) or ""
    return module.rsplit(".", 1)[-1] or None


def tool_format(tokenizer: Any, ll_tokenizer: Any) -> ToolFormat | None:
    """The tool-call format of ``tokenizer`` (mlx-lm's ``TokenizerWrapper``) with markers
    resolved against the llguidance tokenizer, or None when it cannot be constrained."""
    parser = parser_name(tokenizer)
    if parser not in SUPPORTED_PARSERS:
        return None
    start = marker(tokenizer.tool_call_start, tokenizer, ll_tokenizer)
    if parser == "json_tools":
        return ToolFormat(parser, start, marker(tokenizer.tool_call_end, tokenizer, ll_tokenizer))
    template = getattr(tokenizer, "chat_template", None)
    if isinstance(template, str) and "[ARGS]" in template:
        args = marker("[ARGS]", tokenizer, ll_tokenizer)
        return ToolFormat(parser, start, "", style="header", args_marker=args)
    return ToolFormat(parser, start, "")


def marker(text: str, tokenizer: Any, ll_tokenizer: Any) -> str:
    """``text`` in Lark syntax: the special token it is, or a literal."""
    ids = tokenizer.encode(text, add_special_tokens=False)
    if len(ids) == 1 and ll_tokenizer.is_special_token(ids[0]):
        return f"<[{ids[0]}]>"
    return literal(text)


def literal(text: str) -> str:
    """A Lark string literal matching exactly ``text``."""
    return json.dumps(text, ensure_ascii=False)


def json_rule(schema: dict[str, Any], options: dict[str, Any]) -> str:
    """``%json{schema}`` with llguidance's JSON options (the schema's own ``x-guidance``, if
    any, wins)."""
    merged = dict(schema)
    merged["x-guidance"] = {**options, **(schema.get("x-guidance") or {})}
    return "%json" + json.dumps(merged, ensure_ascii=False)


def calls_lark(fmt: ToolFormat, tools: dict[str, dict[str, Any]]) -> str:
    """Lark rule ``call``: one call to any of ``tools`` (name → parameters schema)."""
    alternatives = [fmt.call(name, parameters) for name, parameters in tools.items()]
    return "call: " + "\n    | ".join(alternatives) + "\n"
