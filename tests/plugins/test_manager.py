"""The plugin manager as a plugin author meets it: drop-ins in the plugins folder, start-up
errors for broken plugins, disabling by name, and the ``ddx-llm plugins`` command."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pluggy
import pytest
from starlette.exceptions import HTTPException
from support import LiveServer, running_app, write_conf

from ddx_llm.app import create_app
from ddx_llm.config import ConfigError
from ddx_llm.manager import BUILTIN_PLUGINS

pytestmark = pytest.mark.anyio

GREETER = textwrap.dedent(
    '''
    """Drop-in test plugin: GET /greet answers its [greeter] greeting."""
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    from ddx_llm import hookimpl
    from ddx_llm.config import SectionSettings


    class GreeterSettings(SectionSettings):
        greeting: str = "hi"


    @hookimpl
    def ddx_llm_settings():
        return ("greeter", GreeterSettings)


    @hookimpl
    def ddx_llm_routes(settings):
        greeting = settings.section("greeter").greeting

        async def greet(request):
            return JSONResponse({"greeting": greeting})

        return [Route("/greet", greet)]
    '''
)

PACKAGE_INIT = textwrap.dedent(
    """
    from ddx_llm import hookimpl

    from .answers import answer


    @hookimpl
    def ddx_llm_health(host):
        return {"packaged": answer()}
    """
)

MISSPELLED = textwrap.dedent(
    """
    from ddx_llm import hookimpl


    @hookimpl
    def ddx_llm_routez(settings):
        return []
    """
)


@pytest.fixture
def plugins_dir(conf_dir: Path) -> Path:
    """The default drop-in folder of ``conf_dir``: ``plugins`` next to it (``[core] plugins_dir``
    is relative to the project folder, the parent of ``conf/``)."""
    folder = conf_dir.parent / "plugins"
    folder.mkdir()
    return folder


def ddx_llm(*args: str) -> subprocess.CompletedProcess[str]:
    """Run the ``ddx-llm`` console script of this environment."""
    script = Path(sys.executable).with_name("ddx-llm")
    return subprocess.run(
        [str(script), *args], capture_output=True, text=True, timeout=60, check=False
    )


async def test_a_file_dropped_in_the_plugins_folder_is_loaded(conf_dir, plugins_dir, monkeypatch):
    (plugins_dir / "greeter.py").write_text(GREETER)
    write_conf(conf_dir, {"greeter": {"greeting": "from conf"}})
    async with running_app(conf_dir) as (app, client):
        assert (await client.get("/greet")).json() == {"greeting": "from conf"}
    assert app.context.pm.sources["greeter"] == f"dropin {plugins_dir / 'greeter.py'}"
    monkeypatch.setenv("DDX_LLM_GREETER_GREETING", "from the environment")
    async with running_app(conf_dir) as (_, client):
        assert (await client.get("/greet")).json() == {"greeting": "from the environment"}


async def test_packages_load_and_private_files_are_skipped(conf_dir, plugins_dir):
    package = plugins_dir / "packaged"
    package.mkdir()
    (package / "__init__.py").write_text(PACKAGE_INIT)
    (package / "answers.py").write_text("def answer():\n    return 42\n")
    (plugins_dir / "_draft.py").write_text("this is not python")
    (plugins_dir / ".hidden.py").write_text("this is not python either")
    (plugins_dir / "README.txt").write_text("not a plugin")
    async with running_app(conf_dir) as (app, client):
        assert (await client.get("/health")).json()["packaged"] == 42
    dropins = {n: s for n, s in app.context.pm.sources.items() if s.startswith("dropin")}
    assert dropins == {"packaged": f"dropin {package}"}


async def test_plugins_dir_names_another_folder(conf_dir, tmp_path):
    elsewhere = tmp_path / "site-plugins"
    elsewhere.mkdir()
    (elsewhere / "greeter.py").write_text(GREETER)
    write_conf(conf_dir, {"core": {"plugins_dir": "site-plugins"}})  # relative: project folder
    async with running_app(conf_dir) as (_, client):
        assert (await client.get("/greet")).json() == {"greeting": "hi"}


async def test_a_dropin_that_fails_to_import_stops_start_up(conf_dir, plugins_dir):
    (plugins_dir / "greeter.py").write_text(GREETER)
    broken = plugins_dir / "broken.py"
    broken.write_text("import this_module_does_not_exist\n")
    with pytest.raises(ImportError, match="this_module_does_not_exist") as raised:
        create_app(conf_dir)
    assert str(broken) in str(raised.value)


@pytest.mark.live
def test_hypercorn_does_not_start_with_a_broken_dropin(conf_dir, plugins_dir):
    broken = plugins_dir / "broken.py"
    broken.write_text("raise RuntimeError('half-written plugin')\n")
    with pytest.raises(RuntimeError, match="hypercorn exited early") as raised:
        LiveServer(conf_dir).start(timeout=30)
    assert f"start-up failed: plugin {broken} failed to import" in str(raised.value)
    assert "half-written plugin" in str(raised.value)


async def test_a_misspelled_hook_name_stops_start_up(conf_dir, plugins_dir):
    (plugins_dir / "typo.py").write_text(MISSPELLED)
    with pytest.raises(pluggy.PluginValidationError, match="unknown hook 'ddx_llm_routez'"):
        create_app(conf_dir)


async def test_a_hook_with_unknown_arguments_stops_start_up(conf_dir, plugins_dir):
    (plugins_dir / "wrong_args.py").write_text(
        "from ddx_llm import hookimpl\n\n@hookimpl\ndef ddx_llm_routes(settings, router):\n"
        "    return []\n"
    )
    with pytest.raises(pluggy.PluginValidationError, match="router"):
        create_app(conf_dir)


async def test_disabling_the_mock_backend_lists_the_backends_left(conf_dir):
    write_conf(conf_dir, {"core": {"disabled_plugins": ["mock"]}})
    with pytest.raises(ConfigError, match=r"unknown backend 'mock' in \[core\] backend") as raised:
        create_app(conf_dir)
    available = str(raised.value).split("available: ")[1]
    assert "mock" not in available


async def test_disabling_errors_leaves_exceptions_unmapped(conf_dir):
    write_conf(conf_dir, {"core": {"disabled_plugins": ["errors"]}})
    async with running_app(conf_dir) as (app, client):
        # No plugin turns the router's 404 into a response any more: it reaches the server.
        with pytest.raises(HTTPException):
            await client.get("/no/such/route")
    pm = app.context.pm
    assert pm.get_plugin("errors") is None
    assert "errors" in pm.blocked_names()
    assert "errors" not in [spec.name for spec in app.context.middleware]


async def test_a_disabled_dropin_is_not_even_imported(conf_dir, plugins_dir, monkeypatch):
    (plugins_dir / "greeter.py").write_text(GREETER)
    (plugins_dir / "broken.py").write_text("raise RuntimeError('must not be imported')\n")
    write_conf(conf_dir, {"greeter": {"greeting": "section kept while disabled"}})
    monkeypatch.setenv("DDX_LLM_DISABLED_PLUGINS", "greeter,broken")
    async with running_app(conf_dir) as (app, client):
        assert (await client.get("/greet")).status_code == 404
    assert {"greeter", "broken"} <= set(app.context.pm.blocked_names())
    assert "greeter" not in app.context.pm.sources


def test_plugins_command_lists_plugins_sources_hooks_and_order(conf_dir, plugins_dir):
    (plugins_dir / "greeter.py").write_text(GREETER)
    write_conf(conf_dir, {"core": {"disabled_plugins": ["omni"]}})
    result = ddx_llm("--conf", str(conf_dir), "plugins")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    names = [line.split()[0] for line in lines if not line.startswith(" ") and "  [" in line]
    assert names == [n for n in BUILTIN_PLUGINS if n != "omni"] + ["greeter"]
    greeter = lines.index(f"greeter  [dropin {plugins_dir / 'greeter.py'}]")
    assert lines[greeter + 1] == "    hooks: ddx_llm_routes, ddx_llm_settings"
    assert "mock  [builtin]" in lines
    assert (
        lines[lines.index("mock  [builtin]") + 1] == "    hooks: ddx_llm_backends, ddx_llm_settings"
    )
    assert "disabled: omni" in lines
    order = next(line for line in lines if line.startswith("middleware (outermost first): "))
    assert "errors(400)" in order and order.endswith(" -> router")
    assert lines[-1] == "backend: mock; default model: mlx-community/Qwen3-4B-Instruct-2507-4bit"


def test_plugins_command_reports_broken_plugins_and_configuration(conf_dir, plugins_dir):
    typo = plugins_dir / "typo.py"
    typo.write_text(MISSPELLED)
    result = ddx_llm("--conf", str(conf_dir), "plugins")
    assert result.returncode != 0
    assert "unknown hook 'ddx_llm_routez'" in result.stderr and str(typo) in result.stderr
    typo.unlink()
    write_conf(conf_dir, {"core": {"backend": "nonesuch"}})
    result = ddx_llm("--conf", str(conf_dir), "plugins")
    assert result.returncode == 2
    assert "configuration error: unknown backend 'nonesuch'" in result.stderr
