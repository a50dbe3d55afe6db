"""The OpenAPI document says exactly what the contract says: each command endpoint's request
body, with its references resolved, equals contract/Relationship/messages/<name>.schema.json;
every message has its endpoint; every endpoint documents its refusals as problem documents."""

from __future__ import annotations

import json
from typing import Any

import pytest

from events.commands import COMMAND_TYPES
from mentorflow.api.app import create_app
from mentorflow.api.settings import ApiSettings
from tests.support.session import project_root

COMMANDS = "/v1/relationships/{programme_id}/{relationship_id}/commands/"


@pytest.fixture(scope="module")
def document() -> dict[str, Any]:
    app = create_app(api_settings=ApiSettings(key_secret="x" * 32))  # type: ignore[arg-type]
    result: dict[str, Any] = app.openapi()
    return result


def resolve(node: Any, root: dict[str, Any], prefix: str) -> Any:
    """`node` with every `$ref` starting with `prefix` replaced by what it names, recursively."""
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str) and ref.startswith(prefix):
            target: Any = root
            for part in ref.removeprefix("#/").split("/"):
                target = target[part]
            return resolve({k: v for k, v in node.items() if k != "$ref"} | target, root, prefix)
        return {key: resolve(value, root, prefix) for key, value in node.items() if key not in ("$defs", "$comment", "$schema")}
    if isinstance(node, list):
        return [resolve(item, root, prefix) for item in node]
    return node


def test_every_command_endpoint_takes_exactly_the_contracts_payload(document: dict[str, Any]) -> None:
    contract_dir = project_root() / "contract" / "Relationship" / "messages"
    endpoints = {path.removeprefix(COMMANDS) for path in document["paths"] if path.startswith(COMMANDS)}
    assert endpoints == set(COMMAND_TYPES)
    assert endpoints == {path.name.removesuffix(".schema.json") for path in contract_dir.glob("*.schema.json")}
    for message in sorted(endpoints):
        body = document["paths"][COMMANDS + message]["post"]["requestBody"]
        assert body["required"] is True
        served = resolve(body["content"]["application/json"]["schema"], document, "#/components/schemas/")
        contract = json.loads((contract_dir / f"{message}.schema.json").read_text())
        published = resolve(contract, contract, "#/$defs/")
        assert served == published, message


def test_every_endpoint_answers_refusals_as_problem_documents(document: dict[str, Any]) -> None:
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            if path in ("/v1/health", "/v1/problems/{code}"):
                continue
            problems = {status for status, response in operation["responses"].items()
                        if "application/problem+json" in response.get("content", {})}  # fmt: skip
            assert {"401", "403", "429"} <= problems, (method, path, problems)
    result = document["paths"][COMMANDS + "propose_match"]["post"]["responses"]["200"]
    served = resolve(result["content"]["application/json"]["schema"], document, "#/components/schemas/")
    published_path = project_root() / "contract" / "Relationship" / "update-results" / "CommandResult.schema.json"
    published = json.loads(published_path.read_text())
    assert served == resolve(published, published, "#/$defs/")


async def test_the_document_is_served_with_interactive_docs() -> None:
    import httpx

    # Without the lifespan (no Temporal needed): the document and the docs page are static.
    app = create_app(api_settings=ApiSettings(key_secret="x" * 32))  # type: ignore[arg-type]
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://api") as client:
        assert (await client.get("/v1/openapi.json")).json()["openapi"].startswith("3.1")
        assert "swagger" in (await client.get("/v1/docs")).text.lower()
