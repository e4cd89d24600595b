"""The playground plugin in process (asyncio and trio): the page and its files, their headers,
when the page is served (``[playground] enabled``, ``[core] env``, disabled by name), that the
page needs no key while the API does, that its files are package data, and — the figure the
page shows while a model loads — ``/health`` ``model_load_progress``, asked of the backend.

The page in a real browser: tests/live/test_playground_browser.py.
"""

from __future__ import annotations

import fnmatch
import importlib.resources
import re
import tomllib
from html.parser import HTMLParser
from pathlib import Path
from types import SimpleNamespace

import anyio
import pytest
from support import ROOT, documented, running_app, write_conf

from ddx_llm import hookimpl
from ddx_llm.backend import BackendBase, Delta, Prompt, Usage
from ddx_llm.plugins.playground.pages import CONTENT_TYPES, read_assets
from ddx_llm.schemas.service import Health

pytestmark = pytest.mark.anyio

KEY = "sk-playground-0123456789abcdef"


class References(HTMLParser):
    """What a page refers to (src, href), and anything inline a strict CSP would block."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []
        self.inline: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        for name in ("src", "href"):
            if found.get(name):
                self.urls.append(found[name])
        if tag == "script" and not found.get("src"):
            self.inline.append("<script> without src")
        if tag == "style" or "style" in found:
            self.inline.append(f"inline style on <{tag}>")
        self.inline += [f"{name} on <{tag}>" for name in found if name.startswith("on")]


def static_files() -> dict[str, str]:
    folder = importlib.resources.files("ddx_llm.plugins.playground") / "static"
    return {entry.name: entry.read_text() for entry in folder.iterdir() if entry.is_file()}


# --- the page and its files ----------------------------------------------------------------


async def test_the_page_and_every_file_it_needs_are_served(conf_dir):
    """Follow the page's references and every module's imports: each answers 200 with its type
    (nothing missing from the package, nothing served from elsewhere)."""
    async with running_app(conf_dir) as (_, client):
        page = await client.get("/playground")
        assert page.status_code == 200
        assert page.headers["content-type"] == "text/html; charset=utf-8"
        parser = References()
        parser.feed(page.text)
        assert parser.inline == []
        wanted = [url for url in parser.urls if not url.startswith("data:")]
        assert wanted == ["playground/playground.css", "playground/main.js"]
        fetched: set[str] = set()
        while wanted:
            url = wanted.pop()
            if url in fetched:
                continue
            fetched.add(url)
            answer = await client.get("/" + url)
            assert answer.status_code == 200, url
            suffix = Path(url).suffix
            assert answer.headers["content-type"] == CONTENT_TYPES[suffix], url
            assert answer.headers["x-content-type-options"] == "nosniff"
            if suffix == ".js":
                for module in re.findall(r'^import .* from "\./([\w.]+)";$', answer.text, re.M):
                    wanted.append(f"playground/{module}")
        served = {Path(url).name for url in fetched}
        assert served == set(static_files()) - {"index.html"}


async def test_the_page_forbids_everything_but_this_origin(conf_dir):
    async with running_app(conf_dir) as (_, client):
        headers = (await client.get("/playground")).headers
    policy = dict(part.split(" ", 1) for part in headers["content-security-policy"].split("; "))
    assert policy["default-src"] == "'none'"
    for directive in ("script-src", "style-src", "connect-src"):
        assert policy[directive] == "'self'"
    assert policy["frame-ancestors"] == "'none'" and headers["x-frame-options"] == "DENY"
    assert headers["referrer-policy"] == "no-referrer"


def test_every_url_in_the_page_is_relative():
    """A path prefix (root_path) needs no setting only if nothing starts from "/"."""
    files = static_files()
    for name, text in files.items():
        if name.endswith(".js"):
            assert not re.search(r"""["'`]/(v1|health|playground)""", text), name
            assert "localStorage." not in text and "document.cookie" not in text, name
    api = files["api.js"]
    assert 'new URL(".", document.baseURI)' in api
    assert "Authorization = `Bearer ${key}`" in api
    parser = References()
    parser.feed(files["index.html"])
    assert all(not url.startswith(("/", "http")) for url in parser.urls), parser.urls


