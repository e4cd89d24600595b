"""OpenAI's published JSON schemas for legacy text completions, as test data.

``data/completion_schemas.json`` holds the ``components.schemas`` of OpenAI's OpenAPI spec
(repository ``openai/openai-openapi``, file ``openapi.yaml``, the commit recorded in its
``source``) needed to validate ``CreateCompletionRequest`` and ``CreateCompletionResponse`` (one
object, streamed chunks included: OpenAI gives both the same shape), plus every schema they
reference, transitively — extracted exactly as ``tests/openai_schemas.py`` extracts the chat
schemas (OpenAPI 3.0's ``nullable: true`` rewritten as ``anyOf [S, null]``; nothing else changed).

Use::

    from completions_schemas import validate
    validate("CreateCompletionResponse", body)   # raises jsonschema.ValidationError
    errors("CreateCompletionRequest", body)      # [] when valid

Refresh (needs PyYAML and a checkout of the spec repository)::

    git clone --depth 1 https://github.com/openai/openai-openapi /tmp/oa
    python tests/plugins/completions/completions_schemas.py --refresh /tmp/oa/openapi.yaml \\
        --commit "$(git -C /tmp/oa rev-parse HEAD)"
"""

from __future__ import annotations

import functools
import json
import sys
from pathlib import Path
from typing import Any

import jsonschema
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

DATA_FILE = Path(__file__).resolve().parent / "data" / "completion_schemas.json"
ROOT_SCHEMAS = ("CreateCompletionRequest", "CreateCompletionResponse")
_URI = "urn:openai-openapi:completion-schemas"


@functools.cache
def document() -> dict[str, Any]:
    return json.loads(DATA_FILE.read_text(encoding="utf-8"))


@functools.cache
def _validator(schema_name: str) -> jsonschema.Draft202012Validator:
    resource = Resource.from_contents(document(), default_specification=DRAFT202012)
    registry = Registry().with_resource(_URI, resource)
    ref = f"{_URI}#/components/schemas/{schema_name}"
    return jsonschema.Draft202012Validator({"$ref": ref}, registry=registry)


def errors(schema_name: str, instance: Any) -> list[str]:
    """Every validation error of ``instance`` as ``"<json path>: <message>"``."""
    found = _validator(schema_name).iter_errors(instance)
    return sorted(f"{error.json_path}: {error.message}" for error in found)


def validate(schema_name: str, instance: Any) -> None:
    """Raise ``jsonschema.ValidationError`` listing every error of ``instance``."""
    problems = errors(schema_name, instance)
    if problems:
        raise jsonschema.ValidationError(f"{schema_name}:\n  " + "\n  ".join(problems))


def _refresh(spec_path: str, commit: str) -> None:
    import yaml

    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    from openai_schemas import extract

    with open(spec_path, encoding="utf-8") as fh:
        spec = yaml.load(fh, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    schemas, rewritten = extract(spec, ROOT_SCHEMAS)
    out = {
        "source": {
            "repository": "openai/openai-openapi",
            "commit": commit,
            "path": Path(spec_path).name,
            "openapi": spec["openapi"],
            "info_version": spec.get("info", {}).get("version"),
            "roots": list(ROOT_SCHEMAS),
            "nullable_rewritten": rewritten,
            "notes": "Transitive closure of the roots under components.schemas, copied "
            "verbatim except that OpenAPI 3.0's 'nullable: true' (ignored by JSON Schema "
            "validators) is rewritten as {anyOf: [S, {type: null}]} where listed.",
        },
        "components": {"schemas": schemas},
    }
    DATA_FILE.parent.mkdir(parents=True, exist_ok=True)
    DATA_FILE.write_text(json.dumps(out, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    print(f"wrote {DATA_FILE}: {len(schemas)} schemas, {len(rewritten)} nullable rewrites")


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description="Regenerate data/completion_schemas.json")
    parser.add_argument("--refresh", metavar="OPENAPI_YAML", required=True)
    parser.add_argument("--commit", required=True, help="commit sha of openai/openai-openapi")
    args = parser.parse_args()
    _refresh(args.refresh, args.commit)
