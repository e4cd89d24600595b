"""The Grafana dashboard (deploy/grafana/ddx-llm.json) against the series a live ddx-llm really
exposes: after real traffic (streams, tool calls, a 404, a 422, a 503 ``overloaded``, on the
mock; a conversation and a swap in real mode), every metric each panel's PromQL queries exists,
with every label its matchers, its ``by (...)`` clauses and its legend use, and each selector
matches at least one series.  ``job`` and ``instance`` are the labels Prometheus adds from the
scrape configuration (deploy/prometheus/prometheus.yml), whose job is the dashboard's default.

The PromQL is read by a small parser (below, with its own tests): selectors with their label
matchers, grouping labels, functions — enough for the expressions of a dashboard, not all of
PromQL (no subqueries, no ``@``, no ``offset``): an expression it cannot read fails the test.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families
from support import ROOT, LiveServer, copy_project_conf, write_conf

DASHBOARD = ROOT / "deploy" / "grafana" / "ddx-llm.json"
SCRAPE_CONFIG = ROOT / "deploy" / "prometheus" / "prometheus.yml"
RESIDENT = "mlx-community/Qwen3-4B-Instruct-2507-4bit"
TARGET_LABELS = {"job", "instance"}
"""Added by Prometheus to every series it scrapes (never in the exposition)."""
VARIABLES = {
    "$__rate_interval": "1m", "$__range": "1h", "$job": ".*", "$instance": ".*", "$model": ".*"
}  # fmt: skip
FUNCTIONS = {
    "sum", "max", "min", "avg", "count", "rate", "increase", "irate", "histogram_quantile",
    "clamp_min", "clamp_max", "abs", "time", "vector", "scalar", "topk", "bottomk",
}  # fmt: skip
KEYWORDS = {"and", "or", "unless", "bool"}
GROUPING = re.compile(r"\b(by|without|on|ignoring|group_left|group_right)\s*\(([^()]*)\)")
STRING = r'"(?:\\.|[^"\\])*"'
TOKEN = re.compile(
    rf"(?P<name>[A-Za-z_:][A-Za-z0-9_:]*)\s*(?P<braces>\{{(?:[^{{}}\"]|{STRING})*\}})?"
    rf"|(?P<number>\d+(?:\.\d+)?(?:e[+-]?\d+)?)|(?P<braces_alone>\{{)|(?P<other>\S)"
)
MATCHER = re.compile(rf"\s*([A-Za-z_][A-Za-z0-9_]*)\s*(=~|!~|!=|=)\s*({STRING})\s*(,|$)")


@dataclass(frozen=True)
class Matcher:
    label: str
    op: str
    value: str

    def accepts(self, labels: dict[str, str]) -> bool:
        """As Prometheus matches: regexes anchored at both ends, absent labels empty."""
        actual = labels.get(self.label, "")
        if self.op in ("=~", "!~"):
            return bool(re.fullmatch(self.value, actual)) == (self.op == "=~")
        return (actual == self.value) == (self.op == "=")


@dataclass(frozen=True)
class Selector:
    metric: str
    matchers: tuple[Matcher, ...]


@dataclass(frozen=True)
class Query:
    """What one PromQL expression refers to."""

    selectors: tuple[Selector, ...]
    grouping: frozenset[str]
    functions: frozenset[str]


def matchers_of(braces: str) -> tuple[Matcher, ...]:
    inside, found, position = braces[1:-1], [], 0
    while position < len(inside):
        match = MATCHER.match(inside, position)
        if match is None:
            raise ValueError(f"cannot read label matchers {braces!r}")
        found.append(Matcher(match[1], match[2], json.loads(match[3])))
        position = match.end()
    return tuple(found)


def parse(expr: str) -> Query:
    """The selectors, grouping labels and functions of ``expr``; ValueError when it is not
    well-formed (unbalanced brackets, a selector without a metric name, an unknown function)."""
    for variable, value in VARIABLES.items():
        expr = expr.replace(variable, value)
    grouping: set[str] = set()
    for clause in GROUPING.finditer(expr):
        grouping.update(label.strip() for label in clause[2].split(",") if label.strip())
    bare = GROUPING.sub(" ", expr)
    bare = re.sub(r"\[\s*\d+[smhdwy]\s*\]", " ", bare)  # range selectors
    depth = 0
    selectors, functions = [], set()
    tokens = list(TOKEN.finditer(bare))
    for index, token in enumerate(tokens):
        if token["braces_alone"]:
            raise ValueError(f"a selector without a metric name in {expr!r}")
        if token["other"]:
            depth += {"(": 1, ")": -1}.get(token["other"], 0)
            if depth < 0 or token["other"] in "[]{}":
                raise ValueError(f"unbalanced {token['other']!r} in {expr!r}")
            continue
        if not token["name"]:
            continue
        following = tokens[index + 1]["other"] if index + 1 < len(tokens) else None
        name = token["name"]
        if following == "(" and not token["braces"]:
            if name not in FUNCTIONS:
                raise ValueError(f"unknown function {name!r} in {expr!r}")
            functions.add(name)
        elif name not in KEYWORDS:
            selectors.append(Selector(name, matchers_of(token["braces"] or "{}")))
    if depth:
        raise ValueError(f"unbalanced parentheses in {expr!r}")
    return Query(tuple(selectors), frozenset(grouping), frozenset(functions))


def legend_labels(legend: str) -> set[str]:
    return set(re.findall(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}", legend))


def targets() -> Iterator[tuple[str, dict[str, Any]]]:
    """Every query of the dashboard: (panel title, target)."""
    for panel in json.loads(DASHBOARD.read_text())["panels"]:
        for target in panel.get("targets", []):
            yield panel["title"], target


def scrape(url: str) -> dict[str, list[dict[str, str]]]:
    """The exposition's samples: their labels by sample name (the value under ``""``)."""
    response = httpx.get(url + "/metrics", timeout=10)
    assert response.status_code == 200
    samples: dict[str, list[dict[str, str]]] = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            samples.setdefault(sample.name, []).append({**sample.labels, "": sample.value})
    return samples


