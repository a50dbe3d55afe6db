"""Security issue #12: a stream belongs to exactly one relationship workflow of one programme.

At activity level, against a real PostgreSQL: the owner appends and reads; a workflow of
another programme (`relationship/evilprog/<victim's id>`, the tester's attack) or under
another workflow id is refused on append and on read, loudly, and changes nothing; racing
first appends of different owners leave exactly one owner; streams stored before migration
0008 (or by an older worker during the upgrade) belong to their starter and stay readable;
`forget` still works; and `mentorflow audit streams` finds streams that were shared.
"""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from typing import Any

import asyncpg
import pytest
from temporalio.client import Client
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities.data_keys import FORGOTTEN, DataKeys, seal_payload
from activities.database import create_pool
from activities.event_store import EventStoreActivities, PostgresEventStore
from activities.notifications import NotificationActivities, StaticContacts
from activities.notifications_delivery_log import PostgresDeliveryLog
from activities.store_and_notify import StoreAndNotifyActivities
from events.decider import start_relationship
from events.model import CONFIDENTIAL_PATHS, AnyEvent, ConcernRaised, MeetingHeld
from events.store import event_payload
from events.notifications import Notification
from events.settings import ProgrammeSettings
from events.store import (
    STREAM_OWNED_BY_ANOTHER,
    AppendAndNotifyRequest,
    AppendRequest,
    ReadStreamRequest,
    StreamOwnedByAnother,
    StreamOwner,
)
from mentorflow.audit import (
    INCOMPLETE,
    SHARED,
    TAMPERED,
    UNCLAIMABLE,
    UNOWNED,
    WorkflowOfStream,
    audit_streams,
    relationship_workflows,
)
from mentorflow.client import data_converter
from mentorflow.forgetting import forget_relationship
from mentorflow.keyring import Keyring
from migrations import apply_migrations
from tests.support.session import start_dev_server
from tests.support.helpers import HISTORY_START, envelope
from tests.support.owners import owner

NOW = HISTORY_START
KEYRING = Keyring.generate("kek-owners")
SECRET = "my manager shouts at me; please keep this between us"
VICTIM = owner("rel-1", "prog-1")  # relationship/prog-1/rel-1
ATTACKER = owner("rel-1", "evilprog")  # relationship/evilprog/rel-1: the tester's start


def relationship(stream_id: str, programme_id: str, meetings: int = 13, text: str = SECRET) -> list[AnyEvent]:
    """A started relationship with meeting notes and a concern: 1 + meetings + 1 events."""
    events: list[AnyEvent] = start_relationship(stream_id, programme_id, "mentee-1", ProgrammeSettings(), NOW)
    for number in range(1, meetings + 1):
        events.append(MeetingHeld(**envelope(stream_id, len(events) + 1), meeting_number=number, held_at=NOW,
                                  duration_minutes=45, recorded_by="mentor-1", notes=f"notes {number}: {text}"))  # fmt: skip
    events.append(ConcernRaised(**envelope(stream_id, len(events) + 1), concern_id="c-9", party="mentee",
                                raised_by="mentee-1", text=f"concern: {text}"))  # fmt: skip
    return events


def activities(pool: asyncpg.Pool) -> EventStoreActivities:
    return EventStoreActivities(PostgresEventStore(pool, KEYRING))


async def append(acts: EventStoreActivities, who: StreamOwner, expected: int, events: list[AnyEvent]) -> list[int]:
    request = AppendRequest(stream_id=events[0].stream_id, expected_version=expected, events=events, owner=who)
    positions: list[int] = await ActivityEnvironment().run(acts.append_events, request)
    return positions


async def read(acts: EventStoreActivities, who: StreamOwner, stream_id: str, after: int = 0) -> list[AnyEvent]:
    request = ReadStreamRequest(stream_id=stream_id, after_version=after, owner=who)
    events: list[AnyEvent] = await ActivityEnvironment().run(acts.read_stream, request)
    return events


