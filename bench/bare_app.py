"""The anchor of the gateway benchmark: a bare Starlette app returning ddx-llm's bytes.

It serves the three routes the benchmark loads, with the bodies ddx-llm itself answered (the
harness captures them from a ddx-llm server first, or from the app in process for the
``app`` part, and passes their file in ``BENCH_BARE_FIXTURE``), and nothing else: no
validation, no middleware, no events.

- ``POST /v1/chat/completions``: parses the JSON body (the least any handler of this API
  does); ``"stream": true`` answers ddx-llm's captured stream (one ``json.dumps`` per chunk, as
  a minimal SSE server does, then ``data: [DONE]``; ``mock.token_delay_ms`` waits before each
  chunk, as ddx-llm's mock does), else the captured completion with a fresh
  ``id`` and ``created`` through ``JSONResponse`` (the same bytes but for those);
- ``GET /v1/models``: the captured list, through ``JSONResponse``;
- ``GET /health``: ``{"status": "ok"}`` (readiness for the harness).

    BENCH_BARE_FIXTURE=fixture.json hypercorn -w 0 bench.bare_app:app
"""

from __future__ import annotations

import json
import os
import time
import uuid
from pathlib import Path

import anyio
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

FIXTURE = json.loads(Path(os.environ["BENCH_BARE_FIXTURE"]).read_text())
COMPLETION: dict = json.loads(FIXTURE["completion"])
CHUNKS: list[dict] = FIXTURE["chunks"]
MODELS: dict = FIXTURE["models"]
SSE_HEADERS = {"cache-control": "no-cache", "x-accel-buffering": "no"}


async def chat(request: Request) -> Response:
    body = await request.json()
    if body.get("stream"):
        delay = (body.get("mock") or {}).get("token_delay_ms", 0) / 1000
        return StreamingResponse(
            events(delay), media_type="text/event-stream; charset=utf-8", headers=SSE_HEADERS
        )
    fresh = {"id": f"chatcmpl-{uuid.uuid4().hex}", "created": int(time.time())}
    return JSONResponse({**COMPLETION, **fresh})


async def events(delay: float = 0.0):
    for chunk in CHUNKS:
        if delay:
            await anyio.sleep(delay)
        yield b"data: " + json.dumps(chunk, separators=(",", ":")).encode() + b"\n\n"
    yield b"data: [DONE]\n\n"


async def models(request: Request) -> Response:
    return JSONResponse(MODELS)


async def health(request: Request) -> Response:
    return JSONResponse({"status": "ok"})


app = Starlette(
    routes=[
        Route("/v1/chat/completions", chat, methods=["POST"]),
        Route("/v1/models", models, methods=["GET"]),
        Route("/health", health, methods=["GET"]),
    ]
)
