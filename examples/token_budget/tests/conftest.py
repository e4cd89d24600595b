"""Every async test runs on asyncio and trio; ``DDX_LLM_*`` variables of the outer environment
never reach a test (they would override the conf each test writes)."""

from __future__ import annotations

import os

import pytest


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("DDX_LLM_"):
            monkeypatch.delenv(name)
