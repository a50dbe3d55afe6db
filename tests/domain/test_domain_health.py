"""Health: nudges, at risk, stalled, and closing a stalled relationship."""

from __future__ import annotations

from datetime import timedelta


from events.commands import (
    AcceptMatch, NudgeRelationship, PauseRelationship, ProposeAgreement, ProposeMatch, RaiseConcern, RecordMeeting,
    RequestReview, SignAgreement, SubmitFeedback, SubmitReflection, SubmitReview,
)  # fmt: skip
from events.deadlines import next_deadline
from events.health import NUDGE_EVERY, assess_health
from events.model import (
    ClosureBegun, ClosureReason, Health, HealthChanged, MeetingHeld, NudgeIssued, RelationshipNudged,
)  # fmt: skip
from events.state import Phase
from tests.support.domain_story import (
    COORDINATOR, MENTEE, MENTOR, SECRET, T0, Story, active, closed, closing, programme, terms, types,
)  # fmt: skip

# --- health -------------------------------------------------------------------------------


def test_silence_nudges_then_flags_at_risk_then_stalled_and_a_meeting_restores_health() -> None:
    story = active(term_months=12, meeting_frequency="monthly")
    activated_at = story.state.activated_at
    assert activated_at is not None

    fired = story.advance(to=activated_at + timedelta(days=30) - timedelta(seconds=1))
    [nudge] = [e for e in fired if isinstance(e, NudgeIssued)]
    assert nudge.occurred_at == activated_at + timedelta(days=23) and nudge.quiet_since == activated_at
    assert story.state.health is Health.HEALTHY
    [at_risk] = [e for e in story.advance(timedelta(seconds=1)) if isinstance(e, HealthChanged)]
    assert (at_risk.health, at_risk.previous, at_risk.reasons) == (Health.AT_RISK, Health.HEALTHY, ("quiet",))
    assert at_risk.occurred_at == activated_at + timedelta(days=30)

    fired = story.advance(to=activated_at + timedelta(days=60))
    changes = [e for e in fired if isinstance(e, HealthChanged)]
    # The second missed meeting in a row adds its reason; then sixty quiet days stall it.
    assert [(c.health, c.reasons) for c in changes] == [
        (Health.AT_RISK, ("quiet", "missed_meetings")),
        (Health.STALLED, ("quiet", "missed_meetings")),
    ]
    assert changes[-1].occurred_at == activated_at + timedelta(days=60)
    assert story.state.stalled_at == activated_at + timedelta(days=60)
    assert not [e for e in fired if isinstance(e, NudgeIssued)], "one nudge per quiet spell"
    stalled_to = [n.recipient_id for n in story.notifications() if n.template == "health_stalled"]
    assert stalled_to == [MENTEE, MENTOR, COORDINATOR]
    assert [n.recipient_id for n in story.notifications() if n.template == "health_at_risk"] == [MENTEE, MENTOR] * 2

    story.advance(timedelta(days=5))
    # Held two hours ago: nearest to meeting 3, missed four days ago, so that record is corrected.
    held, restored = story.do(RecordMeeting, MENTOR, held_at=story.now - timedelta(hours=2), duration_minutes=30)
    assert isinstance(held, MeetingHeld) and (held.meeting_number, held.correction) == (3, True)
    assert isinstance(restored, HealthChanged)
    assert (restored.health, restored.previous, restored.reasons) == (Health.HEALTHY, Health.STALLED, ())
    assert story.state.stalled_at is None and story.state.consecutive_missed == 0
    assert assess_health(story.state, story.now) == (Health.HEALTHY, ())


def test_a_stalled_relationship_closes_after_close_stalled_after_days() -> None:
    story = active(programme(close_stalled_after_days=20), term_months=12, meeting_frequency="monthly")
    activated_at = story.state.activated_at
    assert activated_at is not None
    story.advance(to=activated_at + timedelta(days=60))
    assert story.state.health is Health.STALLED
    deadline = next_deadline(story.state)
    assert deadline is not None and deadline.kind != "close_stalled"  # meetings come first
    fired = story.advance(to=activated_at + timedelta(days=80))
    assert isinstance(fired[-1], ClosureBegun)
    assert (fired[-1].reason, fired[-1].closed_by, fired[-1].occurred_at) == (
        ClosureReason.STALLED, None, activated_at + timedelta(days=80)
    )
    story.advance(timedelta(days=14))
    assert story.state.is_closed and story.state.summary is not None
    assert story.state.summary.closure_reason is ClosureReason.STALLED and story.state.summary.reflections_from == ()


def test_with_close_stalled_after_days_zero_a_stalled_relationship_stays_open() -> None:
    story = active(programme(close_stalled_after_days=0), term_months=6, meeting_frequency="monthly")
    story.advance(timedelta(days=80))
    assert story.state.health is Health.STALLED and story.state.phase is Phase.ACTIVE
    fired = story.advance(timedelta(days=10))
    assert not [e for e in fired if isinstance(e, ClosureBegun)]


def test_a_meeting_pushes_the_at_risk_moment_back() -> None:
    story = active(term_months=12, meeting_frequency="monthly")
    story.meet()
    held_at = story.state.last_meeting_at
    assert held_at is not None
    fired = story.advance(to=held_at + timedelta(days=30) - timedelta(seconds=1))
    assert not [e for e in fired if isinstance(e, HealthChanged)]
    [at_risk] = [e for e in story.advance(timedelta(seconds=1)) if isinstance(e, HealthChanged)]
    assert at_risk.occurred_at == held_at + timedelta(days=30)


