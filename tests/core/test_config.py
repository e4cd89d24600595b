"""Settings: files, environment overrides, and start-up errors that name the bad key."""

from __future__ import annotations

from pathlib import Path

import pytest
from support import add_models, write_conf

from ddx_llm.config import ConfigError, find_conf_dir, load_core
from ddx_llm.factory import create_app


def test_files_are_read_and_environment_overrides_them(conf_dir, monkeypatch):
    write_conf(conf_dir, {"core": {"max_body_bytes": 2048, "log_level": "DEBUG"}})
    assert load_core(conf_dir).core.max_body_bytes == 2048
    monkeypatch.setenv("DDX_LLM_MAX_BODY_BYTES", "4096")
    settings = load_core(conf_dir)
    assert settings.core.max_body_bytes == 4096
    assert settings.core.log_level == "DEBUG"


def test_comma_separated_lists_from_the_environment(conf_dir, monkeypatch):
    monkeypatch.setenv("DDX_LLM_DISABLED_PLUGINS", "metrics, cors,")
    # the variable adds to the conf list (which disables rate_limit), never replaces it
    assert load_core(conf_dir).core.disabled_plugins == ["rate_limit", "metrics", "cors"]


def test_use_real_model_selects_the_mlx_backend(conf_dir, monkeypatch):
    assert load_core(conf_dir).core.backend == "mock"
    monkeypatch.setenv("DDX_LLM_USE_REAL_MODEL", "1")
    assert load_core(conf_dir).core.backend == "mlx"
    monkeypatch.setenv("DDX_LLM_BACKEND", "omni")
    assert load_core(conf_dir).core.backend == "omni"  # an explicit backend wins


def test_bad_value_names_section_key_and_variable(conf_dir):
    write_conf(conf_dir, {"core": {"max_body_bytes": -5}})
    with pytest.raises(ConfigError) as error:
        load_core(conf_dir)
    message = str(error.value)
    assert "[core] max_body_bytes" in message and "DDX_LLM_MAX_BODY_BYTES" in message


def test_bad_environment_value_is_reported(conf_dir, monkeypatch):
    monkeypatch.setenv("DDX_LLM_LOAD_WAIT_SECONDS", "soon")
    with pytest.raises(ConfigError, match=r"\[core\] load_wait_seconds"):
        load_core(conf_dir)


def test_unknown_key_is_an_error(conf_dir):
    write_conf(conf_dir, {"core": {"backnd": "mock"}})
    with pytest.raises(ConfigError, match=r"\[core\] backnd"):
        load_core(conf_dir)


def test_unknown_section_is_an_error(conf_dir):
    write_conf(conf_dir, {"sparkles": {"level": 3}})
    with pytest.raises(ConfigError, match=r"unknown section \[sparkles\]"):
        create_app(conf_dir)


def test_plugin_section_is_validated(conf_dir):
    write_conf(conf_dir, {"mock": {"scenario": "dance"}})
    with pytest.raises(ConfigError) as error:
        create_app(conf_dir)
    assert "[mock] scenario" in str(error.value)
    assert "DDX_LLM_MOCK_SCENARIO" in str(error.value)


def test_section_of_a_disabled_plugin_is_ignored(conf_dir):
    write_conf(conf_dir, {"core": {"disabled_plugins": ["mock"], "backend": "mock"}})
    with pytest.raises(ConfigError, match="unknown backend 'mock'"):
        create_app(conf_dir)


def test_toml_syntax_error_names_the_file(conf_dir):
    (conf_dir / "ddx-llm.toml").write_text("[core\nbackend = 1\n")
    with pytest.raises(ConfigError, match=r"ddx-llm\.toml"):
        load_core(conf_dir)


def test_missing_conf_directory_is_explained(tmp_path):
    with pytest.raises(ConfigError, match="DDX_LLM_CONF_DIR"):
        find_conf_dir({"DDX_LLM_CONF_DIR": str(tmp_path / "nowhere")})


def test_registry_problems_name_the_entry(conf_dir):
    tiny = {"id": "tiny", "family": "x", "arch": "x", "total_params_b": 0.1}
    add_models(conf_dir, {**tiny, "quantization": "4bit", "context_window": 0, "label": "Tiny"})
    with pytest.raises(ConfigError, match=r"model tiny: context_window"):
        load_core(conf_dir)


def test_duplicate_model_ids_are_rejected(conf_dir):
    text = (conf_dir / "models.toml").read_text()
    (conf_dir / "models.toml").write_text(text + "\n" + text.split("\n\n", 1)[1])
    with pytest.raises(ConfigError, match="duplicate model ids"):
        load_core(conf_dir)


def test_default_model_must_be_registered(conf_dir):
    write_conf(conf_dir, {"core": {"default_model": "nope"}})
    with pytest.raises(ConfigError, match="default model 'nope'"):
        create_app(conf_dir)


def test_relative_paths_resolve_against_the_project_folder(conf_dir: Path):
    settings = load_core(conf_dir)
    assert settings.resolve_path(settings.core.models_dir) == conf_dir.parent / "models" / "cache"


def test_trace_hooks_logs_every_hook_call(conf_dir, caplog):
    write_conf(conf_dir, {"core": {"trace_hooks": True}})
    with caplog.at_level("INFO", logger="ddx_llm"):
        create_app(conf_dir)
    traced = [r.getMessage() for r in caplog.records if r.getMessage().startswith("hook trace:")]
    assert any("ddx_llm_settings" in line for line in traced)
    assert any("ddx_llm_middleware" in line for line in traced)
