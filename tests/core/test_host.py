"""The model host through the HTTP API: loading, swaps that drain, failure and recovery.

The backend here is a small real-model-mode plugin whose loads can be held open, so each state
of the host can be observed; real MLX models are exercised in tests/plugins/mlx/.
"""

from __future__ import annotations

import anyio
import pytest
from support import add_models, running_app, write_conf

from ddx_llm import hookimpl
from ddx_llm.backend import BackendBase, Delta, Prompt, Usage
from ddx_llm.errors import ModelUnavailable

pytestmark = pytest.mark.anyio

CHAT = "/v1/chat/completions"
MODELS = [
    {"id": name, "family": "test", "arch": "llama", "total_params_b": 0.1, "quantization": "4bit",
     "context_window": 4096, "label": name, "options": options}
    for name, options in (("m-a", {}), ("m-b", {}), ("m-broken", {"fail": True}))
]  # fmt: skip


class GatedBackend(BackendBase):
    """Loads wait on a per-model gate; generation yields ``tokens`` pieces ``delay`` apart."""

    name = "gated"
    real_model_mode = True

    def __init__(self) -> None:
        self.gates: dict[str, anyio.Event] = {}
        self.resident: set[str] = set()
        self.most_resident = 0
        self.unloaded: list[str] = []
        self.after_loads: list[str] = []
        self.after_gate: anyio.Event | None = None
        self.tokens = 3
        self.delay = 0.0

    def default_model(self, registry):
        return "m-a"

    async def load(self, entry):
        if entry.id in self.gates:
            await self.gates[entry.id].wait()
        if entry.options.get("fail"):
            raise ModelUnavailable("cannot load", detail="corrupt weights in m-broken")
        self.resident.add(entry.id)
        self.most_resident = max(self.most_resident, len(self.resident))
        return entry.id

    async def unload(self, handle):
        self.resident.discard(handle)
        self.unloaded.append(handle)

    async def after_load(self, handle):
        self.after_loads.append(handle)
        if self.after_gate is not None:
            await self.after_gate.wait()

    async def prepare(self, handle, entry, request):
        return Prompt(tokens=3)

    async def generate(self, handle, entry, prompt, request):
        for index in range(self.tokens):
            await anyio.sleep(self.delay)
            yield Delta(content=f"{handle}:{index} ", tokens=1)
        yield Delta(finish_reason="stop", usage=Usage(3, self.tokens))


class GatedPlugin:
    def __init__(self) -> None:
        self.backend = GatedBackend()

    @hookimpl
    def ddx_llm_backends(self):
        return {"gated": lambda app: self.backend}


@pytest.fixture
def plugin(conf_dir):
    add_models(conf_dir, *MODELS)
    write_conf(conf_dir, {"core": {"backend": "gated", "load_wait_seconds": 0.5}})
    return GatedPlugin()


def ask(model=None, **extra):
    body = {"messages": [{"role": "user", "content": "hi"}], **extra}
    if model:
        body["model"] = model
    return body


async def test_start_up_loads_in_the_background(conf_dir, plugin):
    plugin.backend.gates["m-a"] = gate = anyio.Event()
    async with running_app(conf_dir, extra_plugins=[("gated", plugin)]) as (_, client):
        health = (await client.get("/health")).json()
        assert (health["status"], health["model_state"], health["model"]) == (
            "loading",
            "loading",
            "m-a",
        )
        assert (await client.get("/readyz")).status_code == 503
        assert (await client.get("/v1/models/current")).json()["loaded"] is False
        waiting = await client.post(CHAT, json=ask())  # bounded wait (0.5 s), then 503
        assert waiting.status_code == 503
        assert waiting.json()["code"] == "model_unavailable"
        assert int(waiting.headers["retry-after"]) >= 1
        gate.set()
        with anyio.fail_after(5):
            while (await client.get("/readyz")).status_code != 200:
                await anyio.sleep(0.01)
        current = (await client.get("/v1/models/current")).json()
        assert current["model_id"] == "m-a" and current["loaded"] is True
        assert current["last_load_ms"] is not None


