"""The omni backend in-process on asyncio and trio: ``/v1/models/load`` drives the upstream's
model cache (the old model unloaded and its memory handed back, ``/health`` showing each state),
a model that fails to load, the prompt counted exactly as the upstream counts it (and
``context_too_long`` decided with it), and what importing the plugin costs."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path

import anyio
import pytest
from omni_support import BUNDLED, TOOLS_VARIANT, omni_conf
from support import ROOT, add_models, documented, running_app

from ddx_llm.plugins.omni.request import upstream_scope

pytestmark = [
    pytest.mark.anyio,
    pytest.mark.model,
    # mlx-omni-server's own schemas, imported in this process
    pytest.mark.filterwarnings("ignore:Support for class-based `config`:DeprecationWarning"),
]

CHAT = "/v1/chat/completions"
QUESTION = [{"role": "user", "content": "What is the capital of France?"}]


async def ready(client) -> dict:
    with anyio.fail_after(60):
        while (health := (await client.get("/health")).json())["model_state"] == "loading":
            await anyio.sleep(0.05)
    return health


async def test_swap_unloads_the_old_model_and_releases_its_memory(conf_dir, omni_models_dir):
    omni_conf(conf_dir, omni_models_dir)
    async with running_app(conf_dir) as (_app, client):
        health = await ready(client)
        assert (health["status"], health["model"], health["backend"]) == ("ok", BUNDLED, "omni")
        resident_mb = health["omni"]["last_load"]["loaded"]["active_mb"]
        assert resident_mb > 50  # the 4-bit 135M model's weights

        swap = await client.post("/v1/models/load", json={"model_id": TOOLS_VARIANT})
        assert swap.status_code == 200, swap.text
        assert swap.json()["swapped"] is True and swap.json()["loaded"] is True
        health = (await client.get("/health")).json()
        assert (health["status"], health["model"], health["model_state"]) == (
            "ok", TOOLS_VARIANT, "ready",
        )  # fmt: skip
        unload = health["omni"]["last_unload"]
        assert unload["model"] == BUNDLED and unload["models_dropped"] == 1
        assert unload["before"]["active_mb"] >= resident_mb
        assert unload["after"]["active_mb"] < 1  # handed back, not kept by MLX's cache
        assert health["omni"]["last_load"]["loaded"]["active_mb"] < 2 * resident_mb
        current = (await client.get("/v1/models/current")).json()
        assert current["model_id"] == TOOLS_VARIANT and current["loaded"] is True

        stale = await client.post(CHAT, json={"model": BUNDLED, "messages": QUESTION})
        assert stale.status_code == 404 and documented(stale.json())["code"] == "model_not_found"
        for named in ({"model": TOOLS_VARIANT}, {}):
            answer = await client.post(
                CHAT, json={**named, "messages": QUESTION, "max_tokens": 2, "temperature": 0}
            )
            assert answer.status_code == 200, answer.text
            assert answer.json()["model"] == TOOLS_VARIANT

        again = await client.post("/v1/models/load", json={"model_id": TOOLS_VARIANT})
        assert again.json()["swapped"] is False


async def test_a_model_that_fails_to_load_is_503_and_health_says_so(
    conf_dir, omni_models_dir, tmp_path
):
    broken = tmp_path / "broken-model"
    broken.mkdir()
    (broken / "config.json").write_text(json.dumps({"model_type": "no_such_architecture"}))
    add_models(conf_dir, {
        "id": "broken", "family": "x", "arch": "x", "total_params_b": 0.1,
        "quantization": "none", "context_window": 2048, "label": "broken", "path": str(broken),
    })  # fmt: skip
    omni_conf(conf_dir, omni_models_dir)
    async with running_app(conf_dir) as (_app, client):
        await ready(client)
        failed = await client.post("/v1/models/load", json={"model_id": "broken"})
        assert failed.status_code == 503, failed.text
        assert documented(failed.json())["code"] == "model_unavailable"
        health = (await client.get("/health")).json()
        assert (health["status"], health["model_state"]) == ("degraded", "failed")
        assert health["model_error"]
        chat = await client.post(CHAT, json={"messages": QUESTION})
        assert chat.status_code == 503
        assert documented(chat.json())["code"] == "model_unavailable"

        back = await client.post("/v1/models/load", json={"model_id": BUNDLED})
        assert back.status_code == 200, back.text
        answer = await client.post(CHAT, json={"messages": QUESTION, "max_tokens": 2})
        assert answer.status_code == 200 and answer.json()["model"] == BUNDLED


async def upstream_usage(backend, body: dict) -> dict:
    """Ask the upstream router itself (on its thread, through the bridge): its usage chunk."""
    raw = json.dumps(body).encode()
    events = b""
    async with backend.upstream.exchange(backend.app, upstream_scope(len(raw)), raw) as exchange:
        while (message := await exchange.receive()) is not None:
            events += message.get("body", b"")
    chunks = [json.loads(e[6:]) for e in events.split(b"\n\n") if e.startswith(b"data: {")]
    return next(chunk["usage"] for chunk in chunks if chunk.get("usage"))


async def test_the_prompt_is_counted_as_the_upstream_counts_it(conf_dir, omni_models_dir):
    omni_conf(conf_dir, omni_models_dir)
    async with running_app(conf_dir) as (app, client):
        await ready(client)
        backend, handle = app.context.backend, app.context.host.resident_handle
        tool = {"type": "function", "function": {"name": "get_weather", "parameters": {
            "type": "object", "properties": {"city": {"type": "string"}}}}}  # fmt: skip
        for extra in ({}, {"tools": [tool]}):
            messages = [
                {"role": "system", "content": "You answer in one word."},
                {"role": "user", "content": f"Name a colour ({uuid.uuid4().hex})."},
            ]  # a prompt the upstream has not cached: its count is then exact too
            theirs = await upstream_usage(backend, {
                "model": handle.folder, "messages": messages, "max_tokens": 2, "stream": True,
                "stream_options": {"include_usage": True}, **extra,
            })  # fmt: skip
            answer = await client.post(CHAT, json={"messages": messages, "max_tokens": 1, **extra})
            assert answer.status_code == 200, answer.text
            ours = answer.json()["usage"]["prompt_tokens"]
            assert ours == theirs["prompt_tokens"] > 20

            window = app.context.settings.registry.get(BUNDLED).context_window
            too_long = await client.post(
                CHAT, json={"messages": messages, "max_tokens": window - ours + 1, **extra}
            )
            error = documented(too_long.json())
            assert (too_long.status_code, error["code"]) == (422, "context_too_long")
            assert error["detail"]["prompt_tokens"] == ours


def run_python(code: str, cwd: Path) -> str:
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        cwd=cwd, capture_output=True, text=True, timeout=120,
        env={"PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin"},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.mark.parametrize("anyio_backend", ["asyncio"])  # a subprocess: once is enough
async def test_upstream_import_leaves_logging_and_the_working_folder_alone(tmp_path):
    """The upstream's logger module would create ./logs/ and put a Rich handler on the root
    logger (DEBUG for everything, prompts in tracebacks); the shim prevents both."""
    out = run_python(
        """
        import logging
        from ddx_llm.plugins.omni import upstream as omni_upstream
        omni_upstream.build_app("WARNING")
        import mlx_omni_server.chat.openai.router  # the real router, imported
        print(logging.getLogger().handlers, logging.getLogger().level,
              logging.getLogger("mlx_omni").level)
        """,
        tmp_path,
    )
    assert out.split() == ["[]", "30", "30"]  # no handler added to root, root stays WARNING
    assert not (tmp_path / "logs").exists()


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_plugin_imports_nothing_heavy_unless_selected(conf_dir, tmp_path):
    out = run_python(
        f"""
        import sys
        from pathlib import Path
        from ddx_llm.factory import create_app
        create_app(Path({str(conf_dir)!r}))  # the mock backend
        print(sorted(m for m in ("fastapi", "mlx", "mlx_omni_server") if m in sys.modules))
        """,
        tmp_path,
    )
    assert out.strip() == "[]"
