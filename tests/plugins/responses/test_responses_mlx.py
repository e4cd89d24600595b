"""Real mode: the Responses surface on the mlx backend with the bundled SmolLM2 (few tokens).

A response, a stream cut by ``max_output_tokens`` (``incomplete``), and a continuation with
``previous_response_id`` whose prompt holds the previous exchange — through the official SDK.
"""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest
from responses_support import sdk, sse_events, valid_response
from support import write_conf

from ddx_llm import testing

pytestmark = [pytest.mark.anyio, pytest.mark.model]

BUNDLED = "SmolLM2-135M-Instruct"
QUESTION = [
    {"role": "system", "content": ""},  # SmolLM2's default system turn would add 30 tokens
    {"role": "user", "content": "What is the capital of France?"},
]


async def ready(service) -> None:
    with anyio.fail_after(60):
        while (await service.client.get("/health")).json()["model_state"] == "loading":
            await anyio.sleep(0.05)


async def test_smollm2_answers_streams_and_continues(conf_dir: Path, mlx_models_dir: Path):
    write_conf(conf_dir, {"core": {"backend": "mlx", "models_dir": str(mlx_models_dir)}})
    async with testing.serve(conf_dir) as service:
        await ready(service)
        client = sdk(service.client)
        answer = await client.responses.create(
            model=BUNDLED, input=QUESTION, temperature=0, max_output_tokens=8
        )
        assert "Paris" in answer.output_text
        assert answer.usage.input_tokens > 10

        body = {"model": BUNDLED, "input": QUESTION, "temperature": 0, "max_output_tokens": 3,
                "stream": True}  # fmt: skip
        events = sse_events((await service.client.post("/v1/responses", json=body)).text)
        final = events[-1]["response"]
        assert events[-1]["type"] == "response.incomplete"
        assert final["incomplete_details"] == {"reason": "max_output_tokens"}
        assert valid_response(final).output_text == "The capital of"
        assert final["usage"]["output_tokens"] == 3

        follow_up = await client.responses.create(
            model=BUNDLED, input="And of Italy?", previous_response_id=answer.id,
            temperature=0, max_output_tokens=2,
        )  # fmt: skip
        assert follow_up.usage.input_tokens > answer.usage.input_tokens + 8
        assert follow_up.status == "incomplete" and follow_up.output_text
