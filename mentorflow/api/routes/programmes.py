"""/v1/programmes: programmes, their matching profiles, matching rounds, the report and the
API's audit record of a programme. For API keys only (people's tokens act on relationships)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Literal

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from temporalio.client import WorkflowExecutionStatus
from temporalio.exceptions import WorkflowAlreadyStartedError

from activities.projections import ProjectionFollower
from events.commands import INTERNAL_ACTORS, ROUND_ACTOR, Identifier
from events.people import Programme
from events.refusals import RefusalCode
from events.settings import ProgrammeSettings
from mentorflow.api.app import context_of
from mentorflow.api.auth import Credential
from mentorflow.api.openapi import COMPONENTS, json_response
from mentorflow.api.problems import ApiProblem, invalid, not_allowed, problem_responses
from mentorflow.api.routes import AuditPagingDep, CredentialDep, audit_page, found, json_object, path_id, validated
from mentorflow.api.temporal import bounded
from pairing.profiles import MenteeProfile, MentorProfile
from pairing.rounds import round_workflow_id
from pairing.settings import Objective, RuleName
from workflows.matching_round import MatchingRound, MatchingRoundInput, MatchingRoundResult, RoundProgress
from mentorflow.start_options import round_start_options

router = APIRouter(prefix="/v1/programmes", tags=["programmes"])
Role = Literal["mentor", "mentee"]


def _keys_only(credential: Credential) -> None:
    if credential.is_person:
        raise not_allowed("programmes are read and changed with API keys; a person's token acts on relationships")


# -- programmes ---------------------------------------------------------------------------------


@router.get("", summary="The programmes this key reaches", responses=problem_responses(401, 403, 429))
async def list_programmes(request: Request, credential: CredentialDep) -> JSONResponse:
    _keys_only(credential)
    listings = await context_of(request).directory.list_programmes()
    return JSONResponse({"programmes": [
        {"programme_id": p.programme_id, "name": p.name, "created_at": p.created_at.isoformat(),
         "updated_at": p.updated_at.isoformat()}
        for p in listings if credential.reaches(p.programme_id)
    ]})  # fmt: skip


@router.get(
    "/{programme_id}",
    summary="A programme and its settings",
    responses={200: json_response("Programme", "The programme"), **problem_responses(401, 403, 404, 429)},
)
async def get_programme(request: Request, credential: CredentialDep, programme_id: str) -> JSONResponse:
    _keys_only(credential)
    programme_id = path_id(programme_id, "programme")
    credential.require_programme(programme_id)
    programme = await context_of(request).directory.get_programme(programme_id)
    return found(programme, f"programme {programme_id} does not exist")


class ProgrammeBody(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(min_length=1, max_length=200)
    settings: ProgrammeSettings = ProgrammeSettings()


@router.put(
    "/{programme_id}",
    summary="Create or change a programme (coordinator keys)",
    description="Relationships copy the settings when they start; running ones keep theirs. Creating a "
    "programme needs a key for every programme (*).",
    openapi_extra={"requestBody": {"required": True, "content": {"application/json": {"schema": {
        "type": "object", "additionalProperties": False, "required": ["name"],
        "properties": {"name": {"type": "string", "minLength": 1, "maxLength": 200},
                       "settings": {"$ref": COMPONENTS + "ProgrammeSettings"}}}}}}},  # fmt: skip
    responses={200: json_response("Programme", "Saved"), **problem_responses(401, 403, 422, 429)},
)
async def put_programme(request: Request, credential: CredentialDep, programme_id: str) -> JSONResponse:
    context = context_of(request)
    programme_id = path_id(programme_id, "programme")
    credential.require_coordinator_key(programme_id)
    body = validated(ProgrammeBody, await json_object(request))
    programme = Programme(programme_id=programme_id, name=body.name, settings=body.settings)
    if credential.programmes is not None and await context.directory.get_programme(programme_id) is None:
        raise not_allowed("only an API key for every programme (*) may create a programme")
    outcome = await context.directory.create_or_update_programme(programme)
    return JSONResponse({**programme.model_dump(mode="json"), "outcome": outcome},
                        status_code=201 if outcome == "created" else 200)  # fmt: skip


# -- profiles --------------------------------------------------------------------------------------


@router.get("/{programme_id}/profiles/{role}", summary="The programme's mentor or mentee profiles",
            responses=problem_responses(401, 403, 404, 422, 429))  # fmt: skip
async def list_profiles(request: Request, credential: CredentialDep, programme_id: str, role: Role) -> JSONResponse:
    _keys_only(credential)
    programme_id = path_id(programme_id, "programme")
    credential.require_programme(programme_id)
    profiles = await context_of(request).profiles.list_profiles(programme_id, role)
    return JSONResponse({"profiles": [profile.model_dump(mode="json") for profile in profiles]})


@router.get("/{programme_id}/profiles/{role}/{participant_id}", summary="One profile",
            responses=problem_responses(401, 403, 404, 422, 429))  # fmt: skip
async def get_profile(
    request: Request, credential: CredentialDep, programme_id: str, role: Role, participant_id: str
) -> JSONResponse:
    _keys_only(credential)
    programme_id, participant_id = path_id(programme_id, "programme"), path_id(participant_id, "participant")
    credential.require_programme(programme_id)
    profile = await context_of(request).profiles.get_profile(programme_id, role, participant_id)
    return found(profile, f"no {role} profile of {participant_id} in programme {programme_id}")


@router.put(
    "/{programme_id}/profiles/{role}/{participant_id}",
    summary="Create or change a profile (coordinator keys)",
    openapi_extra={"requestBody": {"required": True, "content": {"application/json": {"schema": {
        "oneOf": [{"$ref": COMPONENTS + "MentorProfile"}, {"$ref": COMPONENTS + "MenteeProfile"}]}}}}},  # fmt: skip
    responses=problem_responses(401, 403, 404, 422, 429),
)
async def put_profile(
    request: Request, credential: CredentialDep, programme_id: str, role: Role, participant_id: str
) -> JSONResponse:
    context = context_of(request)
    programme_id, participant_id = path_id(programme_id, "programme"), path_id(participant_id, "participant")
    credential.require_coordinator_key(programme_id)
    body = {"participant_id": participant_id, "role": role, **await json_object(request)}
    if body["participant_id"] != participant_id or body["role"] != role:
        raise ApiProblem(RefusalCode.INVALID_PAYLOAD, "invalid payload: participant_id and role are the path's",
                         [{"field": "participant_id", "message": "must be the path's"}])  # fmt: skip
    profile: MentorProfile | MenteeProfile = (
        validated(MentorProfile, body) if role == "mentor" else validated(MenteeProfile, body)
    )
    counts = await context.profiles.save_profiles(programme_id, [profile])
    outcome = "created" if counts.inserted else "updated" if counts.updated else "unchanged"
    return JSONResponse({**profile.model_dump(mode="json"), "outcome": outcome})


# -- matching rounds ----------------------------------------------------------------------------------


class StartRound(BaseModel):
    """A matching round of the programme (see docs/matching.md); the rules come from the programme."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    round_id: Identifier
    coordinator_id: Identifier = ROUND_ACTOR
    mentee_ids: tuple[Identifier, ...] | None = None
    objective: Objective | None = None
    # One of the programme's rule sets (its matching settings' `rule_sets`); None: its rules as they are.
    rule_set: RuleName | None = None
    batch_size: int = Field(default=200, ge=1, le=2000)