async def refused(call: Any) -> ApplicationError:
    """The ApplicationError an activity call was refused with: stream owned by another."""
    with pytest.raises(ApplicationError) as caught:
        await call
    assert caught.value.type == STREAM_OWNED_BY_ANOTHER, caught.value
    assert caught.value.non_retryable
    return caught.value


async def snapshot(pool: asyncpg.Pool) -> tuple[Any, ...]:
    """Everything an append or a claim could change."""
    return (
        [tuple(r) for r in await pool.fetch("SELECT position, stream_id, version, event_id, payload::text FROM events ORDER BY position")],
        [tuple(r) for r in await pool.fetch("SELECT stream_id, programme_id, workflow_id, claimed_by FROM stream_owners ORDER BY stream_id")],
        [tuple(r) for r in await pool.fetch("SELECT stream_id, wrapped_key, forgotten_at FROM data_keys ORDER BY stream_id")],
        await pool.fetchval("SELECT count(*) FROM notification_deliveries"),
    )


# -- the owner, and everybody else ------------------------------------------------------


async def test_the_owner_appends_and_reads_and_is_recorded_as_the_owner(pool: asyncpg.Pool) -> None:
    acts = activities(pool)
    events = relationship("rel-1", "prog-1")
    await append(acts, VICTIM, 0, events[:1])
    await append(acts, VICTIM, 1, events[1:])
    assert await read(acts, VICTIM, "rel-1") == events  # confidential text decrypted
    assert await read(acts, VICTIM, "rel-1", after=14) == events[14:]
    row = await pool.fetchrow("SELECT * FROM stream_owners WHERE stream_id = 'rel-1'")
    assert (row["programme_id"], row["workflow_id"], row["claimed_by"]) == ("prog-1", "relationship/prog-1/rel-1", "append")
    raw = "".join(r[0] for r in await pool.fetch("SELECT payload::text FROM events"))
    assert SECRET not in raw and raw.count('"$enc"') == 14
    # A retry of a batch that was stored (the local activity run again) is still a repeat.
    assert await append(acts, VICTIM, 1, events[1:]) == await append(acts, VICTIM, 1, events[1:])


async def test_a_workflow_started_under_another_programme_can_neither_append_nor_read(
    pool: asyncpg.Pool, caplog: pytest.LogCaptureFixture
) -> None:
    """The tester's attack: `relationship/evilprog/<victim's id>` over a stream of 15 events."""
    acts = activities(pool)
    victim = relationship("rel-1", "prog-1")
    await append(acts, VICTIM, 0, victim)
    assert len(victim) == 15
    before = await snapshot(pool)
    caplog.set_level(logging.ERROR, logger="mentorflow.event_store")

    # Its first append: its own start at version 1. Before the fix a ConcurrencyConflict, on
    # which the workflow read and adopted the victim's 15 events.
    error = await refused(append(acts, ATTACKER, 0, start_relationship("rel-1", "evilprog", "mentee-x", ProgrammeSettings(), NOW)))
    assert "relationship/evilprog/rel-1" in str(error) and "relationship/prog-1" not in str(error)
    # The adoption itself, and a read of part of the stream.
    await refused(read(acts, ATTACKER, "rel-1"))
    await refused(read(acts, ATTACKER, "rel-1", after=10))
    # Appending where the stream is, and repeating one of the victim's batches exactly
    # (which the store answers with the stored positions when it is the owner's retry).
    more = relationship("rel-1", "evilprog", meetings=15)[15:]
    await refused(append(acts, ATTACKER, 15, more))
    await refused(append(acts, ATTACKER, 1, victim[1:]))
    # The same programme under another workflow id is another workflow, too; and an
    # identical start (same event ids, same content) is no way in either.
    for other in (StreamOwner(programme_id="prog-1", workflow_id="rogue-1"),
                  StreamOwner(programme_id="prog-1", workflow_id="relationship/prog-1/rel-1-copy")):  # fmt: skip
        await refused(append(acts, other, 0, victim[:1]))
        await refused(read(acts, other, "rel-1"))

    assert await snapshot(pool) == before
    refusals = [r.getMessage() for r in caplog.records if "REFUSED" in r.getMessage()]
    assert len(refusals) == 9
    assert "relationship/evilprog/rel-1 (programme evilprog) tried to append to stream rel-1" in refusals[0]
    assert "(owner: prog-1 relationship/prog-1/rel-1)" in refusals[0]
    assert "tried to read stream rel-1" in refusals[1]
    # The owner is unaffected.
    assert await read(acts, VICTIM, "rel-1") == victim


