"""The metrics plugin in process (asyncio and trio): every series after real requests, parsed
with prometheus-client's own parser; bounded labels; settings; disable by name."""

from __future__ import annotations

import dataclasses
import functools
import json
from typing import Any

import anyio
import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families
from support import documented, running_app, write_conf

from ddx_llm import hookimpl
from ddx_llm.config import ConfigError
from ddx_llm.factory import create_app

pytestmark = pytest.mark.anyio

CHAT = "/v1/chat/completions"
MODEL = "mlx-community/Qwen3-4B-Instruct-2507-4bit"
WORDS = "one two three four five"
ECHO = {"scenario": "echo", "token_delay_ms": 5}

SERIES = {
    # family name (as the parser reports it) -> type
    "ddx_llm_requests": "counter",
    "ddx_llm_request_duration_seconds": "histogram",
    "ddx_llm_requests_in_flight": "gauge",
    "ddx_llm_num_requests_running": "gauge",
    "ddx_llm_num_requests_waiting": "gauge",
    "ddx_llm_time_to_first_token_seconds": "histogram",
    "ddx_llm_inter_token_latency_seconds": "histogram",
    "ddx_llm_e2e_request_latency_seconds": "histogram",
    "ddx_llm_request_queue_time_seconds": "histogram",
    "ddx_llm_prompt_tokens": "counter",
    "ddx_llm_generation_tokens": "counter",
    "ddx_llm_request_success": "counter",
    "ddx_llm_model_load_seconds": "histogram",
    "ddx_llm_model_state": "gauge",
    "ddx_llm_model_swaps": "counter",
}


class Scrape:
    """One parsed exposition: ``scrape.value(sample_name, **labels)``."""

    def __init__(self, text: str) -> None:
        self.families = {f.name: f for f in text_string_to_metric_families(text)}
        self.samples = [s for f in self.families.values() for s in f.samples]

    def value(self, name: str, **labels: str) -> float:
        found = [
            s.value
            for s in self.samples
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())
        ]
        return sum(found)

    def label_values(self) -> set[str]:
        return {value for s in self.samples for value in s.labels.values()}


async def scrape(client) -> Scrape:
    response = await client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
    return Scrape(response.text)


@pytest.fixture
async def client(conf_dir):
    async with running_app(conf_dir) as (_, client):
        yield client


def chat(content: str = WORDS, **extra: Any) -> dict[str, Any]:
    return {"messages": [{"role": "user", "content": content}], **extra}


async def test_exposition_has_every_series_with_prometheus_names(client):
    assert (await client.get("/health")).status_code == 200
    metrics = await scrape(client)
    for name, kind in SERIES.items():
        assert metrics.families[name].type == kind, name
    # Counters end in _total, durations are in seconds: Prometheus naming rules.
    names = {s.name for s in metrics.samples}
    assert "ddx_llm_requests_total" in names and "ddx_llm_model_swaps_total" in names
    assert "ddx_llm_request_success_total" in names
    # The scrape itself is the one request in flight; nothing is queued or generating.
    assert metrics.value("ddx_llm_requests_in_flight") == 1
    assert metrics.value("ddx_llm_num_requests_running", model_name=MODEL) == 0
    assert metrics.value("ddx_llm_num_requests_waiting", model_name=MODEL) == 0

    openmetrics = await client.get("/metrics", headers={"accept": "application/openmetrics-text"})
    assert openmetrics.headers["content-type"].startswith("application/openmetrics-text")
    assert openmetrics.text.endswith("# EOF\n")