async def test_files_are_revalidated_with_etags(conf_dir):
    async with running_app(conf_dir) as (_, client):
        first = await client.get("/playground/main.js")
        assert first.headers["cache-control"] == "no-cache"
        again = await client.get(
            "/playground/main.js", headers={"if-none-match": first.headers["etag"]}
        )
        assert (again.status_code, again.content) == (304, b"")
        assert again.headers["etag"] == first.headers["etag"]
        other = await client.get("/playground/main.js", headers={"if-none-match": '"stale"'})
        assert other.status_code == 200 and other.content == first.content


async def test_a_trailing_slash_goes_back_to_the_page_and_unknown_files_are_404(conf_dir):
    async with running_app(conf_dir) as (_, client):
        slash = await client.get("/playground/")
        assert (slash.status_code, slash.headers["location"]) == (308, "../playground")
        for path in ("/playground/nope.js", "/playground/index.html", "/playground/..%2fapi.js"):
            missing = await client.get(path)
            assert missing.status_code == 404, path
            assert documented(missing.json())["code"] == "not_found"


def test_the_files_are_package_data():
    """What pyproject.toml ships as package data is every file the page serves."""
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    patterns = pyproject["tool"]["setuptools"]["package-data"]["ddx_llm.plugins.playground"]
    shipped = {
        name
        for name in static_files()
        if any(fnmatch.fnmatch(f"static/{name}", p) for p in patterns)
    }
    assert shipped == set(read_assets()) == set(static_files())


# --- when it is served ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("env", "enabled", "served"),
    [
        ("dev", "auto", True),
        ("Development", "auto", True),
        ("prod", "auto", False),
        ("staging", "auto", False),
        ("prod", True, True),
        ("dev", False, False),
    ],
)
async def test_enabled_follows_the_env_unless_set(conf_dir, monkeypatch, env, enabled, served):
    monkeypatch.setenv("DDX_LLM_API_KEYS", KEY)  # prod refuses to start without keys
    write_conf(conf_dir, {"core": {"env": env}, "playground": {"enabled": enabled}})
    async with running_app(conf_dir) as (_, client):
        assert (await client.get("/playground")).status_code == (200 if served else 404)
        assert (await client.get("/playground/main.js")).status_code == (200 if served else 404)
        document = (await client.get("/openapi.json")).json()
        assert ("/playground" in document["paths"]) is served


async def test_the_variable_switches_it(conf_dir, monkeypatch):
    monkeypatch.setenv("DDX_LLM_PLAYGROUND_ENABLED", "false")
    async with running_app(conf_dir) as (_, client):
        assert (await client.get("/playground")).status_code == 404


async def test_disabled_by_name(conf_dir, monkeypatch):
    monkeypatch.setenv("DDX_LLM_DISABLED_PLUGINS", "playground")
    async with running_app(conf_dir) as (app, client):
        assert dict(app.context.pm.list_name_plugin())["playground"] is None  # blocked
        missing = await client.get("/playground")
        assert (missing.status_code, missing.json()["code"]) == (404, "not_found")


async def test_the_page_needs_no_key_the_api_does(conf_dir, monkeypatch):
    monkeypatch.setenv("DDX_LLM_API_KEYS", KEY)
    async with running_app(conf_dir) as (_, client):
        assert (await client.get("/playground")).status_code == 200
        assert (await client.get("/playground/api.js")).status_code == 200
        ask = {"messages": [{"role": "user", "content": "hi"}]}
        refused = await client.post("/v1/chat/completions", json=ask)
        assert documented(refused.json())["code"] == "unauthorized"
        bearer = {"authorization": f"Bearer {KEY}"}
        assert (
            await client.post("/v1/chat/completions", json=ask, headers=bearer)
        ).status_code == 200


# --- /health model_load_progress: what the page shows while a model loads --------------------