async def test_a_refused_batch_with_notifications_sends_nothing(pool: asyncpg.Pool) -> None:
    acts = activities(pool)
    await append(acts, VICTIM, 0, relationship("rel-1", "prog-1"))
    before = await snapshot(pool)
    # Only the log channel: a notification that got as far as sending would be in the
    # delivery log.
    together = StoreAndNotifyActivities(
        acts, NotificationActivities(deliveries=PostgresDeliveryLog(pool), contacts=StaticContacts([]), channels=[])
    )
    notification = Notification(
        notification_id="n-1", relationship_id="rel-1", recipient_id="mentee-1", template="match_proposed", data={}
    )
    request = AppendAndNotifyRequest(
        append=AppendRequest(stream_id="rel-1", expected_version=15,
                             events=relationship("rel-1", "evilprog", meetings=15)[15:], owner=ATTACKER),
        notifications=[notification],
    )  # fmt: skip
    await refused(ActivityEnvironment().run(together.append_events_and_notify, request))
    assert await snapshot(pool) == before


async def test_a_refused_append_of_confidential_text_makes_no_data_key(pool: asyncpg.Pool) -> None:
    acts = activities(pool)
    await append(acts, VICTIM, 0, relationship("rel-1", "prog-1", meetings=0)[:1])  # no text yet: no key
    before = await snapshot(pool)
    note = relationship("rel-1", "evilprog", meetings=1)[1:2]
    assert isinstance(note[0], MeetingHeld) and note[0].notes
    await refused(append(acts, ATTACKER, 1, note))
    assert await snapshot(pool) == before
    assert await pool.fetchval("SELECT count(*) FROM data_keys") == 0


async def test_a_batch_starting_the_relationship_in_another_programme_than_the_owners_is_invalid(
    pool: asyncpg.Pool,
) -> None:
    with pytest.raises(ApplicationError) as caught:
        await append(activities(pool), ATTACKER, 0, relationship("rel-1", "prog-1", meetings=0))
    assert caught.value.type == "InvalidAppend" and "not in the appender's evilprog" in str(caught.value)
    assert await pool.fetchval("SELECT count(*) FROM stream_owners") == 0


# -- racing first appends ---------------------------------------------------------------


