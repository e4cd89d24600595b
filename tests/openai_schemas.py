"""OpenAI's published JSON schemas for chat responses, as test data.

``tests/data/openai/chat_schemas.json`` holds the ``components.schemas`` of
OpenAI's OpenAPI spec (repository ``openai/openai-openapi``, file
``openapi.yaml``, commit ``f85dbe223d40e1a31cba812ab2d755c7e98a92a3``,
2026-08-21, ``openapi: 3.1.0``) that are needed to validate

* ``ListModelsResponse`` (``GET /v1/models``) and ``Model``,
* ``CreateChatCompletionResponse`` (``POST /v1/chat/completions``),
* ``CreateChatCompletionStreamResponse`` (one ``data:`` chunk of a stream),

plus every schema they reference, transitively, and nothing else. The spec
claims OpenAPI 3.1 (JSON Schema 2020-12) but a few stream-chunk properties
still carry the 3.0 keyword ``nullable: true``, which a JSON Schema validator
ignores; the stored copy rewrites each of them as
``anyOf: [<schema>, {"type": "null"}]``. ``source.notes`` and
``source.nullable_rewritten`` in the JSON file list them. Nothing else is
changed.

Use::

    from openai_schemas import validate, schema_names
    validate("CreateChatCompletionResponse", body)   # raises jsonschema.ValidationError

Refresh (needs PyYAML and a checkout or bare mirror of the spec repository)::

    git clone --depth 1 https://github.com/openai/openai-openapi /tmp/oa
    python tests/openai_schemas.py --refresh /tmp/oa/openapi.yaml \\
        --commit "$(git -C /tmp/oa rev-parse HEAD)"
    # (from a bare mirror: git --git-dir=DIR show main:openapi.yaml > /tmp/openapi.yaml)

then update the commit in this docstring, run the tests, and read the diff of
the JSON file: new required fields there are changes the service must follow.
"""

from __future__ import annotations

import copy
import functools
import json
from pathlib import Path
from typing import Any

import jsonschema
from jsonschema.exceptions import best_match
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

DATA_FILE = Path(__file__).resolve().parent / "data" / "openai" / "chat_schemas.json"
ROOT_SCHEMAS = (
    "ListModelsResponse",
    "CreateChatCompletionResponse",
    "CreateChatCompletionStreamResponse",
)
_URI = "urn:openai-openapi:chat-schemas"
_PREFIX = "#/components/schemas/"


@functools.cache
def document() -> dict[str, Any]:
    """The stored document: ``{"source": {...}, "components": {"schemas": {...}}}``."""
    with DATA_FILE.open(encoding="utf-8") as fh:
        return json.load(fh)


def schema_names() -> list[str]:
    """Names of the stored component schemas, sorted."""
    return sorted(document()["components"]["schemas"])


@functools.cache
def _validator(schema_name: str) -> jsonschema.Draft202012Validator:
    if schema_name not in document()["components"]["schemas"]:
        raise KeyError(f"unknown schema {schema_name!r}; known: {', '.join(schema_names())}")
    resource = Resource.from_contents(document(), default_specification=DRAFT202012)
    registry = Registry().with_resource(_URI, resource)
    # No format_checker: OpenAI uses non-standard formats such as "unixtime".
    return jsonschema.Draft202012Validator(
        {"$ref": f"{_URI}{_PREFIX}{schema_name}"}, registry=registry
    )


def _explain_alternatives(error: jsonschema.ValidationError, lines: list[str], indent: str) -> None:
    """For an anyOf/oneOf failure, say why each alternative failed (two levels deep)."""
    for sub in sorted(error.context, key=lambda e: (str(e.relative_schema_path[0]), e.message))[:8]:
        lines.append(
            f"{indent}alternative {sub.relative_schema_path[0]}: {sub.json_path}: {sub.message}"
        )
        if len(indent) < 10:
            _explain_alternatives(sub, lines, indent + "    ")


