#!/usr/bin/env python3
"""The local reference deployment: Redis, three ddx-llm replicas and HAProxy, on loopback.

Run it with the Python that has ddx-llm installed (up.sh and down.sh pick ``.venv``)::

    python deploy/local/stack.py up          # start what is not running, wait until it serves
    python deploy/local/stack.py status      # each process, and HAProxy's view of each replica
    python deploy/local/stack.py restart 2   # SIGTERM replica 2 (it drains), then start it again
    python deploy/local/stack.py kill 2      # SIGKILL replica 2 (a crash); `up` starts it again
    python deploy/local/stack.py down        # replicas drain and stop, then HAProxy, then Redis

Clients talk to HAProxy (``http://127.0.0.1:4260``).  Ports come from the environment at ``up``
— ``DDX_DEPLOY_BALANCER_PORT`` (4260), ``DDX_DEPLOY_REPLICA_PORTS`` (4261,4262,4263),
``DDX_DEPLOY_REDIS_PORT`` (6390), ``DDX_DEPLOY_STATS_PORT`` (4269: HAProxy's stats page and
Prometheus exporter) — as does each replica's Hypercorn worker (``DDX_DEPLOY_WORKER_CLASSES``,
comma-separated, cycled: asyncio) and the run folder (``DDX_DEPLOY_RUN_DIR``,
deploy/local/run: logs, Redis data, HAProxy's admin socket, ``stack.json``).  Every other
``DDX_LLM_*`` variable reaches the replicas (keys: ``DDX_LLM_API_KEYS``).  ``restart`` and
``kill`` print their figures as JSON.  Standard library only; the processes outlive this
command, and only those it started (pid and start time in ``stack.json``) are ever signalled.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
CONF = HERE / "conf"
DRAIN_LINE = re.compile(r"drained in ([0-9.]+) s")
STOP_SECONDS = 60  # drain_seconds (30) + 5 + graceful_timeout (10), with room to spare


def settings() -> dict:
    env = os.environ.get
    ports = [int(p) for p in env("DDX_DEPLOY_REPLICA_PORTS", "4261,4262,4263").split(",")]
    classes = env("DDX_DEPLOY_WORKER_CLASSES", "asyncio").split(",")
    return {
        "run": str(Path(env("DDX_DEPLOY_RUN_DIR", str(HERE / "run"))).resolve()),
        "balancer": int(env("DDX_DEPLOY_BALANCER_PORT", "4260")),
        "stats": int(env("DDX_DEPLOY_STATS_PORT", "4269")),
        "redis": int(env("DDX_DEPLOY_REDIS_PORT", "6390")),
        "replicas": {f"r{i + 1}": port for i, port in enumerate(ports)},
        "classes": {f"r{i + 1}": classes[i % len(classes)] for i in range(len(ports))},
        "pids": {},
    }


class Stack:
    """The deployment's state: settings and the pid of each process (run/stack.json)."""

    def __init__(self) -> None:
        fresh = settings()
        self.path = Path(fresh["run"]) / "stack.json"
        self.state = json.loads(self.path.read_text()) if self.path.exists() else fresh
        self.run = Path(self.state["run"])
        (self.run / "logs").mkdir(parents=True, exist_ok=True)

    def save(self) -> None:
        self.path.write_text(json.dumps(self.state, indent=2) + "\n")

    def url(self, name: str, path: str = "/") -> str:
        port = self.state["balancer"] if name == "balancer" else self.state["replicas"][name]
        return f"http://127.0.0.1:{port}{path}"

    def pid(self, name: str) -> int:
        return self.state["pids"][name][0]

    def alive(self, name: str) -> bool:
        started = self.state["pids"].get(name)
        return started is not None and started[1] == start_token(started[0])

    def spawn(self, name: str, argv: list[str], env: dict[str, str]) -> None:
        log = (self.run / "logs" / f"{name}.log").open("ab")
        log.write(f"--- {time.strftime('%Y-%m-%d %H:%M:%S')} stack.py starts {name}\n".encode())
        log.flush()
        process = subprocess.Popen(
            argv, env={**os.environ, **env}, stdin=subprocess.DEVNULL,
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True, cwd=HERE,
        )  # fmt: skip
        self.state["pids"][name] = [process.pid, start_token(process.pid)]
        self.save()

    # ------------------------------------------------------------------ processes

    def start_redis(self) -> None:
        data = self.run / "redis"
        data.mkdir(exist_ok=True)
        port = str(self.state["redis"])
        argv = ["redis-server", str(HERE / "redis.conf"), "--port", port, "--dir", str(data)]
        self.spawn("redis", argv, {})

    def start_replica(self, name: str) -> None:
        argv = [
            sys.executable, "-m", "ddx_llm.cli", "--conf", str(CONF), "serve",
            "--config", str(CONF / "hypercorn.toml"),
            "-b", f"127.0.0.1:{self.state['replicas'][name]}", "-k", self.state["classes"][name],
        ]  # fmt: skip
        redis = f"redis://127.0.0.1:{self.state['redis']}/0"
        env = {"DDX_LLM_RATE_LIMIT_STORAGE_URI": redis, "DDX_LLM_RESPONSES_STORAGE_URI": redis}
        self.spawn(name, argv, env)

    def start_haproxy(self) -> None:
        env = {
            "DDX_DEPLOY_RUN": str(self.run),
            "DDX_DEPLOY_BALANCER_PORT": str(self.state["balancer"]),
            "DDX_DEPLOY_STATS_PORT": str(self.state["stats"]),
        }
        for index, port in enumerate(self.state["replicas"].values(), start=1):
            env[f"DDX_DEPLOY_R{index}_PORT"] = str(port)
        self.spawn("haproxy", ["haproxy", "-db", "-f", str(HERE / "haproxy.cfg")], env)

    def server_rows(self) -> dict[str, dict[str, str]]:
        """HAProxy's statistics of each replica (``show stat``: status, retries ``wretr``,
        redispatches ``wredis``, ...)."""
        with socket.socket(socket.AF_UNIX) as sock:
            sock.settimeout(2)
            sock.connect(str(self.run / "haproxy.sock"))
            sock.sendall(b"show stat -1 4 -1\n")
            data = b""
            while chunk := sock.recv(65536):
                data += chunk
        lines = data.decode().splitlines()
        header = lines[0].lstrip("# ").split(",")
        rows = [dict(zip(header, line.split(","), strict=False)) for line in lines[1:] if line]
        return {row["svname"]: row for row in rows if row["pxname"] == "replicas"}

    def up(self) -> None:
        if not any(self.alive(name) for name in self.state["pids"]):
            self.state = settings()  # nothing runs: this environment's settings apply
            self.save()
        if not self.alive("redis"):
            self.start_redis()
        wait_until(lambda: redis_ping(self.state["redis"]), 20, "Redis answers PING")
        for name in self.state["replicas"]:
            if not self.alive(name):
                self.start_replica(name)
        for name in self.state["replicas"]:
            self.wait_ready(name)
        if not self.alive("haproxy"):
            self.start_haproxy()
        wait_until(lambda: set(self.safe_servers().values()) == {"UP"}, 30, "HAProxy: all UP")

    def wait_ready(self, name: str) -> None:
        wait_until(lambda: http_status(self.url(name, "/readyz")) == 200, 120, f"{name} ready")

    def safe_servers(self) -> dict[str, str]:
        """HAProxy's status of each replica (UP, DOWN, ...); empty while it does not answer."""
        return {name: row["status"] for name, row in self.safe_rows().items()}

    def safe_rows(self) -> dict[str, dict[str, str]]:
        try:
            return self.server_rows()
        except OSError:
            return {}

    def stop(self, name: str, sig: int = signal.SIGTERM, timeout: float = STOP_SECONDS) -> float:
        """Signal ``name`` and wait until it is gone (SIGKILL after ``timeout``); seconds."""
        started = time.monotonic()
        if self.alive(name):
            os.kill(self.pid(name), sig)
            try:
                wait_until(lambda: not self.alive(name), timeout, f"{name} exits", poll=0.01)
            except TimeoutError:
                os.kill(self.pid(name), signal.SIGKILL)
                wait_until(lambda: not self.alive(name), 10, f"{name} killed", poll=0.01)
        self.state["pids"].pop(name, None)
        self.save()
        return time.monotonic() - started

    def restart(self, name: str) -> dict:
        """SIGTERM ``name``, wait for it to drain and exit, start it, wait until HAProxy has it
        UP again; the figures."""
        log = self.run / "logs" / f"{name}.log"
        seen = log.stat().st_size if log.exists() else 0
        stopped = self.stop(name)
        drained = DRAIN_LINE.findall(log.read_bytes()[seen:].decode(errors="replace"))
        started = time.monotonic()
        self.start_replica(name)
        self.wait_ready(name)
        ready = time.monotonic() - started
        wait_until(lambda: self.safe_servers().get(name) == "UP", 30, f"HAProxy: {name} UP")
        return {
            "replica": name,
            "stop_seconds": round(stopped, 3),
            "drain_seconds": float(drained[-1]) if drained else None,
            "ready_seconds": round(ready, 3),
            "back_in_balancer_seconds": round(time.monotonic() - started, 3),
        }

    def kill(self, name: str) -> dict:
        """SIGKILL ``name``; how long until HAProxy marks it DOWN."""
        os.kill(self.pid(name), signal.SIGKILL)
        killed, killed_at = time.monotonic(), time.time()
        wait_until(lambda: self.safe_servers().get(name, "").startswith("DOWN"), 30,
                   f"HAProxy: {name} DOWN", poll=0.005)  # fmt: skip
        down = time.monotonic() - killed
        self.stop(name)  # gone already: forget its pid
        return {"replica": name, "killed_at": killed_at, "down_after_seconds": round(down, 3)}

    def down(self) -> None:
        for name in self.state["replicas"]:  # all drain at once
            if self.alive(name):
                os.kill(self.pid(name), signal.SIGTERM)
        for name in self.state["replicas"]:
            self.stop(name)
        self.stop("haproxy", signal.SIGUSR1, timeout=15)  # soft stop: open requests finish
        self.stop("redis")
        self.path.unlink(missing_ok=True)  # the next `up` reads its settings afresh

    def status(self) -> dict:
        names = ["redis", *self.state["replicas"], "haproxy"]
        return {
            "processes": {n: self.pid(n) if self.alive(n) else None for n in names},
            "balancer": self.url("balancer"),
            "haproxy": {
                name: {
                    "status": row["status"],
                    "retries": int(row["wretr"] or 0),
                    "redispatches": int(row["wredis"] or 0),
                    "served": int(row["stot"] or 0),
                }
                for name, row in self.safe_rows().items()
            },
        }


