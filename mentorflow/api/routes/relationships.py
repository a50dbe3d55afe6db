"""/v1/relationships: start one, send it commands, read its state and events, list them,
and read the API's audit record of one."""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import hmac
import uuid
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Query, Request
from fastapi.responses import JSONResponse
from pydantic import AwareDatetime, BaseModel, ConfigDict
from temporalio.client import WorkflowHandle
from temporalio.common import WorkflowIDReusePolicy
from temporalio.exceptions import WorkflowAlreadyStartedError
from temporalio.service import RPCError, RPCStatusCode

from activities.audit_trail import sent_by_of_event, stream_senders
from activities.event_store import _COLUMNS as EVENT_COLUMNS, _FROM as EVENTS_FROM
from events.commands import COMMAND_TYPES, INTERNAL_ACTORS, Identifier, read_command
from events.model import Health
from events.refusals import FieldProblem, RefusalCode, Rejection
from events.relationship_io import RELATIONSHIP_WORKFLOW, CommandResult, RelationshipInput, relationship_workflow_id
from events.state import Phase, RelationshipState
from events.store import StreamOwnedByAnother, StreamOwner
from mentorflow.api.app import ApiContext, context_of
from mentorflow.api.auth import Credential, check_actor, needs_coordinators
from mentorflow.api.openapi import body_of, json_response
from mentorflow.api.problems import ApiProblem, invalid, not_allowed, problem_responses
from mentorflow.api.routes import (
    ID_PATTERN,
    AuditPagingDep,
    CredentialDep,
    audit_page,
    is_identifier,
    json_object,
    path_id,
    validated,
)
from mentorflow.api.temporal import bounded, rpc_problem, unavailable
from mentorflow.operations import visibility_query
from mentorflow.start_options import relationship_start_options
from workflows import search_attributes as sa

router = APIRouter(prefix="/v1/relationships", tags=["relationships"])
IdempotencyKey = Annotated[str | None, Header(alias="Idempotency-Key", max_length=128)]
IdQuery = Query(pattern=ID_PATTERN, max_length=128)
BASE = "/{programme_id}/{relationship_id}"


def _what(programme_id: str, relationship_id: str) -> str:
    return f"relationship {relationship_id} of programme {programme_id}"


def sees(state: RelationshipState, person_id: str) -> bool:
    """Whether a person may read this relationship: a party, the proposed mentor, or a coordinator."""
    return person_id in state.participant_ids() or person_id in state.settings.coordinator_ids


# -- start ---------------------------------------------------------------------------------------


class StartRelationship(BaseModel):
    """Starts a relationship: ids only. The programme's settings are read as it starts."""

    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)

    programme_id: Identifier
    relationship_id: Identifier
    mentee_id: Identifier


def _started(start: StartRelationship, run_id: str | None, created: bool) -> dict[str, Any]:
    return {
        "workflow_id": relationship_workflow_id(start.programme_id, start.relationship_id),
        "run_id": run_id,
        "programme_id": start.programme_id,
        "relationship_id": start.relationship_id,
        "mentee_id": start.mentee_id,
        "created": created,
    }


@router.post(
    "",
    summary="Start a relationship",
    description="Starts the `Relationship` workflow `relationship/<programme_id>/<relationship_id>` for a mentee. "
    "Sending the same start again answers 200 with `created: false`; the same ids with another mentee: 409.",
    openapi_extra={
        "requestBody": {"required": True, "content": {"application/json": {"schema": StartRelationship.model_json_schema()}}}
    },
    responses={201: {"description": "Started"}, 200: {"description": "Already started, with the same mentee"},
               **problem_responses(401, 403, 404, 409, 413, 422, 429, 503)},  # fmt: skip
    status_code=201,
)
async def start_relationship(request: Request, credential: CredentialDep) -> JSONResponse:
    context = context_of(request)
    start = validated(StartRelationship, await json_object(request))
    audit = {"programme_id": start.programme_id, "relationship_id": start.relationship_id, "message": "start",
             "command_id": None, "actor_id": credential.person_id}  # fmt: skip
    try:
        answer = await _start(context, credential, start)
    except ApiProblem as problem:
        await context.record(credential, **audit, outcome=problem.code, http_status=problem.status)
        raise
    status = 201 if answer["created"] else 200
    await context.record(credential, **audit, outcome="started" if answer["created"] else "already_started",
                         http_status=status)  # fmt: skip
    location = f"/v1/relationships/{start.programme_id}/{start.relationship_id}"
    return JSONResponse(answer, status_code=status, headers={"Location": location})