async def test_requests_arriving_during_a_load_wait_for_it(conf_dir, plugin):
    async with running_app(conf_dir, extra_plugins=[("gated", plugin)]) as (_, client):
        plugin.backend.gates["m-b"] = gate = anyio.Event()
        results = {}

        async def load():
            results["load"] = await client.post("/v1/models/load", json={"model_id": "m-b"})

        async def chat():
            await anyio.sleep(0.05)
            results["chat"] = await client.post(CHAT, json=ask("m-b"))

        async with anyio.create_task_group() as tg:
            tg.start_soon(load)
            tg.start_soon(chat)
            await anyio.sleep(0.2)
            gate.set()
        assert results["load"].json()["swapped"] is True
        assert results["chat"].status_code == 200
        assert results["chat"].json()["choices"][0]["message"]["content"].startswith("m-b:0")


async def test_swap_and_reload_of_the_resident_model(conf_dir, plugin):
    async with running_app(conf_dir, extra_plugins=[("gated", plugin)]) as (_, client):
        same = (await client.post("/v1/models/load", json={"model_id": "m-a"})).json()
        assert same == {"swapped": False, "load_ms": 0.0, "loaded": True}
        swap = (await client.post("/v1/models/load", json={"model_id": "m-b"})).json()
        assert swap["swapped"] is True and swap["loaded"] is True and swap["load_ms"] >= 0
        assert plugin.backend.unloaded == ["m-a"]
        assert plugin.backend.resident == {"m-b"}
        other = await client.post(CHAT, json=ask("m-a"))
        assert other.status_code == 404
        assert "POST /v1/models/load" in other.json()["detail"]
        unknown = await client.post("/v1/models/load", json={"model_id": "m-zzz"})
        assert (unknown.status_code, unknown.json()["code"]) == (404, "model_not_found")
        invalid = await client.post("/v1/models/load", json={"model": "m-b"})
        assert (invalid.status_code, invalid.json()["code"]) == (422, "request_invalid")


async def test_after_load_runs_once_the_new_model_serves_and_before_the_answer(conf_dir, plugin):
    """``after_load`` runs after each good load (not a failed one), with ``load_ms`` taken and
    the new model serving; the load's answer waits for it, and so does the next load."""
    backend = plugin.backend
    async with running_app(conf_dir, extra_plugins=[("gated", plugin)]) as (_, client):
        backend.after_gate = anyio.Event()
        answers = {}

        async def load(model_id):
            answers[model_id] = await client.post("/v1/models/load", json={"model_id": model_id})

        async with anyio.create_task_group() as tg:
            tg.start_soon(load, "m-b")
            with anyio.fail_after(5):
                while backend.after_loads[-1:] != ["m-b"]:
                    await anyio.sleep(0.01)
            tg.start_soon(load, "m-a")  # waits for the load before to finish
            current = (await client.get("/v1/models/current")).json()
            assert current["model_id"] == "m-b" and current["loaded"] is True
            assert current["last_load_ms"] is not None
            chat = await client.post(CHAT, json=ask())
            assert chat.json()["choices"][0]["message"]["content"].startswith("m-b:0")
            await anyio.sleep(0.05)
            assert answers == {} and backend.unloaded == ["m-a"]
            backend.after_gate.set()
        assert answers["m-b"].json()["load_ms"] == current["last_load_ms"]
        assert answers["m-a"].json()["swapped"] is True
        failed = await client.post("/v1/models/load", json={"model_id": "m-broken"})
        assert failed.status_code == 503
    assert backend.after_loads == ["m-a", "m-b", "m-a"]
    assert backend.unloaded == ["m-a", "m-b", "m-a"]


async def test_in_flight_requests_finish_on_their_model_before_it_is_unloaded(conf_dir, plugin):
    plugin.backend.tokens, plugin.backend.delay = 5, 0.05
    async with running_app(conf_dir, extra_plugins=[("gated", plugin)]) as (_, client):
        results = {}

        async def chat():
            results["chat"] = await client.post(CHAT, json=ask("m-a"))

        async def swap():
            await anyio.sleep(0.05)  # the chat is generating
            results["swap"] = await client.post("/v1/models/load", json={"model_id": "m-b"})

        async with anyio.create_task_group() as tg:
            tg.start_soon(chat)
            tg.start_soon(swap)
        content = results["chat"].json()["choices"][0]["message"]["content"]
        assert content == "m-a:0 m-a:1 m-a:2 m-a:3 m-a:4 "
        assert results["swap"].json()["swapped"] is True
        assert plugin.backend.most_resident == 1  # never two models at once


