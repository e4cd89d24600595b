"""The playground as deployed: with auth on and behind a path prefix (Hypercorn's
``--root-path``), asyncio and trio workers, in a real headless chromium — and a swap whose load
the page follows with ``/health`` ``model_load_progress``.

- The page itself needs no key; the API calls it makes send the key typed into it as
  ``Authorization: Bearer``, never in a URL; the key lives in the tab's sessionStorage only.
- Behind ``/ddx`` every request the page makes stays below ``/ddx/``.
- A backend that takes 2 s to load a model and says how far it is (a drop-in plugin, as a third
  party would write one): the page shows the load moving, then its ``load_ms``.
"""

from __future__ import annotations

import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from browser.playground_page import (
    ask,
    live_server,
    open_playground,
    page_problems,
    set_params,
    wait_answer,
)
from support import LiveServer, add_models, copy_project_conf, write_conf

pytestmark = pytest.mark.live


KEY = "sk-playground-deploy-0123456789abcdef"
PREFIX = "/ddx"


@pytest.fixture(scope="module", params=["asyncio", "trio"])
def deployed(request, tmp_path_factory) -> Iterator[LiveServer]:
    """Auth on, served below /ddx (as a proxy that forwards /ddx/... would have it)."""
    conf_dir = copy_project_conf(tmp_path_factory.mktemp("deployed") / "conf")
    with live_server(
        conf_dir, request.param, "--root-path", PREFIX, env={"DDX_LLM_API_KEYS": KEY}
    ) as live:
        yield live


def test_the_key_goes_in_a_header_and_stays_in_the_tab(chromium, deployed, screenshots, request):
    page = deployed.url + PREFIX + "/playground"
    assert httpx.get(page).status_code == 200  # no key needed for the page
    open_playground(chromium, page)
    set_params(chromium, scenario="echo")
    ask(chromium, "without a key")
    refused = wait_answer(chromium, state="error")
    assert refused["data"]["errorCode"] == "unauthorized"
    assert refused["error"].startswith("401 unauthorized: ")

    chromium.call("fill", selector="#api-key", value=KEY)
    ask(chromium, "with the key")
    assert wait_answer(chromium)["content"] == "with the key"
    chromium.call("click", selector='#models li[data-model-id="SmolLM2-135M-Instruct"] button')
    chromium.wait("#swap-status[data-outcome=error]")  # past auth: the mock has no real models
    assert "404 model_not_found" in chromium.text("#swap-status")
    chromium.screenshot(screenshots / f"auth-{request.node.callspec.id}.png")

    requests = chromium.call("log")["requests"]
    assert all(KEY not in r["url"] for r in requests)
    posts = [r for r in requests if r["method"] == "POST"]
    assert [r["url"].removeprefix(deployed.url) for r in posts] == [
        f"{PREFIX}/v1/chat/completions", f"{PREFIX}/v1/chat/completions", f"{PREFIX}/v1/models/load"
    ]  # fmt: skip
    assert "authorization" not in posts[0]["headers"]
    assert [r["headers"].get("authorization") for r in posts[1:]] == [f"Bearer {KEY}"] * 2
    stored = chromium.eval(
        "() => ({session: {...sessionStorage}, local: {...localStorage}, cookie: document.cookie})"
    )
    assert stored == {
        "session": {"ddx-llm.playground.api-key": KEY}, "local": {}, "cookie": ""
    }  # fmt: skip

    chromium.call("reload")  # the same tab keeps it
    chromium.wait("body[data-ready=true]")
    assert chromium.eval("() => document.getElementById('api-key').value") == KEY
    open_playground(chromium, page, page="other")  # another tab does not have it
    assert chromium.eval("() => document.getElementById('api-key').value", page="other") == ""
    chromium.call("click", selector="#key-forget")
    assert chromium.eval("() => ({...sessionStorage})") == {}
    assert page_problems(chromium, expected=("401", "404")) == []


def test_behind_a_path_prefix_every_request_stays_below_it(chromium, deployed):
    opened = chromium.open(deployed.url + PREFIX + "/playground/")  # the slash is sent back
    assert opened["url"] == deployed.url + PREFIX + "/playground"
    chromium.wait("body[data-ready=true]")
    chromium.wait("#health[data-status=ok]")
    chromium.call("fill", selector="#api-key", value=KEY)
    set_params(chromium, scenario="reasoning", delay=10)
    ask(chromium, "below the prefix")
    answer = wait_answer(chromium)
    assert (answer["reasoning"], answer["content"]) == (
        "Thinking about: below the prefix", "below the prefix"
    )  # fmt: skip
    urls = [r["url"] for r in chromium.call("log")["requests"]]
    assert {url.removeprefix(deployed.url).split("?")[0] for url in urls} >= {
        f"{PREFIX}/playground", f"{PREFIX}/playground/main.js", f"{PREFIX}/health",
        f"{PREFIX}/v1/models", f"{PREFIX}/v1/chat/completions",
    }  # fmt: skip
    assert all(url.startswith(deployed.url + PREFIX + "/") for url in urls), urls
    assert page_problems(chromium) == []