async def _start(context: ApiContext, credential: Credential, start: StartRelationship) -> dict[str, Any]:
    credential.require_programme(start.programme_id)
    if start.mentee_id in INTERNAL_ACTORS:
        raise invalid("mentee_id", "is the system itself, not a person")
    if credential.is_person:
        # Who takes part in a programme is the coordinators' (or the HR platform's) decision.
        raise not_allowed("a person's token does not start relationships; an API key that may act does")
    if not credential.may_act_as:
        raise not_allowed("this API key may only read")
    programme = await context.directory.get_programme(start.programme_id)
    if programme is None:
        raise ApiProblem(RefusalCode.NOT_FOUND, f"programme {start.programme_id} does not exist")
    relationship = RelationshipInput(
        relationship_id=start.relationship_id, programme_id=start.programme_id, mentee_id=start.mentee_id
    )
    workflow_id = relationship_workflow_id(start.programme_id, start.relationship_id)
    started_by = f"the HTTP API ({credential.kind} {credential.name})"
    try:
        handle: WorkflowHandle[Any, Any] = await bounded(
            context.client.start_workflow(
                RELATIONSHIP_WORKFLOW,
                relationship,
                id=workflow_id,
                task_queue=context.settings.task_queue,
                # A relationship id is its event stream's id: never a second run under it.
                id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
                **relationship_start_options(relationship, started_by=started_by, programme_settings=programme.settings),
            ),
            context.timeout,
            "Temporal",
        )
    except WorkflowAlreadyStartedError:
        existing = context.client.get_workflow_handle(workflow_id)
        description = await bounded(existing.describe(), context.timeout, _what(start.programme_id, start.relationship_id))
        memo = await description.memo()
        if memo.get("mentee_id") == start.mentee_id:
            return _started(start, description.run_id, created=False)
        raise ApiProblem(RefusalCode.CONFLICT, f"{workflow_id} exists already, for another mentee") from None
    return _started(start, handle.result_run_id, created=True)


# -- list ------------------------------------------------------------------------------------------


@router.get(
    "",
    summary="List relationships (eventually consistent)",
    description="Backed by Temporal visibility (the search attributes of workflows/search_attributes.py): "
    "**eventually consistent**, a change shows up here a moment after the command that made it. Running "
    "relationships unless `include_closed`. Pages: pass `next_page_token` back as `page_token`.",
    responses=problem_responses(401, 403, 422, 429, 503),
)
async def list_relationships(
    request: Request,
    credential: CredentialDep,
    programme_id: Annotated[str | None, IdQuery] = None,
    phase: Phase | None = None,
    health: Health | None = None,
    mentee_id: Annotated[str | None, IdQuery] = None,
    mentor_id: Annotated[str | None, IdQuery] = None,
    due_before: AwareDatetime | None = None,
    include_closed: bool = False,
    page_size: Annotated[int, Query(ge=1, le=1000)] = 100,
    page_token: Annotated[str | None, Query(max_length=4096)] = None,
) -> JSONResponse:
    context = context_of(request)
    clauses = []
    if programme_id is not None:
        credential.require_programme(programme_id)
    elif not credential.is_person and credential.programmes is not None:
        clauses.append(f"{sa.MENTORING_PROGRAMME.name} IN ({', '.join(_quoted(p) for p in sorted(credential.programmes))})")
    if mentee_id is not None:
        clauses.append(f"{sa.MENTEE_ID.name} = {_quoted(mentee_id)}")
    if mentor_id is not None:
        clauses.append(f"{sa.MENTOR_ID.name} = {_quoted(mentor_id)}")
    if credential.person_id is not None:
        me = _quoted(credential.person_id)
        clauses.append(f"{sa.MENTEE_ID.name} = {me} OR {sa.MENTOR_ID.name} = {me}")
    query = visibility_query(
        programme=programme_id,
        phase=phase.value if phase else None,
        health=health.value if health else None,
        due_before=due_before,
        query=" AND ".join(f"({clause})" for clause in clauses) or None,
        include_closed=include_closed,
    )
    token = _page_token(context.page_token_key, query, page_token)
    executions = context.client.list_workflows(query, page_size=page_size, next_page_token=token)
    try:
        await asyncio.wait_for(executions.fetch_next_page(), context.timeout)
    except RPCError as error:
        # A moment visibility cannot compare (year 827), a page token it did not give out.
        if error.status == RPCStatusCode.INVALID_ARGUMENT or (token and error.status == RPCStatusCode.UNKNOWN):
            field = "query.page_token" if token else "query"
            raise invalid(field, "Temporal visibility refused it as invalid") from None
        raise rpc_problem(error, "Temporal visibility") from None
    except asyncio.TimeoutError:
        raise unavailable(f"Temporal visibility did not answer within {context.timeout:g} s") from None
    rows = []
    for execution in executions.current_page or ():
        attributes = execution.typed_search_attributes
        rows.append({
            "workflow_id": execution.id,
            "status": execution.status.name.lower() if execution.status else "unknown",
            "programme_id": attributes.get(sa.MENTORING_PROGRAMME),
            "phase": attributes.get(sa.MENTORING_PHASE),
            "health": attributes.get(sa.MENTORING_HEALTH),
            "mentee_id": attributes.get(sa.MENTEE_ID),
            "mentor_id": attributes.get(sa.MENTOR_ID),
            "next_due_at": _iso(attributes.get(sa.NEXT_DUE_AT)),
            "meetings_held": attributes.get(sa.MEETINGS_HELD),
            "started_at": _iso(execution.start_time),
        })  # fmt: skip
    next_token = executions.next_page_token
    return JSONResponse({
        "relationships": rows,
        "next_page_token": _signed_page_token(context.page_token_key, query, next_token) if next_token else None,
        "query": query,
        "consistency": "eventual",
    })  # fmt: skip


