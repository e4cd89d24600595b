"""Model lifecycle in real mode, in process (asyncio and trio), on the bundled SmolLM2: start-up
in the background, swaps that give memory back, concurrent loads, failed loads and recovery,
the memory fit check, a stalled worker, and admission control at capacity.

The second model is the tools variant of the bundled model (same weights, another folder).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import anyio
import pytest
from mlx_support import SHORT_CHAT, wait_ready
from support import add_models, running_app, write_conf

from ddx_llm.errors import ModelUnavailable
from ddx_llm.plugins.mlx_models.bundled import BUNDLED_MODEL_ID, TOOLS_MODEL_ID

pytestmark = [pytest.mark.anyio, pytest.mark.model]

CHAT = "/v1/chat/completions"
LOAD = "/v1/models/load"
ASK = {"messages": SHORT_CHAT, "temperature": 0, "max_tokens": 1}


def entry(model_id: str, **fields) -> dict:
    return {
        "id": model_id, "family": "smollm2", "arch": "llama", "total_params_b": 0.135,
        "quantization": "q4_1", "context_window": 8192, "label": model_id, **fields,
    }  # fmt: skip


def weights_mb(models_dir: Path) -> float:
    return (models_dir / BUNDLED_MODEL_ID / "model.safetensors").stat().st_size / 1e6


def active_mb() -> float:
    """MLX memory in use now: figures are process-wide, and other tests' session fixtures may
    hold arrays, so these tests measure against this baseline."""
    import mlx.core as mx

    return mx.get_active_memory() / 1e6


async def test_start_up_loads_in_the_background_then_serves(mlx_conf):
    write_conf(mlx_conf, {"core": {"load_wait_seconds": 0.05}})
    async with running_app(mlx_conf) as (_, client):
        health = (await client.get("/health")).json()
        assert (health["status"], health["model_state"]) == ("loading", "loading")
        ready = await client.get("/readyz")
        assert ready.status_code == 503
        assert ready.json()["reasons"] == ["model state is loading"]
        assert (await client.get("/v1/models/current")).json()["loaded"] is False
        early = await client.post(CHAT, json=ASK)  # waits 0.05 s for the load, then 503
        assert (early.status_code, early.json()["code"]) == (503, "model_unavailable")
        assert int(early.headers["retry-after"]) >= 1

        health = await wait_ready(client)
        assert (health["status"], health["model"]) == ("ok", BUNDLED_MODEL_ID)
        assert (await client.get("/readyz")).json() == {"ready": True, "reasons": []}
        current = (await client.get("/v1/models/current")).json()
        assert current["model_id"] == BUNDLED_MODEL_ID and current["loaded"] is True
        assert 0 < current["last_load_ms"] < 30_000
        same = (await client.post(LOAD, json={"model_id": BUNDLED_MODEL_ID})).json()
        assert same == {"swapped": False, "load_ms": 0.0, "loaded": True}


async def test_a_swap_gives_the_old_models_memory_back(mlx_conf, mlx_models_dir):
    """MLX active and cache memory and the process's RSS: with the first model resident, once
    it is dropped (its arrays gone to MLX's cache), and once the second model is resident and
    the memory it did not reuse released (cache emptied, heap trimmed)."""
    weights, base = weights_mb(mlx_models_dir), active_mb()
    async with running_app(mlx_conf) as (_, client):
        await wait_ready(client)
        assert (await client.post(CHAT, json=ASK)).status_code == 200
        swap = await client.post(LOAD, json={"model_id": TOOLS_MODEL_ID})
        assert swap.status_code == 200 and swap.json()["swapped"] is True
        mlx = (await client.get("/health")).json()["mlx"]
    unload, after = mlx["last_unload"], mlx["memory"]
    resident, dropped, released = unload["resident"], unload["dropped"], unload["released"]
    print(f"\nweights {weights:.1f} MB; resident {resident}; dropped {dropped}; "
          f"released {released}; next model resident {after}")  # fmt: skip
    assert unload["model"] == BUNDLED_MODEL_ID
    assert resident["active_mb"] - base >= 0.95 * weights
    assert dropped["active_mb"] - base < 0.05 * weights  # every array of the old model is gone
    assert dropped["cache_mb"] > 0  # ... some into MLX's buffer cache (up to its limit), until
    assert released["cache_mb"] == 0  # mx.clear_cache() empties it
    # one model resident afterwards, not two: the second took the memory the first freed
    assert abs(released["active_mb"] - resident["active_mb"]) < 0.2 * weights
    assert released["rss_mb"] < resident["rss_mb"] + 0.2 * weights
    assert abs(after["active_mb"] - resident["active_mb"]) < 0.2 * weights
    assert after["rss_mb"] < resident["rss_mb"] + 0.5 * weights


async def test_concurrent_loads_never_hold_two_models(mlx_conf, mlx_models_dir):
    """MLX's peak memory over two concurrent swaps stays at the level of one model's load."""
    import mlx.core as mx

    add_models(mlx_conf, entry("smollm2-copy", options={"bundled": BUNDLED_MODEL_ID}))
    weights, base = weights_mb(mlx_models_dir), active_mb()
    mx.reset_peak_memory()
    async with running_app(mlx_conf) as (_, client):
        await wait_ready(client)
        one_load_peak = mx.get_peak_memory() / 1e6 - base
        mx.reset_peak_memory()
        answers = []

        async def load(model_id: str) -> None:
            answers.append((await client.post(LOAD, json={"model_id": model_id})).json())

        async with anyio.create_task_group() as tg:
            tg.start_soon(load, TOOLS_MODEL_ID)
            tg.start_soon(load, "smollm2-copy")
        two_loads_peak = mx.get_peak_memory() / 1e6 - base
        health = (await client.get("/health")).json()
    print(f"\npeak MB: one load {one_load_peak:.1f}, two concurrent swaps {two_loads_peak:.1f}")
    assert [a["swapped"] for a in answers] == [True, True]
    assert health["status"] == "ok"
    assert 0.9 * weights <= one_load_peak < 1.2 * weights
    assert two_loads_peak < one_load_peak + 0.2 * weights  # never two models at once
    assert health["mlx"]["memory"]["active_mb"] - base < 1.2 * weights


def broken_models(root: Path, good: Path) -> list[dict]:
    """Three registry entries whose files are really broken: a folder that does not exist,
    weights that are not a safetensors file, a config.json that is not JSON."""
    corrupt, bad_config = root / "corrupt-weights", root / "bad-config"
    for folder in (corrupt, bad_config):
        folder.mkdir(parents=True)
        for item in good.iterdir():
            if item.name not in ("model.safetensors", "config.json"):
                shutil.copy(item, folder / item.name)
    shutil.copy(good / "config.json", corrupt / "config.json")
    (corrupt / "model.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00not a header")
    (bad_config / "model.safetensors").symlink_to(good / "model.safetensors")
    (bad_config / "config.json").write_text(json.dumps({"model_type": "llama"})[:-1])
    return [
        entry("missing-folder", path=str(root / "no-such-folder")),
        entry("corrupt-weights", path=str(corrupt)),
        entry("bad-config", path=str(bad_config)),
    ]


async def test_failed_loads_leave_the_service_up_and_a_good_load_recovers(
    mlx_conf, mlx_models_dir, tmp_path
):
    broken = broken_models(tmp_path / "broken", mlx_models_dir / BUNDLED_MODEL_ID)
    add_models(mlx_conf, *broken)
    async with running_app(mlx_conf) as (_, client):
        await wait_ready(client)
        for model in broken:
            failed = await client.post(LOAD, json={"model_id": model["id"]})
            assert (failed.status_code, failed.json()["code"]) == (503, "model_unavailable")
            health = (await client.get("/health")).json()
            assert (health["status"], health["model_state"]) == ("degraded", "failed")
            assert health["model"] == model["id"] and health["model_error"], health
            assert (await client.get("/readyz")).status_code == 503
            chat = await client.post(CHAT, json={**ASK, "model": model["id"]})
            assert (chat.status_code, chat.json()["code"]) == (503, "model_unavailable")
            assert "retry-after" in chat.headers
            recovered = await client.post(LOAD, json={"model_id": BUNDLED_MODEL_ID})
            assert recovered.status_code == 200 and recovered.json()["swapped"] is True
            assert (await client.get("/health")).json()["status"] == "ok"
            assert "active_mb" in health["mlx"]["memory"]
        answer = await client.post(CHAT, json=ASK)
    assert answer.status_code == 200 and answer.json()["choices"][0]["message"]["content"]


async def test_a_model_too_large_for_the_memory_is_refused_before_loading(mlx_conf):
    import psutil

    headroom, base = round(psutil.virtual_memory().available / 1e9) + 100, active_mb()
    write_conf(mlx_conf, {"mlx": {"memory_headroom_gb": headroom}})
    async with running_app(mlx_conf) as (app, client):
        health = await wait_ready(client)
        chat = await client.post(CHAT, json=ASK)
        backend = app.context.backend
        with pytest.raises(ModelUnavailable, match="does not fit"):  # asked before any unload
            await backend.preflight(
                app.context.settings.registry.get(TOOLS_MODEL_ID), app.context.host.resident_handle
            )
    assert (health["status"], health["model_state"]) == ("degraded", "failed")
    error = health["model_error"]
    assert f"SmolLM2-135M-Instruct needs 0.10 GB of weights + {headroom:.2f} GB headroom" in error
    assert "but available memory is" in error
    assert health["mlx"]["memory"]["active_mb"] - base < 5  # refused before loading weights
    assert (chat.status_code, chat.json()["code"]) == (503, "model_unavailable")


async def test_a_stalled_worker_makes_the_service_not_ready_until_it_moves(mlx_conf):
    """A generation step longer than ``stall_seconds`` (here: a prompt processed in one chunk)
    makes ``/readyz`` 503 and ``/health`` degraded while it runs; both recover once the worker
    moves on.

    The prompt doubles until its step outlasts ``stall_seconds`` on this machine; on a 2-core
    CPU (~15 prompt tokens/s) the first one does.  A request lasting three times that without
    the service ever reporting the stall fails."""
    stall = 0.3
    # one chunk per prompt, and no prompt cache: every attempt processes its whole prompt
    one_chunk = {"prefill_step_size": 8192, "prompt_cache_entries": 0}
    write_conf(mlx_conf, {"mlx": {"stall_seconds": stall, **one_chunk}})
    async with running_app(mlx_conf) as (_, client):
        await wait_ready(client)
        words = 8
        while True:
            question = {"role": "user", "content": "Count the cats:" + " cat" * words}
            ask = {**ASK, "messages": [SHORT_CHAT[0], question]}
            answers, not_ready, degraded = [], [], []

            async def chat(ask=ask, answers=answers) -> None:
                answers.append(await client.post(CHAT, json=ask))

            started = anyio.current_time()
            async with anyio.create_task_group() as tg:
                tg.start_soon(chat)
                while not answers:
                    if (ready := await client.get("/readyz")).status_code != 200:
                        not_ready.append(ready.json())
                    if (health := (await client.get("/health")).json())["status"] != "ok":
                        degraded.append(health)
                    await anyio.sleep(0.02)
            took = anyio.current_time() - started
            stalled = [h for h in degraded if (h["mlx"]["seconds_since_step"] or 0) > stall]
            if not_ready and stalled:
                break
            assert took < 3 * stall and words < 4096, (words, took, not_ready, degraded)
            words *= 2
        after = (await client.get("/readyz"), (await client.get("/health")).json())
    assert answers[0].status_code == 200
    for body in not_ready:
        (reason,) = body["reasons"]
        assert "stalled: no generation step for" in reason and "stall_seconds = 0.3" in reason
    for health in degraded:
        assert (health["status"], health["model_state"]) == ("degraded", "ready")
        assert len(health["reasons"]) == 1 and "is stalled" in health["reasons"][0]
    assert all(health["mlx"]["busy"] for health in stalled)
    assert after[0].status_code == 200 and after[1]["status"] == "ok"
    assert after[1]["mlx"]["seconds_since_step"] is None


async def test_over_capacity_is_503_with_retry_after_then_serves_again(mlx_conf):
    write_conf(mlx_conf, {"core": {"max_running": 1, "max_waiting": 1}})
    ask = {**ASK, "max_tokens": 6}
    async with running_app(mlx_conf) as (app, client):
        await wait_ready(client)
        answers: dict[str, object] = {}

        async def chat(name: str) -> None:
            answers[name] = await client.post(CHAT, json=ask)

        async def requests_are(running: int, waiting: int) -> None:
            with anyio.fail_after(10):
                while (await client.get("/health")).json()["requests"] != {
                    "running": running, "waiting": waiting,
                }:  # fmt: skip
                    await anyio.sleep(0.01)

        async with anyio.create_task_group() as tg:
            tg.start_soon(chat, "running")
            await requests_are(1, 0)
            tg.start_soon(chat, "waiting")
            await requests_are(1, 1)
            rejected = await client.post(CHAT, json=ask)
        context = app.context
        assert (
            context.backend.status(context.host.resident_handle)["max_batch"] == 1
        )  # follows [core] max_running
        afterwards = await client.post(CHAT, json=ask)
        health = (await client.get("/health")).json()
    assert (rejected.status_code, rejected.json()["code"]) == (503, "overloaded")
    assert int(rejected.headers["retry-after"]) >= 1
    assert answers["running"].status_code == answers["waiting"].status_code == 200
    assert afterwards.status_code == 200
    assert health["requests"] == {"running": 0, "waiting": 0}
