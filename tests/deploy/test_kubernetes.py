"""deploy/kubernetes/ without a cluster: every built-in resource against the Kubernetes API's
own schemas (kubernetes-validate, strict: unknown fields are errors), the custom ones
(InferencePool, Gateway, HTTPRoute) against their CRDs' schemas, and the promises that tie
them together — probes, the drain's time budget, selectors, ports, names, the conf."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from crd_schemas import errors as crd_errors
from crd_schemas import kinds as crd_kinds
from deploy_support import DEPLOY
from support import ROOT

from ddx_llm.host.drain import SETTLE_SECONDS

K8S = DEPLOY / "kubernetes"
VERSIONS = ("1.33.0", "1.37.0")  # a widely run release and the newest the validator knows


def documents() -> list[tuple[str, dict[str, Any]]]:
    out = []
    for path in sorted(K8S.glob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        out.extend((path.name, doc) for doc in yaml.safe_load_all(path.read_text()) if doc)
    return out


def one(kind: str, name: str | None = None) -> dict[str, Any]:
    found = [
        d for _, d in documents()
        if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)
    ]  # fmt: skip
    assert len(found) == 1, (kind, name, len(found))
    return found[0]


@pytest.mark.parametrize("version", VERSIONS)
def test_every_resource_matches_its_schema(version):
    custom = set(crd_kinds())
    checked = set()
    for filename, doc in documents():
        key = f"{doc['apiVersion']}/{doc['kind']}"
        if key in custom:
            assert crd_errors(doc) == [], (filename, key)
        else:
            try:
                kubernetes_validate.validate(doc, version, strict=True)
            except kubernetes_validate.ValidationError as exc:
                pytest.fail(f"{filename}: {doc['kind']} {doc['metadata']['name']}: {exc}")
        checked.add(doc["kind"])
    assert {"Deployment", "Service", "PodDisruptionBudget", "ConfigMap", "Secret",
            "InferencePool", "HTTPRoute", "Gateway"} <= checked  # fmt: skip


def test_the_validators_do_refuse_a_broken_manifest():
    """The checks above are not vacuous: a wrong field and a wrong type are caught."""
    deployment = one("Deployment", "ddx-llm")
    broken = yaml.safe_load(yaml.safe_dump(deployment))
    broken["spec"]["template"]["spec"]["terminationGracePeriod"] = 60
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, VERSIONS[0], strict=True)
    pool = yaml.safe_load(yaml.safe_dump(one("InferencePool")))
    pool["spec"]["targetPorts"] = [{"number": "4250"}]
    assert crd_errors(pool)


def test_kustomization_lists_every_manifest():
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    files = sorted(p.name for p in K8S.glob("*.yaml") if p.name != "kustomization.yaml")
    assert sorted(kustomization["resources"]) == files


def conf_files() -> dict[str, str]:
    return one("ConfigMap", "ddx-llm-conf")["data"]


def container() -> dict[str, Any]:
    (main,) = one("Deployment", "ddx-llm")["spec"]["template"]["spec"]["containers"]
    return main


def test_probes_drain_and_grace_period_fit_together():
    pod = one("Deployment", "ddx-llm")["spec"]["template"]["spec"]
    main = container()
    assert main["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert main["livenessProbe"]["httpGet"]["path"] == "/health"
    assert main["args"][0] == "serve"  # ddx-llm serve: the drain and the exit statuses are its own
    pre_stop = main["lifecycle"]["preStop"]["sleep"]["seconds"]
    core = tomllib.loads(conf_files()["ddx-llm.toml"])["core"]
    graceful = tomllib.loads(conf_files()["hypercorn.toml"])["graceful_timeout"]
    longest = pre_stop + core["drain_seconds"] + SETTLE_SECONDS + graceful
    assert pod["terminationGracePeriodSeconds"] > longest, (
        pod["terminationGracePeriodSeconds"],
        longest,
    )
    strategy = one("Deployment", "ddx-llm")["spec"]["strategy"]["rollingUpdate"]
    assert strategy["maxUnavailable"] == 0


def test_names_selectors_and_ports_agree():
    deployment = one("Deployment", "ddx-llm")
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    for selector in (
        deployment["spec"]["selector"]["matchLabels"],
        one("Service", "ddx-llm")["spec"]["selector"],
        one("PodDisruptionBudget")["spec"]["selector"]["matchLabels"],
        one("InferencePool")["spec"]["selector"]["matchLabels"],
    ):
        assert selector.items() <= labels.items()
    (port,) = container()["ports"]
    bind = tomllib.loads(conf_files()["hypercorn.toml"])["bind"][0]
    assert (
        bind.endswith(f":{port['containerPort']}")
        and f":{port['containerPort']}" in container()["args"][-1]
    )
    pool = one("InferencePool")["spec"]
    assert [p["number"] for p in pool["targetPorts"]] == [port["containerPort"]]
    assert len({p["number"] for p in pool["targetPorts"]}) == len(pool["targetPorts"])  # CEL rule
    picker = pool["endpointPickerRef"]
    epp_service = one("Service", picker["name"])
    assert picker["port"]["number"] in [p["port"] for p in epp_service["spec"]["ports"]]
    (route_rule,) = one("HTTPRoute")["spec"]["rules"]
    (backend,) = route_rule["backendRefs"]
    assert (backend["group"], backend["kind"], backend["name"]) == (
        "inference.networking.k8s.io", "InferencePool", one("InferencePool")["metadata"]["name"]
    )  # fmt: skip
    assert one("HTTPRoute")["spec"]["parentRefs"][0]["name"] == one("Gateway")["metadata"]["name"]


def test_keys_come_from_the_secret_and_conf_from_the_configmap():
    main = container()
    env = {e["name"]: e for e in main["env"]}
    secret = one("Secret")
    ref = env["DDX_LLM_API_KEYS"]["valueFrom"]["secretKeyRef"]
    assert ref["name"] == secret["metadata"]["name"] and ref["key"] in secret["stringData"]
    conf_dir = env["DDX_LLM_CONF_DIR"]["value"]
    mounts = {m["name"]: m["mountPath"] for m in main["volumeMounts"]}
    volumes = {
        v["name"]: v for v in one("Deployment", "ddx-llm")["spec"]["template"]["spec"]["volumes"]
    }
    conf_volume = next(name for name, path in mounts.items() if path == conf_dir)
    assert volumes[conf_volume]["configMap"]["name"] == "ddx-llm-conf"
    assert set(conf_files()) == {"ddx-llm.toml", "hypercorn.toml", "models.toml"}
    assert container()["securityContext"]["readOnlyRootFilesystem"] is True
    writable = {mounts[name] for name, volume in volumes.items() if "emptyDir" in volume}
    data_dir = tomllib.loads(conf_files()["ddx-llm.toml"])["responses"]["data_dir"]
    assert any(data_dir.startswith(path) for path in writable)  # SQLite can write


def test_the_configmap_is_a_valid_ddx_llm_conf(tmp_path, monkeypatch):
    """The mounted files build the app: mlx backend, completions as chat turns, vLLM names."""
    from ddx_llm.factory import create_app

    conf = tmp_path / "conf"
    conf.mkdir()
    for name, text in conf_files().items():
        (conf / name).write_text(text)
    monkeypatch.setenv("DDX_LLM_API_KEYS", "k")  # env = "prod" needs keys
    monkeypatch.setenv("DDX_LLM_PLUGINS_DIR", str(ROOT / "plugins"))  # the image's /opt/ddx-llm
    app = create_app(conf).context
    assert app.backend.name == "mlx"
    assert app.settings.section("completions").prompt == "raw"
    assert app.settings.section("metrics").vllm_names is True
    assert "/v1/completions" in [getattr(r, "path", None) for r in app.routes]
    pod_labels = one("Deployment", "ddx-llm")["spec"]["template"]["metadata"]["labels"]
    assert pod_labels["llm-d.ai/engine-type"] == "vllm"  # the picker reads vLLM's names


def test_the_endpoint_picker_config_is_whole():
    config = yaml.safe_load(one("ConfigMap", "ddx-llm-epp")["data"]["epp-config.yaml"])
    assert (config["apiVersion"], config["kind"]) == ("llm-d.ai/v1alpha1", "EndpointPickerConfig")
    defined = {plugin.get("name", plugin["type"]) for plugin in config["plugins"]}
    for profile in config["schedulingProfiles"]:
        for ref in profile["plugins"]:
            assert ref["pluginRef"] in defined, ref
    source = next(p for p in config["plugins"] if p["type"] == "metrics-data-source")
    assert source["parameters"]["path"] == "/metrics"
    (epp,) = one("Deployment", "ddx-llm-epp")["spec"]["template"]["spec"]["containers"]
    args = dict(arg.removeprefix("--").split("=", 1) for arg in epp["args"])
    assert args["pool-name"] == one("InferencePool")["metadata"]["name"]
    mount = next(m["mountPath"] for m in epp["volumeMounts"] if m["name"] == "config")
    assert args["config-file"] == f"{mount}/epp-config.yaml"
    role = one("Role", "ddx-llm-epp")
    assert any("inferencepools" in rule["resources"] for rule in role["rules"])
    assert one("RoleBinding")["subjects"][0]["name"] == one("ServiceAccount")["metadata"]["name"]


def test_the_image_runs_as_the_user_the_pod_asks_for():
    dockerfile = (DEPLOY / "container" / "Dockerfile").read_text()
    (user,) = re.findall(r"^USER (\d+)", dockerfile, re.MULTILINE)
    pod = one("Deployment", "ddx-llm")["spec"]["template"]["spec"]["securityContext"]
    assert int(user) == pod["runAsUser"] and pod["runAsNonRoot"] is True
    exposed = re.findall(r"^EXPOSE (\d+)", dockerfile, re.MULTILINE)
    assert exposed == [str(container()["ports"][0]["containerPort"])]
    models_dir = tomllib.loads(conf_files()["ddx-llm.toml"])["core"]["models_dir"]
    assert models_dir in dockerfile  # the model converted at build time is where the conf looks
    assert Path(ROOT / "plugins" / "rate_limit.py").is_file()
