"""Read models: the pure fold, the follower on real PostgreSQL (order, exactly once, the
late-commit race, crash and resume, one at a time), rebuilds, and the report's numbers."""

from __future__ import annotations

import asyncio
import dataclasses
import json
from collections import Counter
from datetime import timedelta
from typing import Any

import asyncpg
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from activities.database import create_pool
from activities.event_store import PostgresEventStore
from activities.projections import ProjectionFollower, projections_named
from events.commands import CancelMeeting, Command, CorrectMeetingReport, RecordMeeting, ReportMeetingNotHeld
from events.decider import Rejection, decide
from events.model import AnyEvent, MatchConfirmed, MeetingHeld, MeetingMissed, MeetingReportCorrected, RelationshipStarted
from events.store import event_payload
from events.projections import (
    DIGEST,
    FEEDBACK,
    MEETINGS,
    PROJECTIONS,
    RELATIONSHIPS,
    Key,
    Projection,
    month_of,
    percentile,
    programme_report,
    project,
)
from events.state import RelationshipState
from mentorflow.reports import load_programme_report
from migrations import apply_migrations, available_migrations
from tests.support.domain_story import MENTEE, MENTOR, Story, active
from tests.support.session import TEST_KEYRING
from tests.support.owners import owner
from tests.support.projection_stories import SECRET, Driver, caught_up, interleaved, redacted, stories


def fold_all(projection: Projection[Any], events: list[AnyEvent], batch: int | None = None) -> dict[Key, Any]:
    """The projection's rows after `events`, folded all at once or `batch` events at a time."""
    rows: dict[Key, Any] = {}
    size = batch or len(events) or 1
    for start in range(0, len(events), size):
        rows.update(project(projection, rows, events[start : start + size]))
    return rows


@pytest.fixture(scope="module")
def drivers() -> list[Driver]:
    return stories()


def all_events(drivers: list[Driver]) -> list[AnyEvent]:
    return [event for chunk in interleaved(drivers) for event in chunk]


# -- the pure fold ---------------------------------------------------------------------------


def test_a_relationship_row_agrees_with_the_relationships_own_state(drivers: list[Driver]) -> None:
    rows = fold_all(RELATIONSHIPS, all_events(drivers))
    meetings = fold_all(MEETINGS, all_events(drivers))
    feedback = fold_all(FEEDBACK, all_events(drivers))
    for driver in drivers:
        state: RelationshipState = driver.state
        row = rows[(state.relationship_id,)]
        assert (row.programme_id, row.mentee_id, row.phase, row.health) == (state.programme_id, state.mentee_id, state.phase, state.health)
        assert (row.mentor_id, row.activated_at, row.closed_at) == (state.mentor_id, state.activated_at, state.closed_at)
        assert row.closure_reason == state.closure_reason and row.version == state.version
        confirmed = [e.occurred_at for e in driver.events if isinstance(e, MatchConfirmed)]
        assert row.matched_at == (confirmed[0] if confirmed else None)
        assert set(row.goal_ids) == set(state.goals)
        assert set(row.achieved_goal_ids) == {g for g, progress in state.goals.items() if progress.achieved_at}
        mine = [m for m in meetings.values() if m.relationship_id == state.relationship_id]
        assert {m.meeting_number: m.status for m in mine} == counted_meetings(state)
        assert sum(m.status == "held" for m in mine) == state.meetings_held
        assert sum(m.status == "missed" for m in mine) == state.meetings_missed
        answers = sorted((f.feedback_round, f.party, f.score) for f in feedback.values() if f.relationship_id == state.relationship_id)
        assert answers == sorted((s.feedback_round, s.party, s.score) for s in state.feedback_scores)
    # And after every single event, not only at the end (a review that completes, say).
    for driver in drivers:
        row_now: dict[Key, Any] = {}
        for event, state in zip(driver.events, driver.states, strict=True):
            row_now.update(project(RELATIONSHIPS, row_now, [event]))
            row = row_now[(state.relationship_id,)]
            assert (row.phase, row.health, row.mentor_id, row.closure_reason) == (state.phase, state.health, state.mentor_id, state.closure_reason)
            assert (len(row.goal_ids), row.version) == (len(state.goals), state.version)
    # The stories cover what the report shows: every phase that matters, corrections both ways, closures.
    assert {row.phase.value for row in rows.values()} == {"closed", "review", "active", "agreement"}
    assert any(isinstance(e, MeetingHeld) and e.correction for e in all_events(drivers))
    assert any(isinstance(e, MeetingReportCorrected) and e.outcome == "not_held" for e in all_events(drivers))


