"""Shared fixtures: every async test runs on asyncio and trio; DDX_LLM_* variables from the
outer environment never leak into a test."""

from __future__ import annotations

import os
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
    """A private copy of the project's conf/ and plugins/ (the drop-in folder the conf names),
    safe to edit."""
    from support import copy_project_conf

    return copy_project_conf(tmp_path / "conf")


@pytest.fixture(scope="session")
def mlx_models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A models folder holding the bundled model and its tools variant, converted once.

    Without MLX or the bundled model the test is skipped — except under CI (``CI`` set), where
    the project's own files install both and a skip would hide a broken set-up.
    """
    if os.environ.get("CI"):
        import mlx_lm  # noqa: F401 - fail loudly
    else:
        pytest.importorskip("mlx_lm")
    from ddx_llm.plugins.mlx_models import bundled

    path = tmp_path_factory.getbasetemp() / "mlx-models"
    try:
        bundled.ensure_bundled_model(path)
        bundled.ensure_tools_variant(path)
    except bundled.BundledModelMissingError as exc:
        if os.environ.get("CI"):
            raise
        pytest.skip(str(exc))
    return path
