"""Who is told what when an event happens: pure, so the same events always notify the same way.

A notification carries ids and a template name, never confidential text (a closure's
`note`, for one, stays in its event); channels (log,
email with calendar invites, signed webhooks) render and deliver it. Its id is derived from
the event id and the recipient, so a channel can recognise a redelivery.

Meeting notifications carry `meeting_start`, `meeting_end` (ISO 8601, UTC), `meeting_uid`
and `meeting_sequence`, from which the email channel builds the `.ics` invite.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

from pydantic import BaseModel, ConfigDict

from events.model import (
    AgendaRequested,
    AgreementProposed,
    AgreementReminderIssued,
    AnyEvent,
    ClosureBegun,
    ClosureReason,
    ConcernRaised,
    ConcernResolved,
    FeedbackRequested,
    FeedbackSubmitted,
    GoalAchieved,
    GoalRevised,
    GoalRevisionProposed,
    Health,
    HealthChanged,
    MatchConfirmed,
    MatchDeclined,
    MatchProposalExpired,
    MatchProposed,
    MeetingCancelled,
    MeetingMissed,
    MeetingReportCorrected,
    MeetingReportedNotHeld,
    MeetingReminderIssued,
    MeetingRescheduled,
    MeetingScheduled,
    MilestoneReached,
    NudgeIssued,
    RelationshipActivated,
    RelationshipClosed,
    RelationshipNudged,
    RelationshipPaused,
    RelationshipResumed,
    ReviewCompleted,
    ReviewOpened,
    TermExtended,
)
from events.state import RelationshipState


class Notification(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    notification_id: str
    relationship_id: str
    recipient_id: str
    template: str
    # Template parameters: ids, numbers, dates. Never names or confidential text.
    data: dict[str, str] = {}


Audience = tuple[str, tuple[str, ...], dict[str, str]]
Rule = Callable[[Any, RelationshipState], Audience | list[Audience]]


def notifications_for(event: AnyEvent, state: RelationshipState, before: RelationshipState | None = None) -> list[Notification]:
    """The notifications an event causes; `state` is the relationship after the event,
    `before` the one before it (who was involved may have changed)."""
    rule = _RULES.get(type(event))
    if rule is None:
        return []
    audiences = rule(event, before or state)
    if not isinstance(audiences, list):
        audiences = [audiences]
    return [
        Notification(
            # A second audience of the same event (a withdrawn invite) is told apart by its template.
            notification_id=f"{event.event_id}:{template}:{recipient}" if index else f"{event.event_id}:{recipient}",
            relationship_id=state.relationship_id,
            recipient_id=recipient,
            template=template,
            data=data,
        )
        for index, (template, recipients, data) in enumerate(audiences)
        for recipient in dict.fromkeys(recipients)
    ]


# Health reasons the parties themselves are told about. A concern or a low feedback score
# is between its author and the coordinators: telling the other party that the
# relationship is "at risk: concern open" would give it away.
_REASONS_FOR_PARTIES = ("quiet", "missed_meetings")


def _health(event: HealthChanged, state: RelationshipState) -> list[Audience]:
    audiences: list[Audience] = []
    shared = tuple(r for r in event.reasons if r in _REASONS_FOR_PARTIES)
    was_shared = any(r in _REASONS_FOR_PARTIES for r in state.health_reasons)
    if (event.health is not Health.HEALTHY and shared) or (event.health is Health.HEALTHY and was_shared):
        data = {"health": event.health.value, "previous": event.previous.value, "reasons": ",".join(shared)}
        audiences.append((f"health_{event.health.value}", _both(state), data))
    if event.health is Health.STALLED or set(event.reasons) - set(_REASONS_FOR_PARTIES):
        data = {"health": event.health.value, "previous": event.previous.value, "reasons": ",".join(event.reasons)}
        audiences.append((f"health_{event.health.value}", _coordinators(state), data))
    return audiences


# Closures that end a relationship before its term. The coordinators hear of each at once,
# with the reason and who closed it (002 §8 "address issues early"; the default exit plan
# itself says to tell the coordinator) — not days later from the summary, nor never, until
# the reflection deadline, if nobody reflects.
# Not early: `term_completed` (the planned end), and `unmatched` and `agreement_expired`,
# which end a relationship that never got under way: nobody chose them, the coordinators
# heard of every decline or expiry on the way, and such a relationship closes at once, so
# the summary reaches the coordinators the moment it happens anyway.
EARLY_CLOSURE_REASONS = frozenset(
    {
        ClosureReason.CLOSED_BY_MENTEE,
        ClosureReason.CLOSED_BY_MENTOR,
        ClosureReason.CLOSED_BY_COORDINATOR,
        ClosureReason.PARTICIPANT_LEFT,
        ClosureReason.STALLED,
        ClosureReason.REVIEW_DECIDED_CLOSE,
    }
)


def _closed_early(
    event: ClosureBegun | RelationshipClosed, state: RelationshipState, data: dict[str, str]
) -> list[Audience]:
    """`relationship_closed_early` to the coordinators: the reason, who closed it and who the
    parties are (ids, shown as names), never the `note` whoever closed it wrote. A
    coordinator who is also a party hears as a party, once."""
    if event.reason not in EARLY_CLOSURE_REASONS:
        return []
    parties = _both(state)
    coordinators = tuple(c for c in _coordinators(state) if c not in parties)
    told = {"reason": event.reason.value, "mentee_id": state.mentee_id}
    if state.mentor_id is not None:  # matched (a mentor only proposed is not named)
        told["mentor_id"] = state.mentor_id
    if event.closed_by is not None:
        told["closed_by_id"] = event.closed_by
    return [("relationship_closed_early", coordinators, {**told, **data})] if coordinators else []


def _closure_begun(event: ClosureBegun, state: RelationshipState) -> list[Audience]:
    respond_by = event.reflections_due_at.isoformat()
    return [
        ("reflection_request", _both(state), {"reason": event.reason.value, "respond_by": respond_by}),
        *_closed_early(event, state, {"respond_by": respond_by}),
        *_withdrawn_meeting(state, "the relationship is closing"),
    ]


def _closed(event: RelationshipClosed, state: RelationshipState) -> list[Audience]:
    summary = event.summary
    data = {
        "reason": event.reason.value,
        "meetings_held": str(summary.meetings_held),
        "meetings_missed": str(summary.meetings_missed),
        "goals_achieved": str(summary.goals_achieved),
        "goals_total": str(summary.goals_total),
        "duration_days": str(summary.duration_days),
        "feedback_trend": ",".join(str(x) for x in summary.feedback_trend),
    }
    # A relationship that never got going closes at once, without a ClosureBegun: if that is
    # an early closure, the coordinators' copy of the summary is the early-closure notice
    # (one message, saying who closed it). After a ClosureBegun they were told then.
    early = _closed_early(event, state, data) if summary.activated_at is None else []
    if not early:
        return [("relationship_summary", _everyone(state), data)]
    return [("relationship_summary", _both(state), data), *early]


def _withdrawn_meeting(state: RelationshipState, because: str) -> list[Audience]:
    """Pausing or closing drops the scheduled meeting: withdraw its calendar invite too
    (nobody cancelled it, so it is not a `meeting_cancelled`)."""
    meeting = state.next_meeting
    if meeting is None:
        return []
    data = {**_meeting(state, meeting.meeting_number, meeting.starts_at, meeting.ends_at)}
    data["meeting_sequence"] = str(meeting.revision + 1)
    data["meeting_status"] = "cancelled"
    data["because"] = because
    return [("meeting_withdrawn", _both(state), data)]


def _both(state: RelationshipState) -> tuple[str, ...]:
    return state.participant_ids()


def _coordinators(state: RelationshipState) -> tuple[str, ...]:
    return state.settings.coordinator_ids


def _everyone(state: RelationshipState) -> tuple[str, ...]:
    return (*_both(state), *_coordinators(state))


def _raiser(state: RelationshipState, concern_id: str) -> tuple[str, ...]:
    concern = state.open_concerns.get(concern_id)
    raiser = state.id_of(concern.party) if concern is not None and concern.party is not None else None
    return (raiser,) if raiser else ()


def _other_than(state: RelationshipState, actor_id: str) -> tuple[str, ...]:
    return tuple(p for p in _both(state) if p != actor_id)


def _meeting(state: RelationshipState, number: int, starts_at: Any, ends_at: Any = None) -> dict[str, str]:
    minutes = state.agreement.terms.meeting_minutes if state.agreement else 60
    end = ends_at if ends_at is not None else starts_at + timedelta(minutes=minutes)
    revision = state.next_meeting.revision if state.next_meeting and state.next_meeting.meeting_number == number else 0
    return {
        "mentee_id": state.mentee_id,
        "mentor_id": state.mentor_id or "",
        "meeting_number": str(number),
        "meeting_start": starts_at.isoformat(),
        "meeting_end": end.isoformat(),
        "meeting_uid": f"{state.relationship_id}-meeting-{number}@mentorflow",
        "meeting_sequence": str(revision),
    }


def _planned_for(state: RelationshipState, number: int) -> dict[str, str]:
    """A past meeting named by its number and planned start (no invite: it is over)."""
    planned = [m.starts_at for m in state.past_meetings if m.meeting_number == number]
    return {"meeting_number": str(number), **({"meeting_planned_for": planned[0].isoformat()} if planned else {})}


def _missed(event: MeetingMissed, state: RelationshipState) -> list[Audience]:
    # Counted missed because nobody reported it: both are asked what happened. A party's
    # report or correction counted it: that report's own notice tells the other party.
    if event.command_id is not None:
        return []
    return [("meeting_missed_check", _both(state), _meeting(state, event.meeting_number, event.starts_at))]


def _nudged(event: RelationshipNudged, state: RelationshipState) -> Audience:
    """The reminder of what waits, again, in the words it first went out in."""
    candidate, mentor = state.candidate, state.mentor_id or (state.candidate.mentor_id if state.candidate else None)
    recipients = tuple(r for p in event.parties if (r := state.mentee_id if p == "mentee" else mentor))
    data: dict[str, str] = {"nudged_by_id": event.nudged_by}
    if event.reminder == "match_proposal" and candidate is not None:
        data |= {"mentor_id": candidate.mentor_id, "respond_by": candidate.expires_at.isoformat()}
        return "match_proposed", recipients, data
    if event.reminder == "agreement" and state.agreement_due_at is not None:
        days_left = max(0, (state.agreement_due_at - event.occurred_at).days)
        return "agreement_reminder", recipients, {**data, **_agreement_version(state), "days_left": str(days_left),
                                                  "agreement_due_at": state.agreement_due_at.isoformat()}  # fmt: skip
    if event.reminder in ("meeting", "meeting_report") and (meeting := state.next_meeting) is not None:
        template = "meeting_reminder" if event.reminder == "meeting" else "meeting_missed_check"
        return template, recipients, {**data, **_meeting(state, meeting.meeting_number, meeting.starts_at, meeting.ends_at)}
    if event.reminder == "review" and (review := state.review) is not None:
        return f"{review.kind}_review_opened", recipients, {**data, "respond_by": review.respond_by.isoformat()}
    assert event.reminder == "reflection" and state.reflections_due_at is not None and state.closure_reason is not None
    data |= {"reason": state.closure_reason.value, "respond_by": state.reflections_due_at.isoformat()}
    return "reflection_request", recipients, data


def _agreement_version(state: RelationshipState) -> dict[str, str]:
    """The version a reminder to sign is about (none before the first is proposed): its links
    lead to that version, to sign it or propose changes to it."""
    return {"agreement_version": str(state.agreement.agreement_version)} if state.agreement is not None else {}


def _agenda_recipients(state: RelationshipState) -> tuple[str, ...]:
    policy = state.agreement.terms.agenda_policy if state.agreement else "mentee_shares"
    return (state.mentee_id,) if policy == "mentee_shares" else _both(state)


_RULES: dict[type, Rule] = {
    MatchProposed: lambda e, s: (
        "match_proposed",
        (s.mentee_id, e.mentor_id),
        {"mentor_id": e.mentor_id, "respond_by": e.expires_at.isoformat(), "explanation": e.explanation},
    ),
    MatchDeclined: lambda e, s: (
        "match_declined",
        (s.mentee_id, e.mentor_id, *_coordinators(s)),
        {"mentor_id": e.mentor_id, "declined_by": e.party},
    ),
    MatchProposalExpired: lambda e, s: (
        "match_proposal_expired",
        (s.mentee_id, e.mentor_id, *_coordinators(s)),
        {"mentor_id": e.mentor_id},
    ),
    MatchConfirmed: lambda e, s: (
        "match_confirmed",
        (s.mentee_id, e.mentor_id),
        {"mentor_id": e.mentor_id, "agreement_due_at": e.agreement_due_at.isoformat()},
    ),
    AgreementProposed: lambda e, s: (
        "agreement_proposed",
        _other_than(s, e.proposed_by),
        {"agreement_version": str(e.agreement_version)},
    ),
    AgreementReminderIssued: lambda e, s: (
        "agreement_reminder",
        tuple(
            p
            for p in _both(s)
            if s.agreement is None or s.party_of(p) not in s.agreement.signed_by
        ),
        {**_agreement_version(s), "days_left": str(e.days_left), "agreement_due_at": e.agreement_due_at.isoformat()},
    ),
    RelationshipActivated: lambda e, s: (
        "relationship_activated",
        _both(s),
        {"term_ends_at": e.term_ends_at.isoformat(), "meeting_frequency": e.meeting_frequency},
    ),
    MeetingScheduled: lambda e, s: ("meeting_scheduled", _both(s), _meeting(s, e.meeting_number, e.starts_at, e.ends_at)),
    MeetingRescheduled: lambda e, s: (
        "meeting_rescheduled",
        _both(s),
        {**_meeting(s, e.meeting_number, e.starts_at, e.ends_at), "meeting_sequence": str(s.next_meeting.revision + 1 if s.next_meeting else 1)},
    ),
    AgendaRequested: lambda e, s: ("agenda_request", _agenda_recipients(s), _meeting(s, e.meeting_number, e.starts_at)),
    MeetingReminderIssued: lambda e, s: ("meeting_reminder", _both(s), _meeting(s, e.meeting_number, e.starts_at)),
    MeetingCancelled: lambda e, s: (
        "meeting_cancelled",
        _both(s),
        {
            **_meeting(s, e.meeting_number, s.next_meeting.starts_at if s.next_meeting else e.occurred_at),
            # A cancellation must carry a higher sequence than the invite it cancels.
            "meeting_sequence": str((s.next_meeting.revision if s.next_meeting else 0) + 1),
            "late": str(e.late).lower(),
            "cancelled_by": e.party,
        },
    ),
    MeetingMissed: _missed,
    MeetingReportedNotHeld: lambda e, s: (
        "meeting_reported_not_held",
        _other_than(s, e.reported_by),
        {**_planned_for(s, e.meeting_number), "party": e.party},
    ),
    MeetingReportCorrected: lambda e, s: (
        "meeting_report_corrected",
        _other_than(s, e.corrected_by),
        {**_planned_for(s, e.meeting_number), "outcome": e.outcome, "party": e.party},
    ),
    MilestoneReached: lambda e, s: (
        "milestone_celebration",
        _both(s),
        {"goal_id": e.goal_id, "goal_title": s.goals[e.goal_id].goal.title, "milestone_id": e.milestone_id},
    ),
    GoalAchieved: lambda e, s: (
        "goal_achieved",
        _both(s),
        {"goal_id": e.goal_id, "goal_title": s.goals[e.goal_id].goal.title},
    ),
    GoalRevisionProposed: lambda e, s: (
        "goal_revision_to_acknowledge",
        _other_than(s, e.proposed_by),
        {"goal_id": e.goal.goal_id, "revision_id": e.revision_id},
    ),
    GoalRevised: lambda e, s: ("goal_revised", _both(s), {"goal_id": e.goal.goal_id, "revision_id": e.revision_id}),
    FeedbackRequested: lambda e, s: (
        "feedback_request",
        _both(s),
        {"feedback_round": str(e.feedback_round), "after_meeting": str(e.after_meeting)},
    ),
    FeedbackSubmitted: lambda e, s: (
        # Only a low score tells anyone anything, and only that it was low: never the comment.
        ("low_feedback" if e.low else "feedback_received"),
        (_coordinators(s) if e.low else ()),
        {"feedback_round": str(e.feedback_round), "party": e.party},
    ),
    ConcernRaised: lambda e, s: (
        "concern_raised",
        _coordinators(s),
        {"concern_id": e.concern_id, "raised_by_party": e.party or "coordinator"},
    ),
    # Only whoever raised it (and the coordinators) knew of the concern.
    ConcernResolved: lambda e, s: (
        "concern_resolved",
        (*_raiser(s, e.concern_id), *_coordinators(s)),
        {"concern_id": e.concern_id},
    ),
    RelationshipPaused: lambda e, s: [
        ("relationship_paused", _both(s), {"until": e.until.isoformat()}),
        *_withdrawn_meeting(s, "the relationship is paused"),
    ],
    RelationshipResumed: lambda e, s: ("relationship_resumed", _both(s), {"term_ends_at": e.term_ends_at.isoformat()}),
    HealthChanged: _health,
    NudgeIssued: lambda e, s: ("nudge", _both(s), {"quiet_since": e.quiet_since.isoformat()}),
    RelationshipNudged: _nudged,
    ReviewOpened: lambda e, s: (f"{e.kind}_review_opened", _both(s), {"respond_by": e.respond_by.isoformat()}),
    ReviewCompleted: lambda e, s: ("review_completed", _both(s), {"kind": e.kind, "outcome": e.outcome}),
    TermExtended: lambda e, s: (
        "term_extended",
        _everyone(s),
        {"months": str(e.months), "term_ends_at": e.term_ends_at.isoformat()},
    ),
    ClosureBegun: _closure_begun,
    RelationshipClosed: _closed,
}