@router.post(
    "/{programme_id}/rounds",
    summary="Start a matching round (coordinator keys)",
    description="Running the same round again proposes nothing twice. Follow it with GET …/rounds/{round_id}.",
    openapi_extra={"requestBody": {"required": True, "content": {"application/json": {
        "schema": StartRound.model_json_schema()}}}},  # fmt: skip
    responses=problem_responses(401, 403, 404, 409, 422, 429, 503),
    status_code=201,
)
async def start_round(request: Request, credential: CredentialDep, programme_id: str) -> JSONResponse:
    context = context_of(request)
    programme_id = path_id(programme_id, "programme")
    credential.require_coordinator_key(programme_id)
    start = validated(StartRound, await json_object(request))
    if start.coordinator_id in INTERNAL_ACTORS and start.coordinator_id != ROUND_ACTOR:
        raise not_allowed(f"actor {start.coordinator_id} is the system itself: no credential may act as it")
    if await context.directory.get_programme(programme_id) is None:
        raise ApiProblem(RefusalCode.NOT_FOUND, f"programme {programme_id} does not exist")
    if start.rule_set is not None:
        known = (await context.profiles.get_settings(programme_id)).rule_sets
        if start.rule_set not in known:
            raise invalid("rule_set", f"the programme has no rule set {start.rule_set!r} (it has: {', '.join(sorted(known)) or 'none'})")
    round_input = MatchingRoundInput(programme_id=programme_id, **start.model_dump())
    workflow_id = round_workflow_id(programme_id, start.round_id)
    try:
        await bounded(
            context.client.start_workflow(
                MatchingRound.run, round_input, id=workflow_id, task_queue=context.settings.task_queue,
                **round_start_options(round_input, started_by=f"the HTTP API (api_key {credential.name})"),
            ),
            context.timeout,
            "Temporal",
        )  # fmt: skip
    except WorkflowAlreadyStartedError:
        raise ApiProblem(RefusalCode.CONFLICT, f"round {start.round_id} of {programme_id} is running") from None
    return JSONResponse({"workflow_id": workflow_id, "programme_id": programme_id, "round_id": start.round_id},
                        status_code=201, headers={"Location": f"/v1/programmes/{programme_id}/rounds/{start.round_id}"})


