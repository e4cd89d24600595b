"""The ``ddx-llm`` command: check, plugins, new-plugin, serve, and the mlx plugin's convert."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from support import ROOT, LiveServer, free_port, require_module, write_conf

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
        "-> framing(350) -> errors(400) -> auth(500) -> router"
    ) in out


@pytest.mark.model
def test_convert_writes_a_loadable_model_folder(tmp_path, capsys):
    require_module("mlx.core")
    from ddx_llm.plugins.mlx_models.bundled import bundled_gguf_path

    dest = tmp_path / "smollm2"
    assert main(["convert", str(bundled_gguf_path()), str(dest)]) == 0
    assert capsys.readouterr().out.strip() == str(dest)
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= {
        p.name for p in dest.iterdir()
    }
    assert main(["convert", str(tmp_path / "missing.gguf"), str(tmp_path / "x")]) == 1
    assert "missing.gguf" in capsys.readouterr().err


def test_plugins_json_lists_each_plugin_with_its_hooks(conf_dir, capsys):
    assert main(["--conf", str(conf_dir), "plugins", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    plugins = {p["name"]: p for p in report["plugins"]}
    assert set(plugins) == {
        "request_id",
        "cors",
        "metrics",
        "auth",
        "mock",
        "mlx",
        "omni",
        "responses",
        "messages",
        "completions",
        "playground",
    }
    assert plugins["auth"]["source"] == "builtin"
    assert plugins["mlx"]["hooks"] == ["ddx_llm_backends", "ddx_llm_commands", "ddx_llm_settings"]
    assert report["disabled"] == ["rate_limit"]
    assert [(m["name"], m["order"], m["plugin"]) for m in report["middleware"]] == [
        ("request_id", 100, "request_id"), ("cors", 200, "cors"), ("metrics", 300, "metrics"),
        ("framing", 350, "core"), ("errors", 400, "core"), ("auth", 500, "auth"),
    ]  # fmt: skip
    assert report["backend"] == "mock"


def test_a_new_plugin_package_passes_its_own_test_once_installed(tmp_path, capsys):
    assert main(["new-plugin", "visit_counter", "--dest", str(tmp_path)]) == 0
    folder = Path(capsys.readouterr().out.strip())
    assert folder == tmp_path / "ddx-llm-visit-counter"
    site = tmp_path / "site"
    install = [sys.executable, "-m", "pip", "install", "--no-deps", "--no-build-isolation",
               "--no-index", "--target", str(site), str(folder)]  # fmt: skip
    installed = subprocess.run(install, capture_output=True, text=True, timeout=300, check=False)
    assert installed.returncode == 0, installed.stdout + installed.stderr
    env = {**os.environ, "PYTHONPATH": str(site)}
    tests = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(folder / "tests")],
        cwd=folder, capture_output=True, text=True, timeout=300, check=False, env=env,
    )  # fmt: skip
    assert tests.returncode == 0, tests.stdout + tests.stderr
    assert "2 passed" in tests.stdout  # asyncio and trio
    # found by its entry point, as a deployment would install it
    listed = subprocess.run(
        [str(Path(sys.executable).with_name("ddx-llm")), "--conf", str(ROOT / "conf"),
         "plugins", "--json"],
        capture_output=True, text=True, timeout=60, check=False, env=env,
    )  # fmt: skip
    assert listed.returncode == 0, listed.stderr
    plugin = next(p for p in json.loads(listed.stdout)["plugins"] if p["name"] == "visit_counter")
    assert plugin["source"] == "entrypoint ddx-llm-visit-counter"
    assert plugin["version"] == "0.1.0"


def test_new_plugin_refuses_a_bad_name_and_an_existing_folder(tmp_path, capsys):
    assert main(["new-plugin", "Bad-Name", "--dest", str(tmp_path)]) == 1
    assert "lower-case letters" in capsys.readouterr().err
    assert main(["new-plugin", "twice", "--dest", str(tmp_path)]) == 0
    assert main(["new-plugin", "twice", "--dest", str(tmp_path)]) == 1
    assert "exists" in capsys.readouterr().err


DOOMED = """
from contextlib import asynccontextmanager
from ddx_llm import hookimpl


@asynccontextmanager
async def fail():
    raise RuntimeError("the store is unreachable")
    yield


@hookimpl
def ddx_llm_lifespan():
    return fail()
"""


def serve(conf_dir: Path, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    command = [str(Path(sys.executable).with_name("ddx-llm")), "--conf", str(conf_dir), "serve",
               "--config", str(conf_dir / "hypercorn.toml"), "-b", f"127.0.0.1:{free_port()}",
               *args]  # fmt: skip
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)


@pytest.mark.live
@pytest.mark.parametrize("worker", ["asyncio", "trio"])
def test_serve_exits_2_on_a_configuration_error(conf_dir, worker):
    write_conf(conf_dir, {"core": {"backend": "nope"}})
    result = serve(conf_dir, "-k", worker)
    assert result.returncode == 2
    assert "configuration error: unknown backend 'nope'" in result.stderr


@pytest.mark.live
@pytest.mark.parametrize("worker", ["asyncio", "trio"])
def test_serve_exits_3_when_a_plugin_fails_at_start_up(conf_dir, worker):
    (conf_dir.parent / "plugins" / "doomed.py").write_text(DOOMED)
    result = serve(conf_dir, "-k", worker)
    assert result.returncode == 3, result.stderr
    assert "start-up failed" in result.stderr and "the store is unreachable" in result.stderr


@pytest.mark.live
@pytest.mark.parametrize("worker", ["asyncio", "trio"])
def test_serve_serves_until_sigterm_then_exits_0(conf_dir, worker):
    import signal
    import time

    import httpx

    port = free_port()
    command = [str(Path(sys.executable).with_name("ddx-llm")), "--conf", str(conf_dir), "serve",
               "--config", str(conf_dir / "hypercorn.toml"), "-b", f"127.0.0.1:{port}",
               "-k", worker]  # fmt: skip
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                health = httpx.get(f"http://127.0.0.1:{port}/health", timeout=2)
                break
            except httpx.HTTPError:
                assert process.poll() is None and time.monotonic() < deadline, process.stdout
                time.sleep(0.1)
        assert health.json()["status"] == "ok"
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0
    finally:
        process.kill()
        process.wait()


@pytest.mark.live
def test_hypercorn_alone_refuses_requests_after_a_failed_start_up(conf_dir):
    """``hypercorn ddx_llm:app`` (asyncio) may keep serving after a lifespan failed; the app
    then answers 503 naming the failure instead of serving half-started."""
    import httpx

    (conf_dir.parent / "plugins" / "doomed.py").write_text(DOOMED)
    server = LiveServer(conf_dir, args=("-k", "asyncio"))
    try:
        server.start(ready_path="/health", timeout=30)
    except RuntimeError as exited:  # Hypercorn noticed the failure itself: fine too
        assert "the store is unreachable" in str(exited)
        return
    try:
        response = httpx.get(server.url + "/health")
    finally:
        server.stop()
    assert response.status_code == 503
    assert response.json()["code"] == "model_unavailable"
    assert response.json()["detail"] == "RuntimeError: the store is unreachable"
