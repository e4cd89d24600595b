"""The plugin manager as a plugin author meets it: drop-ins in the plugins folder, start-up
errors for broken plugins, disabling by name, and the ``ddx-llm plugins`` command."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pluggy
import pytest
from support import LiveServer, running_app, write_conf

from ddx_llm import hookimpl
from ddx_llm.config import ConfigError
from ddx_llm.factory import create_app
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
    folder.mkdir(exist_ok=True)
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
    # relative to the project folder; rate_limit, which conf/ disables, is not in that folder
    write_conf(conf_dir, {"core": {"plugins_dir": "site-plugins", "disabled_plugins": []}})
    async with running_app(conf_dir) as (_, client):
        assert (await client.get("/greet")).json() == {"greeting": "hi"}


async def test_a_dropin_that_fails_to_import_stops_start_up(conf_dir, plugins_dir):
    (plugins_dir / "greeter.py").write_text(GREETER)
    broken = plugins_dir / "broken.py"
    broken.write_text("import this_module_does_not_exist\n")
    with pytest.raises(ConfigError, match="this_module_does_not_exist") as raised:
        create_app(conf_dir)
    assert str(broken) in str(raised.value)


@pytest.mark.live
def test_hypercorn_does_not_start_with_a_broken_dropin(conf_dir, plugins_dir):
    broken = plugins_dir / "broken.py"
    broken.write_text("raise RuntimeError('half-written plugin')\n")
    with pytest.raises(RuntimeError, match="hypercorn exited early") as raised:
        LiveServer(conf_dir).start(timeout=30)
    assert f"start-up failed: drop-in plugin {broken} failed to import" in str(raised.value)
    assert "half-written plugin" in str(raised.value)


async def test_a_misspelled_hook_name_stops_start_up_with_a_suggestion(conf_dir, plugins_dir):
    (plugins_dir / "typo.py").write_text(MISSPELLED)
    with pytest.raises(
        ConfigError,
        match="plugin typo: ddx_llm_routez is not a ddx-llm hook; did you mean ddx_llm_routes",
    ):
        create_app(conf_dir)


async def test_an_undecorated_hook_stops_start_up(conf_dir, plugins_dir):
    (plugins_dir / "bare.py").write_text("def ddx_llm_health(host):\n    return {'bare': 1}\n")
    with pytest.raises(ConfigError, match="plugin bare: ddx_llm_health is not decorated"):
        create_app(conf_dir)


async def test_an_undecorated_method_of_an_object_plugin_stops_start_up(conf_dir):
    class Plugin:
        def ddx_llm_routes(self):
            return []

    with pytest.raises(ConfigError, match="plugin objects: ddx_llm_routes is not decorated"):
        create_app(conf_dir, extra_plugins=[("objects", Plugin())])


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


async def test_an_unknown_disabled_name_stops_start_up_with_a_suggestion(conf_dir):
    write_conf(conf_dir, {"core": {"disabled_plugins": ["rate_limit", "metric"]}})
    with pytest.raises(ConfigError, match="names no plugin: 'metric' \\(did you mean 'metrics'"):
        create_app(conf_dir)


async def test_the_disabled_variable_adds_to_the_conf_list(conf_dir, monkeypatch):
    # conf/ disables rate_limit (whose library may be missing); the variable keeps it disabled
    monkeypatch.setenv("DDX_LLM_DISABLED_PLUGINS", "metrics")
    async with running_app(conf_dir) as (app, client):
        assert (await client.get("/metrics")).status_code == 404
    assert {"metrics", "rate_limit"} <= set(app.context.pm.blocked_names())


async def test_a_configured_plugins_folder_must_exist(conf_dir, monkeypatch):
    monkeypatch.setenv("DDX_LLM_PLUGINS_DIR", "no-such-folder")
    with pytest.raises(ConfigError, match=r"plugins folder .*no-such-folder does not exist"):
        create_app(conf_dir)


async def test_the_default_plugins_folder_may_be_missing(tmp_path):
    from ddx_llm import testing

    conf = testing.write_conf(tmp_path)
    assert not (tmp_path / "plugins").exists()
    async with testing.serve(conf) as service:
        assert (await service.client.get("/health")).status_code == 200


async def test_two_plugins_declaring_one_section_are_both_named(conf_dir):
    from ddx_llm.config import SectionSettings

    class Keys(SectionSettings):
        token: str = ""

    class Clash:
        @hookimpl
        def ddx_llm_settings(self):
            return ("auth", Keys)

    # [auth] in conf/ holds auth's own keys: the clash is reported, not a validation error
    with pytest.raises(
        ConfigError, match=r"\[auth\] is declared by plugin auth and by plugin clash"
    ):
        create_app(conf_dir, extra_plugins=[("clash", Clash())])


@pytest.mark.parametrize(
    ("hook", "answer", "expected"),
    [
        ("ddx_llm_settings", "quota", "ddx_llm_settings returned 'quota'"),
        ("ddx_llm_routes", "/quota", "ddx_llm_routes returned '/quota'"),
        ("ddx_llm_middleware", lambda app: app, "ddx_llm_middleware returned <function"),
        ("ddx_llm_backends", ["mock"], "ddx_llm_backends returned \\['mock'\\]"),
        ("ddx_llm_lifespan", "later", "ddx_llm_lifespan returned 'later'"),
    ],
)
def test_a_wrong_return_shape_names_the_plugin_and_the_hook(conf_dir, hook, answer, expected):
    plugin = type("Wrong", (), {hook: staticmethod(hookimpl(lambda: answer))})()
    with pytest.raises(ConfigError, match=f"plugin wrong: {expected}"):
        create_app(conf_dir, extra_plugins=[("wrong", plugin)])


async def test_two_middleware_with_one_order_are_both_named(conf_dir):
    from ddx_llm.middleware import MiddlewareSpec

    class Twin:
        @hookimpl
        def ddx_llm_middleware(self):
            return MiddlewareSpec("twin", 300, lambda inner: inner)

    with pytest.raises(
        ConfigError,
        match=r"middleware 'metrics' \(plugin metrics\) and 'twin' \(plugin twin\) share the "
        r"order 300",
    ):
        create_app(conf_dir, extra_plugins=[("twin", Twin())])


async def test_a_backend_missing_protocol_members_is_refused(conf_dir):
    class Half:
        name = "half"

    class Offer:
        @hookimpl
        def ddx_llm_backends(self):
            return {"half": lambda app: Half()}

    write_conf(conf_dir, {"core": {"backend": "half"}})
    with pytest.raises(ConfigError, match="plugin offer: backend 'half' lacks real_model_mode"):
        create_app(conf_dir, extra_plugins=[("offer", Offer())])


async def test_resolve_path_takes_a_string(conf_dir):
    settings = create_app(conf_dir).context.settings
    assert settings.resolve_path("models") == settings.resolve_path(Path("models"))
    assert settings.resolve_path("models") == (conf_dir.parent / "models").resolve()


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
    write_conf(conf_dir, {"core": {"disabled_plugins": ["omni", "rate_limit"]}})
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
    assert "disabled: omni, rate_limit" in lines
    order = next(line for line in lines if line.startswith("middleware (outermost first): "))
    assert "errors(400)" in order and order.endswith(" -> router")
    assert lines[-1] == "backend: mock; default model: mlx-community/Qwen3-4B-Instruct-2507-4bit"


def test_plugins_command_reports_broken_plugins_and_configuration(conf_dir, plugins_dir):
    typo = plugins_dir / "typo.py"
    typo.write_text(MISSPELLED)
    result = ddx_llm("--conf", str(conf_dir), "plugins")
    assert result.returncode != 0
    assert "plugin typo: ddx_llm_routez is not a ddx-llm hook" in result.stderr
    typo.unlink()
    write_conf(conf_dir, {"core": {"backend": "nonesuch"}})
    result = ddx_llm("--conf", str(conf_dir), "plugins")
    assert result.returncode == 2
    assert "configuration error: unknown backend 'nonesuch'" in result.stderr
