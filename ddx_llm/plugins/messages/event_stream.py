"""Anthropic's server-sent events: ``event: <type>`` + ``data: <json>``, and the ping.

The core's :class:`ddx_llm.sse.EventStreamResponse` streams them (disconnects, in-band errors,
shutdown cuts, pings) with this module's :func:`encode`, no ``[DONE]`` (the Anthropic SDKs
dispatch on the ``event:`` name and end at ``message_stop``), and :data:`PING` while no event
was sent for ``[messages] ping_seconds`` — a long prompt prefill before the first token.
"""

from __future__ import annotations

import json
from typing import Any

from pydantic import BaseModel

PING = {"type": "ping"}


def encode(event: BaseModel | dict[str, Any]) -> bytes:
    """One named event: its ``type`` is the event name, as Anthropic's streams do."""
    payload = event.model_dump(mode="json") if isinstance(event, BaseModel) else event
    data = json.dumps(payload, separators=(",", ":"), ensure_ascii=False)
    return f"event: {payload['type']}\ndata: {data}\n\n".encode()
