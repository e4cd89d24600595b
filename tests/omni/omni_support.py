"""Helpers of the omni backend's tests: constants, conf, a live server with the omni backend."""

from __future__ import annotations

import importlib.util
import os
import shutil
import time
from pathlib import Path

import httpx
import pytest
from support import ROOT, LiveServer, write_conf

# Read at import: the autouse clean_environment fixture removes DDX_LLM_* variables per test.
REQUIRED = os.environ.get("DDX_LLM_TEST_OMNI") == "1"
MISSING = [
    name for name in ("mlx_omni_server", "fastapi", "mlx") if not importlib.util.find_spec(name)
]

KEY = "sk-omni-test-0123456789abcdef"
APP_ORIGIN = "http://localhost:3100"
BUNDLED = "SmolLM2-135M-Instruct"
TOOLS_VARIANT = "SmolLM2-135M-Instruct-tools"


def require_omni() -> None:
    """Skip without the omni install, or fail when DDX_LLM_TEST_OMNI=1 demands it."""
    if MISSING:
        message = f"the omni install is missing {', '.join(MISSING)} (tox -e omni)"
        if REQUIRED:
            pytest.fail(message + "; DDX_LLM_TEST_OMNI=1 requires it")
        pytest.skip(message)


def omni_conf(conf_dir: Path, models_dir: Path, **core: object) -> Path:
    """The project's conf with the omni backend selected."""
    write_conf(conf_dir, {"core": {"backend": "omni", "models_dir": str(models_dir), **core}})
    return conf_dir


def start_omni_server(tmp_path_factory, models_dir: Path, worker: str) -> LiveServer:
    """A Hypercorn process (``worker`` class) serving the omni backend with one API key and
    ``conf/hypercorn.toml``, once its model is ready."""
    conf_dir = tmp_path_factory.mktemp(f"omni-{worker}") / "conf"
    shutil.copytree(ROOT / "conf", conf_dir)
    omni_conf(conf_dir, models_dir)
    server = LiveServer(
        conf_dir,
        args=("--config", str(conf_dir / "hypercorn.toml"), "-k", worker),
        env={"DDX_LLM_API_KEYS": KEY, "HF_HUB_OFFLINE": "1"},
    )
    # Module-scoped: drop DDX_LLM_* variables of the outer environment by hand.
    server.env = {
        name: value
        for name, value in server.env.items()
        if not name.startswith("DDX_LLM_") or name in ("DDX_LLM_API_KEYS", "DDX_LLM_CONF_DIR")
    }
    server.start()
    server.worker = worker  # type: ignore[attr-defined]
    wait_ready(server.url, server)
    return server


def wait_ready(url: str, server: LiveServer | None = None, timeout: float = 90) -> dict:
    """Poll ``/health`` until the model is no longer loading; it must then be ready."""
    deadline = time.monotonic() + timeout
    while (health := httpx.get(url + "/health").json())["model_state"] in ("idle", "loading"):
        assert time.monotonic() < deadline, server.log() if server else health
        time.sleep(0.05)
    assert health["status"] == "ok", (health, server.log() if server else "")
    return health
