"""A mentor's load is the number of their open relationships however each was matched (by
hand before any profile existed, by the pool, by a round), and nothing that races for a
mentor's last slot oversubscribes them: real PostgreSQL, and Temporal where relationships
take part (issue #11)."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, date, datetime
from typing import Any, cast

import asyncpg
from temporalio.client import Client, WorkflowHandle
from temporalio.testing import WorkflowEnvironment

from activities.database import create_pool
from activities.directory import Directory
from activities.event_store import PostgresEventStore
from activities.matching import (
    CandidateRequest,
    MatchingActivities,
    ProfileStore,
    ProposeRequest,
    RoundRequest,
    SlotRelease,
    SlotRequest,
    relationship_workflow_id,
    round_workflow_id,
)
from events.commands import CloseRelationship, DeclineMatch, ProposeMatch
from events.decider import decide, start_relationship as started_events
from events.model import AnyEvent
from events.people import Participant, Programme
from events.refusals import Rejection
from events.settings import ProgrammeSettings
from events.state import RelationshipState
from events.decider import fold
from events.store import StreamOwner
from migrations import apply_migrations, available_migrations
from pairing.profiles import MentorProfile
from pairing.settings import MatchingSettings
from tests.support.helpers import cmd, mentee_profile, mentor_profile, mentor_slots, new_worker, start_relationship, state_of
from workflows.matching_round import MatchingRound, MatchingRoundInput

# tests.support.helpers.start_relationship starts its relationships in this programme.
PROGRAMME = "prog-1"
WEEK = date(2027, 1, 4)
RESERVED = ("reserved", "already_reserved", "reserved_without_profile")


async def round_pairs(pool: asyncpg.Pool, round_id: str) -> dict[str, str]:
    rows = await pool.fetch(
        "SELECT mentee_id, mentor_id FROM matching_round_pairs WHERE programme_id = $1 AND round_id = $2",
        PROGRAMME, round_id,
    )  # fmt: skip
    return {row["mentee_id"]: row["mentor_id"] for row in rows}


async def eventually(check: Any, what: str, seconds: float = 20) -> Any:
    """Relationships reserve and give back slots in the background: wait (bounded)."""
    deadline = asyncio.get_running_loop().time() + seconds
    while True:
        value = await check()
        if value:
            return value
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"never happened: {what}")
        await asyncio.sleep(0.05)


async def warm_up(pool: asyncpg.Pool, connections: int) -> None:
    held = await asyncio.gather(*(pool.acquire() for _ in range(connections)))
    await asyncio.gather(*(pool.release(connection) for connection in held))


async def programme_with_coordinator(pool: asyncpg.Pool, *, left: tuple[str, ...] = ()) -> None:
    directory = Directory(pool)
    settings = ProgrammeSettings(coordinator_ids=("coord-1",))
    await directory.create_or_update_programme(Programme(programme_id=PROGRAMME, name="Programme 1", settings=settings))
    for participant_id in left:
        await directory.upsert_participant(
            Participant(participant_id=participant_id, display_name=participant_id, email=f"{participant_id}@example.com")
        )
        await directory.mark_left(participant_id)


async def close_all(handles: list[WorkflowHandle[Any, Any]]) -> None:
    """End the relationships, so that none is left with work in flight."""
    for handle in handles:
        state = await state_of(handle)
        if not state.is_closed:
            await handle.execute_update("close_relationship", cmd(state.mentee_id))


# -- the tester's story --------------------------------------------------------------------


async def test_a_hand_match_made_before_profiles_counts_and_keeps_the_round_away(
    time_skipping_env: WorkflowEnvironment, pool: asyncpg.Pool
) -> None:
    env = time_skipping_env
    await programme_with_coordinator(pool, left=("emp-gone", "m-gone"))
    store = ProfileStore(pool)
    async with new_worker(env.client, pool) as worker:
        # A newcomer matches by hand before any profile exists (the pool has nobody to offer).
        hand: dict[str, WorkflowHandle[Any, Any]] = {}
        for mentee_id in ("emp-1042", "emp-1043"):
            handle = await start_relationship(env.client, worker, mentee_id=mentee_id)
            await handle.execute_update("propose_match", cmd("coord-1", mentor_id="emp-311"))
            hand[(await state_of(handle)).relationship_id] = handle

        async def both_held() -> bool:
            return await mentor_slots(pool) == {rel: "emp-311" for rel in hand}

        await eventually(both_held, "the hand proposals hold emp-311's slots")

        # Then the profiles are imported: emp-311 fits everybody best.
        await store.save_profiles(PROGRAMME, [
            mentor_profile("emp-311", 2, 5), mentor_profile("m-2", 3, 3), mentor_profile("m-gone", 3, 5),
            mentee_profile("emp-1042"), mentee_profile("emp-1043"), mentee_profile("emp-2000"), mentee_profile("emp-gone"),
        ])  # fmt: skip
        assert (await store.slots_taken(PROGRAMME)).get("emp-311") == 2  # what `profiles list` shows

        round_id = f"r-{uuid.uuid4().hex[:8]}"
        with env.auto_time_skipping_disabled():
            result = await env.client.execute_workflow(
                MatchingRound.run,
                MatchingRoundInput(programme_id=PROGRAMME, round_id=round_id, coordinator_id="coord-1"),
                id=round_workflow_id(PROGRAMME, round_id),
                task_queue=worker.task_queue,
            )
        # Only emp-2000 is free and here; only m-2 has a free slot and is here.
        assert (result.mentees, result.mentors, result.matched, result.proposed) == (1, 1, 1, 1)
        assert await round_pairs(pool, round_id) == {"emp-2000": "m-2"}
        assert await store.slots_taken(PROGRAMME) == {"emp-311": 2, "m-2": 1}
        round_relationship = await pool.fetchval(
            "SELECT relationship_id FROM matching_round_pairs WHERE round_id = $1", round_id
        )
        proposed = env.client.get_workflow_handle(relationship_workflow_id(PROGRAMME, round_relationship))
        await close_all([*hand.values(), proposed])

        async def all_given_back() -> bool:
            return await mentor_slots(pool) == {}

        await eventually(all_given_back, "closing gives every slot back")


# -- existing data -------------------------------------------------------------------------


def _story(relationship_id: str, mentee_id: str, *commands: Any) -> list[AnyEvent]:
    """A relationship's events as the decider makes them."""
    now = datetime(2027, 1, 4, 9, tzinfo=UTC)
    events = started_events(relationship_id, PROGRAMME, mentee_id, ProgrammeSettings(coordinator_ids=("coord-1",)), now)
    state = fold(events)
    for command in commands:
        assert isinstance(state, RelationshipState)
        decision = decide(state, command, now)
        assert not isinstance(decision, Rejection), decision
        events += decision
        state = fold(decision, state)
    return events


