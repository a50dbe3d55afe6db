"""/v1/people: the participant directory. The directory is shared by every programme and
holds personal data (names, email addresses), so only coordinator keys for every programme
(`--programme '*'`) read or change it."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse
from pydantic import ValidationError

from activities.directory import DirectoryError, check_participant
from events.people import Participant
from events.refusals import RefusalCode, field_problems, invalid_payload
from mentorflow.api.app import context_of, credential_of
from mentorflow.api.auth import Credential
from mentorflow.api.openapi import COMPONENTS, json_response
from mentorflow.api.problems import ApiProblem, invalid, problem_responses
from mentorflow.api.routes import json_object, path_id

router = APIRouter(prefix="/v1/people", tags=["people"])
CredentialDep = Annotated[Credential, Depends(credential_of)]


@router.get(
    "/{participant_id}",
    summary="A participant (coordinator keys for every programme)",
    responses={200: json_response("Participant", "The participant"), **problem_responses(401, 403, 404, 429)},
)
async def get_person(request: Request, credential: CredentialDep, participant_id: str) -> JSONResponse:
    participant_id = path_id(participant_id, "participant")
    credential.require_coordinator_key()
    participant = await context_of(request).directory.get_participant(participant_id)
    if participant is None:
        raise ApiProblem(RefusalCode.NOT_FOUND, f"participant {participant_id} is not in the directory")
    return JSONResponse(participant.model_dump(mode="json"))


@router.put(
    "/{participant_id}",
    summary="Create or change a participant (coordinator keys for every programme)",
    description="A body without `status` keeps the stored one: someone who left stays left.",
    openapi_extra={"requestBody": {"required": True, "content": {"application/json": {
        "schema": {"$ref": COMPONENTS + "Participant"}}}}},  # fmt: skip
    responses=problem_responses(401, 403, 422, 429),
)
async def put_person(request: Request, credential: CredentialDep, participant_id: str) -> JSONResponse:
    context = context_of(request)
    participant_id = path_id(participant_id, "participant")
    credential.require_coordinator_key()
    body = {"participant_id": participant_id, **await json_object(request)}
    if body["participant_id"] != participant_id:
        raise invalid("participant_id", "must be the path's")
    try:
        participant = check_participant(Participant.model_validate(body))
    except ValidationError as error:
        known = frozenset(Participant.model_fields)
        raise ApiProblem.from_rejection(invalid_payload(field_problems(error, known=known))) from None
    except DirectoryError as error:
        field, _, message = str(error).partition(": ")
        raise invalid(field, message or str(error)) from None
    outcome = await context.directory.upsert_participant(participant)
    stored = await context.directory.get_participant(participant_id)
    assert stored is not None
    return JSONResponse({**stored.model_dump(mode="json"), "outcome": outcome},
                        status_code=201 if outcome == "created" else 200)  # fmt: skip