async def test_non_streamed_chat(client):
    response = await client.post(CHAT, json=chat())
    assert response.status_code == 200
    usage = response.json()["usage"]
    metrics = await scrape(client)
    labels = {"route": CHAT, "method": "POST"}
    assert metrics.value("ddx_llm_requests_total", **labels, status="200") == 1
    assert metrics.value("ddx_llm_request_duration_seconds_count", **labels) == 1
    assert metrics.value("ddx_llm_request_success_total", finished_reason="tool_calls") == 1
    assert metrics.value("ddx_llm_request_success_total") == 1
    model = {"model_name": MODEL}
    assert metrics.value("ddx_llm_prompt_tokens_total", **model) == usage["prompt_tokens"]
    assert metrics.value("ddx_llm_generation_tokens_total", **model) == usage["completion_tokens"]
    assert metrics.value("ddx_llm_time_to_first_token_seconds_count", **model) == 1
    itl = usage["completion_tokens"] - 1  # every token after the first
    assert metrics.value("ddx_llm_inter_token_latency_seconds_count", **model) == itl
    assert metrics.value("ddx_llm_e2e_request_latency_seconds_count", **model) == 1
    assert metrics.value("ddx_llm_request_queue_time_seconds_count", **model) == 1
    assert metrics.value("ddx_llm_num_requests_running", **model) == 0
    assert metrics.value("ddx_llm_num_requests_waiting", **model) == 0


async def test_streamed_chat_times_first_token_tokens_and_the_whole_stream(client):
    response = await client.post(CHAT, json=chat(stream=True, mock=ECHO))
    assert response.status_code == 200 and response.text.endswith("data: [DONE]\n\n")
    metrics = await scrape(client)
    model = {"model_name": MODEL}
    assert metrics.value("ddx_llm_time_to_first_token_seconds_count", **model) == 1
    assert metrics.value("ddx_llm_time_to_first_token_seconds_sum", **model) >= 0.004
    assert metrics.value("ddx_llm_inter_token_latency_seconds_count", **model) == 4
    # Each of the four later words waited its 5 ms: the mean inter-token latency shows it.
    assert metrics.value("ddx_llm_inter_token_latency_seconds_sum", **model) >= 4 * 0.004
    itl_buckets = [
        s for s in metrics.samples if s.name == "ddx_llm_inter_token_latency_seconds_bucket"
    ]
    assert {s.labels["le"] for s in itl_buckets} >= {"0.01", "0.025", "80.0", "+Inf"}  # vLLM's
    assert metrics.value("ddx_llm_generation_tokens_total", **model) == 5
    assert metrics.value("ddx_llm_request_success_total", finished_reason="stop") == 1
    e2e = metrics.value("ddx_llm_e2e_request_latency_seconds_sum", **model)
    assert e2e >= 5 * 0.004
    # The HTTP duration runs until the stream's last byte, so it covers the generation.
    duration = metrics.value("ddx_llm_request_duration_seconds_sum", route=CHAT, method="POST")
    assert duration >= e2e


def http_scope(path: str, body: bytes) -> dict[str, Any]:
    return {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.1"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": [
            (b"host", b"testserver"),
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
        ],
        "client": ("127.0.0.1", 50000),
        "server": ("testserver", 80),
        "state": {},
    }


async def test_client_leaving_mid_stream_counts_as_cancelled(conf_dir):
    async with running_app(conf_dir) as (app, client):
        slow = {"scenario": "echo", "token_delay_ms": 20}
        body = json.dumps(chat("a b c d e f g h i j", stream=True, mock=slow)).encode()
        first_chunk = anyio.Event()
        calls = 0
        sent: list[dict[str, Any]] = []

        async def receive() -> dict[str, Any]:
            nonlocal calls
            calls += 1
            if calls == 1:
                return {"type": "http.request", "body": body, "more_body": False}
            await first_chunk.wait()
            return {"type": "http.disconnect"}

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)
            if message["type"] == "http.response.body" and message.get("body"):
                first_chunk.set()

        with anyio.fail_after(5):
            await app(http_scope(CHAT, body), receive, send)
        assert sent[0]["status"] == 200
        assert not any(b"[DONE]" in m.get("body", b"") for m in sent)  # it really was cut short

        metrics = await scrape(client)
        model = {"model_name": MODEL}
        assert metrics.value("ddx_llm_request_success_total", finished_reason="cancelled") == 1
        assert metrics.value("ddx_llm_request_success_total") == 1
        assert metrics.value("ddx_llm_generation_tokens_total", **model) < 10
        assert metrics.value("ddx_llm_num_requests_running", **model) == 0
        assert metrics.value("ddx_llm_requests_in_flight") == 1  # only the scrape
        assert metrics.value("ddx_llm_requests_total", route=CHAT, status="200") == 1


