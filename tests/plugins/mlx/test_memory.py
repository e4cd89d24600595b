"""The memory fit check and figures, on the real converted model folder and this machine's
real memory (no model is loaded here)."""

from __future__ import annotations

import pytest

from ddx_llm.errors import ModelUnavailable
from ddx_llm.plugins.mlx_models import memory
from ddx_llm.plugins.mlx_models.bundled import BUNDLED_MODEL_ID

pytestmark = pytest.mark.model


@pytest.fixture
def folder(mlx_models_dir):
    return mlx_models_dir / BUNDLED_MODEL_ID


def test_weights_are_the_weight_files_on_disk(folder, tmp_path):
    assert memory.weights_bytes(folder) == (folder / "model.safetensors").stat().st_size
    assert memory.weights_bytes(tmp_path) == 0


def test_the_limits_on_a_cpu_are_the_available_memory_only():
    import psutil

    ((what, limit),) = memory.memory_limits()  # no Metal working set on the CPU device
    assert what == "available memory"
    assert abs(limit - psutil.virtual_memory().available) < 0.1 * limit


def test_a_model_that_fits_passes_and_one_that_does_not_is_refused_with_the_sizes(folder):
    memory.check_fits("small", folder, headroom_gb=0.5)
    available = memory.memory_limits()[0][1] / 1e9
    with pytest.raises(ModelUnavailable) as refused:
        memory.check_fits("small", folder, headroom_gb=available + 1)
    assert refused.value.message == "model 'small' does not fit in memory"
    detail = refused.value.detail
    assert detail.startswith(f"small needs 0.10 GB of weights + {available + 1:.2f} GB headroom")
    assert detail.endswith(" GB") and "but available memory is" in detail
    # memory a resident model will give back counts as available
    memory.check_fits("small", folder, headroom_gb=available + 1, freed=int(2e9))


def test_a_folder_without_weights_is_left_to_the_loader_to_report(folder, tmp_path):
    """No weight files: no size to check, whatever the headroom (mlx-lm's own error names
    what is missing), while the same headroom refuses the same folder once it has weights."""
    empty = tmp_path / "no-weights"
    empty.mkdir()
    for name in ("config.json", "tokenizer.json", "tokenizer_config.json"):
        (empty / name).write_bytes((folder / name).read_bytes())
    memory.check_fits("no-weights", empty, headroom_gb=1e6)
    (empty / "model.safetensors").symlink_to(folder / "model.safetensors")
    with pytest.raises(ModelUnavailable, match="does not fit"):
        memory.check_fits("no-weights", empty, headroom_gb=1e6)


def test_figures_and_release_report_mlx_and_process_memory():
    import mlx.core as mx

    scratch = mx.ones((1024, 1024))  # 4 MB
    mx.eval(scratch)
    held = memory.figures()
    del scratch
    memory.release()
    after = memory.figures()
    assert set(held) == {"active_mb", "cache_mb", "peak_mb", "rss_mb"}
    assert held["active_mb"] >= 4 and after["active_mb"] <= held["active_mb"] - 4
    assert after["cache_mb"] == 0 and after["rss_mb"] > 0


def test_the_loads_own_check_gives_freed_memory_back_before_it_refuses(folder):
    """``loading.fits`` (the check on the worker thread, after the previous model was freed but
    not yet given back): what fits passes; what does not is refused after ``release``."""
    from ddx_llm.plugins.mlx.loading import fits

    fits("small", folder, headroom_gb=0.5)
    available = memory.memory_limits()[0][1] / 1e9
    with pytest.raises(ModelUnavailable, match="does not fit"):
        fits("small", folder, headroom_gb=available + 1)
