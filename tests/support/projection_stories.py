"""Relationship histories for the projection and report tests, made by the real decider."""

from __future__ import annotations

import asyncio
import itertools
from datetime import UTC, datetime, timedelta
from typing import Any

from activities.projections import ProjectionFollower
from events.commands import (
    AcceptMatch, AcknowledgeGoalRevision, AgreementTerms, CloseRelationship, CorrectMeetingReport, ProposeAgreement,
    ProposeGoalRevision, ProposeMatch, RaiseConcern, RecordGoalProgress, RecordMeeting, RequestReview, SignAgreement,
    SubmitFeedback, SubmitReflection, SubmitReview,
)
from events.model import AnyEvent, GoalRevisionProposed
from events.store import load_event
from events.sensitivity import ITEM, confidential_paths
from events.settings import ProgrammeSettings
from tests.support.domain_story import Story

T0 = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)
COORDINATOR = "coord-1"
SECRET = "SECRET-reports-4d1c"
SETTINGS = ProgrammeSettings(coordinator_ids=(COORDINATOR,))


class Driver(Story):
    """One relationship of a programme, its mentor named after its mentee."""

    def __init__(self, stream_id: str, programme_id: str, mentee_id: str, now: datetime = T0):
        super().__init__(SETTINGS, now, stream=stream_id, programme_id=programme_id, mentee=mentee_id, command_ids=f"{stream_id}-c")
        self.mentor = f"mentor-of-{mentee_id}"

    @property
    def events(self) -> list[AnyEvent]:
        return self.history

    def match(self, after: timedelta) -> None:
        self.do(ProposeMatch, COORDINATOR, mentor_id=self.mentor, explanation="shares 2 goals")
        self.advance(after)
        self.do(AcceptMatch, self.mentee)
        self.do(AcceptMatch, self.mentor)

    def activate(self, goals: int = 2) -> None:
        terms = AgreementTerms(
            objective="Grow",
            goals=tuple({"title": f"Goal {n}"} for n in range(1, goals + 1)),
            meeting_frequency="biweekly",
            meeting_minutes=60,
            term_months=6,
        )
        self.do(ProposeAgreement, self.mentee, terms=terms)
        self.do(SignAgreement, self.mentee, agreement_version=1)
        self.do(SignAgreement, self.mentor, agreement_version=1)

    def meet(self, actor: str | None = None, minutes: int = 60, notes: str = f"{SECRET} notes") -> list[AnyEvent]:
        return super().meet(actor, minutes, notes)

    def miss(self) -> int:
        """Let the next meeting go unreported until it is marked missed; returns its number."""
        meeting = self.state.next_meeting
        assert meeting is not None
        missed = self.state.meetings_missed
        while self.state.meetings_missed == missed:
            self.advance(timedelta(hours=12))
        return meeting.meeting_number

    def feedback(self, mentee_score: int, mentor_score: int) -> None:
        round_ = self.state.feedback_round
        self.do(SubmitFeedback, self.mentee, feedback_round=round_, score=mentee_score, comment=f"{SECRET} comment")
        self.do(SubmitFeedback, self.mentor, feedback_round=round_, score=mentor_score, comment=f"{SECRET} comment")


