"""The API's resources, one module each; helpers every route uses."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Annotated, Any, TypeVar

from fastapi import Depends, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, TypeAdapter, ValidationError

from activities.api_audit import AuditRow
from events.commands import Identifier
from events.refusals import RefusalCode, field_problems, invalid_payload
from mentorflow.api.app import credential_of
from mentorflow.api.auth import Credential
from mentorflow.api.problems import ApiProblem, invalid

M = TypeVar("M", bound=BaseModel)

# The authenticated caller, for every route that needs one.
CredentialDep = Annotated[Credential, Depends(credential_of)]


@dataclass(frozen=True)
class AuditPaging:
    """The audit resources' paging: rows older than `before`, `limit` at a time."""

    before: int | None
    limit: int


async def audit_paging(  # async: a plain `def` dependency would run in FastAPI's thread pool
    before: Annotated[int | None, Query(ge=1, le=2**63 - 1)] = None, limit: Annotated[int, Query(ge=1, le=1000)] = 100
) -> AuditPaging:
    return AuditPaging(before, limit)


AuditPagingDep = Annotated[AuditPaging, Depends(audit_paging)]

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


def validated(model: type[M], body: dict[str, Any]) -> M:
    """`body` as `model`, or 422 invalid_payload naming every field at fault."""
    try:
        return model.model_validate(body)
    except ValidationError as error:
        rejection = invalid_payload(field_problems(error, known=frozenset(model.model_fields)))
        raise ApiProblem.from_rejection(rejection) from None


def audit_page(rows: Sequence[AuditRow], paging: AuditPaging) -> JSONResponse:
    """A page of the audit record; `next_before` asks for the next one (null on the last)."""
    return JSONResponse({"audit": [row.to_json() for row in rows],
                         "next_before": rows[-1].audit_id if len(rows) == paging.limit else None})  # fmt: skip


def found(resource: BaseModel | None, missing: str) -> JSONResponse:
    """The resource as JSON, or 404 not_found saying what is `missing`."""
    if resource is None:
        raise ApiProblem(RefusalCode.NOT_FOUND, missing)
    return JSONResponse(resource.model_dump(mode="json"))
