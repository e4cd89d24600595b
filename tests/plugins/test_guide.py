"""The plugin author's guide (plugins/README.md) stays true: every hook has its reference
section, and its first plugin runs as written."""

from __future__ import annotations

import re

import pytest
from support import ROOT, running_app

from ddx_llm import hookspecs

pytestmark = pytest.mark.anyio

GUIDE = (ROOT / "plugins" / "README.md").read_text(encoding="utf-8")
HOOKS = sorted(name for name in dir(hookspecs) if name.startswith("ddx_llm_"))


def test_every_hook_has_a_reference_section_with_its_signature_and_an_example():
    for hook in HOOKS:
        section = GUIDE.split(f"### `{hook}`\n", 1)
        assert len(section) == 2, f"no section for {hook}"
        body = section[1].split("\n### ", 1)[0].split("\n## ", 1)[0]
        assert body.lstrip().startswith(f"`{hook}("), f"{hook}: the section starts without it"
        assert "```python" in body, f"{hook}: no example"
        assert f"[`{hook}`](#{hook})" in GUIDE, f"{hook}: not in the summary table"


def test_every_hook_argument_is_named_in_its_section():
    import inspect

    for hook in HOOKS:
        body = GUIDE.split(f"### `{hook}`\n", 1)[1]
        documented = body.split(")", 1)[0]
        for name in inspect.signature(getattr(hookspecs, hook)).parameters:
            assert name in documented, f"{hook}: argument {name} undocumented"


async def test_the_first_plugin_runs_as_written(conf_dir):
    first = GUIDE.split("## A first plugin", 1)[1]
    code = re.search(r"```python\n(.*?)```", first, re.S).group(1)
    (conf_dir.parent / "plugins" / "hello.py").write_text(code)
    async with running_app(conf_dir) as (app, client):
        chat = {"messages": [{"role": "user", "content": "hi"}]}
        assert (await client.post("/v1/chat/completions", json=chat)).status_code == 200
        hello = await client.get("/hello")
    assert hello.json() == {"greeting": "hello", "chats": {"tool_calls": 1}}
    assert hello.headers["x-hello"] == "hello"
    assert "hello(250)" in [spec.label() for spec in app.context.middleware]
