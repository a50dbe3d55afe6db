"""A relationship's health, derived from its meetings, feedback and concerns (004: notice
it before it "fizzles out"): nudges while it is quiet, at risk, stalled, and closed once it
has stalled for long enough."""

from __future__ import annotations

from datetime import datetime, timedelta

from events.decision import Changes, Emitter, Stage
from events.ending import close
from events.model import ClosureReason, Health, HealthChanged, NudgeIssued
from events.state import RelationshipState

stage = Stage("health")


def quiet_since(state: RelationshipState) -> datetime | None:
    """Since when nothing has kept the relationship going: the last meeting, the start of
    the cadence, or the end of a pause — whichever is latest."""
    moments = [m for m in (state.activated_at, state.last_meeting_at, state.resumed_at) if m is not None]
    return max(moments) if moments else None


def assess_health(state: RelationshipState, now: datetime) -> tuple[Health, tuple[str, ...]]:
    """Health and the reasons for it, as codes: quiet, missed_meetings, concern_open, low_feedback."""
    since = quiet_since(state)
    if not state.in_cadence or state.is_paused or since is None:
        return state.health, state.health_reasons
    settings = state.settings
    quiet = now - since
    reasons: list[str] = []
    if quiet >= timedelta(days=settings.at_risk_after_days):
        reasons.append("quiet")
    if state.consecutive_missed >= settings.missed_meetings_at_risk:
        reasons.append("missed_meetings")
    if state.open_concerns:
        reasons.append("concern_open")
    if state.low_feedback_parties:
        reasons.append("low_feedback")
    if quiet >= timedelta(days=settings.stalled_after_days):
        return Health.STALLED, tuple(reasons)
    return (Health.AT_RISK if reasons else Health.HEALTHY), tuple(reasons)


def reassess_health(emit: Emitter) -> None:
    """Record a change of health (every decision in the cadence ends with this)."""
    state = emit.current
    health, reasons = assess_health(state, emit.now)
    if (health, reasons) != (state.health, state.health_reasons):
        emit(HealthChanged, health=health, previous=state.health, reasons=reasons)


@stage.deadline("nudge")
def nudge(emit: Emitter) -> None:
    since = quiet_since(emit.current)
    assert since is not None
    emit(NudgeIssued, quiet_since=since)


@stage.deadline("health_quiet", "health_stalled")
def health_threshold(emit: Emitter) -> None:
    # The follow-up that ends every decision records the change of health.
    pass


@stage.deadline("close_stalled")
def close_stalled(emit: Emitter) -> None:
    close(emit, ClosureReason.STALLED, None)


@stage.evolves(HealthChanged)
def _health_changed(event: HealthChanged, state: RelationshipState) -> Changes:
    stalled_at = state.stalled_at
    if event.health is Health.STALLED and state.health is not Health.STALLED:
        stalled_at = event.occurred_at
    elif event.health is not Health.STALLED:
        stalled_at = None
    return {"health": event.health, "health_reasons": event.reasons, "stalled_at": stalled_at}


@stage.evolves(NudgeIssued)
def _nudged(event: NudgeIssued, state: RelationshipState) -> Changes:
    return {"nudged_quiet_since": event.quiet_since}