def start_token(pid: int) -> str | None:
    """When ``pid`` started, None when it is gone or a zombie: a process is the one stack.py
    started when its pid *and* start time match (a pid the system reused does not)."""
    stat = Path(f"/proc/{pid}/stat")
    try:
        if stat.parent.exists():
            fields = stat.read_text().rsplit(")", 1)[1].split()
            return None if fields[0] == "Z" else fields[19]  # state; starttime (field 22)
    except OSError:
        return None
    ps = subprocess.run(["ps", "-o", "stat=,lstart=", "-p", str(pid)], capture_output=True)
    out = ps.stdout.decode().strip()
    return None if not out or out.startswith("Z") else out.split(None, 1)[1]


def wait_until(predicate, timeout: float, what: str, poll: float = 0.1) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:g} s waiting for: {what}")
        time.sleep(poll)


def http_status(url: str) -> int | None:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code
    except OSError:
        return None


def redis_ping(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")
    except OSError:
        return False


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for command in ("up", "down", "status"):
        sub.add_parser(command)
    for command in ("restart", "kill"):
        sub.add_parser(command).add_argument("replica", type=int, help="1, 2 or 3")
    args = parser.parse_args(argv)
    stack = Stack()
    try:
        if args.command in ("restart", "kill"):
            name = f"r{args.replica}"
            print(json.dumps(getattr(stack, args.command)(name)))
        elif args.command == "status":
            print(json.dumps(stack.status(), indent=2))
        else:
            getattr(stack, args.command)()
            print(json.dumps(stack.status(), indent=2))
    except (TimeoutError, KeyError) as exc:
        print(f"stack.py {args.command}: {exc}; logs in {stack.run / 'logs'}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
