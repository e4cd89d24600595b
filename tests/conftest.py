"""Shared fixtures: every async test runs on asyncio and trio; DDX_LLM_* variables from the
outer environment never leak into a test."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent
sys.path.insert(0, str(TESTS))  # support.py, openai_schemas.py


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("DDX_LLM_") or name == "PROMETHEUS_MULTIPROC_DIR":
            monkeypatch.delenv(name)


@pytest.fixture
def conf_dir(tmp_path: Path) -> Path:
    """A private copy of the project's conf/, safe to edit."""
    dest = tmp_path / "conf"
    shutil.copytree(ROOT / "conf", dest)
    return dest
