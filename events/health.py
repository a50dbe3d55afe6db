"""A relationship's health, derived from its meetings, feedback and concerns (004: notice
it before it "fizzles out"): nudges while it is quiet, at risk, stalled, and closed once it
has stalled for long enough. A coordinator may nudge too (`nudge_relationship`): the
reminder of whatever the relationship waits for goes out again."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta

from events.commands import NudgeRelationship, Party
from events.decision import OPEN_PHASES, Changes, Emitter, Pause, Sender, Stage
from events.ending import close
from events.model import ClosureReason, Health, HealthChanged, NudgeIssued, NudgeReminder, RelationshipNudged
from events.refusals import RefusalCode, Rejection, refuse
from events.state import Phase, RelationshipState

stage = Stage("health")

# A coordinator's nudge goes out at most this often (per relationship): a reminder a day is
# a reminder; more is noise that teaches people to ignore them.
NUDGE_EVERY = timedelta(days=1)


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


@stage.command(
    NudgeRelationship,
    phases=(*OPEN_PHASES, Phase.CLOSING),
    senders=frozenset({Sender.COORDINATOR}),
    who="a coordinator",
    refusal="actor {actor} is not a coordinator of this programme",
    pause=Pause.NOT_PAUSED,
    condition="when something waits for the parties, at most once a day",
)
def nudge_relationship(command: NudgeRelationship, emit: Emitter, party: None) -> Rejection | None:
    state = emit.current
    last = state.coordinator_nudged_at
    if last is not None and emit.now < last + NUDGE_EVERY:
        again = (last + NUDGE_EVERY).isoformat()
        return refuse(RefusalCode.LIMIT, f"the relationship was nudged less than a day ago; nudge again from {again}")
    waiting = waiting_reminder(state, emit.now)
    if isinstance(waiting, Rejection):
        return waiting
    reminder, parties = waiting
    emit(RelationshipNudged, nudged_by=command.actor_id, reminder=reminder, parties=parties)
    return None


def waiting_reminder(state: RelationshipState, now: datetime) -> tuple[NudgeReminder, tuple[Party, ...]] | Rejection:
    """What the relationship waits for from its parties, and from which of them: the answers
    to the match proposal, the signatures, the review's answers, the reflections, or the
    next meeting (its report, once it has begun). Refused when nothing waits for them."""
    if state.phase is Phase.MATCHING:
        if state.candidate is None:
            return _nothing_waits("no mentor is proposed yet (propose one with propose_match)")
        return "match_proposal", _yet_to(state.candidate.accepted_by)
    if state.phase is Phase.AGREEMENT:
        return "agreement", _yet_to(state.agreement.signed_by if state.agreement else ())
    if state.phase is Phase.REVIEW and state.review is not None:
        return "review", _yet_to(state.review.submissions)
    if state.phase is Phase.CLOSING:
        return "reflection", _yet_to(state.reflections_from)
    meeting = state.next_meeting
    if meeting is None:
        return _nothing_waits("no meeting is scheduled (the term has no room for another)")
    return ("meeting" if meeting.starts_at > now else "meeting_report"), ("mentee", "mentor")


def _yet_to(done: Iterable[Party]) -> tuple[Party, ...]:
    finished = set(done)
    return tuple(party for party in ("mentee", "mentor") if party not in finished)


def _nothing_waits(why: str) -> Rejection:
    return refuse(RefusalCode.NOT_FOUND, f"nothing waits for the parties to remind them of: {why}")


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


@stage.evolves(RelationshipNudged)
def _nudged_by_coordinator(event: RelationshipNudged, state: RelationshipState) -> Changes:
    return {"coordinator_nudged_at": event.occurred_at}
