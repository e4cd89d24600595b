"""The playground in a real headless chromium against real mode (the mlx backend, the bundled
SmolLM2) under Hypercorn, asyncio and trio workers: a real swap to the tools variant, shown with
its ``load_ms``, one real answer with its time to first token and tokens/s, then a forced tool
call (constrained decoding) shown as a call.

About 10 tokens/s on a 2-core CPU: the answer is kept to a few tokens.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from browser.playground_page import (
    ask,
    health,
    live_server,
    open_playground,
    page_problems,
    set_params,
    wait_answer,
)
from support import LiveServer, copy_project_conf

from ddx_llm.plugins.mlx_models.bundled import BUNDLED_MODEL_ID, TOOLS_MODEL_ID

pytestmark = [pytest.mark.live, pytest.mark.model]


WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather for a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string", "maxLength": 20}},
            "required": ["city"],
            "additionalProperties": False,
        },
    },
}


@pytest.fixture(scope="module", params=["asyncio", "trio"])
def real(request, tmp_path_factory, mlx_models_dir) -> Iterator[LiveServer]:
    conf_dir = copy_project_conf(tmp_path_factory.mktemp("playground-real") / "conf")
    env = {"DDX_LLM_USE_REAL_MODEL": "1", "DDX_LLM_MODELS_DIR": str(mlx_models_dir)}
    with live_server(conf_dir, request.param, env=env) as live:
        yield live


def test_a_real_swap_then_a_real_answer(chromium, real, screenshots, request):
    open_playground(chromium, real.url + "/playground")
    chromium.wait("#health[data-status=ok]", timeout=60000)  # start-up loads the bundled model
    assert chromium.eval("() => document.getElementById('mock-options').hidden") is True
    chromium.wait(f'#models li[data-model-id="{BUNDLED_MODEL_ID}"][data-state=ready]')

    chromium.call("click", selector=f'#models li[data-model-id="{TOOLS_MODEL_ID}"] button')
    chromium.wait("#swap-status:not([data-outcome=pending])", timeout=60000)
    status = chromium.text("#swap-status")
    assert status.startswith(f"Loaded {TOOLS_MODEL_ID} in "), status
    load_ms = float(chromium.eval("() => document.getElementById('swap-status').dataset.loadMs"))
    assert 0 < load_ms < 60000
    assert health(real)["model"] == TOOLS_MODEL_ID
    chromium.wait(f'#models li[data-model-id="{TOOLS_MODEL_ID}"][data-state=ready]')

    set_params(chromium, temperature=0, max_tokens=8, system="You answer in one short sentence.")
    ask(chromium, "What is the capital of France?")
    answer = wait_answer(chromium, timeout=60000)
    assert answer["model"] == TOOLS_MODEL_ID
    assert answer["content"].strip(), answer
    assert answer["finish"] in ("finish: stop", "finish: length")
    tokens = int(answer["tokens"].removesuffix(" tokens"))  # counted by the server
    assert 1 <= tokens <= 8
    assert answer["ttft"].startswith("TTFT ") and answer["rate"].endswith(" tokens/s")
    print(f"bundled model in the browser: {answer['ttft']}, {answer['rate']}, {tokens} tokens")
    chromium.screenshot(screenshots / f"real-{request.node.callspec.id}.png")
    assert page_problems(chromium) == []

    if request.node.callspec.id != "asyncio":  # ~20 s: the tools template is a long prompt
        return
    # A forced call (constrained decoding): a real tool call, shown as a call.  mlx sends a
    # call whole, once parsed: one piece, so tokens/s is the whole answer's.
    set_params(chromium, tools=[WEATHER], max_tokens=40, system="")
    chromium.call("select", selector="#p-tool-choice", value="function")
    ask(chromium, "What is the weather like in Paris?")
    answer = wait_answer(chromium, timeout=60000)
    assert answer["finish"] == "finish: tool_calls", answer
    (call,) = answer["calls"]
    assert call["name"] == "get_weather" and call["id"]
    assert isinstance(json.loads(call["arguments"])["city"], str)
    assert answer["rate"].endswith(" tokens/s overall")
    chromium.screenshot(screenshots / "real-tool-call.png")
    assert page_problems(chromium) == []