async def test_the_migration_counts_relationships_matched_before_it(database_url: str) -> None:
    """Hand matches made while slots were reserved only for profiled mentors hold a slot
    once the database is migrated, and the event store says which relationships are open."""
    pool = await create_pool(database_url, max_size=4)
    try:
        mine = next(m for m in available_migrations() if "mentor_load" in m.name)
        async with pool.acquire() as connection:
            await apply_migrations(connection, until=mine.version - 1)
        store = PostgresEventStore(pool)

        def propose(mentor_id: str, actor: str = "coord-1") -> ProposeMatch:
            return ProposeMatch(command_id=f"p-{uuid.uuid4().hex[:8]}", actor_id=actor, mentor_id=mentor_id)

        stories = {
            "hand": _story("hand", "emp-1042", propose("emp-311")),
            "hand-2": _story("hand-2", "emp-1043", propose("emp-311")),
            "declined": _story("declined", "emp-7", propose("emp-311"),
                               DeclineMatch(command_id="d-1", actor_id="emp-311")),
            "closed": _story("closed", "emp-8", propose("emp-311"),
                             CloseRelationship(command_id="c-1", actor_id="emp-8")),
            "pool": _story("pool", "emp-9", propose("m-2", actor="matching-engine")),
            "waiting": _story("waiting", "emp-10"),
        }  # fmt: skip
        for stream_id, events in stories.items():
            owner = StreamOwner(programme_id=PROGRAMME, workflow_id=relationship_workflow_id(PROGRAMME, stream_id))
            await store.append(stream_id, 0, events, owner=owner)
        # The pool's proposal held its slot already; nobody else did.
        await pool.execute(
            "INSERT INTO mentor_slots (programme_id, relationship_id, mentor_id, mentee_id) VALUES ($1, 'pool', 'm-2', 'emp-9')",
            PROGRAMME,
        )
        async with pool.acquire() as connection:
            applied = await apply_migrations(connection, until=mine.version)  # later ones are not about load
        assert [m.version for m in applied] == [mine.version]
        assert await mentor_slots(pool) == {"hand": "emp-311", "hand-2": "emp-311", "pool": "m-2"}
        assert await ProfileStore(pool).slots_taken(PROGRAMME) == {"emp-311": 2, "m-2": 1}
        rows = await pool.fetch("SELECT relationship_id, mentee_id FROM open_relationships WHERE programme_id = $1", PROGRAMME)
        assert sorted((r["relationship_id"], r["mentee_id"]) for r in rows) == [
            ("declined", "emp-7"), ("hand", "emp-1042"), ("hand-2", "emp-1043"), ("pool", "emp-9"), ("waiting", "emp-10")
        ]
    finally:
        await pool.close()


