"""Test a plugin the way it ships: an in-process app with its lifespan and an httpx client.

No server and no port: the app runs in the test's own event loop (asyncio or trio, whatever
the test runs on).  Needs ``httpx`` and ``asgi-lifespan`` (``pip install 'ddx-llm[testing]'``)::

    from ddx_llm import testing

    async def test_usage(tmp_path):
        conf = testing.write_conf(tmp_path, {"token_budget": {"daily_tokens": 10}})
        async with testing.serve(conf, plugins=[("token_budget", my_plugin)]) as service:
            response = await service.client.get("/v1/usage")
            assert service.app.state("token_budget") ...

Plugins come from their entry points (installed distributions, ``entry_points=True``), from
the conf's drop-in folder, or explicitly (``plugins=[(name, module)]``); a plugin given
explicitly that is also installed is loaded once.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .context import AppContext
from .factory import DdxApp, create_app

TEST_MODEL = {
    "id": "test-model",
    "family": "test",
    "arch": "test",
    "total_params_b": 0.1,
    "quantization": "none",
    "context_window": 4096,
    "label": "Test model",
}
"""The registry entry :func:`write_conf` writes when given no models (served by ``mock``)."""


def toml_value(value: Any) -> str:
    """``value`` written as TOML (strings, numbers, booleans, lists, tables inline)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str | Path):
        return json.dumps(str(value))  # a JSON string is a valid TOML basic string
    if isinstance(value, Mapping):
        return "{" + ", ".join(f"{json.dumps(k)} = {toml_value(v)}" for k, v in value.items()) + "}"
    if isinstance(value, Sequence):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    return str(value)


def write_conf(
    folder: Path,
    sections: Mapping[str, Mapping[str, Any]] | None = None,
    *,
    models: Sequence[Mapping[str, Any]] = (TEST_MODEL,),
) -> Path:
    """Write ``folder/conf/`` with ``ddx-llm.toml`` holding ``sections`` (``{"core": {...},
    "my_plugin": {...}}``) and ``models.toml`` holding ``models``; return the conf folder.

    The drop-in folder is ``folder/plugins`` unless ``sections["core"]["plugins_dir"]`` says
    otherwise.
    """
    conf = Path(folder) / "conf"
    conf.mkdir(parents=True, exist_ok=True)
    lines = []
    for name, values in (sections or {}).items():
        lines.append(f"[{name}]")
        lines.extend(f"{key} = {toml_value(value)}" for key, value in values.items())
        lines.append("")
    (conf / "ddx-llm.toml").write_text("\n".join(lines), encoding="utf-8")
    tables = []
    for entry in models:
        tables.append("[[models]]")
        tables.extend(f"{key} = {toml_value(value)}" for key, value in entry.items())
        tables.append("")
    (conf / "models.toml").write_text("\n".join(tables), encoding="utf-8")
    return conf


@dataclass
class Service:
    """A running app: :attr:`asgi` the ASGI app, :attr:`app` its
    :class:`~ddx_llm.context.AppContext` (what hooks get as ``app``), :attr:`client` an httpx
    client bound to it (``base_url`` ``http://testserver``)."""

    asgi: DdxApp
    app: AppContext
    client: Any


@asynccontextmanager
async def serve(
    conf_dir: Path,
    *,
    plugins: Sequence[tuple[str, Any]] = (),
    entry_points: bool = True,
    startup_timeout: float = 60,
    **client_args: Any,
) -> AsyncIterator[Service]:
    """Build the app from ``conf_dir`` with ``plugins`` added, run its lifespan (start-up,
    then shutdown at the end of the block), and yield a :class:`Service`.  ``client_args`` go
    to ``httpx.AsyncClient`` (``headers=...``)."""
    import httpx
    from asgi_lifespan import LifespanManager

    asgi = create_app(Path(conf_dir), extra_plugins=tuple(plugins), entry_points=entry_points)
    async with LifespanManager(asgi, startup_timeout=startup_timeout, shutdown_timeout=30):
        # The app itself, not the manager's wrapper: that one hands every request the same
        # lifespan-state dict, where the ASGI spec (and Hypercorn) give each its own copy.
        transport = httpx.ASGITransport(app=asgi)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://testserver", **client_args
        ) as client:
            yield Service(asgi, asgi.context, client)
