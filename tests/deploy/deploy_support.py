"""Helpers of the deployment tests: required tools, the local stack on free ports, and
streaming clients that record what happened to every request they sent."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from support import ROOT, free_port

DEPLOY = ROOT / "deploy"
TOOLS = ROOT / "tests" / "tools"
STACK = DEPLOY / "local" / "stack.py"


def require_tool(name: str, ensure: str) -> str:
    """The path of ``name``; skips (fails under CI, where tox's commands_pre runs
    ``tests/tools/<ensure>``) when it is missing."""
    binary = shutil.which(name)
    if binary is None:
        message = f"{name} is not installed (run {TOOLS / ensure})"
        if os.environ.get("CI"):
            pytest.fail(message + "; CI must run these tests", pytrace=False)
        pytest.skip(message)
    return binary


class LocalStack:
    """``deploy/local/stack.py`` on free loopback ports, driven as an operator would."""

    def __init__(self, run_dir: Path, env: dict[str, str]) -> None:
        ports = [free_port() for _ in range(6)]
        self.run_dir = run_dir
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("DDX_LLM_")}
        self.env.update(
            DDX_DEPLOY_RUN_DIR=str(run_dir),
            DDX_DEPLOY_BALANCER_PORT=str(ports[0]),
            DDX_DEPLOY_STATS_PORT=str(ports[1]),
            DDX_DEPLOY_REDIS_PORT=str(ports[2]),
            DDX_DEPLOY_REPLICA_PORTS=",".join(map(str, ports[3:])),
            **env,
        )
        self.url = f"http://127.0.0.1:{ports[0]}"
        self.redis_url = f"redis://127.0.0.1:{ports[2]}/0"
        self.replica_urls = {f"r{i}": f"http://127.0.0.1:{p}" for i, p in enumerate(ports[3:], 1)}

    def cli(self, *args: str, timeout: float = 180) -> Any:
        """Run ``stack.py ARGS``; its JSON output."""
        done = subprocess.run(
            [sys.executable, str(STACK), *args],
            env=self.env, capture_output=True, text=True, timeout=timeout,
        )  # fmt: skip
        if done.returncode != 0:
            raise AssertionError(f"stack.py {' '.join(args)} failed:\n{done.stderr}\n{self.logs()}")
        return json.loads(done.stdout)

    def logs(self, lines: int = 30) -> str:
        out = []
        for log in sorted((self.run_dir / "logs").glob("*.log")):
            tail = log.read_text(errors="replace").splitlines()[-lines:]
            out.append(f"--- {log.name}\n" + "\n".join(tail))
        return "\n".join(out)


WORDS = [
    "the",
    "quick",
    "brown",
    "fox",
    "jumps",
    "over",
    "the",
    "lazy",
    "dog",
    "and",
    "runs",
    "far",
    "away",
]


def stream_body(words: int, delay_ms: int) -> dict[str, Any]:
    text = " ".join((WORDS * 4)[:words])
    return {
        "stream": True,
        "mock": {"scenario": "echo", "token_delay_ms": delay_ms},
        "messages": [{"role": "user", "content": text}],
    }


@dataclass
class Outcome:
    """What happened to one request (wall-clock times, to compare with stack.py's)."""

    sent: float
    replica: str | None = None
    answered: float | None = None  # response headers received
    ended: float | None = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


async def stream_once(
    client: httpx.AsyncClient, body: dict[str, Any], key: str, outcome: Outcome
) -> Outcome:
    """One streamed chat through the balancer, checked: 200, every word, no error event,
    ``[DONE]`` last.  ``outcome`` is filled in as it happens (the replica once the headers
    are in), so others can watch it."""
    expected = body["messages"][0]["content"]
    text, events = [], []
    try:
        headers = {"authorization": f"Bearer {key}"}
        async with client.stream("POST", "/v1/chat/completions", json=body, headers=headers) as r:
            outcome.answered = time.time()
            outcome.replica = r.headers.get("x-ddx-replica")
            if r.status_code != 200:
                outcome.error = f"status {r.status_code}: {(await r.aread())[:200]!r}"
                return outcome
            async for line in r.aiter_lines():
                if line.startswith("data: "):
                    events.append(line[6:])
        if events[-1:] != ["[DONE]"]:
            outcome.error = f"no [DONE] (last: {events[-1:]})"
        for event in events[:-1]:
            chunk = json.loads(event)
            if "error" in chunk:
                outcome.error = f"in-band error {chunk['error']}"
                break
            for choice in chunk["choices"]:
                text.append(choice["delta"].get("content") or "")
        if outcome.ok and "".join(text).strip() != expected:
            outcome.error = f"incomplete answer {''.join(text)!r}"
    except (httpx.HTTPError, json.JSONDecodeError, KeyError) as exc:
        outcome.error = f"{type(exc).__name__}: {exc}"
    finally:
        outcome.ended = time.time()
    return outcome


@dataclass
class Load:
    """``clients`` concurrent clients, each sending one stream after another until stopped."""

    url: str
    key: str
    body: dict[str, Any]
    clients: int = 20
    outcomes: list[Outcome] = field(default_factory=list)
    active: dict[int, Outcome] = field(default_factory=dict)
    """The request each client has in flight."""
    stopping: bool = False

    async def run(self, *, task_status: Any = anyio.TASK_STATUS_IGNORED) -> None:
        limits = httpx.Limits(max_connections=self.clients * 2)
        timeout = httpx.Timeout(60, connect=5)
        async with httpx.AsyncClient(base_url=self.url, limits=limits, timeout=timeout) as client:
            async with anyio.create_task_group() as tg:
                for number in range(self.clients):
                    tg.start_soon(self._client, client, number)
                task_status.started()

    async def _client(self, client: httpx.AsyncClient, number: int) -> None:
        while not self.stopping:
            outcome = self.active[number] = Outcome(sent=time.time())
            await stream_once(client, self.body, self.key, outcome)
            del self.active[number]
            self.outcomes.append(outcome)

    def streaming_on(self) -> dict[str, int]:
        """How many streams each replica is sending right now."""
        counts: dict[str, int] = {}
        for outcome in list(self.active.values()):
            if outcome.replica and outcome.ended is None:
                counts[outcome.replica] = counts.get(outcome.replica, 0) + 1
        return counts

    def failed(self) -> list[Outcome]:
        return [o for o in self.outcomes if not o.ok]

    def by_replica(self) -> dict[str | None, int]:
        counts: dict[str | None, int] = {}
        for outcome in self.outcomes:
            counts[outcome.replica] = counts.get(outcome.replica, 0) + 1
        return counts
