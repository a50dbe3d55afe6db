"""Closure: either party or a coordinator ends the relationship early, the directory reports
a leaver, and both write a closing reflection before it closes with its summary.

How any stage ends a relationship (`close`, `finish`): events/ending.py.
"""

from __future__ import annotations

from events.commands import CloseRelationship, Party, ReportParticipantLeft, SubmitReflection
from events.decision import OPEN_PHASES, PARTIES, PARTIES_OR_COORDINATORS, Changes, Emitter, Sender, Stage, is_coordinator
from events.ending import close, finish
from events.matching import candidate_declined
from events.model import ClosureBegun, ClosureReason, ReflectionSubmitted, RelationshipClosed
from events.refusals import RefusalCode, Rejection, refuse
from events.state import Phase, RelationshipState, joined

stage = Stage("closure")

_MAY_NOT_CLOSE = "actor {actor} may not close this relationship"


@stage.command(
    CloseRelationship,
    phases=OPEN_PHASES,
    senders=PARTIES_OR_COORDINATORS,
    who="the mentee, the matched mentor, or a coordinator",
    refusal=_MAY_NOT_CLOSE,
)
def close_relationship(command: CloseRelationship, emit: Emitter, party: Party | None) -> Rejection | None:
    state = emit.current
    if is_coordinator(state, command.actor_id):
        reason = ClosureReason.CLOSED_BY_COORDINATOR
    elif command.actor_id == state.mentee_id:
        reason = ClosureReason.CLOSED_BY_MENTEE
    elif state.mentor_id is not None and command.actor_id == state.mentor_id:
        reason = ClosureReason.CLOSED_BY_MENTOR
    else:
        # A mentor only proposed may decline, not close.
        return refuse(RefusalCode.NOT_ALLOWED, _MAY_NOT_CLOSE.format(actor=command.actor_id))
    close(emit, reason, command.actor_id, command.note)
    return None


@stage.command(
    ReportParticipantLeft,
    phases=OPEN_PHASES,
    senders=frozenset({Sender.DIRECTORY, Sender.COORDINATOR}),
    who="a coordinator, or the actor id `directory`",
    refusal="only the directory or a coordinator may report that a participant left",
)
def participant_left(command: ReportParticipantLeft, emit: Emitter, sender: Party | None) -> Rejection | None:
    state = emit.current
    party = state.party_of(command.participant_id)
    if party is None:
        return refuse(RefusalCode.NOT_FOUND, f"participant {command.participant_id} is not part of this relationship")
    if state.phase is Phase.MATCHING and party == "mentor":
        # Only proposed, not yet matched: the search goes on without them.
        candidate_declined(emit, "mentor", command.actor_id, "participant left")
    else:
        close(emit, ClosureReason.PARTICIPANT_LEFT, command.actor_id, left=command.participant_id)
    return None


@stage.command(SubmitReflection, phases=(Phase.CLOSING,), senders=PARTIES, who="a party, once each")
def submit_reflection(command: SubmitReflection, emit: Emitter, party: Party) -> Rejection | None:
    if party in emit.current.reflections_from:
        return refuse(RefusalCode.CONFLICT, f"the {party} has already shared a reflection")
    emit(ReflectionSubmitted, party=party, text=command.text)
    if len(emit.current.reflections_from) == 2:
        finish(emit)
    return None


@stage.deadline("reflection_deadline")
def reflections_due(emit: Emitter) -> None:
    finish(emit)


# -- state changes ---------------------------------------------------------------------------

@stage.evolves(ClosureBegun)
def _closure_begun(event: ClosureBegun, state: RelationshipState) -> Changes:
    return {"phase": Phase.CLOSING, "reflections_due_at": event.reflections_due_at, **_ending(event)}


@stage.evolves(ReflectionSubmitted)
def _reflected(event: ReflectionSubmitted, state: RelationshipState) -> Changes:
    return {"reflections_from": joined(state.reflections_from, event.party)}


@stage.evolves(RelationshipClosed)
def _closed(event: RelationshipClosed, state: RelationshipState) -> Changes:
    return {"phase": Phase.CLOSED, "closed_at": event.occurred_at, "summary": event.summary, **_ending(event)}


def _ending(event: ClosureBegun | RelationshipClosed) -> Changes:
    """Why and by whom it ends; what ends with the relationship's active life is released:
    a pending proposal, an open review, the next meeting, a pause."""
    released = {"candidate": None, "review": None, "next_meeting": None, "paused_at": None, "paused_until": None}
    return {"closure_reason": event.reason, "closed_by": event.closed_by, **released}
