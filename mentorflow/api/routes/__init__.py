"""The API's resources, one module each; helpers every route uses."""

from __future__ import annotations

import json
from typing import Any

from fastapi import Request
from pydantic import TypeAdapter, ValidationError

from events.commands import Identifier
from events.refusals import RefusalCode
from mentorflow.api.problems import ApiProblem, invalid

ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:@-]*$"
_IDENTIFIER: TypeAdapter[str] = TypeAdapter(Identifier)


def is_identifier(value: object) -> bool:
    try:
        _IDENTIFIER.validate_python(value)
        return True
    except ValidationError:
        return False


def path_id(value: str, what: str) -> str:
    """An id from the path: one that is not a well-formed id names nothing (404)."""
    if not is_identifier(value):
        raise ApiProblem(RefusalCode.NOT_FOUND, f"no {what} has such an id (ids are letters, digits and . _ : @ -)")
    return value


async def json_body(request: Request) -> Any:
    raw = await request.body()
    if not raw.strip():
        raise invalid("payload", "expected a JSON object; the body is empty")
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise invalid("payload", "is not JSON") from None


async def json_object(request: Request) -> dict[str, Any]:
    body = await json_body(request)
    if not isinstance(body, dict):
        raise invalid("payload", "should be a JSON object")
    return body