def problems_with(query: Query, legend: str, samples: dict[str, list[dict[str, str]]]) -> list[str]:
    """What the query asks for that the samples do not have."""
    found = []
    wanted = (query.grouping | legend_labels(legend)) - TARGET_LABELS - {"le"}
    for selector in query.selectors:
        series = samples.get(selector.metric)
        if not series:
            found.append(f"{selector.metric}: no such series")
            continue
        present = set().union(*series) - {""}
        own = [m for m in selector.matchers if m.label not in TARGET_LABELS]
        found += [f"{selector.metric}: no label {m.label!r}" for m in own if m.label not in present]
        matching = [labels for labels in series if all(m.accepts(labels) for m in own)]
        if not matching:
            found.append(f"{selector.metric}: no series matches {[m.__dict__ for m in own]}")
        for label in sorted(wanted - present):
            found.append(f"{selector.metric}: no label {label!r} to group or name by")
        if "le" in query.grouping and not selector.metric.endswith("_bucket"):
            found.append(f"{selector.metric}: grouped by le but not a histogram's buckets")
    return found


def check_dashboard(samples: dict[str, list[dict[str, str]]], *, skip: str | None = None) -> int:
    """Assert every query's references exist; returns how many queries were checked.  Queries
    on metrics whose name starts with ``skip`` are left out."""
    checked, failures = 0, []
    for title, target in targets():
        query = parse(target["expr"])
        if skip and any(s.metric.startswith(skip) for s in query.selectors):
            continue
        checked += 1
        failures += [f"{title}: {p}" for p in problems_with(query, target["legendFormat"], samples)]
    assert failures == [], "\n".join(failures)
    return checked


# --- the parser ------------------------------------------------------------------------------


