"""A plugin distributed on its own is picked up through the ``ddx_llm`` entry-point group.

``tests/data/thirdparty`` is a separate distribution (``ddx-llm-hello``).  The fixture builds and
installs it with pip into a private folder that it then puts on the import path (``sys.path`` in
process, ``PYTHONPATH`` for subprocesses): entry points are found there exactly as in
site-packages, and neither the shared environment nor other tests ever see the plugin, even if
a run is killed before its teardown.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from support import ROOT, LiveServer, running_app, write_conf

from ddx_llm.app import create_app
from ddx_llm.config import ConfigError

pytestmark = pytest.mark.anyio

SOURCE = ROOT / "tests" / "data" / "thirdparty"
DIST = "ddx-llm-hello"
MODULE = "ddx_llm_hello"
CHAT = "/v1/chat/completions"
BODY = {
    "model": "mlx-community/Qwen3-4B-Instruct-2507-4bit",
    "messages": [{"role": "user", "content": "hi"}],
}


def can_build_offline() -> bool:
    """Whether this environment's setuptools builds wheels by itself (70.1+ has bdist_wheel;
    older ones need the ``wheel`` package), so pip needs no build isolation and no index."""
    if importlib.util.find_spec("setuptools") is None:
        return False
    major, minor = (int(part) for part in importlib.metadata.version("setuptools").split(".")[:2])
    return (major, minor) >= (70, 1) or importlib.util.find_spec("wheel") is not None


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Build and install ``ddx-llm-hello``; yield the folder it is installed in."""
    work = tmp_path_factory.mktemp("thirdparty")
    source = work / "source"  # a copy: building writes build/ and *.egg-info next to the code
    shutil.copytree(SOURCE, source)
    target = work / "site"
    command = [sys.executable, "-m", "pip", "install", "--no-deps", "--target", str(target)]
    if can_build_offline():
        command += ["--no-build-isolation", "--no-index"]  # no network at all
    # else pip fetches setuptools into an isolated build environment from the package index
    result = subprocess.run(
        [*command, str(source)], capture_output=True, text=True, timeout=300, check=False
    )
    assert result.returncode == 0, f"pip could not install {DIST}:\n{result.stdout}{result.stderr}"
    assert (target / f"{MODULE}.py").is_file()
    yield target
    shutil.rmtree(target)  # the uninstall: nothing else ever had it on its path


@pytest.fixture
def on_path(installed: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """The installed distribution, importable and discoverable in this process."""
    monkeypatch.syspath_prepend(str(installed))  # also invalidates the import caches
    yield installed
    sys.modules.pop(MODULE, None)
    importlib.invalidate_caches()


def subprocess_env(installed: Path) -> dict[str, str]:
    path = [str(installed), *filter(None, [os.environ.get("PYTHONPATH")])]
    return {"PYTHONPATH": os.pathsep.join(path)}


async def test_the_entry_point_is_loaded_and_its_hooks_run(conf_dir, on_path):
    write_conf(conf_dir, {"hello": {"greeting": "bonjour"}})
    async with running_app(conf_dir) as (app, client):
        before = (await client.get("/hello")).json()["chats_done"].get("tool_calls", 0)
        chat = await client.post(CHAT, json=BODY)
        hello = await client.get("/hello")
        missing = await client.get("/no/such/route")
    assert chat.status_code == 200
    assert chat.headers["x-hello"] == "bonjour"  # its middleware
    assert missing.headers["x-hello"] == "bonjour"  # error responses pass through it too
    assert hello.json() == {  # its route, its settings section, its observer
        "greeting": "bonjour",
        "chats_done": {**hello.json()["chats_done"], "tool_calls": before + 1},
    }
    pm = app.context.pm
    assert pm.sources["hello"] == f"entrypoint {DIST}"
    assert {spec.name: spec.order for spec in app.context.middleware}["hello"] == 250
    plugin = pm.get_plugin("hello")
    assert Path(plugin.__file__).parent == on_path


async def test_the_entry_point_is_disabled_by_its_name(conf_dir, on_path, monkeypatch):
    write_conf(conf_dir, {"hello": {"greeting": "kept while disabled"}})
    monkeypatch.setenv("DDX_LLM_DISABLED_PLUGINS", "hello")
    async with running_app(conf_dir) as (app, client):
        response = await client.get("/hello")
    assert response.status_code == 404
    assert "x-hello" not in response.headers
    assert "hello" in app.context.pm.blocked_names()
    assert "hello" not in app.context.pm.sources


async def test_its_settings_are_validated_at_start_up(conf_dir, on_path):
    write_conf(conf_dir, {"hello": {"greting": "typo"}})
    with pytest.raises(ConfigError, match=r"\[hello\] greting: Extra inputs are not permitted"):
        create_app(conf_dir)


async def test_not_installed_means_not_loaded(conf_dir, installed):
    async with running_app(conf_dir) as (app, client):
        assert (await client.get("/hello")).status_code == 404
    assert "hello" not in app.context.pm.sources


def test_plugins_command_lists_it_as_an_entry_point(conf_dir, installed):
    script = Path(sys.executable).with_name("ddx-llm")
    result = subprocess.run(
        [str(script), "--conf", str(conf_dir), "plugins"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**os.environ, **subprocess_env(installed)},
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    entry = lines.index(f"hello 0.1.0  [entrypoint {DIST}]")
    assert lines[entry + 1] == (
        "    hooks: ddx_llm_middleware, ddx_llm_observe, ddx_llm_routes, ddx_llm_settings"
    )
    order = next(line for line in lines if line.startswith("middleware (outermost first): "))
    assert "hello(250)" in order


@pytest.mark.live
def test_a_real_server_serves_the_installed_plugin(conf_dir, installed):
    import httpx

    env = {**subprocess_env(installed), "DDX_LLM_HELLO_GREETING": "hej"}
    with LiveServer(conf_dir, args=("-k", "trio"), env=env) as server:
        response = httpx.get(server.url + "/hello")
    assert response.status_code == 200
    assert response.json()["greeting"] == "hej"
    assert response.headers["x-hello"] == "hej"