def counted_meetings(state: RelationshipState) -> dict[int, str]:
    """Meeting number -> held or missed, as the relationship's own state counts its meetings."""
    return {m.meeting_number: m.outcome for m in state.past_meetings if m.outcome != "cancelled"}


# What a party may say about a meeting (one of those known to the state, picked by index).
MEETING_REPORTS = ("meet", "wait", "report_not_held", "correct_to_not_held", "correct_to_held", "report_late", "cancel")


def report_on_a_meeting(story: Story, report: str, pick: int, party: str, days: int) -> None:
    """Apply what `report` decides about a known meeting; a refused report changes nothing."""
    state = story.state
    numbers = [m.meeting_number for m in state.past_meetings] + [m.meeting_number for m in [state.next_meeting] if m]
    number = numbers[pick % len(numbers)] if numbers else 1
    if report == "meet" and state.next_meeting is not None:
        story.meet(party)
    elif report == "wait":
        story.advance(timedelta(days=days))
    elif report in MEETING_REPORTS[2:]:
        sent: dict[str, tuple[type[Command], dict[str, Any]]] = {
            "report_not_held": (ReportMeetingNotHeld, {}),
            "correct_to_not_held": (CorrectMeetingReport, {"outcome": "not_held"}),
            "correct_to_held": (CorrectMeetingReport, {"outcome": "held"}),
            "report_late": (RecordMeeting, {"held_at": story.now - timedelta(hours=1), "duration_minutes": 30}),
            "cancel": (CancelMeeting, {}),
        }
        command_type, fields = sent[report]
        decision = decide(state, story.command(command_type, party, meeting_number=number, **fields), story.now)
        if not isinstance(decision, Rejection):
            story.apply(decision)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    reports=st.lists(
        st.tuples(st.sampled_from(MEETING_REPORTS), st.integers(0, 5), st.sampled_from((MENTEE, MENTOR)), st.integers(1, 20)),
        min_size=1,
        max_size=12,
    )
)
def test_the_meetings_rows_count_what_the_state_counts_for_any_reports_and_corrections(
    reports: list[tuple[str, int, str, int]],
) -> None:
    story = active()
    for report in reports:
        report_on_a_meeting(story, *report)
        rows = fold_all(MEETINGS, story.history)
        assert {number: row.status for (_, number), row in rows.items()} == counted_meetings(story.state)
        assert sum(row.status == "held" for row in rows.values()) == story.state.meetings_held
    # The digest counts the same meetings held; event by event, or applied twice: the same rows.
    digest = fold_all(DIGEST, story.history)[(story.state.relationship_id,)]
    assert list(digest.held_meeting_numbers) == sorted(number for (_, number), row in rows.items() if row.status == "held")
    assert fold_all(MEETINGS, story.history, batch=1) == rows
    assert project(MEETINGS, rows, story.history) == {}


@pytest.mark.parametrize("batch", [1, 2, 7, 50])
def test_folding_in_batches_of_any_size_gives_the_rows_of_one_fold(drivers: list[Driver], batch: int) -> None:
    events = all_events(drivers)
    for projection in PROJECTIONS:
        assert fold_all(projection, events, batch) == fold_all(projection, events)


def test_an_event_applied_twice_changes_nothing(drivers: list[Driver]) -> None:
    events = all_events(drivers)
    for projection in PROJECTIONS:
        rows = fold_all(projection, events)
        assert project(projection, rows, events) == {}


def test_rows_use_no_confidential_text_and_survive_its_redaction(drivers: list[Driver]) -> None:
    events = all_events(drivers)
    forgotten = [redacted(event) for event in events]
    assert sum(a != b for a, b in zip(events, forgotten, strict=True)) >= 10  # the stories carry text
    for projection in PROJECTIONS:
        rows = fold_all(projection, events)
        assert fold_all(projection, forgotten) == rows
        assert SECRET not in json.dumps([row.model_dump(mode="json") for row in rows.values()])


def test_percentiles_interpolate_between_ranks() -> None:
    assert percentile([], 50) is None
    assert percentile([4.0], 90) == 4.0
    assert percentile([3.0, 1.0, 2.0], 50) == 2.0
    assert percentile([1.0, 2.0, 3.0, 4.0], 50) == 2.5
    assert percentile([0.0, 10.0], 90) == pytest.approx(9.0)