async def test_racing_first_appends_of_different_owners_leave_exactly_one_owner(pool: asyncpg.Pool) -> None:
    contenders = [
        owner("x", "prog-a"),
        owner("x", "prog-b"),
        owner("x", "prog-c"),
        StreamOwner(programme_id="prog-a", workflow_id="another-workflow-of-prog-a"),
    ]
    # Separate stores: separate data-key caches, as in separate worker processes.
    stores = [activities(pool) for _ in contenders]
    rounds = 40
    winners: list[int] = []
    for round_number in range(rounds):
        stream_id = f"race-{round_number}"
        barrier = asyncio.Barrier(len(contenders))
        batches = []
        for contender in contenders:
            # Half the rounds with confidential text: the data key is made in the race too.
            events = relationship(stream_id, contender.programme_id, meetings=round_number % 2)
            batches.append(events)

        async def contend(n: int) -> str:
            who = contenders[n]
            request = AppendRequest(stream_id=stream_id, expected_version=0, events=batches[n],
                                    owner=StreamOwner(programme_id=who.programme_id,
                                                      workflow_id=who.workflow_id.replace("/x", f"/{stream_id}")))  # fmt: skip
            await barrier.wait()
            try:
                await ActivityEnvironment().run(stores[n].append_events, request)
                return "won"
            except ApplicationError as error:
                return error.type or "?"

        outcomes = await asyncio.gather(*(contend(n) for n in range(len(contenders))))
        assert sorted(outcomes) == sorted(["won"] + [STREAM_OWNED_BY_ANOTHER] * (len(contenders) - 1)), (round_number, outcomes)
        winner = outcomes.index("won")
        winners.append(winner)
        row = await pool.fetchrow("SELECT programme_id, workflow_id FROM stream_owners WHERE stream_id = $1", stream_id)
        assert row["programme_id"] == contenders[winner].programme_id
        stored = await PostgresEventStore(pool, KEYRING).read_stream(stream_id)
        assert stored == batches[winner], round_number
    assert await pool.fetchval("SELECT count(*) FROM stream_owners") == rounds


async def test_a_first_append_waits_for_a_racing_claim_and_is_refused_once_it_commits(
    pool: asyncpg.Pool, database_url: str
) -> None:
    """The interleaving the race test can only hope for, forced: A has claimed the stream and
    not committed; B passed the owner check and the version check before A's commit and
    reaches the claim. B must wait for A, then be refused (and win if A rolls back)."""
    sql = "SELECT append_events($1, 0, $2, $3, $4, $5, $6, $7::jsonb[], $8, $9)"

    def arguments(stream_id: str, who: StreamOwner) -> list[Any]:
        event = start_relationship(stream_id, who.programme_id, "mentee-1", ProgrammeSettings(), NOW)[0]
        return [stream_id, [event.event_id], [event.type], [event.schema_version], [event.occurred_at], [None],
                [json.dumps(event_payload(event))], who.programme_id, who.workflow_id]  # fmt: skip

    a, b = await asyncpg.connect(database_url), await asyncpg.connect(database_url)
    try:
        for a_commits, stream_id in ((True, "held-1"), (False, "held-2")):
            first, second = owner(stream_id, "prog-a"), owner(stream_id, "prog-b")
            transaction = a.transaction()
            await transaction.start()
            await a.fetchval(sql, *arguments(stream_id, first))
            racing = asyncio.create_task(b.fetchval(sql, *arguments(stream_id, second)))
            await asyncio.sleep(0.5)
            assert not racing.done(), "B must wait for A's claim"
            waiting = await pool.fetchval(
                "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND query LIKE 'SELECT append_events%'"
            )
            assert waiting == 1
            if a_commits:
                await transaction.commit()
                with pytest.raises(asyncpg.PostgresError) as caught:
                    await racing
                assert caught.value.sqlstate == "MF403"
                expected = ("prog-a", 1)
            else:
                await transaction.rollback()
                await racing
                expected = ("prog-b", 1)
            claimed = await pool.fetchrow(
                """SELECT o.programme_id, (SELECT count(*) FROM events e WHERE e.stream_id = o.stream_id) AS events
                     FROM stream_owners o WHERE o.stream_id = $1""",
                stream_id,
            )
            assert (claimed["programme_id"], claimed["events"]) == expected
    finally:
        await a.close()
        await b.close()


