"""A model load's progress in real mode: the worker thread hands its sink to the loading code,
the weights are read group by group with a report after each, and ``/health`` shows the
fraction (``model_load_progress``) while the bundled model is converted and loaded on first
use — then drops it once the model is ready."""

from __future__ import annotations

import logging
from pathlib import Path

import anyio
import pytest
from support import require_module, running_app, write_conf

from ddx_llm.plugins.mlx.loading import load_model
from ddx_llm.plugins.mlx.worker import ModelWorker
from ddx_llm.plugins.mlx_models.bundled import BUNDLED_MODEL_ID
from ddx_llm.plugins.mlx_models.progress import WEIGHTS, Progress, current_sink
from ddx_llm.plugins.mlx_models.source import ModelSource

BUNDLED = ModelSource(BUNDLED_MODEL_ID, bundled=BUNDLED_MODEL_ID)


def test_the_worker_gives_its_loader_the_sink() -> None:
    """The loader runs on the worker thread inside ``reporting_to(progress)``: what it reports
    reaches the worker's sink, whatever happens to the load afterwards."""
    require_module("mlx.core")
    seen: list[Progress] = []

    def loader():
        current_sink()(Progress(WEIGHTS, 1, 2, 10, 20, 0.1, "loading weights"))
        raise RuntimeError("stop here")

    worker = ModelWorker(loader, "progress-worker", progress=seen.append)
    worker.start()
    with pytest.raises(RuntimeError, match="stop here"):
        worker.loaded.result(timeout=60)
    worker.join(30)
    assert [p.done for p in seen] == [1]
    assert current_sink() is None  # never this thread's


@pytest.mark.model
def test_weights_are_read_in_groups_each_reported(mlx_models_dir: Path) -> None:
    from ddx_llm.plugins.mlx_models.progress import reporting_to

    seen: list[Progress] = []
    with reporting_to(seen.append):
        model, _ = load_model(BUNDLED, mlx_models_dir, allow_download=False)
    assert {p.phase for p in seen} == {WEIGHTS}
    assert seen[0].done == 0 and seen[-1].finished and seen[-1].fraction == 1.0
    assert [p.bytes_done for p in seen] == sorted(p.bytes_done for p in seen)
    assert len(seen) >= 1 + seen[-1].bytes_total // (16 * 1024 * 1024)
    import mlx.core as mx
    from mlx.utils import tree_flatten

    parameters = [array for _, array in tree_flatten(model.parameters())]
    assert seen[-1].total == len(parameters)
    assert seen[-1].bytes_total == sum(array.nbytes for array in parameters)
    assert mx.array_equal(parameters[0], parameters[0]).item()  # evaluated, readable


@pytest.mark.model
@pytest.mark.anyio
async def test_health_shows_a_first_use_load_moving(conf_dir: Path, tmp_path: Path, caplog) -> None:
    """A fresh models folder: start-up converts the bundled model, then loads it.  Polled every
    few milliseconds, ``/health`` shows ``model_load_progress`` rising while ``loading``; the
    log says where each phase began and ended."""
    require_module("mlx_lm")
    caplog.set_level(logging.INFO, logger="ddx_llm.plugins.mlx.backend")
    models = tmp_path / "fresh-models"
    write_conf(conf_dir, {"core": {"backend": "mlx", "models_dir": str(models)}})
    seen: list[float | None] = []
    async with running_app(conf_dir) as (_, client):
        with anyio.fail_after(120):
            while True:
                health = (await client.get("/health")).json()
                if health["model_state"] != "loading":
                    break
                seen.append(health.get("model_load_progress"))
                await anyio.sleep(0.005)
        assert health["model_state"] == "ready", health
        assert "model_load_progress" not in health
    measured = [value for value in seen if value is not None]
    assert measured, f"no progress in {len(seen)} polls"
    assert measured == sorted(measured) and all(0 <= value <= 1 for value in measured)
    assert any(0 < value < 1 for value in measured), measured
    assert (models / BUNDLED_MODEL_ID / "model.safetensors").is_file()
    logged = [r.getMessage() for r in caplog.records if r.name == "ddx_llm.plugins.mlx.backend"]
    label = f"loading {BUNDLED_MODEL_ID}: "
    assert any(m.startswith(label + "convert writing tensors: 694/694 tensors, ") for m in logged)
    assert any(m.startswith(label + "weights loading weights: 0/") for m in logged), logged
