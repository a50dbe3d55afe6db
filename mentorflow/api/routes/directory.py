"""/v1/people: the participant directory. The directory is shared by every programme and
holds personal data (names, email addresses), so only coordinator keys for every programme
(`--programme '*'`) read or change it."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from activities.directory import DirectoryError, check_participant
from events.people import Participant
from mentorflow.api.app import context_of
from mentorflow.api.openapi import COMPONENTS, json_response
from mentorflow.api.problems import invalid, problem_responses
from mentorflow.api.routes import CredentialDep, found, json_object, path_id, validated

router = APIRouter(prefix="/v1/people", tags=["people"])


@router.get(
    "/{participant_id}",
    summary="A participant (coordinator keys for every programme)",
    responses={200: json_response("Participant", "The participant"), **problem_responses(401, 403, 404, 429)},
)
async def get_person(request: Request, credential: CredentialDep, participant_id: str) -> JSONResponse:
    participant_id = path_id(participant_id, "participant")
    credential.require_coordinator_key()
    participant = await context_of(request).directory.get_participant(participant_id)
    return found(participant, f"participant {participant_id} is not in the directory")


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
        participant = check_participant(validated(Participant, body))
    except DirectoryError as error:
        field, _, message = str(error).partition(": ")
        raise invalid(field, message or str(error)) from None
    outcome = await context.directory.upsert_participant(participant)
    stored = await context.directory.get_participant(participant_id)
    assert stored is not None
    return JSONResponse({**stored.model_dump(mode="json"), "outcome": outcome},
                        status_code=201 if outcome == "created" else 200)  # fmt: skip
