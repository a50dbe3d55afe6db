"""Helpers shared by the test modules (the place for them, rather than a test module that
others import): workers and relationships to drive, stored histories with confidential text,
matching profiles."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager, suppress
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client, WorkflowHandle
from temporalio.service import RPCError, RPCStatusCode
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from activities.data_keys import locations
from events.commands import AgreementTerms, Goal, GoalAssessment
from events.decider import start_relationship as relationship_started
from events.model import (
    CONFIDENTIAL_PATHS,
    AgreementProposed,
    AnyEvent,
    ClosureBegun,
    ConcernRaised,
    ConcernResolved,
    FeedbackSubmitted,
    GoalRevised,
    GoalRevisionProposed,
    IntroductionRecorded,
    MatchDeclined,
    MatchProposed,
    MeetingReportCorrected,
    MeetingReportedNotHeld,
    MeetingCancelled,
    MeetingHeld,
    ReflectionSubmitted,
    RelationshipClosed,
    RelationshipPaused,
    ResourceShared,
    ReviewSubmitted,
)
from events.notifications import Notification
from events.settings import ProgrammeSettings
from events.state import RelationshipState
from events.store import event_payload
from mentorflow.keyring import Keyring
from pairing.profiles import MenteeProfile, MentorProfile
from worker import build_worker
from workflows.relationship import Relationship, RelationshipInput
from mentorflow.start_options import relationship_start_options


class RecordingChannel:
    """A notification channel that keeps what it was given, for assertions."""

    name = "recording"

    def __init__(self) -> None:
        self.sent: list[Notification] = []

    async def send(self, notification: Notification) -> None:
        self.sent.append(notification)

    def templates_for(self, recipient_id: str) -> list[str]:
        return [n.template for n in self.sent if n.recipient_id == recipient_id]

    async def wait_for(self, recipient_id: str, template: str, timeout: float = 10) -> None:
        """Notifications go out in the background, after the update that caused them returns."""
        deadline = asyncio.get_running_loop().time() + timeout
        while template not in self.templates_for(recipient_id):
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError(f"{recipient_id} got no {template}: {self.templates_for(recipient_id)}")
            await asyncio.sleep(0.02)


def new_worker(
    client: Client, pool: asyncpg.Pool, channel: RecordingChannel | None = None, *, task_queue: str | None = None
) -> Worker:
    return build_worker(
        client, pool, task_queue or f"tq-{uuid.uuid4()}", channels=[channel or RecordingChannel()]
    )


async def start_relationship(
    client: Client,
    worker: Worker | str,
    *,
    mentee_id: str = "mentee-1",
    programme_id: str = "prog-1",
    relationship_id: str | None = None,
    **fields: Any,
) -> WorkflowHandle[Relationship, Any]:
    """A new relationship on the worker's task queue (or the task queue named), with its own
    settings unless `settings=None` is given (then it reads its programme's)."""
    relationship_id = relationship_id or f"rel-{uuid.uuid4().hex[:10]}"
    fields.setdefault("settings", ProgrammeSettings(coordinator_ids=("coord-1",)))
    relationship_input = RelationshipInput(
        relationship_id=relationship_id, programme_id=programme_id, mentee_id=mentee_id, **fields
    )
    return await client.start_workflow(
        Relationship.run,
        relationship_input,
        id=f"relationship/{programme_id}/{relationship_id}",
        task_queue=worker if isinstance(worker, str) else worker.task_queue,
        **relationship_start_options(relationship_input, started_by="a test"),
    )


@asynccontextmanager
async def running_relationship(
    env: WorkflowEnvironment, pool: asyncpg.Pool, channel: RecordingChannel | None = None, **fields: Any
) -> AsyncIterator[WorkflowHandle[Relationship, Any]]:
    """A relationship (`start_relationship`) on a new worker (`new_worker`, sending to
    `channel`), which runs while the block does."""
    async with new_worker(env.client, pool, channel) as worker:
        yield await start_relationship(env.client, worker, **fields)


def cmd(actor: str, command_id: str | None = None, **fields: Any) -> dict[str, Any]:
    """A command's payload from `actor`, with a fresh command id unless one is given."""
    return {"command_id": command_id or f"cmd-{uuid.uuid4().hex[:12]}", "actor_id": actor, **fields}


async def matched(handle: WorkflowHandle[Any, Any], mentor: str = "mentor-1", mentee: str = "mentee-1") -> None:
    """coord-1 proposes `mentor` and both accept (by update): the relationship moves on to its agreement."""
    await handle.execute_update("propose_match", cmd("coord-1", mentor_id=mentor))
    await handle.execute_update("accept_match", cmd(mentee))
    await handle.execute_update("accept_match", cmd(mentor))


# The agreement the tests' relationships sign (`activate`).
AGREEMENT = {
    "objective": "Grow into a staff engineer role",
    "goals": [{"title": "Lead one cross-team design"}, {"title": "Mentor a junior engineer"}],
    "meeting_frequency": "monthly",
    "meeting_minutes": 60,
    "term_months": 6,
}



async def state_of(handle: WorkflowHandle[Any, Any]) -> RelationshipState:
    return await handle.query(Relationship.state)


async def reflect(handle: WorkflowHandle[Any, Any], mentor: str = "mentor-1", mentee: str = "mentee-1") -> None:
    await handle.execute_update("submit_reflection", cmd(mentee, text="I learnt to lead reviews"))
    await handle.execute_update("submit_reflection", cmd(mentor, text="A rewarding year"))


async def close(handle: WorkflowHandle[Any, Any]) -> None:
    """End a test's relationship the way a user would, so no activity is left in flight
    (the time-skipping server stops skipping while an abandoned activity is pending)."""
    result = await handle.execute_update("close_relationship", cmd("mentee-1"))
    if result["phase"] == "closing":
        await reflect(handle, (await state_of(handle)).mentor_id or "mentor-1")
    await handle.result()


async def activate(
    handle: WorkflowHandle[Any, Any], mentor: str = "mentor-1", terms: dict[str, Any] = AGREEMENT
) -> None:
    """Matched with `mentor` (`matched`), who signs `terms` with mentee-1: the relationship is active."""
    await matched(handle, mentor)
    result = await handle.execute_update("propose_agreement", cmd("mentee-1", terms=terms))
    assert result["phase"] == "agreement"
    await handle.execute_update("sign_agreement", cmd("mentee-1", agreement_version=1))
    await handle.execute_update("sign_agreement", cmd(mentor, agreement_version=1))


async def sleep_until(env: WorkflowEnvironment, moment: datetime) -> None:
    wait = moment - await env.get_current_time()
    if wait > timedelta(0):
        await env.sleep(wait)


@asynccontextmanager
async def ended_on_failure(handle: WorkflowHandle[Any, Any]) -> AsyncIterator[None]:
    """A failing test must not leave its relationship waiting on the shared time-skipping server."""
    try:
        yield
    except BaseException:
        with suppress(Exception):
            await handle.terminate("the test failed")
        raise


async def history_event_types(handle: WorkflowHandle[Any, Any]) -> Sequence[int]:
    history = await handle.fetch_history()
    return [event.event_type for event in history.events]


async def failed_workflow_tasks(handle: WorkflowHandle[Any, Any]) -> int:
    return sum(1 for t in await history_event_types(handle) if t == EventType.EVENT_TYPE_WORKFLOW_TASK_FAILED)


async def what_temporal_has(client: Client, workflow_id: str, run_id: str) -> list[str]:
    """What Temporal still answers for a run: its description, its history (nothing once deleted)."""
    handle = client.get_workflow_handle(workflow_id, run_id=run_id)
    found = []
    for what, ask in (("description", handle.describe), ("history", handle.fetch_history)):
        try:
            await ask()
            found.append(what)
        except RPCError as error:
            assert error.status == RPCStatusCode.NOT_FOUND, error
    return found


# -- stored histories with confidential text (the store's encryption, forgetting, owners) ----

HISTORY_START = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


def envelope(stream_id: str, version: int) -> dict[str, Any]:
    """An event's envelope fields: `version` hours after HISTORY_START, command id c-VERSION."""
    return {"stream_id": stream_id, "version": version, "event_id": str(uuid.uuid4()),
            "occurred_at": HISTORY_START + timedelta(hours=version), "command_id": f"c-{version}"}  # fmt: skip


def confidential_history(stream_id: str, text: str) -> list[AnyEvent]:
    """A relationship of prog-1 started, a meeting with notes, a concern and a review with nested
    comments: `text` in each confidential field."""
    now = HISTORY_START
    events: list[AnyEvent] = relationship_started(stream_id, "prog-1", "mentee-1", ProgrammeSettings(), now)
    version = len(events)
    events.append(MeetingHeld(**envelope(stream_id, version + 1), meeting_number=1, held_at=now,
                              duration_minutes=45, recorded_by="mentor-1", notes=f"notes: {text}"))  # fmt: skip
    events.append(ConcernRaised(**envelope(stream_id, version + 2), concern_id="c-9", party="mentee",
                                raised_by="mentee-1", text=f"concern: {text}"))  # fmt: skip
    events.append(ReviewSubmitted(**envelope(stream_id, version + 3), kind="midpoint", party="mentee",
                                  outcome="continue", comment=f"review: {text}", goal_assessments=(
                                      GoalAssessment(goal_id="g1", progress_percent=40, comment=f"goal: {text}"),
                                      GoalAssessment(goal_id="g2", progress_percent=90),
                                  )))  # fmt: skip
    return events


def closed_by_mentee(stream_id: str, version: int) -> RelationshipClosed:
    """The closing event of a `confidential_history` (at `version`)."""
    now = HISTORY_START
    return RelationshipClosed.model_validate(
        {**envelope(stream_id, version), "reason": "closed_by_mentee", "closed_by": "mentee-1",
         "summary": {"relationship_id": stream_id, "programme_id": "prog-1", "mentee_id": "mentee-1",
                     "mentor_id": "mentor-1", "closure_reason": "closed_by_mentee", "started_at": now,
                     "activated_at": now, "closed_at": now, "duration_days": 0, "meetings_held": 1,
                     "meetings_missed": 0, "meetings_cancelled": 0, "late_cancellations": 0,
                     "meeting_minutes_total": 45, "goals_total": 2, "goals_achieved": 0, "goal_progress": {},
                     "feedback_trend": [], "concerns_raised": 1, "reviews_completed": [], "extensions": 0,
                     "reflections_from": []}})  # fmt: skip


# The key the store's tests seal their histories with (not the session's TEST_KEYRING), and
# the text they plant.
STORE_KEYRING = Keyring.generate("kek-1")
SECRET = "Worried about my manager; please keep this between us"


def every_confidential_place(stream_id: str, text: str = SECRET) -> list[AnyEvent]:
    """A relationship with text in every confidential place of every event type, each value
    holding `text` once (`confidential_places_covered` checks that none is missing)."""
    events: list[AnyEvent] = relationship_started(stream_id, "prog-1", "mentee-1", ProgrammeSettings(), HISTORY_START)
    milestones = [{"milestone_id": "m1", "title": f"milestone: {text}"}, {"milestone_id": "m2", "title": f"milestone 2: {text}"}]
    goal = {"goal_id": "g1", "title": f"goal: {text}", "measure": f"measure: {text}", "milestones": milestones}
    terms = AgreementTerms.model_validate({
        "objective": f"objective: {text}", "goals": [goal, {"goal_id": "g2", "title": f"goal 2: {text}"}],
        "meeting_frequency": "monthly", "meeting_minutes": 45, "term_months": 6,
        "availability": [{"party": "mentee", "timezone": "Europe/Berlin", "windows": [{"weekday": 0, "start": "09:00", "end": "10:00"}]}],
        "confidentiality": {"not_private": [f"not private: {text}", f"not private 2: {text}"]},
        "early_exit_plan": f"exit plan: {text}",
    })  # fmt: skip
    revised = Goal.model_validate({**goal, "title": f"revised goal: {text}"})
    summary = {"relationship_id": stream_id, "programme_id": "prog-1", "mentee_id": "mentee-1", "mentor_id": "mentor-1",
               "closure_reason": "closed_by_mentee", "started_at": HISTORY_START, "activated_at": HISTORY_START, "closed_at": HISTORY_START,
               "duration_days": 0, "meetings_held": 1, "meetings_missed": 0, "meetings_cancelled": 1,
               "late_cancellations": 0, "meeting_minutes_total": 45, "goals_total": 2, "goals_achieved": 0,
               "goal_progress": {"g1": 50}, "feedback_trend": [4.0], "concerns_raised": 1, "reviews_completed": [],
               "extensions": 0, "reflections_from": ["mentee"]}  # fmt: skip
    later = HISTORY_START + timedelta(days=30)
    kinds: list[tuple[type[AnyEvent], dict[str, Any]]] = [
        (MatchProposed, {"mentor_id": "mentor-0", "proposed_by": "coord-1", "expires_at": later,
                         "explanation": f"explanation: {text}", "score": 0.5}),
        (MatchDeclined, {"mentor_id": "mentor-0", "party": "mentee", "declined_by": "mentee-1", "reason": f"decline: {text}"}),
        (AgreementProposed, {"agreement_version": 1, "terms": terms, "proposed_by": "mentee-1"}),
        (MeetingHeld, {"meeting_number": 1, "held_at": HISTORY_START, "duration_minutes": 45, "recorded_by": "mentor-1",
                       "notes": f"notes: {text}"}),
        (MeetingCancelled, {"meeting_number": 2, "party": "mentor", "cancelled_by": "mentor-1", "late": False,
                            "reason": f"cancel: {text}"}),
        (MeetingReportedNotHeld, {"meeting_number": 3, "party": "mentee", "reported_by": "mentee-1",
                                  "reason": f"not held: {text}"}),
        (MeetingReportCorrected, {"meeting_number": 3, "outcome": "held", "party": "mentor", "corrected_by": "mentor-1",
                                  "reason": f"corrected: {text}"}),
        (GoalRevisionProposed, {"revision_id": "rev-1", "goal": revised, "party": "mentee", "proposed_by": "mentee-1",
                                "rationale": f"rationale: {text}"}),
        (GoalRevised, {"revision_id": "rev-1", "goal": revised, "acknowledged_by": "mentor-1"}),
        (FeedbackSubmitted, {"feedback_round": 1, "party": "mentee", "score": 4, "low": False, "comment": f"feedback: {text}"}),
        (ConcernRaised, {"concern_id": "c-9", "party": "mentee", "raised_by": "mentee-1", "text": f"concern: {text}"}),
        (ConcernResolved, {"concern_id": "c-9", "resolved_by": "coord-1", "resolution": f"resolution: {text}"}),
        (IntroductionRecorded, {"introduced_to": f"introduced to: {text}", "recorded_by": "mentor-1",
                                "note": f"introduction: {text}"}),
        (ResourceShared, {"title": f"resource: {text}", "url": f"https://example.org/{text}?token=t", "shared_by": "mentor-1"}),
        (RelationshipPaused, {"until": later, "paused_by": "mentee-1", "reason": f"pause: {text}"}),
        (ReviewSubmitted, {"kind": "midpoint", "party": "mentee", "outcome": "continue", "comment": f"review: {text}",
                           "goal_assessments": (GoalAssessment(goal_id="g1", progress_percent=50, comment=f"assessment: {text}"),)}),
        (ClosureBegun, {"reason": "closed_by_mentee", "closed_by": "mentee-1", "reflections_due_at": later,
                        "note": f"closing: {text}"}),
        (ReflectionSubmitted, {"party": "mentee", "text": f"reflection: {text}"}),
        (RelationshipClosed, {"reason": "closed_by_mentee", "closed_by": "mentee-1", "summary": summary,
                              "note": f"closed: {text}"}),
    ]  # fmt: skip
    for kind, fields in kinds:
        events.append(kind.model_validate({**envelope(stream_id, len(events) + 1), **fields}))
    return events


def confidential_places_covered(events: list[AnyEvent], text: str) -> set[tuple[str, str]]:
    """(event type, path) of every confidential place holding `text`."""
    covered: set[tuple[str, str]] = set()
    for event in events:
        payload = event_payload(event)
        for path in CONFIDENTIAL_PATHS.get(event.type, ()):
            if any(isinstance(c[k], str) and text in c[k] for c, k, _ in locations(payload, path)):
                covered.add((event.type, ".".join(path)))
    return covered


def planted(events: list[AnyEvent], text: str) -> int:
    return sum(json.dumps(event_payload(e)).count(text) for e in events)


async def never_running(programme_id: str, relationship_id: str) -> bool:
    return False


# -- matching profiles (a relationship's mentor pool, mentor load) -------------------------


def mentor_profile(participant_id: str, capacity: int = 1, level: int = 5) -> MentorProfile:
    """A mentor of python and sql at `level`, in English, for `capacity` mentees."""
    return MentorProfile.model_validate(
        {"participant_id": participant_id, "capacity": capacity, "languages": ["en"],
         "strengths": [{"topic": "python", "level": level}, {"topic": "sql", "level": level}]}
    )  # fmt: skip


def mentee_profile(participant_id: str) -> MenteeProfile:
    """A mentee who wants python and sql, in English."""
    return MenteeProfile.model_validate(
        {"participant_id": participant_id, "languages": ["en"], "goals": [{"topic": "python"}, {"topic": "sql"}]}
    )


async def mentor_slots(pool: asyncpg.Pool, programme_id: str = "prog-1") -> dict[str, str]:
    """Each relationship of the programme that holds a mentor's slot, and that mentor."""
    rows = await pool.fetch("SELECT relationship_id, mentor_id FROM mentor_slots WHERE programme_id = $1", programme_id)
    return {row["relationship_id"]: row["mentor_id"] for row in rows}


async def stored_notifications_delivered(
    channel: RecordingChannel, pool: asyncpg.Pool, relationship_id: str, *, timeout: float = 60
) -> list[Notification]:
    """Wait until `channel` has got every notification the relationship's stored events call
    for (deliveries go out in the background, after the events are stored), and return
    those. A count taken afterwards has no delivery in flight behind it."""
    from activities.event_store import PostgresEventStore
    from events.decider import evolve
    from events.notifications import notifications_for
    from events.state import RelationshipState

    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        state: RelationshipState | None = None
        wanted: list[Notification] = []
        for event in await PostgresEventStore(pool).read_stream(relationship_id):
            before, state = state, evolve(state, event)
            wanted.extend(notifications_for(event, state, before))
        missing = {n.notification_id for n in wanted} - {n.notification_id for n in channel.sent}
        if not missing:
            return wanted
        if loop.time() > deadline:
            raise AssertionError(f"not delivered within {timeout:g} s: {sorted(n.template for n in wanted if n.notification_id in missing)}")
        await asyncio.sleep(0.05)


def cohort() -> list[MentorProfile | MenteeProfile]:
    topics = ["python", "sql", "design", "speaking"]
    mentors: list[MentorProfile | MenteeProfile] = [
        MentorProfile.model_validate({
            "participant_id": f"m-{j}", "capacity": capacity, "languages": ["en"], "seniority": 6,
            "strengths": [{"topic": topics[j % 4], "level": 5}, {"topic": topics[(j + 1) % 4], "level": 3}],
            "availability": [{"day": "tue", "start": "10:00", "end": "12:00"}], "timezone": "Europe/Berlin",
        })
        for j, capacity in enumerate([2, 1, 1])
    ]  # fmt: skip
    mentees: list[MentorProfile | MenteeProfile] = [
        MenteeProfile.model_validate({
            "participant_id": f"e-{i}", "languages": ["en"], "seniority": 4, "timezone": "Europe/London",
            "goals": [{"topic": topics[i % 4], "priority": 3}, {"topic": topics[(i + 2) % 4]}],
            "availability": [{"day": "tue", "start": "09:00", "end": "10:30"}],
            # e-0 would fit m-0 best, but m-0 is their manager's manager.
            "reports_to": ["boss-0", "m-0"] if i == 0 else [],
        })
        for i in range(6)
    ]  # fmt: skip
    return mentors + mentees
