"""Fixtures for the mlx backend's tests: the bundled model converted once per session, its
tokenizer, and a conf that selects the mlx backend."""

from __future__ import annotations

from pathlib import Path

import pytest
from support import write_conf

from ddx_llm.plugins.mlx import bundled


@pytest.fixture(scope="session")
def mlx_models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A models folder holding the bundled model and its tools variant, converted once."""
    pytest.importorskip("mlx_lm")
    path = tmp_path_factory.getbasetemp() / "mlx-models"
    try:
        bundled.ensure_bundled_model(path)
        bundled.ensure_tools_variant(path)
    except bundled.BundledModelMissingError as exc:
        pytest.skip(str(exc))
    return path


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