# -- who a round and the pool leave out ----------------------------------------------------


async def test_a_mentee_with_an_open_relationship_is_left_out_unless_the_programme_allows_more(pool: asyncpg.Pool) -> None:
    activities = MatchingActivities(pool)
    store = activities.profiles
    await programme_with_coordinator(pool, left=("m-gone", "e-gone"))
    await store.save_profiles(PROGRAMME, [
        mentor_profile("m-1", 3, 5), mentor_profile("m-2", 3, 3), mentor_profile("m-gone", 3, 5),
        mentee_profile("e-busy"), mentee_profile("e-free"), mentee_profile("e-gone"),
    ])  # fmt: skip
    # e-busy is in a relationship with m-1, matched by hand.
    held = await activities.reserve_mentor_slot(
        SlotRequest(programme_id=PROGRAMME, relationship_id="hand-1", mentor_id="m-1", mentee_id="e-busy")
    )
    assert held.outcome == "reserved"

    # The pool finds a second relationship of e-busy nobody, and never someone who left.
    second = CandidateRequest(programme_id=PROGRAMME, relationship_id="second", mentee_id="e-busy")
    assert await activities.best_candidate(second) is None
    gone = await activities.best_candidate(CandidateRequest(programme_id=PROGRAMME, relationship_id="g", mentee_id="e-gone"))
    assert gone is None
    free = await activities.best_candidate(CandidateRequest(programme_id=PROGRAMME, relationship_id="f", mentee_id="e-free"))
    assert free is not None and free.mentor_id == "m-1"  # m-gone scores as well, but left

    first = RoundRequest(programme_id=PROGRAMME, round_id="one", week_of=WEEK)
    members = await activities.collect_round_members(first)
    assert (members.mentees, members.mentors) == (0, 2)  # e-free holds a slot now; nobody who left
    assert (await activities.solve_round(first)).matched == 0

    # A programme that allows two at once: e-busy takes part, but never with m-1 again.
    await store.save_settings(PROGRAMME, MatchingSettings(max_open_relationships_per_mentee=2))
    again = await activities.best_candidate(second)
    assert again is not None and again.mentor_id == "m-2"
    for relationship_id in ("second", "f"):  # both relationships end
        await activities.release_mentor_slot(SlotRelease(programme_id=PROGRAMME, relationship_id=relationship_id))
    both = RoundRequest(programme_id=PROGRAMME, round_id="two", week_of=WEEK)
    members = await activities.collect_round_members(both)
    assert (members.mentees, members.mentors) == (2, 2)
    solution = await activities.solve_round(both)
    assert solution.matched == 2
    assert await round_pairs(pool, "two") == {"e-busy": "m-2", "e-free": "m-1"}


