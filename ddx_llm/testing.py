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

import json as _json
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
        return _json.dumps(str(value))  # a JSON string is a valid TOML basic string
    if isinstance(value, Mapping):
        pairs = (f"{_json.dumps(key)} = {toml_value(item)}" for key, item in value.items())
        return "{" + ", ".join(pairs) + "}"
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


class Stream:
    """A response read as it arrives (:meth:`Service.stream`): :attr:`status` and
    :attr:`headers` (lower-case names) once it started; iterate it for the body chunks."""

    def __init__(self, messages: Any) -> None:
        self._messages = messages
        self.status: int | None = None
        self.headers: dict[str, str] = {}

    async def _start(self) -> None:
        start = await self._messages.receive()
        self.status = start["status"]
        self.headers = {k.decode().lower(): v.decode() for k, v in start.get("headers", [])}

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._chunks()

    async def _chunks(self) -> AsyncIterator[bytes]:
        async for message in self._messages:
            if message.get("body"):
                yield message["body"]
            if not message.get("more_body"):
                return


@dataclass
class Service:
    """A running app: :attr:`asgi` the ASGI app, :attr:`app` its
    :class:`~ddx_llm.context.AppContext` (what hooks get as ``app``), :attr:`client` an httpx
    client bound to it (``base_url`` ``http://testserver``).

    httpx's in-process transport hands over a response only once it is complete; use
    :meth:`stream` to read a stream as it arrives, or to leave in the middle of it.
    """

    asgi: DdxApp
    app: AppContext
    client: Any

    @asynccontextmanager
    async def stream(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        headers: Mapping[str, str] | None = None,
        wait: float = 30,
    ) -> AsyncIterator[Stream]:
        """Send one request straight to the app and yield its :class:`Stream` once the response
        has started.  Leaving the block before the end is a client disconnecting (the app gets
        ``http.disconnect`` and its sends fail, as with a real server); the block's exit waits
        until the app has returned (the whole exchange takes at most ``wait`` seconds)."""
        import anyio

        body = b"" if json is None else _json.dumps(json).encode()
        sent = [(b"host", b"testserver"), (b"content-length", str(len(body)).encode())]
        if json is not None:
            sent.append((b"content-type", b"application/json"))
        sent += [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
        scope = {
            "type": "http", "asgi": {"version": "3.0", "spec_version": "2.4"},
            "http_version": "1.1", "method": method, "scheme": "http", "path": path,
            "raw_path": path.encode(), "query_string": b"", "root_path": "", "headers": sent,
            "client": ("127.0.0.1", 50000), "server": ("testserver", 80), "state": {},
        }  # fmt: skip
        pending = [{"type": "http.request", "body": body, "more_body": False}]
        gone = anyio.Event()
        to_client, from_app = anyio.create_memory_object_stream[dict](100)

        async def receive() -> dict[str, Any]:
            if pending:
                return pending.pop()
            await gone.wait()
            return {"type": "http.disconnect"}

        async def send(message: dict[str, Any]) -> None:
            try:
                if gone.is_set():
                    raise anyio.BrokenResourceError
                await to_client.send(message)
            except (anyio.BrokenResourceError, anyio.ClosedResourceError):
                raise OSError("the client disconnected") from None  # as a server's send does

        async def run() -> None:
            async with to_client:
                await self.asgi(scope, receive, send)

        with anyio.fail_after(wait):
            async with anyio.create_task_group() as tasks, from_app:
                tasks.start_soon(run)
                stream = Stream(from_app)
                await stream._start()
                try:
                    yield stream
                finally:
                    gone.set()
                    await from_app.aclose()  # a send blocked on a full buffer fails too


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
