"""The OpenAPI schemas of the custom resources deploy/kubernetes/ uses, as test data.

``data/crd_schemas.json`` holds, for each ``group/version/Kind``, the ``openAPIV3Schema`` of
that version in its CustomResourceDefinition — descriptions removed (they are most of the
size and no validator reads them), nothing else changed:

* ``inference.networking.k8s.io/v1/InferencePool`` — kubernetes-sigs/gateway-api-inference-
  extension, ``config/crd/bases/inference.networking.k8s.io_inferencepools.yaml``;
* ``gateway.networking.k8s.io/v1/Gateway`` and ``.../HTTPRoute`` — kubernetes-sigs/gateway-api,
  ``config/crd/standard/gateway.networking.k8s.io_{gateways,httproutes}.yaml``;

at the release tags recorded in the file's ``source``.  The API server would also run the
CEL rules (``x-kubernetes-validations``); a JSON Schema validator does not, so the tests check
the few that matter here by hand.

Refresh from checkouts of both repositories::

    python tests/deploy/crd_schemas.py --refresh \\
        GIE_CHECKOUT:v1.6.0:config/crd/bases/inference.networking.k8s.io_inferencepools.yaml \\
        GATEWAY_API_CHECKOUT:v1.6.1:config/crd/standard/gateway.networking.k8s.io_gateways.yaml \\
        GATEWAY_API_CHECKOUT:v1.6.1:config/crd/standard/gateway.networking.k8s.io_httproutes.yaml
"""

from __future__ import annotations

import functools
import json
import subprocess
from pathlib import Path
from typing import Any

import jsonschema

DATA_FILE = Path(__file__).resolve().parent / "data" / "crd_schemas.json"
REPOSITORIES = {
    "inference.networking.k8s.io": "kubernetes-sigs/gateway-api-inference-extension",
    "gateway.networking.k8s.io": "kubernetes-sigs/gateway-api",
}


@functools.cache
def document() -> dict[str, Any]:
    return json.loads(DATA_FILE.read_text(encoding="utf-8"))


def kinds() -> list[str]:
    return sorted(document()["schemas"])


def errors(resource: dict[str, Any]) -> list[str]:
    """Every schema error of a custom resource (``apiVersion``/``kind`` pick the schema);
    KeyError for a kind not stored here."""
    schema = document()["schemas"][f"{resource['apiVersion']}/{resource['kind']}"]
    validator = jsonschema.Draft7Validator(schema)
    return sorted(f"{e.json_path}: {e.message}" for e in validator.iter_errors(resource))


def _strip(node: Any) -> Any:
    if isinstance(node, dict):
        return {k: _strip(v) for k, v in node.items() if k != "description"}
    if isinstance(node, list):
        return [_strip(v) for v in node]
    return node


def _refresh(sources: list[str]) -> None:
    import yaml

    schemas, provenance = {}, []
    for source in sources:
        checkout, tag, path = source.split(":", 2)
        text = subprocess.run(
            ["git", "-C", checkout, "show", f"{tag}:{path}"],
            check=True, capture_output=True, text=True,
        ).stdout  # fmt: skip
        crd = yaml.safe_load(text)
        commit = subprocess.run(
            ["git", "-C", checkout, "rev-parse", f"{tag}^{{commit}}"],
            check=True, capture_output=True, text=True,
        ).stdout.strip()  # fmt: skip
        group, kind = crd["spec"]["group"], crd["spec"]["names"]["kind"]
        for version in crd["spec"]["versions"]:
            if version.get("storage"):  # the version stored: the one to write manifests in
                schema = _strip(version["schema"]["openAPIV3Schema"])
                schemas[f"{group}/{version['name']}/{kind}"] = schema
        provenance.append(
            {"repository": REPOSITORIES[group], "tag": tag, "commit": commit, "path": path}
        )
    out = {"source": provenance, "schemas": schemas}
    DATA_FILE.parent.mkdir(parents=True, exist_ok=True)
    DATA_FILE.write_text(json.dumps(out, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    print(f"wrote {DATA_FILE}: {', '.join(sorted(schemas))}")


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description="Regenerate data/crd_schemas.json")
    parser.add_argument("--refresh", nargs="+", required=True, metavar="CHECKOUT:TAG:PATH")
    _refresh(parser.parse_args().refresh)
