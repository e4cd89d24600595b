"""``ddx-llm new-plugin NAME``: a plugin package to start from.

Writes ``ddx-llm-<name>/`` with a ``pyproject.toml`` that declares the ``ddx_llm`` entry point,
the plugin module with a settings section, a route and an observer that keeps per-app state,
and a test that runs it in process on asyncio and trio with :mod:`ddx_llm.testing`.  The test
passes as generated; ``pip install -e ".[test]"`` then ``pytest`` in the new folder.
"""

from __future__ import annotations

import re
from pathlib import Path
from string import Template

NAME = re.compile(r"[a-z][a-z0-9_]{0,40}")

PYPROJECT = Template("""\
[build-system]
requires = ["setuptools>=70.1"]
build-backend = "setuptools.build_meta"

[project]
name = "ddx-llm-$dash"
version = "0.1.0"
description = "A ddx-llm plugin: $name."
requires-python = ">=3.11"
dependencies = ["ddx-llm"]

[project.optional-dependencies]
test = ["ddx-llm[testing]", "pytest>=8", "anyio[trio]>=4.4"]

# The entry point is what makes ddx-llm load the plugin once the package is installed.
[project.entry-points.ddx_llm]
$name = "ddx_llm_$name"

[tool.setuptools]
packages = ["ddx_llm_$name"]

[tool.pytest.ini_options]
testpaths = ["tests"]
""")

MODULE = Template('''\
"""The ``$name`` ddx-llm plugin.

- ``[$name]`` in ``conf/ddx-llm.toml`` (variables ``DDX_LLM_${upper}_<KEY>``): its settings;
- ``GET /v1/$name``: how many chat requests this app finished, by finish reason;
- an observer of the core's lifecycle events that counts them, per app.

The hooks are documented in ddx-llm's ``plugins/README.md``.
"""

from __future__ import annotations

from collections import Counter

from starlette.requests import Request
from starlette.responses import JSONResponse

from ddx_llm import hookimpl
from ddx_llm.config import SectionSettings
from ddx_llm.context import AppContext
from ddx_llm.events import Event, RequestDone, observes
from ddx_llm.routing import Route

SECTION = "$name"


class Settings(SectionSettings):
    """``[$name]``."""

    label: str = "$name"


def finished(app: AppContext) -> Counter[str]:
    """This app's count of finished requests by finish reason (its state, kept by the app)."""
    return app.state(SECTION, Counter)


@hookimpl
def ddx_llm_settings() -> tuple[str, type]:
    return (SECTION, Settings)


@hookimpl
def ddx_llm_routes(app: AppContext) -> list[Route]:
    label = app.settings.section(SECTION).label

    async def report(request: Request) -> JSONResponse:
        return JSONResponse({"label": label, "finished": dict(finished(app))})

    return [Route("/v1/$name", report, methods=["GET"])]


@hookimpl
@observes(RequestDone)  # not called for the others (one per generated token among them)
def ddx_llm_observe(event: Event, app: AppContext) -> None:
    finished(app)[event.finish_reason] += 1
''')

TEST = Template('''\
"""The plugin in process, on asyncio and trio, as installed (entry point) or given explicitly."""

from __future__ import annotations

import os

import pytest

import ddx_llm_$name
from ddx_llm import testing

pytestmark = pytest.mark.anyio


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request):
    return request.param


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch):
    """DDX_LLM_* variables of the shell running the tests would override the test's conf."""
    for name in list(os.environ):
        if name.startswith("DDX_LLM_"):
            monkeypatch.delenv(name)


async def test_finished_requests_are_counted(tmp_path):
    conf = testing.write_conf(tmp_path, {"$name": {"label": "counted"}})
    async with testing.serve(conf, plugins=[("$name", ddx_llm_$name)]) as service:
        chat = {"messages": [{"role": "user", "content": "hi"}]}
        assert (await service.client.post("/v1/chat/completions", json=chat)).status_code == 200
        response = await service.client.get("/v1/$name")
    assert response.json() == {"label": "counted", "finished": {"tool_calls": 1}}
''')

README = Template("""\
# ddx-llm-$dash

A [ddx-llm](https://pypi.org/project/ddx-llm/) plugin.  Install it into the service's
environment (`pip install .`) and ddx-llm loads it through its `ddx_llm` entry point;
`ddx-llm plugins` lists it.  Disable it with `disabled_plugins = ["$name"]`.

Test it: `pip install -e ".[test]" && pytest`.
""")


def write_plugin(name: str, dest: Path) -> Path:
    """Write the package for plugin ``name`` under ``dest``; return its folder.  Raises
    ValueError for a name that is not a Python identifier in lower case, FileExistsError when
    the folder exists."""
    if not NAME.fullmatch(name):
        raise ValueError(f"{name!r}: use lower-case letters, digits and _ (e.g. token_budget)")
    values = {"name": name, "dash": name.replace("_", "-"), "upper": name.upper()}
    folder = Path(dest) / f"ddx-llm-{values['dash']}"
    if folder.exists():
        raise FileExistsError(f"{folder} exists; choose another --dest")
    files = {
        "pyproject.toml": PYPROJECT,
        "README.md": README,
        f"ddx_llm_{name}/__init__.py": MODULE,
        f"tests/test_{name}.py": TEST,
    }
    for relative, template in files.items():
        path = folder / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(template.substitute(values), encoding="utf-8")
    return folder