def test_the_programme_report_from_the_stories(drivers: list[Driver]) -> None:
    events = all_events(drivers)
    report = programme_report(
        "prog-1",
        fold_all(RELATIONSHIPS, events).values(),
        fold_all(MEETINGS, events).values(),
        fold_all(FEEDBACK, events).values(),
    )
    assert report.relationships == 4
    non_zero = {(p, h): n for p, by_health in report.by_phase_and_health.items() for h, n in by_health.items() if n}
    assert non_zero == {("closed", "at_risk"): 1, ("closed", "healthy"): 1, ("review", "at_risk"): 1, ("agreement", "healthy"): 1}
    # Matched after 2 days, 6.5 days and 5 hours; one never matched.
    ttm = report.time_to_match
    assert (ttm.matched, ttm.unmatched, ttm.median_days, ttm.max_days) == (3, 1, 2.0, 6.5)
    assert ttm.p75_days == 4.25 and ttm.p90_days == 5.6  # 2 + 0.5 * 4.5, 2 + 0.8 * 4.5
    # Meetings: prog-1's states say 7 held and 1 missed (the other miss was corrected).
    prog1 = [d for d in drivers if d.state.programme_id == "prog-1"]
    assert sum(m.held for m in report.meetings_per_month) == sum(d.state.meetings_held for d in prog1) == 7
    assert sum(m.missed for m in report.meetings_per_month) == sum(d.state.meetings_missed for d in prog1) == 1
    held_months = Counter(month_of(e.held_at) for d in prog1 for e in d.events if isinstance(e, MeetingHeld))
    assert {m.month: m.held for m in report.meetings_per_month if m.held} == dict(held_months)
    assert [m.month for m in report.meetings_per_month] == sorted(m.month for m in report.meetings_per_month)
    # Goals: 2 + 3 agreed, 1 added by a revision, 1 achieved.
    assert (report.goal_completion.goals, report.goal_completion.achieved, report.goal_completion.rate) == (6, 1, 0.1667)
    # Feedback 5, 4 then 2, 3: four answers averaging 3.5.
    answers = sum(m.responses for m in report.feedback_per_month)
    total = sum(m.average_score * m.responses for m in report.feedback_per_month)
    assert (answers, total / answers) == (4, 3.5)
    assert report.closure_reasons == {"closed_by_mentee": 1, "unmatched": 1}


# -- the follower on PostgreSQL ------------------------------------------------------------------


# Each story's programme, from its RelationshipStarted (a stream's owner; tests/support/owners.py).
_PROGRAMMES: dict[str, str] = {}


async def append_all(store: PostgresEventStore, chunks: list[list[AnyEvent]]) -> None:
    programmes = _PROGRAMMES
    for chunk in chunks:
        programmes.update((e.stream_id, e.programme_id) for e in chunk if isinstance(e, RelationshipStarted))
        stream_id = chunk[0].stream_id
        await store.append(stream_id, chunk[0].version - 1, chunk, owner=owner(stream_id, programmes[stream_id]))


def owned_by(started: AnyEvent) -> tuple[str, str]:
    """(stream id, programme id) of the relationship a RelationshipStarted starts."""
    assert isinstance(started, RelationshipStarted)
    return started.stream_id, started.programme_id


async def table_rows(
    pool: asyncpg.Pool, projections: tuple[Projection[Any], ...] = PROJECTIONS
) -> dict[str, list[dict[str, Any]]]:
    tables: dict[str, list[dict[str, Any]]] = {}
    for projection in projections:
        records = await pool.fetch(
            f"SELECT * FROM {projection.table} ORDER BY {', '.join(projection.key_columns)}"
        )
        tables[projection.table] = [dict(record) for record in records]
    return tables


def expected_rows(events: list[AnyEvent]) -> dict[str, list[dict[str, Any]]]:
    """What the tables should hold: the pure fold, in the tables' order and shapes."""
    tables = {}
    for projection in PROJECTIONS:
        rows = sorted(fold_all(projection, events).items())
        tables[projection.table] = [
            {k: (list(v) if isinstance(v, tuple) else v) for k, v in row.model_dump().items()} for _, row in rows
        ]
    return tables


