"""The OpenAPI document: FastAPI's, with the contract's own JSON Schemas for what the API
takes and gives back.

A command endpoint's request body is exactly the message's schema of `contract/` (built by
`mentorflow.contract.schema_of` from the same model); the endpoint validates the body with
`read_command`, as the workflow does, not with FastAPI. JSON Schema's `$defs` move into
`components/schemas` (OpenAPI 3.1 resolves `$ref`s from the document root);
tests/api/test_api_openapi.py checks each body still equals its contract file.
"""

from __future__ import annotations

import copy
import json
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from events.commands import COMMAND_TYPES
from mentorflow.api.problems import PROBLEM_SCHEMA
from mentorflow.contract import schema_of

COMPONENTS = "#/components/schemas/"


def message_schema(message: str) -> dict[str, Any]:
    """The contract's schema of a message's payload (as in contract/Relationship/messages/)."""
    return schema_of(COMMAND_TYPES[message], "validation")


def _rewrite_refs(node: Any, names: dict[str, str]) -> Any:
    if isinstance(node, dict):
        return {
            key: (COMPONENTS + names[value.removeprefix("#/$defs/")] if key == "$ref" and isinstance(value, str)
                  and value.startswith("#/$defs/") else _rewrite_refs(value, names))
            for key, value in node.items()
        }  # fmt: skip
    if isinstance(node, list):
        return [_rewrite_refs(item, names) for item in node]
    return node


def hoist(name: str, schema: dict[str, Any], components: dict[str, Any]) -> str:
    """Put `schema` and its `$defs` into `components` (renaming definitions that would clash
    with a different one already there); returns the reference to the schema."""
    schema = copy.deepcopy(schema)
    for key in ("$schema", "$comment"):
        schema.pop(key, None)
    definitions: dict[str, Any] = schema.pop("$defs", {})
    names = {definition: definition for definition in definitions}
    rewritten = {names[d]: _rewrite_refs(body, names) for d, body in definitions.items()}
    if any(n in components and components[n] != body for n, body in rewritten.items()):
        names = {definition: f"{name}.{definition}" for definition in definitions}
        rewritten = {names[d]: _rewrite_refs(body, names) for d, body in definitions.items()}
    components.update(rewritten)
    top = _rewrite_refs(schema, names)
    if name in components and components[name] != top:
        raise ValueError(f"two different schemas want the name {name}")
    components[name] = top
    return COMPONENTS + name


# Extra schemas the routes refer to by name: (type, mode).
def _named_types() -> dict[str, tuple[Any, str]]:
    from events.people import Participant, Programme
    from events.state import RelationshipState
    from pairing.profiles import MenteeProfile, MentorProfile
    from workflows.matching_round import MatchingRoundResult, RoundProgress
    from events.relationship_io import CommandResult
    from mentorflow.api.schemas import EventsPage

    return {
        "CommandResult": (CommandResult, "serialization"),
        "EventsPage": (EventsPage, "serialization"),
        "RelationshipState": (RelationshipState, "serialization"),
        "Programme": (Programme, "validation"),
        "Participant": (Participant, "validation"),
        "MentorProfile": (MentorProfile, "validation"),
        "MenteeProfile": (MenteeProfile, "validation"),
        "RoundProgress": (RoundProgress, "serialization"),
        "MatchingRoundResult": (MatchingRoundResult, "serialization"),
    }


def build_document(app: FastAPI) -> dict[str, Any]:
    document = get_openapi(
        title=app.title, version=app.version, description=app.description, routes=app.routes, openapi_version="3.1.0"
    )
    components: dict[str, Any] = document.setdefault("components", {}).setdefault("schemas", {})
    components["Problem"] = PROBLEM_SCHEMA
    # What callers send first: their definitions keep the plain names (`ProgrammeSettings`
    # as it is sent); answers' definitions that differ get their schema's name in front.
    for message, model in COMMAND_TYPES.items():
        hoist(model.__name__, message_schema(message), components)
    named = sorted(_named_types().items(), key=lambda item: item[1][1] != "validation")
    for name, (type_, mode) in named:
        hoist(name, schema_of(type_, mode), components)  # type: ignore[arg-type]
    document["components"]["securitySchemes"] = {
        "bearer": {
            "type": "http",
            "scheme": "bearer",
            "description": "An API key (mfk_…) or a person's single-sign-on token (a JWT).",
        }
    }
    document["security"] = [{"bearer": []}]
    # Make sure it is plain JSON (FastAPI's document may hold enums and tuples).
    result: dict[str, Any] = json.loads(json.dumps(document))
    return result


def install_openapi(app: FastAPI) -> None:
    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = build_document(app)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def body_of(message: str) -> dict[str, Any]:
    """`openapi_extra` for a command endpoint: its request body is the message's schema."""
    model = COMMAND_TYPES[message]
    return {
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": {"$ref": COMPONENTS + model.__name__}}},
        }
    }


def json_response(name: str, description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": {"$ref": COMPONENTS + name}}}}