async def test_concurrent_loads_are_serialized(conf_dir, plugin):
    async with running_app(conf_dir, extra_plugins=[("gated", plugin)]) as (_, client):
        answers = []

        async def load(model_id):
            answers.append(
                (await client.post("/v1/models/load", json={"model_id": model_id})).json()
            )

        async with anyio.create_task_group() as tg:
            for model_id in ("m-b", "m-a", "m-b"):
                tg.start_soon(load, model_id)
        assert all(answer["loaded"] for answer in answers)
        assert plugin.backend.most_resident == 1
        assert len(plugin.backend.resident) == 1


async def test_failed_load_degrades_then_a_good_load_recovers(conf_dir, plugin):
    async with running_app(conf_dir, extra_plugins=[("gated", plugin)]) as (_, client):
        failed = await client.post("/v1/models/load", json={"model_id": "m-broken"})
        assert failed.status_code == 503
        assert failed.json()["code"] == "model_unavailable"
        health = (await client.get("/health")).json()
        assert health["status"] == "degraded" and health["model_state"] == "failed"
        assert health["model_error"] == "corrupt weights in m-broken"
        assert (await client.get("/health")).status_code == 200
        assert (await client.get("/readyz")).status_code == 503
        chat = await client.post(CHAT, json=ask())
        assert chat.status_code == 503 and chat.json()["code"] == "model_unavailable"
        recovered = await client.post("/v1/models/load", json={"model_id": "m-a"})
        assert recovered.json()["swapped"] is True
        health = (await client.get("/health")).json()
        assert health["status"] == "ok" and "model_error" not in health
        assert (await client.post(CHAT, json=ask())).status_code == 200


async def test_over_capacity_gets_503_overloaded_then_recovers(conf_dir, plugin):
    write_conf(conf_dir, {"core": {"max_running": 1, "max_waiting": 1, "max_queue_seconds": 5}})
    plugin.backend.tokens, plugin.backend.delay = 4, 0.05
    async with running_app(conf_dir, extra_plugins=[("gated", plugin)]) as (_, client):
        results: list = []

        async def chat():
            results.append(await client.post(CHAT, json=ask()))

        async with anyio.create_task_group() as tg:
            tg.start_soon(chat)  # runs
            await anyio.sleep(0.05)
            tg.start_soon(chat)  # waits
            await anyio.sleep(0.05)
            health = (await client.get("/health")).json()
            assert health["requests"] == {"running": 1, "waiting": 1}
            refused = await client.post(CHAT, json=ask())  # no room to wait: refused at once
        assert refused.status_code == 503
        assert refused.json()["code"] == "overloaded"
        assert int(refused.headers["retry-after"]) >= 1
        assert [r.status_code for r in results] == [200, 200]
        assert (await client.post(CHAT, json=ask())).status_code == 200  # recovered


async def test_queue_wait_is_bounded(conf_dir, plugin):
    write_conf(conf_dir, {"core": {"max_running": 1, "max_waiting": 4, "max_queue_seconds": 0.1}})
    plugin.backend.tokens, plugin.backend.delay = 10, 0.05
    async with running_app(conf_dir, extra_plugins=[("gated", plugin)]) as (_, client):
        async with anyio.create_task_group() as tg:
            tg.start_soon(lambda: client.post(CHAT, json=ask()))
            await anyio.sleep(0.05)
            late = await client.post(CHAT, json=ask())
        assert late.status_code == 503
        assert late.json()["code"] == "overloaded"
        assert "0.1 s" in late.json()["detail"]


async def test_a_request_naming_no_model_follows_a_swap(conf_dir, plugin):
    plugin.backend.tokens, plugin.backend.delay = 5, 0.05
    async with running_app(conf_dir, extra_plugins=[("gated", plugin)]) as (_, client):
        results = {}

        async def chat(name, delay):
            await anyio.sleep(delay)
            results[name] = await client.post(CHAT, json=ask())

        async def swap():
            await anyio.sleep(0.05)  # the first chat is generating: the swap drains it
            results["swap"] = await client.post("/v1/models/load", json={"model_id": "m-b"})

        async with anyio.create_task_group() as tg:
            tg.start_soon(chat, "in_flight", 0)
            tg.start_soon(swap)
            tg.start_soon(chat, "arriving", 0.1)  # during the drain
        assert results["swap"].json()["swapped"] is True
        assert results["in_flight"].json()["model"] == "m-a"
        assert results["arriving"].status_code == 200, results["arriving"].text
        assert results["arriving"].json()["model"] == "m-b"
        assert results["arriving"].json()["choices"][0]["message"]["content"].startswith("m-b:0")
