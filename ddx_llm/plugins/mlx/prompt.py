"""A chat request → the model's prompt tokens, through the model's own chat template.

:func:`check_request` rejects what this backend cannot honour with 422 ``request_invalid``
naming the field (never a silent ignore); :func:`template_messages` turns the OpenAI messages into
what Hugging Face chat templates expect; :func:`render_prompt` applies the template with the
tokenizer (``TokenizerWrapper.apply_chat_template``), so the token count is exact.

A request marked with the vendor field ``raw_prompt: true`` (what the ``completions`` plugin
sends for a legacy completion) is one user message whose text is the model's whole input: it is
tokenized as it is, with the tokenizer's own special tokens (a BOS where the model has one), as
vLLM tokenizes a completion prompt (:func:`raw_prompt_tokens`).
"""

from __future__ import annotations

import json
from typing import Any

from ddx_llm.errors import RequestInvalid
from ddx_llm.schemas import ChatCompletionRequest

UNSUPPORTED_FIELDS = {
    "audio": "audio output is not available",
    "prediction": "predicted outputs are not available",
    "web_search_options": "web search is not available",
    "functions": "the legacy functions API is not supported; use tools",
    "function_call": "the legacy functions API is not supported; use tool_choice",
}
"""OpenAI request fields this backend cannot honour (they arrive as extra fields)."""


def _invalid(field: str, message: str) -> RequestInvalid:
    return RequestInvalid(
        f"unsupported parameter {field}: {message}",
        detail=[{"field": field, "message": message, "type": "unsupported"}],
    )


def check_request(request: ChatCompletionRequest, tokenizer: Any, model_id: str) -> bool:
    """Raise RequestInvalid for a parameter this model cannot honour.

    Returns whether the request's tools are to be used (given, and ``tool_choice`` not
    ``none``).  Tools given to a model whose tokenizer has no tool-call parser are rejected
    rather than ignored: the template may drop them and the output could not be parsed.
    Structured output (``response_format``, a forced ``tool_choice``) is checked when its
    grammar is compiled (:mod:`.structured`).
    """
    extra = request.model_extra or {}
    for field, message in UNSUPPORTED_FIELDS.items():
        if extra.get(field) is not None:
            raise _invalid(field, message)
    modalities = extra.get("modalities")
    if modalities is not None and modalities != ["text"]:
        raise _invalid("modalities", 'only ["text"] is available')
    for i, message in enumerate(request.messages):
        for j, part in enumerate(message.content if isinstance(message.content, list) else []):
            if part.type != "text":
                raise _invalid(
                    f"messages.{i}.content.{j}",
                    f"content parts of type {part.type!r} are not supported by {model_id} "
                    "(text only)",
                )
    if not getattr(tokenizer, "has_chat_template", False):
        raise _invalid(
            "messages",
            f"{model_id} has no chat template; give it one with "
            "options.tokenizer_config.chat_template in models.toml",
        )
    use_tools = bool(request.tools) and request.tool_choice != "none"
    if use_tools and not tokenizer.has_tool_calling:
        raise _invalid(
            "tools",
            f"{model_id} has no tool-call format mlx-lm can parse; set "
            "options.tokenizer_config.tool_parser_type in models.toml if its template has one",
        )
    return use_tools


def template_messages(request: ChatCompletionRequest) -> list[dict[str, Any]]:
    """OpenAI messages as chat templates expect them: string content, ``developer`` as
    ``system``, tool-call arguments as objects (templates serialize them themselves)."""
    messages = []
    for message in request.messages:
        item: dict[str, Any] = {
            "role": "system" if message.role == "developer" else message.role,
            "content": message.text(),
        }
        if message.name:
            item["name"] = message.name
        if message.tool_call_id:
            item["tool_call_id"] = message.tool_call_id
        if message.tool_calls:
            item["tool_calls"] = [
                {
                    "id": call.id,
                    "type": "function",
                    "function": {
                        "name": call.function.name,
                        "arguments": _arguments(call.function.arguments),
                    },
                }
                for call in message.tool_calls
            ]
        messages.append(item)
    return messages


def _arguments(text: str) -> Any:
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        return text
    return value if isinstance(value, dict) else text


def template_tools(request: ChatCompletionRequest) -> list[dict[str, Any]]:
    return [tool.model_dump(exclude_none=True) for tool in request.tools or []]


def render_prompt(
    tokenizer: Any,
    messages: list[dict[str, Any]],
    tools: list[dict[str, Any]] | None,
    template_kwargs: dict[str, Any],
) -> list[int]:
    """Apply the chat template and tokenize (blocking: run it in a thread).

    A template that refuses the conversation (e.g. "roles must alternate") is the client's
    422, with the template's own message as detail.
    """
    from jinja2 import TemplateError

    try:
        tokens = tokenizer.apply_chat_template(
            messages, tools=tools or None, add_generation_prompt=True, **template_kwargs
        )
    except TemplateError as exc:
        raise RequestInvalid(
            "the model's chat template rejected the messages",
            detail=[{"field": "messages", "message": str(exc), "type": "template"}],
        ) from None
    return list(tokens)


RAW_PROMPT = "raw_prompt"
"""The vendor field that asks for the single message's text as the whole prompt."""


def is_raw(request: ChatCompletionRequest) -> bool:
    return (request.model_extra or {}).get(RAW_PROMPT) is True


def raw_prompt_tokens(tokenizer: Any, request: ChatCompletionRequest) -> list[int]:
    """The single user message's text, tokenized as it is (blocking: run it in a thread).
    Anything else — several messages, content parts, tools — is a 422 naming the field."""
    messages = request.messages
    if len(messages) != 1 or messages[0].role != "user" or not isinstance(messages[0].content, str):
        raise _invalid("messages", "a raw_prompt request is one user message with text content")
    if request.tools:
        raise _invalid("tools", "a raw_prompt request has no chat template to offer tools in")
    return list(tokenizer.encode(messages[0].content))


def prompt_tokens(
    tokenizer: Any,
    request: ChatCompletionRequest,
    tools: list[dict[str, Any]] | None,
    template_kwargs: dict[str, Any],
) -> list[int]:
    """The prompt's tokens: raw (:func:`raw_prompt_tokens`) or through the chat template
    (:func:`render_prompt`).  Blocking: run it in a thread."""
    if is_raw(request):
        return raw_prompt_tokens(tokenizer, request)
    return render_prompt(tokenizer, template_messages(request), tools, template_kwargs)


def request_template_kwargs(request: ChatCompletionRequest) -> dict[str, Any]:
    """The request's own ``chat_template_kwargs`` (a vendor field, as vLLM's: e.g.
    ``{"enable_thinking": false}`` turns a reasoning model's thinking off where its template
    supports it); they override the registry entry's.  Raises RequestInvalid unless a table."""
    extra = (request.model_extra or {}).get("chat_template_kwargs")
    if extra is None:
        return {}
    if not isinstance(extra, dict):
        raise _invalid("chat_template_kwargs", "must be an object of chat-template arguments")
    return extra
