"""Refusals as RFC 9457 problem details (`application/problem+json`), with the contract's
refusal codes: an HTTP caller gets the code an SDK caller gets as the `ApplicationError`'s
type, and the same `problems` list.

```json
{"type": "/v1/problems/wrong_phase", "title": "Wrong phase", "status": 409,
 "detail": "sign_agreement is only allowed in the agreement phase; the relationship is in matching",
 "code": "wrong_phase", "problems": []}
```

`type` is a URI reference resolved against the API (GET it for the code's meaning).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from fastapi.responses import JSONResponse

from events.refusals import REFUSAL_CODES, FieldProblem, RefusalCode, Rejection

PROBLEM_JSON = "application/problem+json"

# The contract's codes (docs/contract.md) and their HTTP status.
REFUSAL_STATUS: dict[RefusalCode, int] = {
    RefusalCode.INVALID_PAYLOAD: 422,
    RefusalCode.UNKNOWN_MESSAGE: 404,
    RefusalCode.NOT_ALLOWED: 403,
    RefusalCode.WRONG_PHASE: 409,
    RefusalCode.COMMAND_ID_REUSED: 409,
    RefusalCode.NOT_FOUND: 404,
    RefusalCode.LIMIT: 422,
    RefusalCode.CONFLICT: 409,
    RefusalCode.INTERNAL_ERROR: 500,
}

# Codes of the HTTP edge itself, which the Temporal contract has no need of.
EDGE_CODES: dict[str, tuple[int, str]] = {
    "unauthenticated": (401, "No credential, or one that is not valid (unknown, revoked or expired key; a token "
                        "that is expired, unsigned, from another issuer or for another audience)."),
    "payload_too_large": (413, "The request body is larger than the API accepts (the payload codec's limit)."),
    "rate_limited": (429, "Too many requests for this credential; wait as long as Retry-After says."),
    "unavailable": (503, "The relationship did not answer in time (no worker running?) or Temporal or the database "
                    "is unreachable. Send the same request again after Retry-After: a command with the same "
                    "command id is applied at most once."),
    "method_not_allowed": (405, "The resource exists but does not take this method."),
    "bad_request": (400, "The request is malformed at the HTTP level."),
}


def title_of(code: str) -> str:
    return code.replace("_", " ").capitalize()


def status_of(code: str) -> int:
    if code in EDGE_CODES:
        return EDGE_CODES[code][0]
    return REFUSAL_STATUS[RefusalCode(code)]


def meaning_of(code: str) -> str | None:
    if code in EDGE_CODES:
        return EDGE_CODES[code][1]
    try:
        return REFUSAL_CODES[RefusalCode(code)]
    except ValueError:
        return None


class ApiProblem(Exception):
    """Raised anywhere in a request; answered as a problem response."""

    def __init__(
        self,
        code: str | RefusalCode,
        detail: str,
        problems: Iterable[FieldProblem | Mapping[str, str]] = (),
        *,
        headers: Mapping[str, str] | None = None,
        status: int | None = None,
    ):
        super().__init__(detail)
        self.code = str(code.value if isinstance(code, RefusalCode) else code)
        self.detail = detail
        self.problems = [p.model_dump() if isinstance(p, FieldProblem) else dict(p) for p in problems]
        self.headers = dict(headers or {})
        self.status = status or status_of(self.code)

    @classmethod
    def from_rejection(cls, rejection: Rejection) -> ApiProblem:
        return cls(rejection.code, rejection.reason, rejection.problems)

    def body(self) -> dict[str, Any]:
        return {
            "type": f"/v1/problems/{self.code}",
            "title": title_of(self.code),
            "status": self.status,
            "detail": self.detail,
            "code": self.code,
            "problems": self.problems,
        }

    def response(self) -> JSONResponse:
        return JSONResponse(self.body(), status_code=self.status, headers=self.headers, media_type=PROBLEM_JSON)


def not_allowed(detail: str) -> ApiProblem:
    return ApiProblem(RefusalCode.NOT_ALLOWED, detail)


def invalid(field: str, message: str) -> ApiProblem:
    problem = FieldProblem(field=field, message=message)
    return ApiProblem(RefusalCode.INVALID_PAYLOAD, f"invalid payload: {field}: {message}", [problem])


PROBLEM_SCHEMA: dict[str, Any] = {
    "type": "object",
    "title": "Problem",
    "description": "RFC 9457 problem details; `code` is a refusal code of the contract or of the HTTP edge.",
    "properties": {
        "type": {"type": "string"},
        "title": {"type": "string"},
        "status": {"type": "integer"},
        "detail": {"type": "string"},
        "code": {"type": "string", "enum": [c.value for c in RefusalCode] + list(EDGE_CODES)},
        "problems": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {"field": {"type": "string"}, "message": {"type": "string"}},
                "required": ["field", "message"],
            },
        },
    },
    "required": ["type", "title", "status", "detail", "code", "problems"],
}


def problem_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses` entries for these statuses, each a problem document."""
    return {
        status: {
            "description": title_of(_code_for_status(status)),
            "content": {PROBLEM_JSON: {"schema": {"$ref": "#/components/schemas/Problem"}}},
        }
        for status in statuses
    }


def _code_for_status(status: int) -> str:
    for code, (edge_status, _) in EDGE_CODES.items():
        if edge_status == status:
            return code
    for refusal, refusal_status in REFUSAL_STATUS.items():
        if refusal_status == status:
            return refusal.value
    return "problem"