# --- a load the page can follow --------------------------------------------------------------

LOAD_SECONDS = 2.0
STEPS = textwrap.dedent(
    f'''
    """Drop-in test backend "steps": loading "slow" takes {LOAD_SECONDS} s and says how far."""
    import time

    import anyio

    from ddx_llm import hookimpl
    from ddx_llm.backend import BackendBase, Delta, Prompt, Usage

    SECONDS = {LOAD_SECONDS}


    class Steps(BackendBase):
        name = "steps"
        real_model_mode = True

        def __init__(self, app):
            self.started = None

        async def load(self, entry):
            if entry.id == "slow":
                self.started = time.monotonic()
                try:
                    await anyio.sleep(SECONDS)
                finally:
                    self.started = None
            return entry.id

        def load_progress(self, entry):
            if entry.id != "slow" or self.started is None:
                return None
            return min(1.0, (time.monotonic() - self.started) / SECONDS)

        async def unload(self, handle):
            return None

        async def prepare(self, handle, entry, request):
            return Prompt(1)

        async def generate(self, handle, entry, prompt, request):
            yield Delta(content="ok", tokens=1, finish_reason="stop", usage=Usage(1, 1))


    @hookimpl
    def ddx_llm_backends():
        return {{"steps": Steps}}
    '''
)


@pytest.fixture(scope="module", params=["asyncio", "trio"])
def slow_loads(request, tmp_path_factory) -> Iterator[LiveServer]:
    conf_dir = copy_project_conf(tmp_path_factory.mktemp("steps") / "conf")
    (Path(conf_dir).parent / "plugins" / "steps.py").write_text(STEPS)
    (conf_dir / "models.toml").write_text("")
    models = [
        {"id": name, "family": "test", "arch": "test", "total_params_b": 1.5,
         "quantization": "none", "context_window": 4096, "label": f"The {name} model"}
        for name in ("fast", "slow")
    ]  # fmt: skip
    add_models(conf_dir, *models)
    write_conf(conf_dir, {"core": {"backend": "steps", "default_model": "fast"}})
    with live_server(conf_dir, request.param) as live:
        yield live


def test_a_swap_shows_the_load_moving_then_its_result(chromium, slow_loads, screenshots, request):
    open_playground(chromium, slow_loads.url + "/playground")
    assert (
        chromium.eval("() => getComputedStyle(document.getElementById('mock-options')).display")
        == "none"
    )
    chromium.call("click", selector='#models li[data-model-id="slow"] button')
    seen: list[dict] = []
    deadline = time.monotonic() + 3 * LOAD_SECONDS
    while time.monotonic() < deadline:
        state = chromium.eval(
            """() => ({
                outcome: document.getElementById("swap-status").dataset.outcome,
                status: document.getElementById("swap-status").textContent,
                bar: document.getElementById("load-progress").hidden
                    ? null : document.getElementById("load-progress").value,
                header: document.getElementById("health-text").textContent,
            })"""
        )
        seen.append(state)
        if state["outcome"] != "pending":
            break
        if len(seen) == 10:
            chromium.screenshot(screenshots / f"loading-{request.node.callspec.id}.png")
        time.sleep(0.05)
    final = seen[-1]
    assert final["outcome"] == "ok", seen
    load_ms = float(chromium.eval("() => document.getElementById('swap-status').dataset.loadMs"))
    assert LOAD_SECONDS * 1000 <= load_ms < LOAD_SECONDS * 1000 + 2000
    assert (
        final["status"].startswith("Loaded slow in ")
        and f"(load_ms {load_ms:g})" in final["status"]
    )
    bars = [state["bar"] for state in seen if state["bar"] is not None]
    assert len(set(bars)) >= 3 and bars == sorted(bars) and 0 < bars[-1] <= 1, bars
    percents = [state["status"] for state in seen if state["status"].endswith("%)")]
    assert percents and percents[0].startswith("Loading slow… "), seen
    assert any(" · slow · loading · " in state["header"] for state in seen)
    chromium.wait("#models li[data-model-id=slow][data-state=ready]", timeout=5000)
    assert page_problems(chromium) == []
