"""Fixtures of the omni backend's tests (run by ``tox -e omni``).

These tests need the omni install (mlx-omni-server and its pinned mlx / mlx-lm, which cannot
share an environment with the ``mlx`` extra).  Without it they skip, unless
``DDX_LLM_TEST_OMNI=1`` says this run is meant to exercise them: then they fail.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from omni_support import require_omni, start_omni_server
from support import LiveServer


@pytest.fixture(autouse=True)
def omni_installed() -> None:
    require_omni()


@pytest.fixture(scope="session")
def omni_models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A models folder shared by every server of the session: the first load converts the
    bundled model into it (on the server's upstream thread), later loads find it."""
    return tmp_path_factory.getbasetemp() / "omni-models"


@pytest.fixture(scope="module", params=["asyncio", "trio"])
def omni_server(request, tmp_path_factory, omni_models_dir: Path) -> Iterator[LiveServer]:
    require_omni()
    server = start_omni_server(tmp_path_factory, omni_models_dir, request.param)
    try:
        yield server
    finally:
        server.stop()