async def test_a_first_append_that_finds_the_winners_events_at_its_version_check_is_refused(
    pool: asyncpg.Pool, database_url: str
) -> None:
    """The other interleaving: B's owner check runs before A commits (no owner yet), B's
    version check after (A's event is there). B must be refused, not told of a conflict, nor,
    when its batch is identical to A's (same programme, same start), handed A's positions
    as if they were its own retry. The check is slowed down for B to force the order."""
    await pool.execute(
        """ALTER FUNCTION assert_stream_owner(text, text, text) RENAME TO assert_stream_owner_checked;
           CREATE FUNCTION assert_stream_owner(p_stream_id text, p_programme_id text, p_workflow_id text)
           RETURNS boolean LANGUAGE plpgsql AS $$
           DECLARE verdict boolean;
           BEGIN
               verdict := assert_stream_owner_checked(p_stream_id, p_programme_id, p_workflow_id);
               IF p_workflow_id LIKE '%-slow' THEN PERFORM pg_sleep(1); END IF;
               RETURN verdict;
           END $$"""
    )
    for stream_id, late_programme in (("late-1", "prog-b"), ("late-2", "prog-a")):
        first = owner(stream_id, "prog-a")
        late = StreamOwner(programme_id=late_programme, workflow_id=f"{owner(stream_id, late_programme).workflow_id}-slow")
        store = PostgresEventStore(pool, KEYRING)
        batch = lambda who: start_relationship(stream_id, who.programme_id, "mentee-1", ProgrammeSettings(), NOW)  # noqa: E731
        racing = asyncio.create_task(store.append(stream_id, 0, batch(late), owner=late))
        await asyncio.sleep(0.3)  # B is in its slowed-down owner check
        await store.append(stream_id, 0, batch(first), owner=first)
        with pytest.raises(StreamOwnedByAnother):
            await racing
        assert await pool.fetchval("SELECT workflow_id FROM stream_owners WHERE stream_id = $1", stream_id) == first.workflow_id


# -- streams without an owner: before the migration, and from older workers ------------


async def write_as_before_0008(pool: asyncpg.Pool, events: list[AnyEvent]) -> None:
    """What the store did before migration 0008: seal the confidential text with the
    stream's data key, then `append_events` without an owner."""
    stream_id = events[0].stream_id
    cipher = await DataKeys(pool, KEYRING).for_append(stream_id)
    payloads = []
    for event in events:
        payload = event_payload(event)
        if event.type in CONFIDENTIAL_PATHS:
            seal_payload(payload, CONFIDENTIAL_PATHS[event.type], stream_id, event.version, cipher)
        payloads.append(json.dumps(payload))
    await pool.fetchval(
        "SELECT append_events($1, $2, $3, $4, $5, $6, $7, $8::jsonb[])",
        stream_id, events[0].version - 1, [e.event_id for e in events], [e.type for e in events],
        [e.schema_version for e in events], [e.occurred_at for e in events], [e.command_id for e in events], payloads,
    )  # fmt: skip