async def test_a_round_does_not_propose_pairs_that_changed_after_it_was_solved(pool: asyncpg.Pool) -> None:
    """Between solving and proposing, a mentor leaves and a mentee is matched by hand: those
    pairs are not proposed (no relationship is started) and their slots go back."""
    # Every pair is stopped before anything is sent, so no Temporal client is needed.
    activities = MatchingActivities(pool, cast(Client, object()), "unused")
    await programme_with_coordinator(pool)
    await activities.profiles.save_profiles(PROGRAMME, [mentor_profile("m-1", 1, 5), mentor_profile("m-2", 2, 3),
                                                        *(mentee_profile(f"e-{k}") for k in range(3))])  # fmt: skip
    request = RoundRequest(programme_id=PROGRAMME, round_id="r-1", week_of=WEEK)
    await activities.collect_round_members(request)
    assert (await activities.solve_round(request)).matched == 3
    pairs = await round_pairs(pool, "r-1")
    [with_m1] = [mentee_id for mentee_id, mentor_id in pairs.items() if mentor_id == "m-1"]
    await programme_with_coordinator(pool, left=("m-2",))
    hand = SlotRequest(programme_id=PROGRAMME, relationship_id="hand-1", mentor_id="m-9", mentee_id=with_m1)
    assert (await activities.reserve_mentor_slot(hand)).outcome == "reserved_without_profile"

    batch = await activities.propose_round_pairs(
        ProposeRequest(programme_id=PROGRAMME, round_id="r-1", coordinator_id="coord-1")
    )
    assert (batch.proposed, batch.not_proposed, batch.remaining) == (0, 3, 0)
    _, reported = await activities.round_report(PROGRAMME, "r-1")
    assert {row["mentee_id"]: row["outcome"] for row in reported} == {
        mentee_id: "mentee already in a relationship" if mentee_id == with_m1 else "left the directory"
        for mentee_id in pairs
    }
    assert await mentor_slots(pool) == {"hand-1": "m-9"}


# -- races ---------------------------------------------------------------------------------


async def _waiting_for_a_lock(pool: asyncpg.Pool, task: asyncio.Future[Any]) -> bool:
    """Whether some session of this database waits for a lock before `task` finishes."""
    for _ in range(500):
        if task.done():
            return False
        waiting = await pool.fetchval(
            """SELECT count(*) FROM pg_stat_activity
                WHERE datname = current_database() AND wait_event_type = 'Lock'"""
        )
        if waiting:
            return True
        await asyncio.sleep(0.02)
    return False


async def _round_against_a_reservation_in_flight(
    activities: MatchingActivities, pool: asyncpg.Pool, mentor_id: str, *, import_meanwhile: MentorProfile | None = None
) -> tuple[str, bool, int]:
    """A hand proposal reserves a slot of `mentor_id` in a transaction that stays open while
    a round collects its members (the mentor looks free: the slot is not committed) and
    starts solving; then the reservation commits. Deterministic: the interleaving is forced.
    Returns the reservation's outcome, whether the round waited, and how many it matched."""
    connection = await pool.acquire()
    try:
        transaction = connection.transaction()
        await transaction.start()
        row = await connection.fetchrow("SELECT outcome FROM reserve_mentor_slot($1, 'hand-1', $2, 'x-1')",
                                        PROGRAMME, mentor_id)  # fmt: skip
        assert row is not None
        if import_meanwhile is not None:
            await activities.profiles.save_profiles(PROGRAMME, [import_meanwhile])
        request = RoundRequest(programme_id=PROGRAMME, round_id="r-race", week_of=WEEK)
        members = await activities.collect_round_members(request)
        assert (members.mentees, members.mentors) == (3, 1)
        solving = asyncio.ensure_future(activities.solve_round(request))
        waited = await _waiting_for_a_lock(pool, solving)
        await transaction.commit()
        solution = await solving
    finally:
        await pool.release(connection)
    return row["outcome"], waited, solution.matched