def test_a_late_reported_old_meeting_does_not_flip_health_back_and_forth() -> None:
    # Reported on day 32 but held on day 1: still 31 quiet days, so still at risk. Declaring
    # the relationship healthy would only re-flag it at once and notify everyone twice.
    story = active(term_months=12, meeting_frequency="monthly")
    activated_at = story.state.activated_at
    assert activated_at is not None
    story.advance(to=activated_at + timedelta(days=32))
    assert (story.state.health, story.state.health_reasons) == (Health.AT_RISK, ("quiet",))

    assert "HealthChanged" not in types(
        story.do(RecordMeeting, MENTEE, held_at=activated_at + timedelta(days=1), duration_minutes=60)
    )
    assert story.state.health is Health.AT_RISK
    assert not [event for event in story.advance(timedelta(seconds=1)) if isinstance(event, HealthChanged)]
    # A recent meeting does restore it.
    restored = story.do(RecordMeeting, MENTEE, held_at=story.now, duration_minutes=60)[-1]
    assert isinstance(restored, HealthChanged) and restored.health is Health.HEALTHY


def test_health_combines_its_reasons() -> None:
    story = active(programme(feedback_every_sessions=1))
    story.meet()
    story.do(RaiseConcern, MENTOR, text=f"{SECRET} a")
    *_, change = story.do(SubmitFeedback, MENTEE, feedback_round=1, score=1)
    assert isinstance(change, HealthChanged) and change.reasons == ("concern_open", "low_feedback")
    assert change.previous is Health.AT_RISK and change.health is Health.AT_RISK
    # Health outside the cadence is left as it is.
    assert assess_health(closed().state, T0 + timedelta(days=999))[0] is Health.HEALTHY


# --- a coordinator's nudge ---------------------------------------------------------------


def nudges(story: Story) -> list[tuple[str, tuple[str, ...]]]:
    """What the latest nudge told: its template, to whom."""
    [nudged] = [e for e in story.history[-3:] if isinstance(e, RelationshipNudged)]
    told = story.notifications_of([nudged])
    return [(n.template, n.recipient_id) for n in told]


def test_a_coordinator_nudges_whoever_the_relationship_waits_for_at_most_once_a_day() -> None:
    story = Story()
    assert story.refuse(NudgeRelationship, COORDINATOR) == (
        "nothing waits for the parties to remind them of: no mentor is proposed yet (propose one with propose_match)"
    )
    story.do(ProposeMatch, COORDINATOR, mentor_id=MENTOR)
    story.do(AcceptMatch, MENTOR)
    [nudged] = story.do(NudgeRelationship, COORDINATOR)
    assert isinstance(nudged, RelationshipNudged) and (nudged.reminder, nudged.parties) == ("match_proposal", ("mentee",))
    assert nudges(story) == [("match_proposed", MENTEE)]
    assert story.state.coordinator_nudged_at == story.now
    refused = story.refuse(NudgeRelationship, COORDINATOR)
    assert refused.startswith("the relationship was nudged less than a day ago; nudge again from ")
    assert "is not a coordinator" in story.refuse(NudgeRelationship, MENTEE)

    story.do(AcceptMatch, MENTEE)
    story.do(ProposeAgreement, MENTEE, terms=terms())
    story.do(SignAgreement, MENTOR, agreement_version=1)
    story.advance(NUDGE_EVERY)
    story.do(NudgeRelationship, COORDINATOR)
    assert nudges(story) == [("agreement_reminder", MENTEE)]


def test_a_nudge_in_the_cadence_reminds_of_the_next_meeting_or_asks_for_its_report() -> None:
    story = active()
    meeting = story.meeting
    story.do(NudgeRelationship, COORDINATOR)
    assert nudges(story) == [("meeting_reminder", MENTEE), ("meeting_reminder", MENTOR)]
    [reminder, _] = story.notifications_of([e for e in story.history if isinstance(e, RelationshipNudged)])
    assert reminder.data["meeting_start"] == meeting.starts_at.isoformat() and reminder.data["nudged_by_id"] == COORDINATOR
    story.advance(to=meeting.starts_at + timedelta(hours=2))
    story.do(NudgeRelationship, COORDINATOR)
    assert nudges(story) == [("meeting_missed_check", MENTEE), ("meeting_missed_check", MENTOR)]
    assert story.state.next_meeting is not None and story.state.next_meeting.starts_at == meeting.starts_at


def test_a_nudge_reminds_of_a_review_and_of_reflections_but_not_while_paused() -> None:
    story = active()
    story.do(RequestReview, MENTEE)
    story.do(SubmitReview, MENTOR, outcome="continue")
    story.do(NudgeRelationship, COORDINATOR)
    assert nudges(story) == [("on_demand_review_opened", MENTEE)]
    story.do(SubmitReview, MENTEE, outcome="continue")
    story.advance(NUDGE_EVERY)
    story.do(PauseRelationship, MENTEE, until=story.now + timedelta(days=5))
    assert "not allowed while the relationship is paused" in story.refuse(NudgeRelationship, COORDINATOR)

    story = closing()
    story.do(SubmitReflection, MENTOR, text="what I saw")
    story.do(NudgeRelationship, COORDINATOR)
    assert nudges(story) == [("reflection_request", MENTEE)]
    assert "is closed" in closed().refuse(NudgeRelationship, COORDINATOR)