async def test_a_stream_stored_before_the_migration_belongs_to_its_starter_and_stays_readable(database_url: str) -> None:
    connection = await asyncpg.connect(database_url)
    try:
        assert [m.version for m in await apply_migrations(connection, until=7)] == [1, 2, 3, 4, 5, 6, 7]
    finally:
        await connection.close()
    pool = await create_pool(database_url, max_size=10)
    try:
        victim = relationship("rel-1", "prog-1")
        await write_as_before_0008(pool, victim[:5])
        await write_as_before_0008(pool, victim[5:])
        # A stream that does not start with a RelationshipStarted: no owner can be derived.
        odd = relationship("rel-odd", "prog-1")[1:3]
        odd = [e.model_copy(update={"version": n}) for n, e in enumerate(odd, start=1)]
        await write_as_before_0008(pool, odd)

        connection = await asyncpg.connect(database_url)
        try:
            assert [m.version for m in await apply_migrations(connection)][0] == 8
        finally:
            await connection.close()

        rows = [tuple(r) for r in await pool.fetch("SELECT stream_id, programme_id, workflow_id, claimed_by FROM stream_owners")]
        assert rows == [("rel-1", "prog-1", "relationship/prog-1/rel-1", "backfill")]
        acts = activities(pool)
        before = await snapshot(pool)
        await refused(read(acts, ATTACKER, "rel-1"))
        await refused(append(acts, ATTACKER, 0, start_relationship("rel-1", "evilprog", "m", ProgrammeSettings(), NOW)))
        await refused(append(acts, ATTACKER, 15, relationship("rel-1", "evilprog", meetings=15)[15:]))
        assert await snapshot(pool) == before
        # Its starter reads it, confidential text decrypted as stored, and goes on appending.
        assert await read(acts, VICTIM, "rel-1") == victim
        later = relationship("rel-1", "prog-1", meetings=15)[15:]
        await append(acts, VICTIM, 15, later)
        assert await read(acts, VICTIM, "rel-1", after=14) == [victim[-1], *later]
        # The odd stream: refused to everybody, even the programme's own workflow id.
        for who in (owner("rel-odd", "prog-1"), owner("rel-odd", "evilprog")):
            await refused(read(acts, who, "rel-odd"))
            await refused(append(acts, who, 2, relationship("rel-odd", "prog-1", meetings=4)[2:3]))
        report = await audit_streams(pool, None)
        assert [(f.stream_id, f.kind) for f in report.findings] == [("rel-odd", UNCLAIMABLE)]
        # An older worker still running after the migration is refused, not let through.
        with pytest.raises(asyncpg.PostgresError) as caught:
            await write_as_before_0008(pool, relationship("rel-2", "prog-1", meetings=0))
        assert caught.value.sqlstate == "MF426" and "upgrade" in str(caught.value)
    finally:
        await pool.close()


async def insert_without_owner(pool: asyncpg.Pool, events: list[AnyEvent]) -> None:
    """Events as a worker older than 0008 wrote them while the migration ran (plain JSON)."""
    await pool.execute(
        """INSERT INTO events (position, stream_id, version, event_id, event_type, schema_version, occurred_at,
                               command_id, payload)
           SELECT nextval('event_position'), s, v, e::uuid, t, 1, o, c, p::jsonb
             FROM unnest($1::text[], $2::int[], $3::text[], $4::text[], $5::timestamptz[], $6::text[], $7::text[])
                  AS u(s, v, e, t, o, c, p)""",
        [e.stream_id for e in events], [e.version for e in events], [e.event_id for e in events],
        [e.type for e in events], [e.occurred_at for e in events], [e.command_id for e in events],
        [json.dumps(event_payload(e)) for e in events],
    )  # fmt: skip


async def test_a_stream_written_without_an_owner_is_claimed_by_its_starter_only(pool: asyncpg.Pool) -> None:
    acts = activities(pool)
    victim = relationship("rel-1", "prog-1")
    await insert_without_owner(pool, victim[:10])
    assert (await audit_streams(pool, None)).findings[0].kind == UNOWNED
    before = await snapshot(pool)
    # A stranger first: refused, and it claims nothing.
    await refused(read(acts, ATTACKER, "rel-1"))
    await refused(append(acts, ATTACKER, 10, victim[10:]))
    await refused(append(acts, StreamOwner(programme_id="prog-1", workflow_id="rogue"), 10, victim[10:]))
    assert await snapshot(pool) == before
    # Its starter reads without claiming, then appends and claims.
    assert await read(acts, VICTIM, "rel-1") == victim[:10]
    assert await pool.fetchval("SELECT count(*) FROM stream_owners") == 0
    await append(acts, VICTIM, 10, victim[10:])
    row = await pool.fetchrow("SELECT programme_id, workflow_id, claimed_by FROM stream_owners")
    assert tuple(row) == ("prog-1", "relationship/prog-1/rel-1", "first_owned_append")
    await refused(read(acts, ATTACKER, "rel-1"))
    assert await read(acts, VICTIM, "rel-1") == victim


