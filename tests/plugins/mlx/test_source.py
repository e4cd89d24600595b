"""Where models come from, the backend's default model, and what happens when loading fails."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import pytest
from support import add_models, require_module, running_app, write_conf

from ddx_llm.config import ConfigError
from ddx_llm.errors import ModelUnavailable
from ddx_llm.factory import create_app
from ddx_llm.plugins.mlx import INSTALL_HINT
from ddx_llm.plugins.mlx_models.source import ModelSource, model_folder, model_source
from ddx_llm.registry import ModelEntry

EXTRAS = {
    "family": "f",
    "arch": "llama",
    "total_params_b": 0.1,
    "quantization": "q4",
    "context_window": 512,
    "label": "test entry",
}


def entry(**fields) -> ModelEntry:
    return ModelEntry(**{"id": "org/model", **EXTRAS, **fields})


def resolve(path: Path) -> Path:
    return path if path.is_absolute() else Path("/project") / path


def test_an_entry_is_bundled_a_folder_or_a_hub_id():
    bundled = model_source(entry(options={"bundled": "SmolLM2-135M-Instruct"}), resolve, "m")
    assert (bundled.bundled, bundled.path, bundled.hub_id) == ("SmolLM2-135M-Instruct", None, None)
    folder = model_source(entry(path="models/mine"), resolve, "m")
    assert (folder.path, folder.hub_id) == (Path("/project/models/mine"), None)
    hub = model_source(
        entry(options={"chat_template_kwargs": {"enable_thinking": False}}), resolve, "m"
    )
    assert (hub.hub_id, hub.chat_template_kwargs) == ("org/model", {"enable_thinking": False})


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"bundled": "gpt-5"}, "options.bundled must be one of"),
        ({"tokenizer_config": "json_tools"}, "options.tokenizer_config must be a table"),
        ({"chat_template_kwargs": ["x"]}, "options.chat_template_kwargs must be a table"),
    ],
)
def test_malformed_options_stop_start_up_naming_the_entry(options, message):
    with pytest.raises(ConfigError, match=message) as caught:
        model_source(entry(options=options), resolve, "conf/models.toml")
    assert "conf/models.toml: model org/model" in str(caught.value)


def test_unknown_options_are_left_to_other_backends_with_a_warning(caplog):
    with caplog.at_level(logging.WARNING):
        model_source(entry(options={"omni_only": 1}), resolve, "m")
    assert "omni_only" in caplog.text


def test_a_missing_folder_or_uncached_hub_id_is_unavailable_with_a_hint(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    missing = ModelSource("mine", path=tmp_path / "nothing")
    with pytest.raises(ModelUnavailable) as caught:
        model_folder(missing, tmp_path, allow_download=False)
    assert "no config.json" in caught.value.detail
    repo = "ddx-llm-tests/not-a-cached-model"
    uncached = ModelSource(repo, hub_id=repo)
    with pytest.raises(ModelUnavailable) as caught:
        model_folder(uncached, tmp_path, allow_download=False)
    assert f"hf download {repo}" in caught.value.detail
    assert model_folder(uncached, tmp_path, allow_download=True) == uncached.hub_id


def test_without_mlx_the_backend_refuses_to_start_with_the_install_command(conf_dir, monkeypatch):
    # None in sys.modules is Python's own "this module cannot be imported" (find_spec: None)
    monkeypatch.setitem(sys.modules, "mlx_lm", None)
    write_conf(conf_dir, {"core": {"use_real_model": True}})
    with pytest.raises(ConfigError, match="mlx_lm") as caught:
        create_app(conf_dir)
    assert INSTALL_HINT in str(caught.value)


def test_the_bundled_model_is_the_default_unless_conf_names_one(conf_dir):
    require_module("mlx_lm")
    write_conf(conf_dir, {"core": {"backend": "mlx"}})
    assert create_app(conf_dir).context.host.default_model == "SmolLM2-135M-Instruct"
    write_conf(conf_dir, {"core": {"default_model": "SmolLM2-135M-Instruct-tools"}})
    assert create_app(conf_dir).context.host.default_model == "SmolLM2-135M-Instruct-tools"


@pytest.mark.anyio
async def test_a_model_that_fails_to_load_leaves_the_service_up(conf_dir, tmp_path):
    require_module("mlx_lm")
    add_models(conf_dir, {"id": "broken", **EXTRAS, "path": str(tmp_path / "absent")})
    write_conf(conf_dir, {"core": {"backend": "mlx", "default_model": "broken"}})
    async with running_app(conf_dir) as (_, client):
        from mlx_support import wait_ready

        health = await wait_ready(client)
        chat = await client.post(
            "/v1/chat/completions", json={"messages": [{"role": "user", "content": "hi"}]}
        )
    assert (health["status"], health["model_state"]) == ("degraded", "failed")
    assert "no config.json" in health["model_error"]
    assert "busy" not in health["mlx"]  # no worker without a model, only memory figures
    assert set(health["mlx"]["memory"]) == {"active_mb", "cache_mb", "peak_mb", "rss_mb"}
    assert (chat.status_code, chat.json()["code"]) == (503, "model_unavailable")