def _quoted(value: str) -> str:
    assert is_identifier(value), "ids carry no quotes"
    return f"'{value}'"


def _iso(moment: Any) -> str | None:
    return moment.isoformat() if moment is not None else None


def _token_mac(key: bytes, query: str, raw: bytes) -> bytes:
    return hmac.new(key, query.encode() + b"\x00" + raw, hashlib.sha256).digest()[:16]


def _signed_page_token(key: bytes, query: str, raw: bytes) -> str:
    """Temporal's page token, signed for this query: opaque to callers, and tamper-evident."""
    return base64.urlsafe_b64encode(_token_mac(key, query, raw) + raw).decode()


def _page_token(key: bytes, query: str, text: str | None) -> bytes | None:
    """Temporal's token from a token this API gave out for this query, or 422. (Temporal
    answers a foreign token with an error the SDK retries for seconds before giving up.)"""
    if text is None:
        return None
    try:
        data = base64.urlsafe_b64decode(text.encode())
    except (binascii.Error, ValueError):
        data = b""
    mac, raw = data[:16], data[16:]
    if len(data) <= 16 or not hmac.compare_digest(mac, _token_mac(key, query, raw)):
        raise invalid("query.page_token", "is not a page token this API gave out for these filters")
    return raw


# -- one relationship ----------------------------------------------------------------------------------


@router.get(
    BASE,
    summary="The relationship's state (the `state` query)",
    responses={200: json_response("RelationshipState", "The whole state; never confidential text"),
               **problem_responses(401, 403, 404, 429, 503)},  # fmt: skip
)
async def get_state(request: Request, credential: CredentialDep, programme_id: str, relationship_id: str) -> JSONResponse:
    context = context_of(request)
    programme_id, relationship_id = path_id(programme_id, "programme"), path_id(relationship_id, "relationship")
    credential.require_programme(programme_id)
    state = await context.state_of(programme_id, relationship_id)
    if credential.person_id is not None and not sees(state, credential.person_id):
        raise not_allowed(f"{credential.person_id} is neither a party nor a coordinator of this relationship")
    return JSONResponse(state.model_dump(mode="json"))


