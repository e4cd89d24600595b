"""Fixtures for the mlx backend's tests: the bundled model's tokenizer and a conf that selects
the mlx backend (the converted models folder, ``mlx_models_dir``, is in tests/conftest.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
from support import write_conf

from ddx_llm.plugins.mlx_models import bundled


@pytest.fixture(scope="session")
def tokenizer(mlx_models_dir: Path):
    """The bundled model's tokenizer, as mlx-lm loads it."""
    from mlx_lm.utils import load_tokenizer

    return load_tokenizer(mlx_models_dir / bundled.BUNDLED_MODEL_ID)


@pytest.fixture(scope="session")
def tools_tokenizer(mlx_models_dir: Path):
    from mlx_lm.utils import load_tokenizer

    return load_tokenizer(mlx_models_dir / bundled.TOOLS_MODEL_ID)


@pytest.fixture
def mlx_conf(conf_dir: Path, mlx_models_dir: Path) -> Path:
    """The project's conf with the mlx backend and the session's models folder."""
    write_conf(conf_dir, {"core": {"backend": "mlx", "models_dir": str(mlx_models_dir)}})
    return conf_dir
