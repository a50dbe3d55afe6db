"""What every starter of a Relationship or MatchingRound passes besides the input: the Web
UI's start summary and details, and the memo. One place, so the CLI, a matching round and
the tests start workflows that look the same to an operator.

Use as keyword arguments: `client.start_workflow(Relationship.run, input, id=…,
task_queue=…, **relationship_start_options(input, started_by="…"))` (also for
`WithStartWorkflowOperation`). Summaries, details and memo go through the data converter,
so they are encrypted like any payload; the Web UI decodes them through the codec server.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, TypedDict

from events.operator_view import (
    relationship_memo,
    relationship_start_details,
    relationship_summary,
    round_start_details,
    round_summary,
)
from events.settings import ProgrammeSettings
from events.relationship_io import RelationshipInput, relationship_id_of, relationship_workflow_id

__all__ = ["relationship_id_of", "relationship_workflow_id", "relationship_start_options", "round_start_options"]

if TYPE_CHECKING:  # activities.matching imports this module, and matching_round imports it
    from workflows.matching_round import MatchingRoundInput


class StartOptions(TypedDict):
    static_summary: str
    static_details: str
    memo: dict[str, Any]


def relationship_start_options(
    relationship: RelationshipInput,
    *,
    started_by: str,
    round_id: str | None = None,
    programme_settings: ProgrammeSettings | None = None,
) -> StartOptions:
    """`programme_settings`: the programme's settings as the starter read them, to show
    when the input carries none (the workflow then reads them itself as it starts)."""
    settings = relationship.settings or programme_settings
    if relationship.settings is not None:
        source = "given by the starter (they win over the programme's)"
    elif programme_settings is not None:
        source = "the programme's, read as it starts (shown as they were when it was started)"
    else:
        source = "the programme's, read as it starts (see the `state` query)"
    return StartOptions(
        static_summary=relationship_summary(relationship.programme_id, relationship.mentee_id, round_id),
        static_details=relationship_start_details(
            relationship_id=relationship.relationship_id,
            programme_id=relationship.programme_id,
            mentee_id=relationship.mentee_id,
            started_by=started_by,
            settings=settings,
            settings_source=source,
            ask_pool_first=relationship.ask_pool_first,
        ),
        memo=relationship_memo(
            relationship_id=relationship.relationship_id,
            programme_id=relationship.programme_id,
            mentee_id=relationship.mentee_id,
            started_by=started_by,
            start_parameters={
                "settings": "given" if relationship.settings is not None else "programme",
                "ask_pool_first": relationship.ask_pool_first,
                "history_event_limit": relationship.history_event_limit,
                **({"round_id": round_id} if round_id else {}),
            },
        ),
    )


def round_start_options(round_input: MatchingRoundInput, *, started_by: str) -> StartOptions:
    parameters = round_input.model_dump(mode="json", exclude={"relationship_settings"})
    shown = ("programme_id", "round_id", "coordinator_id", "objective", "mentee_ids", "batch_size")
    return StartOptions(
        static_summary=round_summary(round_input.programme_id, round_input.round_id),
        static_details=round_start_details(**{name: parameters[name] for name in shown}, started_by=started_by),
        memo={
            "programme_id": round_input.programme_id,
            "round_id": round_input.round_id,
            "started_by": started_by,
            "start_parameters": parameters
            | {"relationship_settings": "given" if round_input.relationship_settings else "programme"},
        },
    )
