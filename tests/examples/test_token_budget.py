"""``examples/token_budget``, built as a wheel and installed, is loaded by its entry point.

The module fixture builds the distribution offline (``pip wheel --no-build-isolation
--no-index``, from a copy: building writes ``build/`` and ``*.egg-info`` beside the code) and
installs the wheel with ``pip install --target`` into a private folder.  Tests put that folder on
the import path (``sys.path`` in process, ``PYTHONPATH`` for subprocesses): the entry point is
found there exactly as in site-packages, and neither the shared environment nor other tests ever
see the plugin, even if a run is killed before its teardown.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import math
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from openapi_spec_validator import validate
from support import ROOT, LiveServer, documented, write_conf

from ddx_llm import testing
from ddx_llm.config import ConfigError

pytestmark = pytest.mark.anyio

SOURCE = ROOT / "examples" / "token_budget"
DIST = "ddx-llm-token-budget"
MODULE = "ddx_llm_token_budget"
CHAT = "/v1/chat/completions"
ECHO = {"messages": [{"role": "user", "content": "one two three"}], "mock": {"scenario": "echo"}}
KEYS = ("budget-key-one", "budget-key-two")
SCRIPT = Path(sys.executable).with_name("ddx-llm")


def identity(key: str) -> str:
    """The identity ddx-llm's auth gives an unnamed key."""
    return "key-" + hashlib.sha256(key.encode()).hexdigest()[:8]


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def pip(*args: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "pip", *args],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert result.returncode == 0, f"pip {args[0]} failed:\n{result.stdout}{result.stderr}"


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Build ``ddx-llm-token-budget`` as a wheel and install it; yield the folder it is in."""
    work = tmp_path_factory.mktemp("token_budget")
    source = work / "source"
    shutil.copytree(
        SOURCE, source, ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__")
    )
    dist, site = work / "dist", work / "site"
    pip("wheel", "--no-deps", "--no-build-isolation", "--no-index", "-w", str(dist), str(source))
    [wheel] = dist.glob("ddx_llm_token_budget-0.1.0-*.whl")
    pip("install", "--no-deps", "--no-index", "--target", str(site), str(wheel))
    assert (site / MODULE / "__init__.py").is_file()
    yield site
    shutil.rmtree(site)  # the uninstall: nothing else ever had it on its path


@pytest.fixture
def on_path(installed: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """The installed distribution, importable and discoverable in this process."""
    monkeypatch.syspath_prepend(str(installed))  # also invalidates the import caches
    yield installed
    for name in [name for name in sys.modules if name.partition(".")[0] == MODULE]:
        del sys.modules[name]
    importlib.invalidate_caches()


@pytest.fixture
def keys(monkeypatch: pytest.MonkeyPatch) -> None:
    """Auth on, with two unnamed keys."""
    monkeypatch.setenv("DDX_LLM_API_KEYS", ",".join(KEYS))


def subprocess_env(installed: Path, **extra: str) -> dict[str, str]:
    clean = {name: value for name, value in os.environ.items() if not name.startswith("DDX_LLM_")}
    path = [str(installed), *filter(None, [os.environ.get("PYTHONPATH")])]
    return {**clean, "PYTHONPATH": os.pathsep.join(path), **extra}


async def test_the_entry_point_accounts_usage_per_key(conf_dir, on_path, keys):
    write_conf(conf_dir, {"token_budget": {"tokens": 1000}})
    async with testing.serve(conf_dir) as service:
        one = [await service.client.post(CHAT, json=ECHO, headers=bearer(KEYS[0])) for _ in "ab"]
        streamed = await service.client.post(
            CHAT, json={**ECHO, "stream": True}, headers=bearer(KEYS[0])
        )
        two = await service.client.post(CHAT, json=ECHO, headers=bearer(KEYS[1]))
        usage_one = await service.client.get("/v1/usage", headers=bearer(KEYS[0]))
        usage_two = await service.client.get("/v1/usage", headers=bearer(KEYS[1]))
        plugin = service.app.pm.get_plugin("token_budget")
    assert Path(plugin.__file__).parent == on_path / MODULE  # the wheel's copy, by entry point
    assert [r.status_code for r in [*one, streamed, two]] == [200] * 4
    per_request = one[0].json()["usage"]["total_tokens"]
    assert usage_one.status_code == 200
    body = usage_one.json()
    assert (body["client"], body["requests"], body["used"]) == (
        identity(KEYS[0]), 3, 3 * per_request
    )  # fmt: skip
    assert (body["limit"], body["remaining"]) == (1000, 1000 - 3 * per_request)
    assert body["prompt_tokens"] + body["completion_tokens"] == body["used"]
    other = usage_two.json()
    assert (other["client"], other["used"]) == (identity(KEYS[1]), per_request)
    assert other["requests"] == 1


async def test_usage_needs_a_key(conf_dir, on_path, keys):
    async with testing.serve(conf_dir) as service:
        without = await service.client.get("/v1/usage")
        wrong = await service.client.get("/v1/usage", headers=bearer("not-a-key"))
        by_query = await service.client.get("/v1/usage", params={"api_key": KEYS[1]})
    assert without.status_code == wrong.status_code == 401
    assert documented(without.json())["code"] == "unauthorized"
    assert by_query.status_code == 200  # any way auth accepts a key
    assert by_query.json()["client"] == identity(KEYS[1])


async def test_a_spent_budget_answers_429_with_retry_after(conf_dir, on_path, keys):
    write_conf(conf_dir, {"token_budget": {"tokens": 20}})
    async with testing.serve(conf_dir) as service:
        spent = [await service.client.post(CHAT, json=ECHO, headers=bearer(KEYS[0])) for _ in "ab"]
        refused = await service.client.post(CHAT, json=ECHO, headers=bearer(KEYS[0]))
        refused_stream = await service.client.post(
            CHAT, json={**ECHO, "stream": True}, headers=bearer(KEYS[0])
        )
        other = await service.client.post(CHAT, json=ECHO, headers=bearer(KEYS[1]))
        usage = await service.client.get("/v1/usage", headers=bearer(KEYS[0]))
    assert [r.status_code for r in spent] == [200, 200]  # 12 tokens each: the 2nd starts at 12
    used = sum(r.json()["usage"]["total_tokens"] for r in spent)
    assert refused.status_code == refused_stream.status_code == 429
    retry_after = int(refused.headers["retry-after"])
    assert abs(retry_after - math.ceil(86_400 - time.time() % 86_400)) <= 2  # next 00:00 UTC
    assert documented(refused.json()) == {
        "code": "budget_exhausted",
        "message": f"token budget of 20 per 86400 s spent; it resets in {retry_after} s",
        "detail": {
            "client": identity(KEYS[0]), "limit": 20, "used": used, "retry_after": retry_after,
        },
    }  # fmt: skip
    assert re.fullmatch(r"[0-9a-f]{32}", refused.headers["x-request-id"])  # layers outside ran
    assert refused.headers["vary"] == "Origin"
    assert other.status_code == 200  # the other key's budget is untouched
    assert (usage.json()["used"], usage.json()["remaining"]) == (used, 0)


async def test_disabled_by_name_it_is_not_loaded(conf_dir, on_path, keys):
    write_conf(
        conf_dir,
        {
            "core": {"disabled_plugins": ["rate_limit", "token_budget"]},
            "token_budget": {"tokens": 0},  # its section may stay while it is disabled
        },
    )
    async with testing.serve(conf_dir) as service:
        chat = await service.client.post(CHAT, json=ECHO, headers=bearer(KEYS[0]))
        usage = await service.client.get("/v1/usage", headers=bearer(KEYS[0]))
        names = [spec.name for spec in service.app.middleware]
    assert chat.status_code == 200  # a budget of 0 would have refused it
    assert usage.status_code == 404
    assert service.app.pm.get_plugin("token_budget") is None
    assert "token_budget" not in names
    assert MODULE not in sys.modules  # a disabled plugin is never imported


async def test_not_installed_means_not_loaded(conf_dir, installed, keys):
    async with testing.serve(conf_dir) as service:
        usage = await service.client.get("/v1/usage", headers=bearer(KEYS[0]))
    assert usage.status_code == 404
    assert service.app.pm.get_plugin("token_budget") is None


async def test_its_settings_are_validated_at_start_up(conf_dir, on_path):
    write_conf(conf_dir, {"token_budget": {"tokens": -5, "period": "daily"}})
    with pytest.raises(ConfigError) as error:
        async with testing.serve(conf_dir):
            pass
    message = str(error.value)
    assert "[token_budget] tokens: Input should be greater than or equal to 0" in message
    assert "env DDX_LLM_TOKEN_BUDGET_TOKENS" in message
    assert "[token_budget] period: Extra inputs are not permitted" in message


async def test_openapi_stays_valid_and_documents_the_route(conf_dir, on_path, keys):
    async with testing.serve(conf_dir) as service:
        document = (await service.client.get("/openapi.json")).json()
    validate(document)
    usage = document["paths"]["/v1/usage"]["get"]
    assert "401" in usage["responses"]  # auth documents the protected route it found
    assert "429" in document["paths"][CHAT]["post"]["responses"]


def test_plugins_command_lists_it_as_an_entry_point(conf_dir, installed):
    result = subprocess.run(
        [str(SCRIPT), "--conf", str(conf_dir), "plugins", "--json"],
        capture_output=True, text=True, timeout=60, check=False, env=subprocess_env(installed),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    listing = json.loads(result.stdout)
    [plugin] = [p for p in listing["plugins"] if p["name"] == "token_budget"]
    assert plugin == {
        "name": "token_budget",
        "source": f"entrypoint {DIST}",
        "version": "0.1.0",
        "hooks": [
            "ddx_llm_middleware", "ddx_llm_observe", "ddx_llm_openapi", "ddx_llm_routes",
            "ddx_llm_settings",
        ],
    }  # fmt: skip
    order = [(m["name"], m["order"]) for m in listing["middleware"]]
    assert order.index(("token_budget", 560)) == order.index(("auth", 500)) + 1
    text = subprocess.run(
        [str(SCRIPT), "--conf", str(conf_dir), "plugins"],
        capture_output=True, text=True, timeout=60, check=True, env=subprocess_env(installed),
    ).stdout.splitlines()  # fmt: skip
    entry = text.index(f"token_budget 0.1.0  [entrypoint {DIST}]")
    assert text[entry + 1] == "    hooks: " + ", ".join(plugin["hooks"])
    assert "-> auth(500) -> token_budget(560) ->" in next(
        line for line in text if line.startswith("middleware (outermost first): ")
    )


def test_check_names_a_bad_value_and_its_variable(conf_dir, installed):
    result = subprocess.run(
        [str(SCRIPT), "--conf", str(conf_dir), "check"],
        capture_output=True, text=True, timeout=60, check=False,
        env=subprocess_env(installed, DDX_LLM_TOKEN_BUDGET_PERIOD_SECONDS="a day"),
    )  # fmt: skip
    assert result.returncode == 2
    assert "[token_budget] period_seconds:" in result.stderr
    assert "env DDX_LLM_TOKEN_BUDGET_PERIOD_SECONDS" in result.stderr


def test_its_own_tests_pass_against_the_installed_wheel(installed, tmp_path):
    """The example's tests, run where only the installed copy can be imported (the copy holds
    its tests and pytest settings, not its code)."""
    run = tmp_path / "example"
    shutil.copytree(SOURCE / "tests", run / "tests", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(SOURCE / "pyproject.toml", run)
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"],
        cwd=run, capture_output=True, text=True, timeout=600, check=False,
        env=subprocess_env(installed, PYTHONDONTWRITEBYTECODE="1"),
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    summary = result.stdout.strip().splitlines()[-1]
    passed = re.search(r"(\d+) passed", summary)
    assert passed and int(passed.group(1)) >= 30, summary
    assert not re.search(r"failed|error|skipped", summary), summary


@pytest.mark.live
@pytest.mark.parametrize("worker", ["asyncio", "trio"])
def test_a_real_server_serves_the_installed_plugin(conf_dir, installed, worker):
    env = subprocess_env(
        installed, DDX_LLM_API_KEYS=",".join(KEYS), DDX_LLM_TOKEN_BUDGET_TOKENS="20"
    )
    with LiveServer(conf_dir, args=("-k", worker), env=env) as server:
        with httpx.Client(base_url=server.url, headers=bearer(KEYS[0]), timeout=10) as client:
            spent = [client.post(CHAT, json=ECHO).status_code for _ in "ab"]
            with client.stream("POST", CHAT, json={**ECHO, "stream": True}) as refused:
                refused.read()
            usage = client.get("/v1/usage").json()
            other = client.get("/v1/usage", headers=bearer(KEYS[1])).json()
            anonymous = client.get("/v1/usage", headers={"Authorization": ""})
    assert spent == [200, 200]
    assert refused.status_code == 429
    assert 0 < int(refused.headers["retry-after"]) <= 86_400
    assert refused.json()["code"] == "budget_exhausted"
    assert (usage["client"], usage["requests"], usage["remaining"]) == (identity(KEYS[0]), 2, 0)
    assert (other["client"], other["used"]) == (identity(KEYS[1]), 0)
    assert anonymous.status_code == 401