def stories(programme_id: str = "prog-1", other_programme: str = "prog-2") -> list[Driver]:
    """Five relationships in every phase, with meetings, goals, feedback, concerns, reviews and closures."""
    # Closed by the mentee after a full rhythm: 6 meetings (one missed, then corrected),
    # two feedback rounds, one goal of three achieved (one added by a revision), a review.
    full = Driver("rel-full", programme_id, "mentee-a")
    full.match(after=timedelta(days=2))
    full.activate(goals=2)
    full.meet()
    full.meet()
    full.meet()
    full.feedback(5, 4)
    missed = full.miss()
    full.do(RecordMeeting, full.mentee, held_at=full.now - timedelta(days=3), duration_minutes=45, meeting_number=missed)
    full.meet()
    full.meet()
    full.feedback(2, 3)
    full.do(RecordGoalProgress, full.mentee, goal_id="g1", progress_percent=100)
    # A goal added on the way, and a review that sends them back to their rhythm.
    full.do(ProposeGoalRevision, full.mentee, goal={"goal_id": "g3", "title": "Speak at a meetup"}, rationale=f"{SECRET} why")
    proposal = full.events[-1]
    assert isinstance(proposal, GoalRevisionProposed)
    full.do(AcknowledgeGoalRevision, full.mentor, revision_id=proposal.revision_id)
    full.do(RequestReview, COORDINATOR)
    full.do(SubmitReview, full.mentee, outcome="continue", comment=f"{SECRET} fine")
    full.do(SubmitReview, full.mentor, outcome="continue")
    full.do(CloseRelationship, full.mentee, note=f"{SECRET} bye")
    full.do(SubmitReflection, full.mentee, text=f"{SECRET} learnt")
    full.do(SubmitReflection, full.mentor, text=f"{SECRET} saw")

    # Never matched: three proposals expire.
    unmatched = Driver("rel-unmatched", programme_id, "mentee-b", T0 + timedelta(days=1))
    for attempt in range(3):
        unmatched.do(ProposeMatch, COORDINATOR, mentor_id=f"mentor-x{attempt}")
        unmatched.advance(timedelta(days=8))

    # In review, at risk after a concern and a missed meeting; three goals.
    worried = Driver("rel-worried", programme_id, "mentee-c", T0 + timedelta(days=3))
    worried.match(after=timedelta(days=6, hours=12))
    worried.activate(goals=3)
    worried.meet(minutes=30)
    worried.miss()
    worried.do(RaiseConcern, worried.mentor, text=f"{SECRET} concern")
    worried.do(RequestReview, COORDINATOR)

    # Waiting for signatures.
    agreeing = Driver("rel-agreeing", programme_id, "mentee-d", T0 + timedelta(days=10))
    agreeing.match(after=timedelta(hours=5))

    # Another programme's relationship: never in prog-1's report. Its second meeting was
    # reported held, then corrected to not held (`correct_meeting_report`).
    elsewhere = Driver("rel-elsewhere", other_programme, "mentee-e")
    elsewhere.match(after=timedelta(days=1))
    elsewhere.activate(goals=1)
    elsewhere.meet()
    elsewhere.meet()
    elsewhere.advance(timedelta(days=2))
    elsewhere.do(CorrectMeetingReport, elsewhere.mentor, meeting_number=2, outcome="not_held", reason=f"{SECRET} no")
    return [full, unmatched, worried, agreeing, elsewhere]


def interleaved(drivers: list[Driver]) -> list[list[AnyEvent]]:
    """Every driver's history cut into chunks of up to 3 events, dealt round-robin: the
    append batches of several relationships arriving at once."""
    chunked = [[d.events[i : i + 3] for i in range(0, len(d.events), 3)] for d in drivers]
    return [chunk for round_ in itertools.zip_longest(*chunked) for chunk in round_ if chunk]


def redacted(event: AnyEvent) -> AnyEvent:
    """The event as a store returns it after its relationship's text was forgotten."""
    data = event.model_dump(mode="json")
    for path in confidential_paths(type(event)):
        _redact(data, path)
    return load_event(data)


def _redact(node: Any, path: tuple[str, ...]) -> None:
    head, rest = path[0], path[1:]
    children: list[tuple[Any, Any]]
    if head == ITEM:
        children = list(enumerate(node)) if isinstance(node, list) else list(node.items())
    elif isinstance(node, dict) and head in node:
        children = [(head, node[head])]
    else:
        return
    for key, value in children:
        if not rest:
            if isinstance(value, str):
                node[key] = "[forgotten]"
        elif value is not None:
            _redact(value, rest)


async def caught_up(follower: ProjectionFollower) -> int:
    """`catch_up` until no projection is behind; returns the events read. A transaction open
    elsewhere on the server (another test run's) holds the store's frontier back a while."""
    read = 0
    for _ in range(600):
        read += await follower.catch_up()
        if not any(status.behind for status in await follower.status()):
            return read
        await asyncio.sleep(0.05)
    raise AssertionError("the read models stayed behind the store")