async def test_failed_generation_counts_as_error(client):
    streamed = await client.post(CHAT, json=chat(stream=True, mock={"scenario": "error"}))
    assert streamed.status_code == 200 and '"error"' in streamed.text  # reported in-band
    plain = await client.post(CHAT, json=chat(mock={"scenario": "error"}))
    assert plain.status_code == 500 and plain.json()["code"] == "llm_error"
    metrics = await scrape(client)
    assert metrics.value("ddx_llm_request_success_total", finished_reason="error") == 2
    assert metrics.value("ddx_llm_requests_total", route=CHAT, status="200") == 1
    # The errors plugin (order 400) runs inside metrics (300): the mapped status is counted.
    assert metrics.value("ddx_llm_requests_total", route=CHAT, status="500") == 1
    assert metrics.value("ddx_llm_num_requests_running", model_name=MODEL) == 0


async def test_labels_are_route_templates_never_raw_paths_or_ids(client):
    secret = "k3y-Secret-9f8e7d"
    request_id = "rid-0a1b2c3d4e5f"
    miss = await client.get(f"/v1/nope/{secret}", headers={"x-request-id": request_id})
    assert miss.status_code == 404 and miss.json()["code"] == "not_found"
    wrong_method = await client.delete("/health")
    assert wrong_method.status_code == 405
    odd_method = await client.request("BREW", "/health")
    assert odd_method.status_code == 405
    await client.get(f"/health?api_key={secret}", headers={"x-api-key": secret})
    metrics = await scrape(client)
    assert metrics.value("ddx_llm_requests_total", route="unmatched", status="404") == 1
    assert metrics.value("ddx_llm_requests_total", route="/health", method="DELETE") == 1
    assert metrics.value("ddx_llm_requests_total", route="/health", method="other") == 1
    assert metrics.value("ddx_llm_requests_total", route="/health", status="200") == 1
    values = metrics.label_values()
    assert not any(secret in v or request_id in v or "nope" in v or "BREW" in v for v in values)
    routes = {s.labels["route"] for s in metrics.samples if "route" in s.labels}
    assert routes == {"unmatched", "/health"}  # the scrape counts once it has answered


async def test_requests_the_router_never_saw_keep_their_route_template(conf_dir):
    # A body over the limit is refused before routing: the label is still the template.
    write_conf(conf_dir, {"core": {"max_body_bytes": 1000}})
    async with running_app(conf_dir) as (_, client):
        response = await client.post(CHAT, json=chat("x" * 2000))
        assert response.status_code == 413
        metrics = await scrape(client)
        assert metrics.value("ddx_llm_requests_total", route=CHAT, status="413") == 1


async def test_running_waiting_and_rejected_requests(conf_dir):
    write_conf(conf_dir, {"core": {"max_running": 1, "max_waiting": 0}})
    async with running_app(conf_dir) as (_, client):
        slow = chat("a b c d e f g h", stream=True, mock={"scenario": "echo", "token_delay_ms": 50})
        async with anyio.create_task_group() as tg:
            tg.start_soon(functools.partial(client.post, CHAT, json=slow))
            with anyio.fail_after(5):
                while True:  # until the stream generates
                    during = await scrape(client)
                    if during.value("ddx_llm_num_requests_running", model_name=MODEL) == 1:
                        break
                    await anyio.sleep(0.005)
            assert during.value("ddx_llm_requests_in_flight") == 2  # the stream and the scrape
            refused = await client.post(CHAT, json=chat())
            assert refused.status_code == 503 and refused.json()["code"] == "overloaded"
        after = await scrape(client)
        assert after.value("ddx_llm_num_requests_running", model_name=MODEL) == 0
        assert after.value("ddx_llm_num_requests_waiting", model_name=MODEL) == 0
        assert after.value("ddx_llm_request_queue_time_seconds_count", model_name=MODEL) == 1
        assert after.value("ddx_llm_requests_total", route=CHAT, status="503") == 1
        assert after.value("ddx_llm_requests_total", route=CHAT, status="200") == 1
        assert after.value("ddx_llm_request_success_total") == 1  # the refused one never ran


