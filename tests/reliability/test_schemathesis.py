"""Schemathesis against our own OpenAPI document: the document says exactly what is accepted.

A live ``hypercorn ddx_llm:app`` (mock backend, auth ON: a key configured and given to
schemathesis as the bearer credential) is fuzzed through every phase (coverage, fuzzing,
stateful) with every check (``--checks all``: no server error, status codes, content types,
response headers and schemas — each SSE event of a stream against the document's ``itemSchema``
—, schema-valid data accepted, schema-violating data refused, ignored auth, unsupported
methods, ...).  Zero failures are allowed, and at least MIN_REQUESTS requests must reach the
app, counted by the service's own ``ddx_llm_requests_total``.  Deterministic
(``--generation-deterministic``) and bounded (``--max-examples`` per operation, a subprocess
timeout; ``--max-time`` would not bound it: fuzzing repeats until that time is spent).

Two facts no JSON Schema can state are set up, not skipped:

- ``context_too_long``: a prompt plus ``max_tokens`` over the model's context window is refused
  (the document says so in words).  The fuzzed model's window (2**40 tokens) is larger than any
  request the document allows (``max_tokens`` <= 2**31 - 1), so that refusal cannot happen here.
- a named ``tool_choice`` must name one of ``tools``: the document says it in words, and a
  schemathesis hook teaches the generator the rule for schema-valid cases (:data:`HOOKS`).

The operations fuzzed are the core's and the built-in ``metrics`` plugin's (:data:`PATHS`); a
plugin surface joins the list once its own document amendments describe it exactly.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from support import LiveServer, add_models, write_conf

from ddx_llm.openapi import build_document

pytestmark = pytest.mark.live

KEY = "sk-fuzz-0123456789abcdef"
MAX_EXAMPLES = 120
MIN_REQUESTS = 1000
MAX_SECONDS = 90
PATHS = [*build_document()["paths"], "/metrics"]
FUZZ_MODEL = {
    "id": "fuzz-model", "family": "test", "arch": "test", "total_params_b": 0.1,
    "quantization": "none", "context_window": 2**40, "label": "Fuzzed model",
}  # fmt: skip
HOOKS = '''
import schemathesis


@schemathesis.hook("map_case")
def name_a_given_tool(context, case):
    """Schema-valid cases only: a named tool_choice names one of the tools (the one rule of the
    chat request that JSON Schema cannot state; the document states it in words)."""
    body = case.body
    if case.meta is None or not case.meta.generation.mode.is_positive:
        return case
    if not isinstance(body, dict) or not body.get("tools"):
        return case
    choice = body.get("tool_choice")
    if isinstance(choice, dict) and isinstance(choice.get("function"), dict):
        choice["function"]["name"] = body["tools"][0]["function"]["name"]
    return case
'''


def requests_counted(url: str) -> int:
    text = httpx.get(url + "/metrics", timeout=10).text
    return round(
        sum(
            float(line.rsplit(" ", 1)[1])
            for line in text.splitlines()
            if line.startswith("ddx_llm_requests_total{")
        )
    )


def test_the_document_describes_exactly_what_is_accepted(conf_dir: Path, tmp_path: Path):
    write_conf(conf_dir, {"core": {"default_model": FUZZ_MODEL["id"]}})
    add_models(conf_dir, FUZZ_MODEL)
    hooks = tmp_path / "fuzz_hooks.py"
    hooks.write_text(HOOKS)
    settings = tmp_path / "schemathesis.toml"
    settings.write_text(f'[auth.openapi.HTTPBearer]\nbearer = "{KEY}"\n')
    report = tmp_path / "report.json"
    server = LiveServer(conf_dir, args=("-k", "asyncio"), env={"DDX_LLM_API_KEYS": KEY})
    with server:
        before = requests_counted(server.url)
        command = [
            sys.executable, "-m", "schemathesis.cli", "--config-file", str(settings), "run",
            server.url + "/openapi.json", "--checks", "all", "--phases",
            "examples,coverage,fuzzing,stateful", "--max-examples", str(MAX_EXAMPLES),
            "--generation-deterministic", "--workers", "1",
            "--include-path-regex", "^(" + "|".join(re.escape(p) for p in PATHS) + ")$",
            "--request-timeout", "20", "--report", "json", "--report-json-path", str(report),
            "--no-color",
        ]  # fmt: skip
        run = subprocess.run(
            command,
            capture_output=True,
            text=True,
            cwd=tmp_path,  # schemathesis keeps its replay store in the working directory
            env={**server.env, "SCHEMATHESIS_HOOKS": str(hooks)},
            timeout=MAX_SECONDS + 60,
            check=False,
        )
        served = requests_counted(server.url) - before
    summary = json.loads(report.read_text())
    output = run.stdout[-30_000:] + run.stderr[-5_000:]
    assert summary["failures"] == [], output
    assert summary["errors"] == [], output
    assert summary["complete"] and run.returncode == 0, output
    assert summary["operations"]["tested"] == len(PATHS), output
    assert served >= MIN_REQUESTS, f"only {served} requests reached the service\n{output}"
    assert "Traceback" not in server.log()
