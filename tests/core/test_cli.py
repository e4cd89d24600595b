"""The ``ddx-llm`` command: check, plugins, convert."""

from __future__ import annotations

import pytest
from support import write_conf

from ddx_llm.cli import main


def test_check_accepts_the_shipped_configuration(conf_dir, capsys):
    assert main(["--conf", str(conf_dir), "check"]) == 0
    assert "configuration OK: backend mock" in capsys.readouterr().out


def test_check_reports_a_bad_key_without_a_traceback(conf_dir, capsys):
    write_conf(conf_dir, {"core": {"max_running": 0}})
    assert main(["--conf", str(conf_dir), "check"]) == 2
    err = capsys.readouterr().err
    assert "[core] max_running" in err and "Traceback" not in err


def test_plugins_lists_sources_hooks_and_the_middleware_order(conf_dir, capsys):
    assert main(["--conf", str(conf_dir), "plugins"]) == 0
    out = capsys.readouterr().out
    assert "mock  [builtin]" in out
    assert "ddx_llm_backends" in out
    assert "disabled: rate_limit" in out
    assert (
        "middleware (outermost first): request_id(100) -> cors(200) -> metrics(300) "
        "-> errors(400) -> auth(500) -> router"
    ) in out


@pytest.mark.model
def test_convert_writes_a_loadable_model_folder(tmp_path, capsys):
    pytest.importorskip("mlx.core")
    from ddx_llm.plugins.mlx_models.bundled import bundled_gguf_path

    dest = tmp_path / "smollm2"
    assert main(["convert", str(bundled_gguf_path()), str(dest)]) == 0
    assert capsys.readouterr().out.strip() == str(dest)
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= {
        p.name for p in dest.iterdir()
    }
    assert main(["convert", str(tmp_path / "missing.gguf"), str(tmp_path / "x")]) == 1
    assert "missing.gguf" in capsys.readouterr().err