async def test_model_state_is_one_hot_per_registry_model(client):
    metrics = await scrape(client)
    states: dict[str, dict[str, float]] = {}
    for s in metrics.samples:
        if s.name == "ddx_llm_model_state":
            states.setdefault(s.labels["model"], {})[s.labels["state"]] = s.value
    models = (await client.get("/v1/models")).json()["data"]
    assert set(states) == {m["id"] for m in models}
    for model, by_state in states.items():
        assert set(by_state) == {"idle", "loading", "ready", "failed"}
        assert sorted(by_state.values()) == [0, 0, 0, 1], model
    assert states[MODEL]["ready"] == 1
    assert metrics.value("ddx_llm_model_load_seconds_count", model_name=MODEL) == 1
    assert metrics.value("ddx_llm_model_swaps_total") == 0


async def test_two_apps_in_one_process_keep_their_own_numbers(conf_dir):
    async with running_app(conf_dir) as (_, first), running_app(conf_dir) as (_, second):
        assert (await first.post(CHAT, json=chat())).status_code == 200
        assert (await scrape(first)).value("ddx_llm_request_success_total") == 1
        assert (await scrape(second)).value("ddx_llm_request_success_total") == 0


async def test_openapi_documents_the_metrics_route(client):
    document = (await client.get("/openapi.json")).json()
    operation = document["paths"]["/metrics"]["get"]
    assert operation["responses"]["200"]["content"]["text/plain"]["schema"] == {"type": "string"}


async def test_metrics_path_and_buckets_come_from_conf_and_env(conf_dir, monkeypatch):
    write_conf(conf_dir, {"metrics": {"path": "/internal/metrics"}})
    monkeypatch.setenv("DDX_LLM_METRICS_REQUEST_DURATION_BUCKETS", "0.1, 1, 10")
    async with running_app(conf_dir) as (_, client):
        assert (await client.get("/metrics")).status_code == 404
        response = await client.get("/internal/metrics")
        assert response.status_code == 200
        buckets = {
            s.labels["le"]
            for s in Scrape(response.text).samples
            if s.name == "ddx_llm_request_duration_seconds_bucket"
        }
        assert buckets == {"0.1", "1.0", "10.0", "+Inf"}
        assert "/internal/metrics" in (await client.get("/openapi.json")).json()["paths"]


@pytest.mark.parametrize(
    ("values", "key"),
    [
        ({"path": "metrics"}, "path"),
        ({"request_duration_buckets": [1.0, 0.5]}, "request_duration_buckets"),
        ({"request_duration_buckets": [0.0, 1.0]}, "request_duration_buckets"),
    ],
)
def test_invalid_settings_stop_start_up(conf_dir, values, key):
    write_conf(conf_dir, {"metrics": values})
    with pytest.raises(ConfigError, match=rf"\[metrics\] {key}"):
        create_app(conf_dir)


async def test_disabled_by_name_serves_no_metrics(conf_dir):
    write_conf(conf_dir, {"core": {"disabled_plugins": ["metrics"]}})
    async with running_app(conf_dir) as (app, client):
        response = await client.get("/metrics")
        assert response.status_code == 404
        assert documented(response.json()) == {"code": "not_found", "message": "no such route"}
        assert "metrics" not in [spec.name for spec in app.context.middleware]
        assert "/metrics" not in (await client.get("/openapi.json")).json()["paths"]


async def test_refused_keys_are_counted_under_the_template_and_never_labelled(
    conf_dir, monkeypatch
):
    key = "sk-metrics-test-key-0123"
    monkeypatch.setenv("DDX_LLM_API_KEYS", key)
    async with running_app(conf_dir) as (_, client):
        refused = await client.post(f"{CHAT}?api_key=wrong-{key}", json=chat())
        assert refused.status_code == 401
        allowed = await client.post(CHAT, json=chat(), headers={"authorization": f"Bearer {key}"})
        assert allowed.status_code == 200
        metrics = await scrape(client)
        assert metrics.value("ddx_llm_requests_total", route=CHAT, status="401") == 1
        assert metrics.value("ddx_llm_requests_total", route=CHAT, status="200") == 1
        assert not any(key in v for v in metrics.label_values())