async def test_following_in_small_batches_between_appends_equals_a_rebuild_and_the_pure_fold(
    pool: asyncpg.Pool, drivers: list[Driver]
) -> None:
    store = PostgresEventStore(pool, TEST_KEYRING)
    follower = ProjectionFollower(pool, batch_size=3)
    chunks = interleaved(drivers)
    for start in range(0, len(chunks), 4):
        await append_all(store, chunks[start : start + 4])
        assert await follower.step() is not None  # one batch, while more keeps arriving
    await follower.catch_up()
    followed = await table_rows(pool)
    assert followed == expected_rows(all_events(drivers))
    statuses = await follower.status()
    head = statuses[0].head
    assert head == sum(len(chunk) for chunk in chunks)
    assert [(s.position, s.behind) for s in statuses] == [(head, 0)] * len(PROJECTIONS)

    read = await ProjectionFollower(pool).rebuild()
    assert read == head
    assert await table_rows(pool) == followed

    # One projection alone: the others keep their rows and checkpoints.
    only = ProjectionFollower(pool, projections=projections_named(["meetings"]), batch_size=5)
    await only.reset()
    assert (await table_rows(pool))["report_meetings"] == []
    await only.catch_up()
    assert await table_rows(pool) == followed


async def test_a_crash_halfway_through_a_batch_leaves_neither_rows_nor_checkpoint(
    pool: asyncpg.Pool, drivers: list[Driver]
) -> None:
    await append_all(PostgresEventStore(pool, TEST_KEYRING), interleaved(drivers))
    applied = 0

    def crash_on_the_thirtieth(row: Any, event: AnyEvent) -> Any:
        nonlocal applied
        applied += 1
        if applied == 30:
            raise RuntimeError("worker killed")
        return RELATIONSHIPS.apply(row, event)

    crashing = dataclasses.replace(RELATIONSHIPS, apply=crash_on_the_thirtieth)
    follower = ProjectionFollower(pool, projections=(crashing, *PROJECTIONS[1:]), batch_size=20)
    assert await follower.step() == 20
    with pytest.raises(RuntimeError, match="worker killed"):
        await follower.step()
    # The second batch (events 21-40) left nothing behind: the checkpoints still say 20.
    assert {s.position for s in await follower.status()} == {20}
    assert await table_rows(pool) == expected_rows(all_events(drivers)[:20])  # positions 1-20

    await ProjectionFollower(pool, batch_size=20).catch_up()  # the restarted worker resumes
    assert await table_rows(pool) == expected_rows(all_events(drivers))


async def test_the_follower_never_skips_an_event_whose_transaction_commits_late(
    pool: asyncpg.Pool, database_url: str, drivers: list[Driver]
) -> None:
    """Append A takes the first positions and stays open while B commits after it: the
    follower must not move past A's positions until A commits."""
    first, second = drivers[0].events[:1], drivers[1].events[:1]
    late = await asyncpg.connect(database_url)
    try:
        transaction = late.transaction()
        await transaction.start()
        event = first[0]
        late_owner = owner(*owned_by(event))
        await late.fetchval(
            "SELECT append_events($1, 0, $2, $3, $4, $5, $6, $7::jsonb[], $8, $9)",
            event.stream_id, [event.event_id], [event.type], [event.schema_version], [event.occurred_at],
            [None], [json.dumps(event_payload(event))], late_owner.programme_id, late_owner.workflow_id,
        )  # fmt: skip
        await PostgresEventStore(pool, TEST_KEYRING).append(second[0].stream_id, 0, second, owner=owner(*owned_by(second[0])))
        follower = ProjectionFollower(pool)
        assert await follower.catch_up() == 0
        assert {s.position for s in await follower.status()} == {0}
        await transaction.commit()
        assert await follower.catch_up() == 2
    finally:
        await late.close()
    rows = await pool.fetch("SELECT relationship_id FROM report_relationships ORDER BY relationship_id")
    assert [r["relationship_id"] for r in rows] == ["rel-full", "rel-unmatched"]


async def test_one_follower_applies_at_a_time_and_others_wait_their_turn(
    pool: asyncpg.Pool, database_url: str, drivers: list[Driver]
) -> None:
    await append_all(PostgresEventStore(pool, TEST_KEYRING), interleaved(drivers))
    other = await asyncpg.connect(database_url)
    try:
        async with other.transaction():
            # Whoever holds the lock (here: another follower mid-batch) keeps the rest out.
            await other.execute("SELECT pg_advisory_xact_lock(7120250006)")
            assert await ProjectionFollower(pool).step() is None
            waiting = asyncio.create_task(ProjectionFollower(pool).catch_up())
            await asyncio.sleep(0.2)
            assert not waiting.done()
            assert await pool.fetchval("SELECT count(*) FROM report_relationships") == 0
        assert await waiting > 0
    finally:
        await other.close()
    # Many followers at once, in small batches: the same rows, every checkpoint at the head.
    await ProjectionFollower(pool).reset()
    await asyncio.gather(*(ProjectionFollower(pool, batch_size=4).catch_up() for _ in range(4)))
    assert await table_rows(pool) == expected_rows(all_events(drivers))


