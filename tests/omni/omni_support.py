"""Helpers of the omni backend's tests: constants, conf, a live server with the omni backend, and
the requests the live tests make."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import time
from pathlib import Path

import httpx
import pytest
from support import LiveServer, copy_project_conf, write_conf

# Read at import: the autouse clean_environment fixture removes DDX_LLM_* variables per test.
REQUIRED = os.environ.get("DDX_LLM_TEST_OMNI") == "1"
MISSING = [
    name for name in ("mlx_omni_server", "fastapi", "mlx") if not importlib.util.find_spec(name)
]

KEY = "sk-omni-test-0123456789abcdef"
APP_ORIGIN = "http://localhost:3100"
BUNDLED = "SmolLM2-135M-Instruct"
TOOLS_VARIANT = "SmolLM2-135M-Instruct-tools"
AUTH = {"X-API-Key": KEY}


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
    conf_dir = copy_project_conf(tmp_path_factory.mktemp(f"omni-{worker}") / "conf")
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


# --------------------------------------------------------------------------- HTTP

CHAT = "/v1/chat/completions"
QUESTION = [{"role": "user", "content": "What is the capital of France?"}]
STORY = [{"role": "user", "content": "Write a short story about a cat who learns to sail."}]
"""A short prompt with a long answer: the model does not stop on its own early."""
WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather for a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    },
}


def chat(url: str, body: dict, headers: dict | None = None) -> httpx.Response:
    return httpx.post(url + CHAT, json=body, headers={**AUTH, **(headers or {})}, timeout=60)


def stream_events(url: str, body: dict) -> tuple[httpx.Headers, list]:
    """The response headers and the stream's events (parsed chunks, then the string [DONE])."""
    with httpx.stream("POST", url + CHAT, json={**body, "stream": True}, headers=AUTH,
                      timeout=60) as response:  # fmt: skip
        assert response.status_code == 200, response.read()
        data = [line[6:] for line in response.iter_lines() if line.startswith("data: ")]
    return response.headers, [d if d == "[DONE]" else json.loads(d) for d in data]


def health(url: str) -> dict:
    return httpx.get(url + "/health").json()


def metric(text: str, name: str, **labels: str) -> float:
    """The value of one sample of the exposition (0 when absent)."""
    for line in text.splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            found = dict(re.findall(r'(\w+)="([^"]*)"', line.split("}")[0]))
            if all(found.get(k) == v for k, v in labels.items()):
                return float(line.rsplit(" ", 1)[1])
    return 0.0