def test_the_observer_takes_any_event_without_raising():
    from ddx_llm import events
    from ddx_llm.plugins.metrics.exposition import render
    from ddx_llm.plugins.metrics.series import MetricsCollector

    @dataclasses.dataclass(frozen=True)
    class SomethingNew(events.Event):
        model: str

    collector = MetricsCollector(["a"], [1.0])
    request = events.RequestInfo("rid", None, "POST", CHAT, "chat.completions")
    for event in (
        SomethingNew("a"),
        events.RequestQueued(request, "b"),  # a model the registry did not list at start-up
        events.RequestStarted(request, "b", 0.5),
        events.TokensGenerated(request, "b", 0, 0.1),
        events.RequestDone(request, "b", "content_filter", 3, 1, 0.9),
        events.ModelLoading("b", previous="a"),
        events.ModelUnloaded("a"),
        events.ModelLoaded("b", 2.0, swapped=True),
    ):
        collector.observe(event)
    text = render(collector, generate_latest).decode()
    metrics = Scrape(text)
    assert metrics.value("ddx_llm_request_success_total", model_name="b", finished_reason="other")
    assert metrics.value("ddx_llm_num_requests_running", model_name="b") == 0
    assert metrics.value("ddx_llm_model_state", model="b", state="ready") == 1
    assert metrics.value("ddx_llm_model_state", model="a", state="idle") == 1
    assert metrics.value("ddx_llm_model_swaps_total") == 1


def test_a_bad_multiprocess_set_up_stops_start_up(conf_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path / "missing"))
    with pytest.raises(ConfigError, match="is not a directory"):
        create_app(conf_dir)
    # In this process prometheus-client was imported without the variable: it cannot switch.
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    with pytest.raises(ConfigError, match="set it in the environment of the server process"):
        create_app(conf_dir)


# ---------------------------------------------------------------------- scrape-time figures


async def test_kv_cache_usage_is_always_there_and_vllm_names_are_off_by_default(client):
    response = await client.get("/metrics")
    assert "vllm:" not in response.text
    metrics = Scrape(response.text)
    assert metrics.families["ddx_llm_kv_cache_usage_perc"].type == "gauge"
    assert metrics.value("ddx_llm_kv_cache_usage_perc", model_name=MODEL) == 0
    assert "ddx_llm_prompt_cache_bytes" not in metrics.families  # the mock keeps no cache


VLLM_SERIES = ("vllm:num_requests_running", "vllm:num_requests_waiting", "vllm:kv_cache_usage_perc")


async def test_vllm_names_for_inference_gateways(conf_dir, monkeypatch):
    """The endpoint picker reads the first series of each family: one series each, the
    totals over every model, under the exact names — in both exposition formats."""
    from prometheus_client.openmetrics.parser import (
        text_string_to_metric_families as openmetrics_families,
    )

    write_conf(conf_dir, {"core": {"max_running": 2, "max_waiting": 4}})
    monkeypatch.setenv("DDX_LLM_METRICS_VLLM_NAMES", "1")
    slow = chat("a b c d e f g h", stream=True, mock={"scenario": "echo", "token_delay_ms": 100})
    async with running_app(conf_dir) as (_, client):
        async with anyio.create_task_group() as tg:
            for _ in range(3):
                tg.start_soon(functools.partial(client.post, CHAT, json=slow))
            with anyio.fail_after(5):
                while True:  # two generate, one waits for a slot
                    during = await scrape(client)
                    if during.value("vllm:num_requests_waiting") == 1:
                        break
                    await anyio.sleep(0.005)
            for name in VLLM_SERIES:
                (sample,) = during.families[name].samples
                assert sample.labels == {"model_name": MODEL}
                assert during.families[name].type == "gauge"
            assert during.value("vllm:num_requests_running") == 2
            assert during.value("ddx_llm_num_requests_running", model_name=MODEL) == 2
            assert during.value("vllm:kv_cache_usage_perc") == 1.0  # both slots taken
            assert during.value("ddx_llm_kv_cache_usage_perc") == 1.0
            accept = {"accept": "application/openmetrics-text; version=1.0.0"}
            text = (await client.get("/metrics", headers=accept)).text
            families = {f.name: f for f in openmetrics_families(text)}
            for name in VLLM_SERIES:
                assert [s.name for s in families[name].samples] == [name]
        after = await scrape(client)
        assert after.value("vllm:num_requests_running") == 0
        assert after.value("vllm:num_requests_waiting") == 0
        assert after.value("vllm:kv_cache_usage_perc") == 0


