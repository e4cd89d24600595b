"""The local deployment's files agree with each other, and each parses with its own tool:
HAProxy's configuration check, Redis's, the Prometheus scrape configuration."""

from __future__ import annotations

import importlib.util
import subprocess
import time

import yaml
from deploy_support import STACK, require_tool
from support import free_port

LOCAL = STACK.parent


def stack_defaults() -> dict:
    spec = importlib.util.spec_from_file_location("stack_module", STACK)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.settings()


def test_prometheus_scrapes_every_replica_and_the_balancer():
    defaults = stack_defaults()
    config = yaml.safe_load((LOCAL / "prometheus.yml").read_text())
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    (replicas,) = jobs["ddx-llm"]["static_configs"]
    # each replica on its own port, never through the balancer
    assert replicas["targets"] == [f"127.0.0.1:{p}" for p in defaults["replicas"].values()]
    assert jobs["haproxy"]["static_configs"][0]["targets"] == [f"127.0.0.1:{defaults['stats']}"]
    assert all(job["metrics_path"] == "/metrics" for job in jobs.values())


def test_haproxy_accepts_its_configuration(tmp_path):
    haproxy = require_tool("haproxy", "ensure_haproxy.sh")
    defaults = stack_defaults()
    env = {"DDX_DEPLOY_RUN": str(tmp_path), "DDX_DEPLOY_BALANCER_PORT": "4260",
           "DDX_DEPLOY_STATS_PORT": "4269"}  # fmt: skip
    names = list(defaults["replicas"])
    for index, port in enumerate(defaults["replicas"].values(), start=1):
        env[f"DDX_DEPLOY_R{index}_PORT"] = str(port)
    checked = subprocess.run(
        [haproxy, "-c", "-f", str(LOCAL / "haproxy.cfg")], env=env, capture_output=True, text=True
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "warning" not in (checked.stdout + checked.stderr).lower()
    servers = [line.split()[1] for line in (LOCAL / "haproxy.cfg").read_text().splitlines()
               if line.strip().startswith("server ")]  # fmt: skip
    assert servers == names


def test_redis_accepts_its_configuration(tmp_path):
    redis = require_tool("redis-server", "ensure_redis.sh")
    # Redis has no "check the file" mode: start it on a free port and ask for its settings.

    port = free_port()
    process = subprocess.Popen(
        [redis, str(LOCAL / "redis.conf"), "--port", str(port), "--dir", str(tmp_path)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        import redis as redis_py

        client = redis_py.Redis(port=port, socket_connect_timeout=0.5, decode_responses=True)
        for _ in range(100):
            try:
                client.ping()
                break
            except redis_py.ConnectionError:
                if process.poll() is not None:
                    raise AssertionError(process.stdout.read().decode()) from None
                time.sleep(0.05)
        assert client.config_get("appendonly") == {"appendonly": "yes"}
        assert client.config_get("maxmemory-policy") == {"maxmemory-policy": "noeviction"}
    finally:
        process.terminate()
        process.wait(timeout=10)


def test_the_replicas_conf_is_valid_and_shares_the_project_models(tmp_path):
    from ddx_llm.config import load_core

    settings = load_core(LOCAL / "conf")
    assert settings.registry.first() is not None  # models.toml is the project's (a link)
    assert (LOCAL / "conf" / "models.toml").resolve() == (STACK.parents[2] / "conf" / "models.toml")
    assert settings.resolve_path(settings.core.plugins_dir) == STACK.parents[2] / "plugins"
    assert "rate_limit" not in settings.core.disabled_plugins