def test_the_parser_reads_selectors_matchers_and_grouping():
    query = parse(
        'histogram_quantile(0.95, sum by (le, route) (rate(x_bucket{job=~"$job", '
        'status=~"[45]..", a!="b,c"}[$__rate_interval]))) / on (route) sum(y_total) > 0'
    )
    assert [s.metric for s in query.selectors] == ["x_bucket", "y_total"]
    assert query.selectors[0].matchers == (
        Matcher("job", "=~", ".*"), Matcher("status", "=~", "[45].."), Matcher("a", "!=", "b,c")
    )  # fmt: skip
    assert query.grouping == {"le", "route"}
    assert query.functions == {"histogram_quantile", "sum", "rate"}
    assert Matcher("status", "=~", "[45]..").accepts({"status": "404"})
    assert not Matcher("status", "=~", "[45]..").accepts({"status": "2000"})  # anchored
    assert Matcher("code", "!=", "x").accepts({})


@pytest.mark.parametrize(
    "broken",
    ["sum(rate(x[1m])", 'rate(x{a="1"}[1m]))', "sumx(x)", '{a="1"}', "x{a=1}", 'x{a="1" b="2"}'],
)
def test_the_parser_refuses_what_it_cannot_read(broken):
    with pytest.raises(ValueError):
        parse(broken)


# --- the files -------------------------------------------------------------------------------


def test_the_dashboard_is_well_formed_and_matches_the_scrape_config():
    dashboard = json.loads(DASHBOARD.read_text())
    panels = dashboard["panels"]
    assert len({panel["id"] for panel in panels}) == len(panels)
    cells: set[tuple[int, int]] = set()
    for panel in panels:
        grid = panel["gridPos"]
        assert grid["x"] >= 0 and grid["x"] + grid["w"] <= 24, panel["title"]
        area = {(x, y) for x in range(grid["x"], grid["x"] + grid["w"])
                for y in range(grid["y"], grid["y"] + grid["h"])}  # fmt: skip
        assert not area & cells, f"{panel['title']} overlaps another panel"
        cells |= area
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
        refs = [target["refId"] for target in panel["targets"]]
        assert refs and len(set(refs)) == len(refs), panel["title"]
        for target in panel["targets"]:
            parse(target["expr"])  # readable
            assert target["datasource"] == panel["datasource"]
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert set(variables) == {"datasource", "job", "instance", "model"}
    used = set(re.findall(r"\$(\w+)", json.dumps([t for _, t in targets()])))
    assert used - {"__rate_interval", "__range"} <= set(variables)

    scrape_config = yaml.safe_load(SCRAPE_CONFIG.read_text())
    (job,) = scrape_config["scrape_configs"]
    assert job["job_name"] == variables["job"]["current"]["value"] == "ddx-llm"
    assert job["metrics_path"] == "/metrics"
    assert job["static_configs"][0]["targets"] == ["127.0.0.1:4250"]
    assert not {"job", "instance"} & set(job["static_configs"][0]["labels"])


# --- against a live server -------------------------------------------------------------------

STREAM = {
    "messages": [{"role": "user", "content": "one two three four five"}],
    "stream": True,
    "mock": {"scenario": "echo", "token_delay_ms": 20},
}


def mock_traffic(url: str) -> None:
    """Streams and tool calls, a 404, a 422, and a 503 ``overloaded`` (one slot, no queue)."""
    with httpx.Client(base_url=url, timeout=30) as client:
        assert client.post("/v1/chat/completions", json=STREAM).status_code == 200
        tool_call = {"messages": [{"role": "user", "content": "weather?"}]}
        assert client.post("/v1/chat/completions", json=tool_call).status_code == 200
        assert client.get("/v1/nope").status_code == 404
        assert client.post("/v1/chat/completions", json={"messages": 1}).status_code == 422
        slow = {**STREAM, "mock": {"scenario": "echo", "token_delay_ms": 400}}
        with client.stream("POST", "/v1/chat/completions", json=slow) as held:
            assert held.status_code == 200
            chunks = held.iter_bytes()  # kept: a dropped iterator closes the response
            next(chunks)  # generating: the only slot is taken
            refused = client.post("/v1/chat/completions", json=tool_call)
            assert (refused.status_code, refused.json()["code"]) == (503, "overloaded")
            assert b"".join(chunks).endswith(b"data: [DONE]\n\n")