class StatusBackend:
    """A plugin offering the mock with a status of its own (``status`` is the protocol's way
    for a backend to report figures; mlx reports these under ``mlx``)."""

    def __init__(self, status: Any) -> None:
        self.status = status

    @hookimpl
    def ddx_llm_backends(self, app):
        from ddx_llm.plugins.mock import MockBackend

        status = self.status

        class Reporting(MockBackend):
            name = "reporting"

            def status(self, handle):
                if isinstance(status, Exception):
                    raise status
                return status

        return {"reporting": lambda app: Reporting(app.settings.section("mock"))}


async def test_kv_usage_and_the_prompt_cache_come_from_the_backends_status(conf_dir):
    write_conf(conf_dir, {"core": {"backend": "reporting"}, "metrics": {"vllm_names": True}})
    status = {
        "sequences": 1,
        "max_batch": 4,
        "prompt_cache": {"enabled": True, "entries": 3, "mb": 12.5, "hits": 2, "tokens_reused": 40},
    }
    plugin = ("reporting", StatusBackend(status))
    async with running_app(conf_dir, extra_plugins=(plugin,)) as (_, client):
        metrics = await scrape(client)
    model = {"model_name": MODEL}
    assert metrics.value("ddx_llm_kv_cache_usage_perc", **model) == 0.25
    assert metrics.value("vllm:kv_cache_usage_perc", **model) == 0.25
    assert metrics.value("ddx_llm_prompt_cache_bytes", **model) == 12.5e6
    assert metrics.value("ddx_llm_prompt_cache_entries", **model) == 3
    assert metrics.value("ddx_llm_prompt_cache_reused_tokens_total", **model) == 40
    assert metrics.families["ddx_llm_prompt_cache_reused_tokens"].type == "counter"


async def test_a_failing_backend_status_never_fails_a_scrape(conf_dir, caplog):
    write_conf(conf_dir, {"core": {"backend": "reporting"}})
    plugin = ("reporting", StatusBackend(RuntimeError("status broke")))
    async with running_app(conf_dir, extra_plugins=(plugin,)) as (_, client):
        for _ in range(2):
            metrics = await scrape(client)
            assert metrics.value("ddx_llm_kv_cache_usage_perc") == 0
    assert sum("the backend's status failed" in r.message for r in caplog.records) == 1


@pytest.mark.model
async def test_on_mlx_kv_usage_is_the_batch_share_and_the_prompt_cache_is_measured(
    conf_dir, mlx_models_dir
):
    """Real figures from the mlx worker: one sequence of a batch of 4 while it generates;
    afterwards the prompt cache holds its processed prompt."""
    model = "SmolLM2-135M-Instruct"
    write_conf(
        conf_dir,
        {
            "core": {"backend": "mlx", "models_dir": str(mlx_models_dir), "max_running": 4},
            "metrics": {"vllm_names": True},
        },
    )
    body = chat("Count from one to fifty.", model=model, max_tokens=24, temperature=0)
    async with running_app(conf_dir) as (_, client):
        with anyio.fail_after(60):
            while (await client.get("/readyz")).status_code != 200:
                await anyio.sleep(0.1)
        async with anyio.create_task_group() as tg:
            tg.start_soon(functools.partial(client.post, CHAT, json=body))
            with anyio.fail_after(30):
                while True:
                    during = await scrape(client)
                    if during.value("ddx_llm_kv_cache_usage_perc") > 0:
                        break
                    await anyio.sleep(0.02)
            assert during.value("vllm:kv_cache_usage_perc", model_name=model) == 0.25
        after = await scrape(client)
    assert after.value("vllm:kv_cache_usage_perc", model_name=model) == 0
    assert after.value("ddx_llm_prompt_cache_entries", model_name=model) >= 1
    assert after.value("ddx_llm_prompt_cache_bytes", model_name=model) > 0
