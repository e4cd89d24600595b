"""``/openapi.json`` is a valid OpenAPI 3.2 document generated from the request schemas."""

from __future__ import annotations

import pytest
from openapi_spec_validator import validate
from support import running_app

pytestmark = pytest.mark.anyio


async def test_document_is_valid_openapi_32(conf_dir):
    async with running_app(conf_dir) as (_, client):
        response = await client.get("/openapi.json")
    assert response.status_code == 200
    document = response.json()
    validate(document)
    assert document["openapi"] == "3.2.0"
    for path in ("/health", "/healthz", "/readyz", "/v1/models", "/v1/models/current",
                 "/v1/models/load", "/v1/chat/completions"):  # fmt: skip
        assert path in document["paths"], path
    chat = document["paths"]["/v1/chat/completions"]["post"]
    request_ref = chat["requestBody"]["content"]["application/json"]["schema"]["$ref"]
    request_schema = document["components"]["schemas"][request_ref.rsplit("/", 1)[1]]
    assert {"messages", "stream", "tools", "stream_options"} <= set(request_schema["properties"])
    assert "text/event-stream" in chat["responses"]["200"]["content"]
    assert chat["responses"]["422"]["content"]["application/json"]["schema"]["$ref"].endswith(
        "/ErrorBody"
    )
