"""The playground's routes: the page at ``/playground``, its files at ``/playground/<name>``.

The files are package data (``static/``), read once — on the first request, in a worker
thread — and kept in memory: a few tens of kilobytes.  Each answer carries an ``ETag`` and
``Cache-Control: no-cache`` (a browser revalidates and gets 304 until the package changes) and
``X-Content-Type-Options: nosniff``.  The page also gets a Content-Security-Policy that allows
only this origin's scripts, styles and API (no inline script, no third-party origin: a page that
holds an API key runs nothing else), and may not be framed.

``/playground/`` redirects to ``../playground``: the page's URLs are relative to its own
location (so that a path prefix, ``root_path``, needs no configuration), and from a trailing
slash they would resolve one level too deep.  An unknown file name is 404 ``not_found``.
"""

from __future__ import annotations

import hashlib
import importlib.resources
from dataclasses import dataclass
from pathlib import PurePosixPath

import anyio
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from ddx_llm.routing import Route

STATIC = "static"
PAGE = "index.html"
CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
}
"""The files served, by suffix; other files in ``static/`` are not."""

CONTENT_SECURITY_POLICY = "; ".join(
    [
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "connect-src 'self'",
        "img-src 'self' data:",
        "base-uri 'none'",
        "form-action 'none'",
        "frame-ancestors 'none'",
    ]
)
PAGE_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
}


@dataclass(frozen=True)
class Asset:
    """One file of the page, ready to send."""

    body: bytes
    content_type: str
    etag: str


def read_assets() -> dict[str, Asset]:
    """Every servable file of ``static/`` by name (blocking: file I/O)."""
    folder = importlib.resources.files(__package__) / STATIC
    assets = {}
    for entry in folder.iterdir():
        content_type = CONTENT_TYPES.get(PurePosixPath(entry.name).suffix)
        if content_type is None or not entry.is_file():
            continue
        body = entry.read_bytes()
        etag = '"' + hashlib.sha256(body).hexdigest()[:20] + '"'
        assets[entry.name] = Asset(body, content_type, etag)
    return assets


class Assets:
    """The files, read on first use off the event loop (reading twice is harmless)."""

    def __init__(self) -> None:
        self._assets: dict[str, Asset] | None = None

    async def get(self) -> dict[str, Asset]:
        if self._assets is None:
            self._assets = await anyio.to_thread.run_sync(read_assets)
        return self._assets


def answer(asset: Asset, request: Request, headers: dict[str, str] | None = None) -> Response:
    """``asset``, or 304 when the browser's copy (``If-None-Match``) is current."""
    sent = {
        "ETag": asset.etag,
        "Cache-Control": "no-cache",
        "X-Content-Type-Options": "nosniff",
        **(headers or {}),
    }
    presented = request.headers.get("if-none-match", "")
    if asset.etag in (tag.strip().removeprefix("W/") for tag in presented.split(",")):
        return Response(status_code=304, headers=sent)
    return Response(asset.body, media_type=asset.content_type, headers=sent)


def playground_routes(path: str) -> list[Route]:
    """The page at ``path``, its files below it, and the slash redirect."""
    assets = Assets()

    async def page(request: Request) -> Response:
        return answer((await assets.get())[PAGE], request, PAGE_HEADERS)

    async def asset(request: Request) -> Response:
        name = request.path_params["name"]
        found = (await assets.get()).get(name)
        if found is None or name == PAGE:
            raise HTTPException(404)
        return answer(found, request)

    async def without_slash(request: Request) -> Response:
        return RedirectResponse("../" + path.rsplit("/", 1)[-1], status_code=308)

    return [
        Route(path, page, methods=["GET"]),
        Route(path + "/", without_slash, methods=["GET"]),
        Route(path + "/{name}", asset, methods=["GET"]),
    ]
