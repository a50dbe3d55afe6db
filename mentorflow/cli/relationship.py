"""`mentorflow relationship start` and `show`: one relationship, started and looked at.

The `relationship` sub-app is made here; relationship_messages.py (update, signal, send) and
relationship_watch.py (list, history, events) add their commands to it.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Coroutine
from typing import Annotated, Any

import typer
from pydantic import ValidationError
from rich.markup import escape
from rich.table import Table
from temporalio.client import WorkflowHandle, WorkflowUpdateRPCTimeoutOrCancelledError
from temporalio.exceptions import WorkflowAlreadyStartedError
from temporalio.service import RPCError, RPCStatusCode

from events.state import RelationshipState
from mentorflow.cli.shared import (
    JsonOption, Problem, R, _connect, _with_directory, command_group, details_table, err, launcher_name, out,
    run,
)
from mentorflow.config import Settings
from mentorflow.start_options import relationship_start_options, relationship_workflow_id
from workflows.relationship import Relationship, RelationshipInput, describe_validation_error

relationship_app = command_group("relationship", "Start, inspect and drive relationships.")


def _new_id() -> str:
    return uuid.uuid4().hex[:10]


@relationship_app.command(
    "start",
    epilog="Exit codes: 0 started; 1 Temporal or the database unreachable, the relationship exists already; "
    "2 bad input: a malformed id, a programme that does not exist.",
)
def start_relationship(
    programme: Annotated[str, typer.Option("--programme", help="Programme id.")],
    mentee: Annotated[str, typer.Option("--mentee", help="Mentee id.")],
    relationship_id: Annotated[str | None, typer.Option("--id", help="Relationship id (default: generated).")] = None,
    as_json: JsonOption = False,
) -> None:
    """Start a relationship for a mentee in a programme; prints its workflow id."""
    try:
        relationship = RelationshipInput(
            relationship_id=relationship_id or _new_id(), programme_id=programme, mentee_id=mentee
        )
    except ValidationError as error:
        raise Problem(describe_validation_error(error), exit_code=2) from None
    workflow_id = relationship_workflow_id(relationship.programme_id, relationship.relationship_id)
    settings = Settings.from_env()
    # The workflow reads the programme's settings as it starts; an unknown programme would
    # only fail it there, so say so here.
    found = _with_directory(lambda directory: directory.get_programme(programme))
    if found is None:
        raise Problem(
            f"programme {programme} does not exist; create it first: "
            f"{launcher_name()} programme create --id {programme} --name '…' (or --file examples/programme.yaml)",
            exit_code=2,  # bad input, like a malformed id
        )

    async def start() -> WorkflowHandle[Any, Any]:
        client = await _connect(settings)
        try:
            return await client.start_workflow(
                Relationship.run,
                relationship,
                id=workflow_id,
                task_queue=settings.task_queue,
                **relationship_start_options(relationship, started_by="the mentorflow CLI",
                                             programme_settings=found.settings),  # fmt: skip
            )
        except WorkflowAlreadyStartedError:
            raise Problem(f"{workflow_id} already exists") from None
        except RPCError as error:
            raise Problem(f"Temporal refused to start {workflow_id}: {error.message}") from None

    handle = run(start())
    if as_json:
        print(json.dumps({"workflow_id": workflow_id, "run_id": handle.result_run_id,
                          "relationship_id": relationship.relationship_id}))  # fmt: skip
        return
    print(workflow_id)
    err.print(f"Started. See it with: {escape(launcher_name())} relationship show {escape(workflow_id)}")


@relationship_app.command("show")
def show_relationship(
    workflow_id: Annotated[str, typer.Argument(help="The workflow id, e.g. relationship/PROGRAMME/ID.")],
    as_json: JsonOption = False,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for an answer.")] = 30,
) -> None:
    """Show a relationship's current state (the workflow's `state` query)."""
    settings = Settings.from_env()

    async def query() -> RelationshipState:
        client = await _connect(settings)
        handle = client.get_workflow_handle(workflow_id)
        state: RelationshipState = await _answer(
            handle.query("state", result_type=RelationshipState), workflow_id, timeout
        )
        return state

    state = run(query())
    if as_json:
        print(state.model_dump_json(indent=2))
    else:
        out.print(_summary(workflow_id, state))


async def _answer(call: Coroutine[Any, Any, R], workflow_id: str, timeout: float) -> R:
    """Await a call to a workflow, turning the ways it commonly fails into one-line problems."""
    try:
        return await asyncio.wait_for(call, timeout)
    except asyncio.TimeoutError:
        raise Problem(
            f"no answer from {workflow_id} within {timeout:.0f} s: is a worker running "
            f"(`{launcher_name()} dev` or `{launcher_name()} worker`)?"
        ) from None
    except WorkflowUpdateRPCTimeoutOrCancelledError:
        raise Problem(f"no answer from {workflow_id} in time: is a worker running?") from None
    except RPCError as error:
        if error.status == RPCStatusCode.NOT_FOUND:
            raise Problem(f"{workflow_id}: {error.message}") from None
        raise Problem(f"Temporal: {error.message}") from None


def _summary(workflow_id: str, state: RelationshipState) -> Table:
    table = details_table()

    def row(label: str, value: object) -> None:
        table.add_row(label, escape(str(value)))

    row("Workflow", workflow_id)
    row("Relationship", f"{state.relationship_id} (programme {state.programme_id}, mentee {state.mentee_id})")
    row("Phase", f"{state.phase.value} since {state.phase_entered_at:%Y-%m-%d %H:%M} UTC, health {state.health.value}")
    row("Version", state.version)
    if state.mentor_id:
        row("Mentor", state.mentor_id)
    elif state.candidate:
        accepted = ", ".join(state.candidate.accepted_by) or "nobody yet"
        row("Proposed mentor", f"{state.candidate.mentor_id} (accepted by {accepted}; expires {state.candidate.expires_at:%Y-%m-%d})")
    if state.agreement:
        signed = ", ".join(state.agreement.signed_by) or "nobody yet"
        row("Agreement", f"version {state.agreement.agreement_version}, signed by {signed}")
    if state.activated_at:
        row("Meetings", f"{state.meetings_held} held, {state.meeting_minutes_total} minutes")
    if state.review:
        row("Review", f"{state.review.kind}, answers due {state.review.respond_by:%Y-%m-%d}")
    if state.closed_at:
        row("Closed", f"{state.closed_at:%Y-%m-%d %H:%M} UTC ({state.closure_reason})")
    for rejected in state.rejected_commands[-3:]:
        row("Rejected", f"{rejected.command_name} {rejected.command_id or ''}: {rejected.reason}")
    return table