async def test_a_round_waits_for_a_reservation_in_flight_and_counts_it(pool: asyncpg.Pool) -> None:
    activities = MatchingActivities(pool)
    await activities.profiles.save_profiles(PROGRAMME, [mentor_profile("m-1", 1), *(mentee_profile(f"e-{k}") for k in range(3))])
    # m-1 was reserved and given back before: only the mentor's lock can make the round wait.
    earlier = SlotRequest(programme_id=PROGRAMME, relationship_id="earlier", mentor_id="m-1", mentee_id="x-0")
    assert (await activities.reserve_mentor_slot(earlier)).outcome == "reserved"
    await activities.release_mentor_slot(SlotRelease(programme_id=PROGRAMME, relationship_id="earlier"))
    outcome, waited, matched = await _round_against_a_reservation_in_flight(activities, pool, "m-1")
    assert outcome == "reserved"
    assert await mentor_slots(pool) == {"hand-1": "m-1"}, "m-1 was oversubscribed"
    assert waited and matched == 0


async def test_a_hand_match_without_a_profile_counts_against_the_profile_imported_meanwhile(pool: asyncpg.Pool) -> None:
    activities = MatchingActivities(pool)
    await activities.profiles.save_profiles(PROGRAMME, [mentee_profile(f"e-{k}") for k in range(3)])
    outcome, waited, matched = await _round_against_a_reservation_in_flight(
        activities, pool, "m-new", import_meanwhile=mentor_profile("m-new", 1)
    )
    assert outcome == "reserved_without_profile"
    assert await mentor_slots(pool) == {"hand-1": "m-new"}, "m-new was oversubscribed"
    assert waited and matched == 0


async def test_hand_reservations_pool_requests_and_rounds_racing_never_oversubscribe(pool: asyncpg.Pool) -> None:
    """Many racers at once, released together by a barrier, several times over."""
    activities = MatchingActivities(pool)
    # 15 slots; 6 hand proposals, 8 pool requests and 4 rounds of 5 mentees want them.
    capacities = {"m-0": 6, "m-1": 4, "m-2": 3, "m-3": 2}
    await activities.profiles.save_profiles(PROGRAMME, [
        *(mentor_profile(m, c, 5 - k) for k, (m, c) in enumerate(capacities.items())),
        *(mentee_profile(f"e-{k}") for k in range(40)),
    ])  # fmt: skip
    await warm_up(pool, 50)
    for attempt in range(4):
        await pool.execute("DELETE FROM mentor_slots")
        rounds = [
            RoundRequest(programme_id=PROGRAMME, round_id=f"r-{attempt}-{k}", week_of=WEEK,
                         mentee_ids=tuple(f"e-{20 + k * 5 + i}" for i in range(5)))
            for k in range(4)
        ]  # fmt: skip
        for request in rounds:
            members = await activities.collect_round_members(request)
            assert members.mentors == 4
        racers: list[Any] = []
        for k in range(6):
            racers.append(lambda k=k: activities.reserve_mentor_slot(SlotRequest(
                programme_id=PROGRAMME, relationship_id=f"hand-{attempt}-{k}", mentor_id=f"m-{k % 4}", mentee_id=f"h-{k}")))
        for k in range(8):
            racers.append(lambda k=k: activities.best_candidate(CandidateRequest(
                programme_id=PROGRAMME, relationship_id=f"pool-{attempt}-{k}", mentee_id=f"e-{k}")))
        for request in rounds:
            racers.append(lambda request=request: activities.solve_round(request))
        barrier = asyncio.Barrier(len(racers))

        async def race(go: Any) -> Any:
            await barrier.wait()
            return await go()

        await asyncio.gather(*(race(go) for go in racers))
        taken = await activities.profiles.slots_taken(PROGRAMME)
        assert taken == capacities, f"attempt {attempt}: {taken}"


