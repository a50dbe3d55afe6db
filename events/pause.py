"""Pause: no meetings, reminders or health checks for a while; the term grows by the pause."""

from __future__ import annotations

from datetime import timedelta

from events.commands import Party, PauseRelationship, ResumeRelationship
from events.decision import PARTIES_OR_COORDINATORS, Changes, Emitter, Pause, Stage
from events.model import RelationshipPaused, RelationshipResumed
from events.refusals import Rejection, limit
from events.state import Phase, RelationshipState

stage = Stage("pause")


@stage.command(PauseRelationship, phases=(Phase.ACTIVE,), senders=PARTIES_OR_COORDINATORS, pause=Pause.NOT_PAUSED)
def pause(command: PauseRelationship, emit: Emitter, party: Party | None) -> Rejection | None:
    settings = emit.current.settings
    if command.until <= emit.now:
        return limit("until", "is not in the future")
    if command.until > emit.now + timedelta(days=settings.max_pause_days):
        return limit("until", f"is more than {settings.max_pause_days} days ahead (the longest pause)")
    emit(RelationshipPaused, until=command.until, paused_by=command.actor_id, reason=command.reason)
    return None


@stage.command(ResumeRelationship, phases=(Phase.ACTIVE,), senders=PARTIES_OR_COORDINATORS, pause=Pause.ONLY_PAUSED)
def resume(command: ResumeRelationship, emit: Emitter, party: Party | None) -> Rejection | None:
    resume_now(emit, command.actor_id)
    return None


@stage.deadline("pause_ends")
def pause_ends(emit: Emitter) -> None:
    resume_now(emit, None)


def resume_now(emit: Emitter, resumed_by: str | None) -> None:
    state = emit.current
    assert state.paused_at is not None and state.term_ends_at is not None
    emit(RelationshipResumed, resumed_by=resumed_by, term_ends_at=state.term_ends_at + (emit.now - state.paused_at))


@stage.evolves(RelationshipPaused)
def _paused(event: RelationshipPaused, state: RelationshipState) -> Changes:
    return {"paused_at": event.occurred_at, "paused_until": event.until, "next_meeting": None}


@stage.evolves(RelationshipResumed)
def _resumed(event: RelationshipResumed, state: RelationshipState) -> Changes:
    return {"paused_at": None, "paused_until": None, "resumed_at": event.occurred_at, "term_ends_at": event.term_ends_at}
