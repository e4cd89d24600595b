"""Shared constants and helpers of the mlx backend's tests."""

from __future__ import annotations

import json

SHORT_CHAT = [
    {"role": "system", "content": ""},
    {"role": "user", "content": "What is the capital of France?"},
]
"""A 21-token prompt (an empty system turn replaces SmolLM2's default one): prompt processing
runs at about 10 tokens/s on a 2-core CPU, so real-model tests keep prompts this short."""

STORY_CHAT = [
    {"role": "system", "content": ""},
    {"role": "user", "content": "Write a short story about a cat who learns to sail."},
]
"""A short prompt with a long answer: for tests that stop a generation midway, on any hardware."""


def sse_chunks(text: str) -> list[dict]:
    """The JSON chunks of an SSE body that ends with ``data: [DONE]``."""
    blocks = [block.removeprefix("data: ") for block in text.strip().split("\n\n")]
    assert blocks[-1] == "[DONE]"
    return [json.loads(block) for block in blocks[:-1]]


async def wait_ready(client, limit: float = 30.0) -> dict:
    """Poll ``/health`` until the model is loaded (start-up loads it in the background)."""
    import anyio

    with anyio.fail_after(limit):
        while True:
            health = (await client.get("/health")).json()
            if health["model_state"] != "loading":
                return health
            await anyio.sleep(0.05)
