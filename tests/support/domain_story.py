"""One relationship driven through the pure core the way the workflow shell drives it —
`decide`, then `evolve` each event; sleep until `next_deadline`, then `decide_deadline` —
keeping its history and the state after each event, for tests without Temporal or a
database. The one place for that driver: tests/domain/test_domain_*.py use it with these ids,
tests/support/relationship_phases.py and tests/support/projection_stories.py with their own.

A helper module, not a test module: test modules import it, never each other.
"""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, time, timedelta
from typing import Any, TypeVar
from zoneinfo import ZoneInfo

from events.commands import (
    AcceptMatch, AgreementTerms, AvailabilityWindow, CloseRelationship, Command, Party, PartyAvailability,
    ProposeAgreement, ProposeMatch, RecordMeeting, SignAgreement, SubmitReflection, SubmitReview,
)
from events.deadlines import next_deadline
from events.decider import Rejection, decide, decide_deadline, start_relationship
from events.model import AnyEvent
from events.notifications import Notification, notifications_for
from events.settings import ProgrammeSettings
from events.decider import evolve, fold
from events.state import Phase, RelationshipState


T0 = datetime(2025, 1, 6, 9, 0, tzinfo=UTC)  # a Monday
STREAM = "rel-1"
PROGRAMME = "prog-1"
MENTEE = "mentee-1"
MENTOR = "mentor-1"
OTHER_MENTOR = "mentor-2"
THIRD_MENTOR = "mentor-3"
COORDINATOR = "coord-1"
STRANGER = "stranger-1"
PROGRAMME_SETTINGS = ProgrammeSettings(coordinator_ids=(COORDINATOR,))
# Planted in every confidential field; it must never leave the events that carry it.
SECRET = "SECRET-7f3a"

E = TypeVar("E")


def programme(**changes: Any) -> ProgrammeSettings:
    return ProgrammeSettings(**({"coordinator_ids": (COORDINATOR,)} | changes))


def terms(**changes: Any) -> AgreementTerms:
    fields: dict[str, Any] = {
        "objective": "Grow into a tech lead",
        # Goals given without ids are numbered g1, g2, …
        "goals": (
            {
                "title": "Run a design review",
                "measure": "two reviews run, feedback from the team",
                "milestones": (
                    {"milestone_id": "m1", "title": "First draft"},
                    {"milestone_id": "m2", "title": "Review held"},
                ),
            },
            {"title": "Mentor a junior engineer"},
        ),
        "meeting_frequency": "biweekly",
        "meeting_minutes": 60,
        "term_months": 6,
    }
    return AgreementTerms(**(fields | changes))


def window(weekday: int, start: str, end: str) -> AvailabilityWindow:
    return AvailabilityWindow(weekday=weekday, start=time.fromisoformat(start), end=time.fromisoformat(end))


def available(party: Party, zone: str, *windows: AvailabilityWindow) -> PartyAvailability:
    return PartyAvailability(party=party, timezone=zone, windows=windows)


class Story:
    """One relationship under test, driven like the workflow drives it."""

    def __init__(
        self,
        programme: ProgrammeSettings = PROGRAMME_SETTINGS,
        now: datetime = T0,
        *,
        stream: str = STREAM,
        programme_id: str = PROGRAMME,
        mentee: str = MENTEE,
        command_ids: str = "cmd-",
    ):
        self.now = now
        self.mentee = mentee
        self.history: list[AnyEvent] = start_relationship(stream, programme_id, mentee, programme, now)
        state = fold(self.history)
        assert state is not None
        self.state: RelationshipState = state
        # The state after each event of `history`.
        self.states: list[RelationshipState] = [state]
        self._command_ids = itertools.count(1)
        self._id_prefix = command_ids

    def command(self, command_type: type[Command], actor: str, **fields: Any) -> Command:
        command_id = fields.pop("command_id", None) or f"{self._id_prefix}{next(self._command_ids)}"
        return command_type(command_id=command_id, actor_id=actor, **fields)

    def do(self, command_type: type[Command], actor: str, **fields: Any) -> list[AnyEvent]:
        """Send a command that must be accepted; returns (and applies) its events."""
        command = self.command(command_type, actor, **fields)
        decision = decide(self.state, command, self.now)
        assert not isinstance(decision, Rejection), decision.reason
        assert decision, f"{command.message_name} decided nothing"
        assert all(event.command_id == command.command_id and event.occurred_at == self.now for event in decision)
        return self.apply(decision)

    def refuse(self, command_type: type[Command], actor: str, **fields: Any) -> str:
        """Send a command that must be rejected; returns the reason and checks nothing changed."""
        before = self.state.model_dump_json()
        decision = decide(self.state, self.command(command_type, actor, **fields), self.now)
        assert isinstance(decision, Rejection), f"expected a rejection, got {decision}"
        assert self.state.model_dump_json() == before
        assert decision.reason and SECRET not in decision.reason
        return decision.reason

    def apply(self, events: list[AnyEvent]) -> list[AnyEvent]:
        for event in events:
            self.state = evolve(self.state, event)
            self.states.append(self.state)
        self.history.extend(events)
        return events

    def advance(self, by: timedelta | None = None, *, to: datetime | None = None) -> list[AnyEvent]:
        """Let time pass, firing every deadline that falls due on the way, at its own moment."""
        target = to if to is not None else self.now + (by or timedelta())
        fired: list[AnyEvent] = []
        while (deadline := next_deadline(self.state)) is not None and deadline.at <= target:
            self.now = max(self.now, deadline.at)
            events = decide_deadline(self.state, self.now)
            assert events, f"the due deadline {deadline.kind} decided nothing"
            fired += self.apply(events)
        self.now = max(self.now, target)
        return fired

    @property
    def meeting(self) -> Any:
        meeting = self.state.next_meeting
        assert meeting is not None, f"no meeting scheduled in phase {self.state.phase}"
        return meeting

    def meet(self, actor: str | None = None, minutes: int = 60, notes: str = "") -> list[AnyEvent]:
        """Wait for the scheduled meeting (firing what falls due first) and have `actor` (the
        mentee unless named) report it held."""
        starts_at = self.meeting.starts_at
        self.advance(to=starts_at)
        return self.do(RecordMeeting, actor or self.mentee, held_at=starts_at, duration_minutes=minutes, notes=notes)

    def meet_or_wait(self, actor: str | None = None, minutes: int = 60) -> None:
        """Hold the scheduled meeting; if the term has no room left for one, wait for the next deadline."""
        if self.state.next_meeting is not None:
            self.meet(actor, minutes)
            return
        deadline = next_deadline(self.state)
        assert deadline is not None
        self.advance(to=deadline.at)

    def meet_until_a_review(self, actor: str | None = None, minutes: int = 60) -> None:
        """Keep the rhythm, every meeting held as planned, until time opens a review."""
        while self.state.phase is Phase.ACTIVE:
            self.meet_or_wait(actor, minutes)

    def of_type(self, event_type: type[E]) -> list[E]:
        return [event for event in self.history if isinstance(event, event_type)]

    def notifications(self) -> list[Notification]:
        """Everything the history sent, computed the way the workflow does (with the state before)."""
        return self.notifications_of(self.history[1:])

    def notifications_of(self, events: list[AnyEvent]) -> list[Notification]:
        """What these (already applied) events told, computed as the workflow does: with the
        state before and after each."""
        position = {id(event): index for index, event in enumerate(self.history)}
        told: list[Notification] = []
        for event in events:
            index = position[id(event)]
            told += notifications_for(event, self.states[index], self.states[index - 1])
        return told