@router.get(
    "/{programme_id}/rounds/{round_id}",
    summary="A matching round's progress (the `progress` query) and, once done, its result",
    responses=problem_responses(401, 403, 404, 429, 503),
)
async def get_round(request: Request, credential: CredentialDep, programme_id: str, round_id: str) -> JSONResponse:
    context = context_of(request)
    _keys_only(credential)
    programme_id, round_id = path_id(programme_id, "programme"), path_id(round_id, "round")
    credential.require_programme(programme_id)
    handle = context.client.get_workflow_handle(round_workflow_id(programme_id, round_id))
    what = f"round {round_id} of programme {programme_id}"
    description = await bounded(handle.describe(), context.timeout, what)
    status = description.status or WorkflowExecutionStatus.RUNNING
    answer: dict[str, Any] = {"workflow_id": handle.id, "round_id": round_id, "status": status.name.lower(),
                              "progress": None, "result": None}  # fmt: skip
    if status == WorkflowExecutionStatus.COMPLETED:
        result = MatchingRoundResult.model_validate(await bounded(handle.result(), context.timeout, what))
        answer["result"] = result.model_dump(mode="json")
    progress: RoundProgress = await bounded(handle.query(MatchingRound.progress), context.timeout, what)
    answer["progress"] = progress.model_dump(mode="json")
    return JSONResponse(answer)


# -- report and audit --------------------------------------------------------------------------------------


@router.get(
    "/{programme_id}/report",
    summary="The programme's report (as `mentorflow report --json`)",
    description="From the read models the workers keep up to date; `projections` says how far behind they are.",
    responses=problem_responses(401, 403, 404, 429),
)
async def get_report(request: Request, credential: CredentialDep, programme_id: str) -> JSONResponse:
    from mentorflow.reports import load_programme_report, report_json

    context = context_of(request)
    _keys_only(credential)
    programme_id = path_id(programme_id, "programme")
    credential.require_programme(programme_id)
    report = await load_programme_report(context.pool, programme_id)
    if report is None:
        raise ApiProblem(RefusalCode.NOT_FOUND, f"programme {programme_id} does not exist and has no relationships")
    statuses = await ProjectionFollower(context.pool).status()
    return JSONResponse(report_json(report, statuses, datetime.now(UTC)))


@router.get(
    "/{programme_id}/audit",
    summary="The API's audit record of a programme (coordinator keys)",
    responses=problem_responses(401, 403, 429),
)
async def get_programme_audit(
    request: Request, credential: CredentialDep, programme_id: str, paging: AuditPagingDep
) -> JSONResponse:
    programme_id = path_id(programme_id, "programme")
    credential.require_coordinator_key(programme_id)
    rows = await context_of(request).audit.list(programme_id, before=paging.before, limit=paging.limit)
    return audit_page(rows, paging)