def validate(schema_name: str, instance: Any) -> None:
    """Validate ``instance`` against ``#/components/schemas/<schema_name>``.

    Raises ``jsonschema.ValidationError`` whose message lists every error with
    its JSON path (for ``anyOf``/``oneOf`` failures, also why each alternative
    failed); ``.context`` holds the original errors, ``.path`` and
    ``.schema_path`` are those of the most relevant one.
    """
    errors = sorted(
        _validator(schema_name).iter_errors(instance),
        key=lambda e: (list(map(str, e.path)), e.message),
    )
    if not errors:
        return
    lines: list[str] = []
    for error in errors:
        lines.append(f"  - {error.json_path}: {error.message}")
        _explain_alternatives(error, lines, "      ")
    best = best_match(errors)
    noun = "error" if len(errors) == 1 else "errors"
    lines = [line if len(line) <= 300 else line[:297] + "..." for line in lines]
    message = f"{schema_name}: {len(errors)} validation {noun}\n" + "\n".join(lines)
    raise jsonschema.ValidationError(
        message, path=best.path, schema_path=best.schema_path, context=errors
    )


# --- refresh ---------------------------------------------------------------------------------


def _refs(node: Any) -> set[str]:
    found: set[str] = set()
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref" and isinstance(value, str):
                if not value.startswith(_PREFIX):
                    raise ValueError(f"unexpected $ref {value!r}")
                found.add(value[len(_PREFIX) :])
            else:
                found |= _refs(value)
    elif isinstance(node, list):
        for value in node:
            found |= _refs(value)
    return found


def _fix_nullable(node: Any, path: str, rewritten: list[str]) -> Any:
    """Rewrite OpenAPI 3.0 ``nullable: true`` as ``anyOf: [<schema>, {"type": "null"}]``."""
    if isinstance(node, list):
        return [_fix_nullable(v, f"{path}/{i}", rewritten) for i, v in enumerate(node)]
    if not isinstance(node, dict):
        return node
    node = {k: _fix_nullable(v, f"{path}/{k}", rewritten) for k, v in node.items()}
    if "nullable" not in node:
        return node
    nullable = node.pop("nullable")
    if not nullable:
        return node
    rewritten.append(path)
    outer = {k: node.pop(k) for k in ("description", "title", "deprecated") if k in node}
    outer["anyOf"] = [node, {"type": "null"}]
    return outer


def extract(
    spec: dict[str, Any], roots: tuple[str, ...] = ROOT_SCHEMAS
) -> tuple[dict[str, Any], list[str]]:
    """The transitive closure of ``roots`` in ``spec``, with ``nullable`` rewritten."""
    all_schemas = spec["components"]["schemas"]
    todo, closure = list(roots), {}
    while todo:
        name = todo.pop()
        if name not in closure:
            closure[name] = copy.deepcopy(all_schemas[name])
            todo.extend(_refs(closure[name]))
    rewritten: list[str] = []
    fixed = {
        name: _fix_nullable(closure[name], f"{_PREFIX}{name}", rewritten)
        for name in sorted(closure)
    }
    return fixed, rewritten


def _refresh(spec_path: str, commit: str) -> None:
    import yaml  # only needed here

    with open(spec_path, encoding="utf-8") as fh:
        spec = yaml.load(fh, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    schemas, rewritten = extract(spec)
    closure = f"Transitive closure of {', '.join(ROOT_SCHEMAS)} under components.schemas"
    notes = f"{closure}, copied verbatim."
    if rewritten:
        notes = (
            f"{closure}, copied verbatim except: the spec says OpenAPI 3.1 (JSON Schema "
            "2020-12) but still uses the OpenAPI 3.0 keyword 'nullable: true' in the places "
            "listed in nullable_rewritten; a JSON Schema validator ignores that keyword, so "
            "each such schema S was rewritten as {anyOf: [S, {type: null}]} "
            "(description/title/deprecated moved to the outer level)."
        )
    out = {
        "source": {
            "repository": "openai/openai-openapi",
            "commit": commit,
            "path": Path(spec_path).name,
            "openapi": spec["openapi"],
            "info_version": spec.get("info", {}).get("version"),
            "roots": list(ROOT_SCHEMAS),
            "nullable_rewritten": rewritten,
            "notes": notes,
        },
        "components": {"schemas": schemas},
    }
    DATA_FILE.parent.mkdir(parents=True, exist_ok=True)
    DATA_FILE.write_text(json.dumps(out, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    print(f"wrote {DATA_FILE}: {len(schemas)} schemas, {len(rewritten)} nullable rewrites")


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description="Regenerate tests/data/openai/chat_schemas.json")
    parser.add_argument("--refresh", metavar="OPENAPI_YAML", required=True)
    parser.add_argument("--commit", required=True, help="commit sha of openai/openai-openapi")
    args = parser.parse_args()
    _refresh(args.refresh, args.commit)
