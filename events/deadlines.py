"""Everything a relationship does on its own is driven by one pure `next_deadline`."""

from __future__ import annotations

from calendar import monthrange
from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict

from events.health import quiet_since
from events.model import Health
from events.state import LEGACY_CADENCE_RULES, Phase, RelationshipState

DeadlineKind = Literal[
    "matching_timeout",
    "match_proposal_expiry",
    "agreement_reminder",
    "agreement_expiry",
    "agenda_request",
    "meeting_reminder",
    "meeting_missed",
    "nudge",
    "health_quiet",
    "health_stalled",
    "close_stalled",
    "midpoint_review",
    "final_review",
    "review_deadline",
    "pause_ends",
    "reflection_deadline",
]


class Deadline(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: DeadlineKind
    at: AwareDatetime
    # Shown on the workflow's timer in the Web UI; never carries names or confidential text.
    summary: str


def add_months(moment: datetime, months: int) -> datetime:
    """Calendar months, clamping the day (31 January + 1 month = 28/29 February)."""
    month_index = moment.month - 1 + months
    year, month = moment.year + month_index // 12, month_index % 12 + 1
    day = min(moment.day, monthrange(year, month)[1])
    return moment.replace(year=year, month=month, day=day)


def midpoint(state: RelationshipState) -> datetime | None:
    if state.activated_at is None or state.term_ends_at is None:
        return None
    return state.activated_at + (state.term_ends_at - state.activated_at) / 2


class Due(BaseModel):
    """What the people in a relationship next have to do, and by when."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    at: AwareDatetime | None
    # Shown in the Web UI's Current Details; roles and numbers, never names.
    what: str


def next_due(state: RelationshipState) -> Due | None:
    """What the people in the relationship next have to do and when: the proposal's answer,
    the signatures, the next meeting, the review, the reflections. Operators filter on the
    time (search attribute NextDueAt); unlike `next_deadline` it ignores internal timers."""
    if state.phase is Phase.MATCHING:
        if state.candidate is not None:
            waiting = ", ".join(_waiting_for(state.candidate.accepted_by)) or "nobody"
            return Due(at=state.candidate.expires_at, what=f"Answer to the match proposal ({waiting} to accept)")
        return Due(
            at=state.started_at + timedelta(days=state.settings.matching_timeout_days),
            what="A mentor proposal (matching gives up then)",
        )
    if state.phase is Phase.AGREEMENT:
        if state.agreement is None:
            return Due(at=state.agreement_due_at, what="An agreement proposal and both signatures")
        missing = ", ".join(_waiting_for(state.agreement.signed_by))
        version = state.agreement.agreement_version
        return Due(at=state.agreement_due_at, what=f"Signatures on agreement version {version} ({missing})")
    if state.phase is Phase.REVIEW and state.review is not None:
        missing = ", ".join(_waiting_for(state.review.submissions)) or "all in"
        kind = state.review.kind.replace("_", " ")
        return Due(at=state.review.respond_by, what=f"Answers to the {kind} review ({missing})")
    if state.phase is Phase.CLOSING:
        missing = ", ".join(_waiting_for(state.reflections_from)) or "all in"
        return Due(at=state.reflections_due_at, what=f"Closing reflections ({missing})")
    if state.phase is Phase.ACTIVE:
        if state.paused_until is not None:
            return Due(at=state.paused_until, what="The end of the pause")
        meeting = state.next_meeting
        # A meeting the legacy rules left past the end of the term comes after the final review.
        past_the_term = meeting is not None and state.cadence_rules != LEGACY_CADENCE_RULES and (
            state.term_ends_at is not None and meeting.starts_at > state.term_ends_at
        )
        if meeting is not None and not past_the_term:
            return Due(at=meeting.starts_at, what=f"Meeting {meeting.meeting_number}")
        return Due(at=state.term_ends_at, what="The end of the term")
    return None


def _waiting_for(done: Iterable[str]) -> list[str]:
    """The parties, mentee first, not among those who have already done it."""
    finished = set(done)
    return [party for party in ("mentee", "mentor") if party not in finished]


def next_due_at(state: RelationshipState) -> datetime | None:
    """When `next_due` is due (the NextDueAt search attribute)."""
    due = next_due(state)
    return due.at if due is not None else None


def next_deadline(state: RelationshipState) -> Deadline | None:
    """The earliest moment at which time alone changes this relationship; None once closed."""
    candidates = _candidates(state)
    # min() keeps the first of equal deadlines, so the order in _candidates breaks ties.
    return min(candidates, key=lambda deadline: deadline.at) if candidates else None


def _candidates(state: RelationshipState) -> list[Deadline]:
    settings = state.settings
    if state.phase is Phase.CLOSED:
        return []
    if state.phase is Phase.CLOSING:
        assert state.reflections_due_at is not None
        return [Deadline(kind="reflection_deadline", at=state.reflections_due_at, summary="Closing reflections due")]
    if state.phase is Phase.MATCHING:
        if state.candidate is not None:
            return [Deadline(kind="match_proposal_expiry", at=state.candidate.expires_at, summary="Match proposal expires")]
        return [
            Deadline(
                kind="matching_timeout",
                at=state.started_at + timedelta(days=settings.matching_timeout_days),
                summary="Matching gives up",
            )
        ]
    if state.phase is Phase.AGREEMENT:
        due = state.agreement_due_at
        assert due is not None
        agreement = [Deadline(kind="agreement_expiry", at=due, summary="Agreement deadline")]
        for days in sorted(settings.agreement_reminder_days, reverse=True):
            if days not in state.agreement_reminders_sent:
                agreement.append(
                    Deadline(kind="agreement_reminder", at=due - timedelta(days=days), summary=f"Agreement reminder, {days} days left")
                )
                break
        return agreement

    if state.paused_until is not None:
        return [Deadline(kind="pause_ends", at=state.paused_until, summary="Pause ends")]

    deadlines: list[Deadline] = []
    if state.phase is Phase.REVIEW:
        assert state.review is not None
        label = state.review.kind.replace("_", " ").capitalize()
        deadlines.append(Deadline(kind="review_deadline", at=state.review.respond_by, summary=f"{label} review closes"))
    else:
        assert state.term_ends_at is not None
        deadlines.append(Deadline(kind="final_review", at=state.term_ends_at, summary="Term ends: final review"))
        mid = midpoint(state)
        if settings.midpoint_review and "midpoint" not in state.reviews_completed and mid is not None:
            deadlines.append(Deadline(kind="midpoint_review", at=mid, summary="Midpoint review"))
    deadlines += _meeting_deadlines(state)
    deadlines += _health_deadlines(state)
    return deadlines


def _meeting_deadlines(state: RelationshipState) -> list[Deadline]:
    meeting, settings = state.next_meeting, state.settings
    if meeting is None:
        return []
    number = meeting.meeting_number
    deadlines = []
    agenda_policy = state.agreement.terms.agenda_policy if state.agreement else "no_agenda"
    if not meeting.agenda_requested and agenda_policy != "no_agenda":
        deadlines.append(
            Deadline(
                kind="agenda_request",
                at=meeting.starts_at - timedelta(hours=settings.agenda_request_lead_hours),
                summary=f"Agenda request for meeting {number}",
            )
        )
    if not meeting.reminded:
        deadlines.append(
            Deadline(
                kind="meeting_reminder",
                at=meeting.starts_at - timedelta(hours=settings.meeting_reminder_lead_hours),
                summary=f"Reminder for meeting {number}",
            )
        )
    deadlines.append(
        Deadline(
            kind="meeting_missed",
            at=meeting.ends_at + timedelta(hours=settings.missed_meeting_grace_hours),
            summary=f"Meeting {number} unreported: ask what happened",
        )
    )
    return deadlines


def _health_deadlines(state: RelationshipState) -> list[Deadline]:
    settings, since = state.settings, quiet_since(state)
    if since is None:
        return []
    deadlines = []
    at_risk = since + timedelta(days=settings.at_risk_after_days)
    if settings.nudge_before_at_risk_days and state.nudged_quiet_since != since and "quiet" not in state.health_reasons:
        deadlines.append(
            Deadline(
                kind="nudge",
                at=at_risk - timedelta(days=settings.nudge_before_at_risk_days),
                summary="Nudge: no meeting for a while",
            )
        )
    if "quiet" not in state.health_reasons:
        deadlines.append(Deadline(kind="health_quiet", at=at_risk, summary="At risk if no meeting by then"))
    if state.health is not Health.STALLED:
        deadlines.append(
            Deadline(
                kind="health_stalled",
                at=since + timedelta(days=settings.stalled_after_days),
                summary="Stalled if no meeting by then",
            )
        )
    elif settings.close_stalled_after_days and state.stalled_at is not None:
        deadlines.append(
            Deadline(
                kind="close_stalled",
                at=state.stalled_at + timedelta(days=settings.close_stalled_after_days),
                summary="Closes as stalled",
            )
        )
    return deadlines