async def test_forget_still_works_and_a_forgotten_stream_stays_its_owners(pool: asyncpg.Pool) -> None:
    acts = activities(pool)
    victim = relationship("rel-1", "prog-1")
    await append(acts, VICTIM, 0, victim)

    async def not_running(programme_id: str, relationship_id: str) -> bool:
        assert (programme_id, relationship_id) == ("prog-1", "rel-1")
        return False

    done = await forget_relationship(pool, "relationship/prog-1/rel-1", forgotten_by="ops-1", still_running=not_running)
    assert done.now and done.sealed_values == 14
    after = await read(acts, VICTIM, "rel-1")
    assert isinstance(after[1], MeetingHeld) and after[1].notes == FORGOTTEN and after[0] == victim[0]
    await refused(read(acts, ATTACKER, "rel-1"))
    late = relationship("rel-1", "prog-1", meetings=15)[15:]
    await append(acts, VICTIM, 15, late)
    assert (await read(acts, VICTIM, "rel-1", after=15))[0] == late[0].model_copy(update={"notes": FORGOTTEN})
    assert await pool.fetchval("SELECT workflow_id FROM stream_owners WHERE stream_id = 'rel-1'") == VICTIM.workflow_id


async def test_the_store_refuses_without_the_activity_too(pool: asyncpg.Pool) -> None:
    store = PostgresEventStore(pool, KEYRING)
    await store.append("rel-1", 0, relationship("rel-1", "prog-1"), owner=VICTIM)
    with pytest.raises(StreamOwnedByAnother) as caught:
        await store.read_stream("rel-1", owner=ATTACKER)
    assert caught.value.owner == "prog-1 relationship/prog-1/rel-1" and caught.value.refused == ATTACKER
    with pytest.raises(StreamOwnedByAnother):
        await store.check_owner("rel-1", ATTACKER)
    await store.check_owner("rel-1", VICTIM)
    # An operator's read (reports, tests, `relationship events`) names no owner.
    assert len(await store.read_stream("rel-1")) == 15


# -- the audit ----------------------------------------------------------------------------


async def test_the_audit_finds_streams_that_more_than_one_workflow_reached(pool: asyncpg.Pool) -> None:
    acts = activities(pool)
    await append(acts, VICTIM, 0, relationship("rel-1", "prog-1"))
    await append(acts, owner("rel-2", "prog-2"), 0, relationship("rel-2", "prog-2", meetings=2))
    await append(acts, owner("rel-3", "prog-1"), 0, relationship("rel-3", "prog-1", meetings=1))
    clean = await audit_streams(pool, None)
    assert clean.findings == [] and clean.clean and clean.streams == 3
    # Store traces: a start in another programme, an owner that is not the starter's.
    await insert_without_owner(pool, start_relationship("rel-4", "prog-1", "m", ProgrammeSettings(), NOW)
                               + [start_relationship("rel-4", "evilprog", "m", ProgrammeSettings(), NOW)[0]
                                  .model_copy(update={"version": 2, "event_id": str(uuid.uuid4())})])  # fmt: skip
    await pool.execute("UPDATE stream_owners SET programme_id = 'evilprog' WHERE stream_id = 'rel-3'")
    # Temporal's side: each run's input (as `relationship_workflows` reads it).
    runs = [
        WorkflowOfStream("relationship/prog-1/rel-1", "run-a", "prog-1", "rel-1", "RUNNING"),
        WorkflowOfStream("relationship/evilprog/rel-1", "run-b", "evilprog", "rel-1", "TERMINATED"),
        WorkflowOfStream("relationship/prog-2/rel-2", "run-c", "prog-2", "rel-2", "COMPLETED"),
        WorkflowOfStream("relationship/prog-2/rel-2", "run-d", "prog-2", "rel-2", "RUNNING"),  # continued as new
        WorkflowOfStream("sneaky", "run-e", "prog-2", "rel-2", "COMPLETED"),  # right programme, wrong id
        WorkflowOfStream("relationship/prog-9/rel-404", "run-f", "prog-9", "rel-404", "RUNNING"),  # nothing stored
        WorkflowOfStream("relationship/prog-1/rel-5", "run-g", "prog-1", "rel-5", "RUNNING", input_unreadable=True),
    ]
    report = await audit_streams(pool, runs)
    found = [(f.stream_id, f.kind) for f in report.findings]
    assert found == [
        ("rel-1", SHARED),
        ("rel-2", SHARED),
        ("rel-3", TAMPERED),
        ("rel-4", TAMPERED),
        ("rel-4", TAMPERED),
        ("rel-5", INCOMPLETE),
        ("rel-4", UNOWNED),
    ]
    assert report.affected_streams == ["rel-1", "rel-2"] and not report.clean and report.workflows_checked == 7
    assert report.findings[0].workflows == ("relationship/evilprog/rel-1", "relationship/prog-1/rel-1")
    assert "relationship/evilprog/rel-1 (programme evilprog)" in report.findings[0].detail
    assert "sneaky (programme prog-2)" in report.findings[1].detail
    text = "\n".join(report.lines())
    assert "temporal workflow delete" in text and SECRET not in text
    assert json.loads(json.dumps(report.to_json()))["affected_streams"] == ["rel-1", "rel-2"]