@pytest.mark.live
@pytest.mark.parametrize("worker", ["asyncio", "trio"])
def test_every_panel_finds_its_series_after_mock_traffic(conf_dir, worker):
    write_conf(conf_dir, {"core": {"max_running": 1, "max_waiting": 0}})
    with LiveServer(conf_dir, args=("-k", worker)) as server:
        mock_traffic(server.url)
        samples = scrape(server.url)
    prompt_cache = [title for title, t in targets() if "ddx_llm_prompt_cache_" in t["expr"]]
    assert prompt_cache and not any(name.startswith("ddx_llm_prompt_cache_") for name in samples)
    checked = check_dashboard(samples, skip="ddx_llm_prompt_cache_")
    assert checked == len(list(targets())) - len(prompt_cache)
    refused = {
        (s["model_name"], s["code"]): s[""] for s in samples["ddx_llm_requests_rejected_total"]
    }
    assert refused[(RESIDENT, "overloaded")] == 1
    assert sum(refused.values()) == 1  # every model and code starts at zero


@pytest.mark.live
@pytest.mark.model
def test_every_panel_finds_its_series_in_real_mode(tmp_path_factory, mlx_models_dir):
    """The bundled model: a conversation whose second turn reuses the prompt cache, a 503
    ``overloaded``, a 404, then a swap — every panel, the prompt cache's included."""
    conf_dir = copy_project_conf(tmp_path_factory.mktemp("dashboard-real") / "conf")
    write_conf(conf_dir, {"core": {"max_running": 1, "max_waiting": 0}})
    env = {"DDX_LLM_USE_REAL_MODEL": "1", "DDX_LLM_MODELS_DIR": str(mlx_models_dir)}
    with LiveServer(conf_dir, env=env) as server:
        with httpx.Client(base_url=server.url, timeout=120) as client:
            _wait_ready(client)
            turn = [{"role": "system", "content": ""}, {"role": "user", "content": "Hi"}]
            ask = {"messages": turn, "max_tokens": 3, "temperature": 0}
            first = client.post("/v1/chat/completions", json=ask).json()
            turn += [first["choices"][0]["message"], {"role": "user", "content": "And?"}]
            again = client.post("/v1/chat/completions", json={**ask, "messages": turn})
            assert again.status_code == 200
            (reused,) = scrape(server.url)["ddx_llm_prompt_cache_reused_tokens_total"]
            assert reused[""] > 0 and reused["model_name"] == "SmolLM2-135M-Instruct"
            with client.stream(
                "POST", "/v1/chat/completions", json={**ask, "stream": True}
            ) as held:
                chunks = held.iter_bytes()  # kept: a dropped iterator closes the response
                next(chunks)  # generating: the only slot is taken
                refused = client.post("/v1/chat/completions", json=ask)
                assert (refused.status_code, refused.json()["code"]) == (503, "overloaded")
                assert b"".join(chunks).endswith(b"data: [DONE]\n\n")
            assert client.get("/v1/nope").status_code == 404
            swap = client.post("/v1/models/load", json={"model_id": "SmolLM2-135M-Instruct-tools"})
            assert swap.json()["swapped"] is True
            assert client.post("/v1/chat/completions", json=ask).status_code == 200
            samples = scrape(server.url)
    assert check_dashboard(samples) == len(list(targets()))
    (swaps,) = samples["ddx_llm_model_swaps_total"]
    assert swaps[""] == 1


def _wait_ready(client: httpx.Client, limit: float = 60) -> None:
    import time

    deadline = time.monotonic() + limit
    while client.get("/health").json()["model_state"] != "ready":
        assert time.monotonic() < deadline
        time.sleep(0.1)
