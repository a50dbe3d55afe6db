"""The start of a Relationship run: the input read, a start that cannot work refused (the
workflow ends at once, failed with a refusal code), and the programme's settings read."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import Field, ValidationError
from temporalio import workflow
from temporalio.exceptions import ActivityError, ApplicationError

with workflow.unsafe.imports_passed_through():
    from events.refusals import (
        FieldProblem,
        RefusalCode,
        Rejection,
        field_problems,
        invalid_payload,
        plain_refusal,
    )
    from events.relationship_io import RelationshipInput, relationship_workflow_id
    from events.settings import ProgrammeRequest, ProgrammeSettings

from workflows.activity_refs import LOAD_PROGRAMME
from workflows.calls import call_activity
from workflows.messages import refusal_error
from workflows.patches import CHECK_WORKFLOW_ID, REFUSE_PLAIN_PAYLOADS

# A start input as sent: a RelationshipInput, or whatever else arrived (refused in `run`).
StartInput = Annotated[RelationshipInput | dict[str, Any], Field(union_mode="left_to_right")]
# Stands in for an input that could not be read, until `run` fails the workflow.
UNREADABLE_INPUT = RelationshipInput(relationship_id="unreadable", programme_id="unreadable", mentee_id="unreadable")
# The load_programme failures that end a start, and the refusal code each is reported as.
_START_FAILURES = {
    "UnknownProgramme": RefusalCode.NOT_FOUND.value,
    "SettingsNotFromProgramme": RefusalCode.NOT_ALLOWED.value,
    "InvalidProgrammeSettings": RefusalCode.INTERNAL_ERROR.value,
}


def read_start(input: Any) -> RelationshipInput | Rejection:
    if isinstance(input, RelationshipInput):
        return input
    try:
        return RelationshipInput.model_validate(input)
    except ValidationError as error:
        return invalid_payload(field_problems(error, known=frozenset(RelationshipInput.model_fields)))


def check_start(input: RelationshipInput, *, plain: bool, refusal: Rejection | None) -> None:
    """End the workflow at once, failed with a refusal code, on a start that cannot work.
    `plain`: the input arrived unencrypted; `refusal`: why it could not be read."""
    if plain and workflow.patched(REFUSE_PLAIN_PAYLOADS):
        raise refusal_error(plain_refusal())
    if refusal is not None:
        raise refusal_error(refusal)
    workflow_id = workflow.info().workflow_id
    carried = ("state", "pending_notifications", "last_participant_check", "pool_asked_for_attempt")
    given = [name for name in carried if getattr(input, name) not in (None, [])]
    if given and workflow.info().continued_run_id is None:
        # What a run hands to the next one: never from a starter (it would choose the state).
        problems = tuple(FieldProblem(field=f, message="is carried only across continue-as-new") for f in given)
        raise refusal_error(invalid_payload(problems, prefix="invalid start"))
    expected = relationship_workflow_id(input.programme_id, input.relationship_id)
    # Runs that began before the check keep going as they began.
    if workflow_id != expected and workflow.patched(CHECK_WORKFLOW_ID):
        problem = FieldProblem(
            field="workflow_id",
            message=f"should be {expected}: relationship/ then the input's programme_id and relationship_id",
        )
        raise refusal_error(invalid_payload((problem,), prefix="invalid start"))


async def load_programme(request: ProgrammeRequest) -> ProgrammeSettings:
    try:
        settings = await call_activity(LOAD_PROGRAMME, request, summary="Read programme settings", local=False)
    except ActivityError as error:
        # Say why in the workflow's own failure, not two causes down.
        cause = error.cause
        if isinstance(cause, ApplicationError) and cause.type in _START_FAILURES:
            raise ApplicationError(cause.message, type=_START_FAILURES[cause.type], non_retryable=True) from None
        raise
    return settings