def matched(programme: ProgrammeSettings = PROGRAMME_SETTINGS, now: datetime = T0) -> Story:
    story = Story(programme, now)
    story.do(ProposeMatch, COORDINATOR, mentor_id=MENTOR, explanation="shares 3 of 4 goals", score=0.8)
    story.do(AcceptMatch, MENTEE)
    story.do(AcceptMatch, MENTOR)
    return story


def active(programme: ProgrammeSettings = PROGRAMME_SETTINGS, *, now: datetime = T0, **changes: Any) -> Story:
    story = matched(programme, now)
    story.do(ProposeAgreement, MENTEE, terms=terms(**changes))
    story.do(SignAgreement, MENTEE, agreement_version=1)
    story.do(SignAgreement, MENTOR, agreement_version=1)
    assert story.state.phase is Phase.ACTIVE
    return story


def in_review(programme: ProgrammeSettings = PROGRAMME_SETTINGS, **changes: Any) -> Story:
    """Active, meeting every week, until time opens the midpoint review."""
    story = active(programme, **({"meeting_frequency": "weekly"} | changes))
    story.meet_until_a_review()
    assert story.state.review is not None and story.state.review.kind == "midpoint"
    return story


def reviewed(outcome: str) -> Story:
    """`in_review`, then both answered the midpoint review with `outcome`."""
    story = in_review()
    story.do(SubmitReview, MENTEE, outcome=outcome)
    story.do(SubmitReview, MENTOR, outcome=outcome)
    return story


def closing(actor: str = MENTEE) -> Story:
    story = active()
    story.meet()
    story.do(CloseRelationship, actor)
    assert story.state.phase is Phase.CLOSING
    return story


def closed(actor: str = MENTEE) -> Story:
    story = closing(actor)
    story.do(SubmitReflection, MENTEE, text=f"{SECRET} what I learnt")
    story.do(SubmitReflection, MENTOR, text=f"{SECRET} what I saw")
    assert story.state.is_closed
    return story


def types(events: list[AnyEvent]) -> list[str]:
    return [event.type for event in events]


def without_bookkeeping(events: list[AnyEvent]) -> list[str]:
    """Event types without the agenda/reminder/scheduling traffic of the cadence."""
    noise = {"AgendaRequested", "MeetingReminderIssued", "MeetingScheduled", "NudgeIssued"}
    return [event.type for event in events if event.type not in noise]


MONDAY = 0


def in_window(moment: datetime, minutes: int, availability: PartyAvailability) -> bool:
    """Whether the meeting from `moment` lies wholly inside one of the party's local windows."""
    local = moment.astimezone(ZoneInfo(availability.timezone))
    end = local + timedelta(minutes=minutes)
    return local.date() == end.date() and any(
        w.weekday == local.weekday() and w.start <= local.time() and end.time() <= w.end for w in availability.windows
    )


MENTEE_IN_KOLKATA = available("mentee", "Asia/Kolkata", window(MONDAY, "18:00", "23:30"))
MENTOR_IN_NEW_YORK = available("mentor", "America/New_York", window(MONDAY, "09:00", "10:30"))