async def test_hand_proposals_the_pool_and_rounds_racing_in_temporal_never_oversubscribe(
    time_skipping_env: WorkflowEnvironment, pool: asyncpg.Pool
) -> None:
    """The same race through the real workflows: relationships proposed to by hand (their
    mentees have no profile, so the pool has nothing for them), relationships asking the
    pool as they start, and four rounds, all let go together."""
    env = time_skipping_env
    await programme_with_coordinator(pool)
    store = ProfileStore(pool)
    capacities = {"m-hot": 3, "m-cold": 2}
    await store.save_profiles(PROGRAMME, [
        mentor_profile("m-hot", 3, 5), mentor_profile("m-cold", 2, 2),
        *(mentee_profile(f"p-{k}") for k in range(4)), *(mentee_profile(f"r-{k}") for k in range(12)),
    ])  # fmt: skip
    round_ids = [f"r-{uuid.uuid4().hex[:8]}" for _ in range(4)]
    async with new_worker(env.client, pool) as worker:
        with env.auto_time_skipping_disabled():
            hand = [await start_relationship(env.client, worker, mentee_id=f"h-{k}") for k in range(6)]
            barrier = asyncio.Barrier(len(hand) + 4 + len(round_ids))

            async def propose_by_hand(handle: WorkflowHandle[Any, Any]) -> None:
                await barrier.wait()
                await handle.execute_update("propose_match", cmd("coord-1", mentor_id="m-hot"))

            async def ask_the_pool(k: int) -> WorkflowHandle[Any, Any]:
                await barrier.wait()
                return await start_relationship(env.client, worker, mentee_id=f"p-{k}")

            async def run_a_round(n: int) -> Any:
                await barrier.wait()
                return await env.client.execute_workflow(
                    MatchingRound.run,
                    MatchingRoundInput(programme_id=PROGRAMME, round_id=round_ids[n], coordinator_id="coord-1",
                                       mentee_ids=tuple(f"r-{3 * n + k}" for k in range(3))),
                    id=round_workflow_id(PROGRAMME, round_ids[n]), task_queue=worker.task_queue,
                )  # fmt: skip

            results = await asyncio.gather(*(propose_by_hand(h) for h in hand), *(ask_the_pool(k) for k in range(4)),
                                           *(run_a_round(n) for n in range(len(round_ids))))  # fmt: skip
            pooled: list[WorkflowHandle[Any, Any]] = list(results[len(hand) : len(hand) + 4])
            from_rounds = [
                env.client.get_workflow_handle(relationship_workflow_id(PROGRAMME, row["relationship_id"]))
                for row in await pool.fetch("SELECT relationship_id FROM matching_round_pairs WHERE round_id = ANY($1)",
                                            round_ids)  # fmt: skip
            ]
            everyone = [*hand, *pooled, *from_rounds]

            async def consistent() -> bool:
                """Every proposed mentor's slot held by the relationship, no slot without one."""
                held = await mentor_slots(pool)
                candidates = {}
                for handle in everyone:
                    state = await state_of(handle)
                    if state.candidate is not None:
                        candidates[state.relationship_id] = state.candidate.mentor_id
                return held == candidates

            await eventually(consistent, "every relationship's proposal and slot agree")
            taken = await store.slots_taken(PROGRAMME)
            assert taken == capacities, taken
            await close_all(everyone)