class StepLoader(BackendBase):
    """A backend whose loads of ``slow`` advance one step per message the test sends."""

    name = "steps"
    real_model_mode = True

    def __init__(self, app) -> None:
        self.fraction: float | None = None
        self.send, self.steps = None, None

    async def load(self, entry):
        if entry.id == "slow":
            self.fraction = 0.0
            self.send, self.steps = anyio.create_memory_object_stream[float](10)
            async for fraction in self.steps:
                self.fraction = fraction
                if fraction >= 1:
                    break
        return entry.id

    def load_progress(self, entry):
        return self.fraction if entry.id == "slow" else None

    async def unload(self, handle) -> None:
        return None

    async def prepare(self, handle, entry, request) -> Prompt:
        return Prompt(1)

    async def generate(self, handle, entry, prompt, request):
        yield Delta(content="ok", tokens=1, finish_reason="stop", usage=Usage(1, 1))


class Unmeasured:
    """A backend written without BackendBase: it lacks the optional ``load_progress``."""

    name = "plain"
    real_model_mode = True

    def __init__(self, app) -> None:
        self.gate: anyio.Event | None = None

    def default_model(self, registry):
        return None

    async def preflight(self, entry, resident) -> None:
        return None

    async def load(self, entry):
        if entry.id == "slow":
            self.gate = anyio.Event()
            await self.gate.wait()
        return entry.id

    async def unload(self, handle) -> None:
        return None

    prepare, generate = StepLoader.prepare, StepLoader.generate

    def status(self, handle):
        return None

    def not_ready_reason(self, handle):
        return None

    async def close(self) -> None:
        return None


BACKENDS = SimpleNamespace(
    ddx_llm_backends=hookimpl(lambda: {"steps": StepLoader, "plain": Unmeasured})
)
MODELS = [
    {"id": name, "family": "t", "arch": "t", "total_params_b": 0.1, "quantization": "none",
     "context_window": 4096, "label": name}
    for name in ("fast", "slow")
]  # fmt: skip


def conf_with(conf_dir: Path, backend: str) -> Path:
    from support import add_models

    (conf_dir / "models.toml").write_text("")
    add_models(conf_dir, *MODELS)
    write_conf(conf_dir, {"core": {"backend": backend, "default_model": "fast"}})
    return conf_dir


async def health_of(client) -> dict:
    body = (await client.get("/health")).json()
    Health.model_validate(body)
    return body


async def test_health_shows_the_load_progress_the_backend_measures(conf_dir):
    async with running_app(conf_with(conf_dir, "steps"), extra_plugins=(("steps", BACKENDS),)) as (
        app,
        client,
    ):
        assert "model_load_progress" not in await health_of(client)
        backend = app.context.backend
        async with anyio.create_task_group() as tasks:
            swapped = {}

            async def swap() -> None:
                answer = await client.post("/v1/models/load", json={"model_id": "slow"})
                swapped.update(answer.json())

            tasks.start_soon(swap)
            with anyio.fail_after(10):
                while backend.send is None:
                    await anyio.sleep(0.01)
            seen = [(await health_of(client))["model_load_progress"]]
            for fraction in (0.25, 0.75, 1.5):  # a backend's overshoot is clamped
                await backend.send.send(fraction)
                with anyio.fail_after(10):
                    while (health := await health_of(client))["model_state"] == "loading" and (
                        health["model_load_progress"] == seen[-1]
                    ):
                        await anyio.sleep(0.01)
                seen.append(health.get("model_load_progress"))
        assert seen == [0.0, 0.25, 0.75, None]
        assert health["model_state"] == "ready" and swapped["loaded"] is True


async def test_a_backend_without_the_method_shows_no_progress(conf_dir):
    async with running_app(conf_with(conf_dir, "plain"), extra_plugins=(("plain", BACKENDS),)) as (
        app,
        client,
    ):
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(lambda: client.post("/v1/models/load", json={"model_id": "slow"}))
            with anyio.fail_after(10):
                while app.context.backend.gate is None:
                    await anyio.sleep(0.01)
            health = await health_of(client)
            assert health["model_state"] == "loading" and "model_load_progress" not in health
            app.context.backend.gate.set()