async def test_the_follow_loop_keeps_up_in_the_background_and_stops_when_cancelled(
    pool: asyncpg.Pool, drivers: list[Driver]
) -> None:
    store = PostgresEventStore(pool, TEST_KEYRING)
    chunks = interleaved(drivers)
    task = asyncio.create_task(ProjectionFollower(pool, batch_size=10).follow(poll_seconds=0.02))
    try:
        await append_all(store, chunks)
        head = sum(len(chunk) for chunk in chunks)
        for _ in range(500):
            if await pool.fetchval("SELECT min(position) FROM projection_checkpoints") == head:
                break
            await asyncio.sleep(0.02)
        assert await table_rows(pool) == expected_rows(all_events(drivers))
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


async def test_the_report_loads_one_programme_from_the_tables(pool: asyncpg.Pool, drivers: list[Driver]) -> None:
    await append_all(PostgresEventStore(pool, TEST_KEYRING), interleaved(drivers))
    await ProjectionFollower(pool).catch_up()
    events = all_events(drivers)
    expected = programme_report(
        "prog-1", *(fold_all(p, events).values() for p in (RELATIONSHIPS, MEETINGS, FEEDBACK))
    )
    assert await load_programme_report(pool, "prog-1") == expected
    other = await load_programme_report(pool, "prog-2")
    assert other is not None and other.relationships == 1
    # Its second meeting was reported held, then corrected to not held.
    assert sum(m.held for m in other.meetings_per_month) == sum(m.missed for m in other.meetings_per_month) == 1
    assert await load_programme_report(pool, "no-such-programme") is None
    assert len([e for e in events if isinstance(e, MeetingMissed)]) == 3


async def test_forgetting_a_relationship_leaves_its_rows_and_a_rebuild_unchanged(
    pool: asyncpg.Pool, drivers: list[Driver]
) -> None:
    from mentorflow.forgetting import forget_relationship

    store = PostgresEventStore(pool, TEST_KEYRING)
    await append_all(store, interleaved(drivers))
    follower = ProjectionFollower(pool)
    await follower.catch_up()
    before = await table_rows(pool)

    async def never_running(programme_id: str, relationship_id: str) -> bool:
        return False

    notes = [e.notes for e in await store.read_stream("rel-full") if isinstance(e, MeetingHeld) and e.notes]
    assert len(notes) == 5 and all(SECRET in n for n in notes)
    await forget_relationship(pool, "rel-full", forgotten_by="privacy-officer", still_running=never_running)
    notes = [e.notes for e in await store.read_stream("rel-full") if isinstance(e, MeetingHeld) and e.notes]
    assert notes == ["[forgotten]"] * 5

    assert await table_rows(pool) == before
    await follower.rebuild()
    assert await table_rows(pool) == before == expected_rows(all_events(drivers))


async def test_upgrading_throws_the_meetings_rows_of_before_away_and_replays_them(database_url: str, drivers: list[Driver]) -> None:
    """Rows built before the meetings read model followed stream versions (migration
    meeting_versions) cannot be trusted: the migration empties the table and its checkpoint,
    the followers replay it from the first event, and the other read models stay where they are."""
    mine = next(m for m in available_migrations() if m.name == "meeting_versions")
    pool = await create_pool(database_url, max_size=4)
    try:
        async with pool.acquire() as connection:
            await apply_migrations(connection, until=mine.version - 1)
        await append_all(PostgresEventStore(pool, TEST_KEYRING), interleaved(drivers))
        others = projections_named(["relationships", "feedback", "digest"])
        head = await caught_up(ProjectionFollower(pool, projections=others))
        # What a fold that missed the correction to "not held" had left: both meetings held.
        await pool.executemany(
            "INSERT INTO report_meetings VALUES ($1, $2, 'held', now(), 60)", [("rel-elsewhere", 1), ("rel-elsewhere", 2)]
        )
        await pool.execute("INSERT INTO projection_checkpoints (projection, position) VALUES ('meetings', $1)", head)
        before = await table_rows(pool, others)

        async with pool.acquire() as connection:
            assert [m.version for m in await apply_migrations(connection, until=mine.version)] == [mine.version]
        follower = ProjectionFollower(pool)
        assert {s.name: s.behind for s in await follower.status()} == {"relationships": 0, "meetings": head, "feedback": 0, "digest": 0}
        assert await pool.fetchval("SELECT count(*) FROM report_meetings") == 0
        assert await caught_up(follower) == head
        assert await table_rows(pool) == expected_rows(all_events(drivers))
        assert await table_rows(pool, others) == before
    finally:
        await pool.close()