async def test_the_audit_reads_what_each_relationship_workflow_is_for_from_temporal(
    pool: asyncpg.Pool, temporal_binary: str
) -> None:
    """`relationship_workflows` against a real dev server: each run's start input, decoded
    through the encrypting converter; an input it cannot decrypt is reported, not skipped.
    No worker runs: the start input is all the audit reads."""
    acts = activities(pool)
    await append(acts, VICTIM, 0, relationship("rel-1", "prog-1"))
    env = await start_dev_server(temporal_binary, ui=False)
    try:
        client = env.client
        starts = [
            ("relationship/prog-1/rel-1", {"relationship_id": "rel-1", "programme_id": "prog-1", "mentee_id": "mentee-1"}),
            ("relationship/evilprog/rel-1", {"relationship_id": "rel-1", "programme_id": "evilprog", "mentee_id": "m"}),
            ("unrelated-workflow-id", {"relationship_id": "rel-1", "programme_id": "prog-1", "mentee_id": "m"}),
        ]
        for workflow_id, start in starts:
            await client.start_workflow("Relationship", start, id=workflow_id, task_queue="audit-nobody-polls")
        # Started under a key this deployment does not have.
        foreign = Client(client.service_client, namespace=client.namespace, data_converter=data_converter(Keyring.generate("elsewhere")))
        await foreign.start_workflow("Relationship", starts[1][1], id="relationship/prog-3/rel-1", task_queue="audit-nobody-polls")
        await client.start_workflow("MatchingRound", {}, id="round/prog-1/r1", task_queue="audit-nobody-polls")

        runs: list[WorkflowOfStream] = []
        for _ in range(100):  # visibility is eventually consistent
            runs = await relationship_workflows(client)
            if len(runs) == 4:
                break
            await asyncio.sleep(0.1)
        assert sorted((r.workflow_id, r.programme_id, r.relationship_id, r.input_unreadable) for r in runs) == [
            ("relationship/evilprog/rel-1", "evilprog", "rel-1", False),
            ("relationship/prog-1/rel-1", "prog-1", "rel-1", False),
            ("relationship/prog-3/rel-1", "prog-3", "rel-1", True),  # from the workflow id
            ("unrelated-workflow-id", "prog-1", "rel-1", False),
        ]
        assert {r.status for r in runs} == {"RUNNING"}
        report = await audit_streams(pool, runs)
        assert [(f.stream_id, f.kind) for f in report.findings] == [("rel-1", SHARED), ("rel-1", INCOMPLETE)]
        assert report.findings[0].workflows == (
            "relationship/evilprog/rel-1",
            "relationship/prog-1/rel-1",
            "relationship/prog-3/rel-1",
            "unrelated-workflow-id",
        )
    finally:
        await env.shutdown()