@router.get(
    BASE + "/events",
    summary="The relationship's events from the event store (paged)",
    description="In order of version, `limit` at a time after `after_version`; `next_after_version` is the "
    "next page's `after_version` (null on the last page). Confidential text is decrypted for credentials "
    "that may act (keys acting as participants or coordinators, people's tokens) and reads `[encrypted]` "
    "for read-only keys; a forgotten relationship's reads `[forgotten]` for everyone. Each event's `sent_by` "
    "says who sent the command behind it: the API's credential, `direct` (no API record: sent with a Temporal "
    "client) or `internal` (docs/api.md, \"Audit\").",
    responses={200: json_response("EventsPage", "A page of events, each with `sent_by`"),
               **problem_responses(401, 403, 404, 429, 503)},  # fmt: skip
)
async def get_events(
    request: Request,
    credential: CredentialDep,
    programme_id: str,
    relationship_id: str,
    after_version: Annotated[int, Query(ge=0, le=2**31 - 1)] = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> JSONResponse:
    context = context_of(request)
    programme_id, relationship_id = path_id(programme_id, "programme"), path_id(relationship_id, "relationship")
    credential.require_programme(programme_id)
    if credential.person_id is not None:
        state = await context.state_of(programme_id, relationship_id)
        if not sees(state, credential.person_id):
            raise not_allowed(f"{credential.person_id} is neither a party nor a coordinator of this relationship")
    store = context.event_store(decrypting=credential.may_act)
    owner = StreamOwner(programme_id=programme_id, workflow_id=relationship_workflow_id(programme_id, relationship_id))
    missing = ApiProblem(RefusalCode.NOT_FOUND, f"{_what(programme_id, relationship_id)} has no events")
    try:
        # The stream id is the relationship id alone: only its owner's programme may read it.
        await store.check_owner(relationship_id, owner)
    except StreamOwnedByAnother:
        raise missing from None
    rows = await context.pool.fetch(
        f"SELECT {EVENT_COLUMNS} FROM {EVENTS_FROM} WHERE e.stream_id = $1 AND e.version > $2 ORDER BY e.version LIMIT $3",
        relationship_id, after_version, limit,
    )  # fmt: skip
    if not rows and after_version == 0:
        raise missing
    senders = await stream_senders(context.pool, relationship_id, [row["command_id"] for row in rows if row["command_id"]])
    events = [store.event_from_row(row).model_dump(mode="json")
              | {"sent_by": sent_by_of_event(row["event_type"], row["command_id"], senders).model_dump()}
              for row in rows]  # fmt: skip
    return JSONResponse({
        "events": events,
        "next_after_version": rows[-1]["version"] if len(rows) == limit else None,
    })  # fmt: skip


@router.get(
    BASE + "/audit",
    summary="The API's audit record of this relationship (coordinator keys)",
    description="Every command the API handled for it, newest first: the credential (key id and name, or "
    "token subject and issuer), message, command id, actor, outcome and HTTP status. `before`: the next page.",
    responses=problem_responses(401, 403, 404, 429),
)
async def get_audit(
    request: Request,
    credential: CredentialDep,
    programme_id: str,
    relationship_id: str,
    paging: AuditPagingDep,
) -> JSONResponse:
    context = context_of(request)
    programme_id, relationship_id = path_id(programme_id, "programme"), path_id(relationship_id, "relationship")
    credential.require_coordinator_key(programme_id)
    rows = await context.audit.list(programme_id, relationship_id=relationship_id, before=paging.before, limit=paging.limit)
    return audit_page(rows, paging)


# -- commands ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CommandTarget:
    """Where a command goes, from its path, and its Idempotency-Key header."""

    programme_id: str
    relationship_id: str
    idempotency_key: str | None


# async: FastAPI runs a plain `def` dependency in its thread pool, a hand-off per request.
async def command_target(programme_id: str, relationship_id: str, idempotency_key: IdempotencyKey = None) -> CommandTarget:
    return CommandTarget(programme_id, relationship_id, idempotency_key)


TargetDep = Annotated[CommandTarget, Depends(command_target)]


async def send_command(request: Request, credential: Credential, target: CommandTarget, message: str) -> JSONResponse:
    context = context_of(request)
    programme_id = path_id(target.programme_id, "programme")
    relationship_id = path_id(target.relationship_id, "relationship")
    idempotency_key = target.idempotency_key
    known = message if message in COMMAND_TYPES else "(unknown message)"  # the path is sender text
    audit: dict[str, Any] = {"programme_id": programme_id, "relationship_id": relationship_id, "message": known,
                             "command_id": idempotency_key if is_identifier(idempotency_key) else None,
                             "actor_id": None}  # fmt: skip
    try:
        # Read first (the body is capped) so that a refusal is recorded with its command id
        # and actor; judged only after the credential's checks.
        try:
            body: dict[str, Any] | ApiProblem = await json_object(request)
        except ApiProblem as problem:
            body = problem
        for name in ("command_id", "actor_id"):
            if isinstance(body, dict) and is_identifier(body.get(name)):
                audit[name] = body[name]
        credential.require_programme(programme_id)
        model = COMMAND_TYPES.get(message)
        if model is None:
            raise ApiProblem(RefusalCode.UNKNOWN_MESSAGE, "no message of that name exists in the contract")
        if not credential.may_act:
            raise not_allowed("this API key may only read")
        if isinstance(body, ApiProblem):
            raise body
        payload = body
        if idempotency_key is not None:
            payload = _with_idempotency_key(payload, idempotency_key)
        if credential.person_id is not None:
            payload.setdefault("actor_id", credential.person_id)
        for name in ("command_id", "actor_id"):
            if is_identifier(payload.get(name)):
                audit[name] = payload[name]
        read = read_command(model, payload)
        if isinstance(read, Rejection):
            raise ApiProblem.from_rejection(read)
        coordinators = None
        if needs_coordinators(credential) and read.actor_id not in INTERNAL_ACTORS:
            coordinators = await context.coordinators_of(programme_id, relationship_id)
        check_actor(credential, read.actor_id, coordinators)
        handle = context.relationship(programme_id, relationship_id)
        # A fresh update id per request: Temporal answers a repeated update id with the first
        # answer without asking the relationship, which would hide a reused command id. The
        # relationship itself recognises a retried command by its command id.
        result: CommandResult = await bounded(
            handle.execute_update(message, payload, id=str(uuid.uuid4()), result_type=CommandResult),
            context.timeout,
            _what(programme_id, relationship_id),
        )
    except ApiProblem as problem:
        await context.record(credential, **audit, outcome=problem.code, http_status=problem.status)
        raise
    outcome = "replay" if result.replay else "applied" if result.applied else "not_applied"
    await context.record(credential, **audit, outcome=outcome, http_status=200)
    return JSONResponse(result.model_dump(mode="json"))


def _with_idempotency_key(payload: dict[str, Any], key: str) -> dict[str, Any]:
    """The Idempotency-Key header is the command id: filled in, or checked against the body's."""
    if not is_identifier(key):
        raise invalid("Idempotency-Key", "should be a command id: letters, digits and . _ : @ -, at most 128")
    if "command_id" not in payload:
        return {**payload, "command_id": key}
    if payload["command_id"] != key:
        problem = FieldProblem(field="command_id", message="differs from the Idempotency-Key header")
        raise ApiProblem(RefusalCode.INVALID_PAYLOAD, "invalid payload: command_id: differs from the Idempotency-Key header",
                         [problem])  # fmt: skip
    return payload


def _command_endpoint(message: str) -> Any:
    async def endpoint(request: Request, credential: CredentialDep, target: TargetDep) -> JSONResponse:
        return await send_command(request, credential, target, message)

    endpoint.__name__ = f"send_{message}"
    return endpoint


COMMAND_RESPONSES: dict[int | str, Any] = {
    200: json_response("CommandResult", "Applied, or (`replay: true`) a retry of a command applied before"),
    **problem_responses(401, 403, 404, 409, 413, 422, 429, 500, 503),
}

for _message, _model in COMMAND_TYPES.items():
    router.add_api_route(
        BASE + f"/commands/{_message}",
        _command_endpoint(_message),
        methods=["POST"],
        summary=f"Send {_message}",
        description=(_model.__doc__ or "").strip()
        + f"\n\nThe body is the `{_message}` payload of the contract (contract/Relationship/messages/"
        f"{_message}.schema.json). `Idempotency-Key`, when given, is the `command_id`.",
        operation_id=f"send_{_message}",
        openapi_extra=body_of(_message),
        responses=COMMAND_RESPONSES,
        tags=["commands"],
    )


@router.post(BASE + "/commands/{message}", include_in_schema=False)
async def send_unknown(request: Request, credential: CredentialDep, target: TargetDep, message: str) -> JSONResponse:
    return await send_command(request, credential, target, message)

