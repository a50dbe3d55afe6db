"""A matching round's own locks under concurrency, on a real PostgreSQL: two runs of the same
round (a retried activity next to the first attempt still running), and hand reservations
arriving while a round holds its mentors. The interleavings are forced with a gate inside
the round's transaction (tests/support/db_gate.py), so each test catches a missing lock every run.
(tests/matching/test_mentor_load.py has the other order: a reservation in flight when a round starts.)"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import date
from typing import Any

import asyncpg
import pytest

from activities.matching import MatchingActivities, RoundMembers, RoundRequest, SlotRequest
from pairing.profiles import MenteeProfile, MentorProfile
from tests.support.db_gate import Gate, line_up

PROGRAMME = "prog-race"
WEEK = date(2027, 1, 4)
CAPACITIES = {"m-0": 2, "m-1": 1}
# The advisory lock key of the gate at the round's insert of its pairs.
PAIRS_GATE = 7_130_101


def cohort(mentees: int) -> list[MentorProfile | MenteeProfile]:
    mentors: list[MentorProfile | MenteeProfile] = [
        MentorProfile.model_validate({"participant_id": m, "capacity": c, "languages": ["en"],
                                      "strengths": [{"topic": "python", "level": 5}]})
        for m, c in CAPACITIES.items()
    ]  # fmt: skip
    return mentors + [
        MenteeProfile.model_validate({"participant_id": f"e-{k}", "languages": ["en"], "goals": [{"topic": "python"}]})
        for k in range(mentees)
    ]


async def taken(pool: asyncpg.Pool) -> dict[str, int]:
    rows = await pool.fetch(
        "SELECT mentor_id, count(*) AS n FROM mentor_slots WHERE programme_id = $1 GROUP BY mentor_id", PROGRAMME
    )
    return {row["mentor_id"]: row["n"] for row in rows}


async def each_round(
    activities: MatchingActivities, pool: asyncpg.Pool, mentees: int, times: int = 3
) -> AsyncIterator[tuple[int, RoundRequest, RoundMembers]]:
    """`times` rounds of a cohort of `mentees` and the two mentors, each on empty mentor
    slots, its members collected: (attempt, request, members)."""
    await activities.profiles.save_profiles(PROGRAMME, cohort(mentees))
    for attempt in range(times):
        await pool.execute("DELETE FROM mentor_slots")
        request = RoundRequest(programme_id=PROGRAMME, round_id=f"r-{attempt}", week_of=WEEK)
        yield attempt, request, await activities.collect_round_members(request)


@pytest.fixture
async def gate(pool: asyncpg.Pool) -> AsyncIterator[tuple[Gate, asyncpg.Connection]]:
    """While closed, a round waits inside its transaction at the insert of its pairs: it has
    read its round, locked its mentors and counted their slots."""
    async with pool.acquire() as connection:
        installed = await Gate.install(connection, "matching_round_pairs", PAIRS_GATE)
        try:
            yield installed, connection
        finally:
            await installed.remove()


async def test_two_runs_of_the_same_round_at_once_solve_it_once(
    pool: asyncpg.Pool, gate: tuple[Gate, asyncpg.Connection]
) -> None:
    """Four runs of one round let go together, three rounds over: one solves it and
    reserves its slots, the others wait for it and return what it stored."""
    activities = MatchingActivities(pool)
    pairs_gate, connection = gate
    async for attempt, request, members in each_round(activities, pool, 4):
        assert (members.mentees, members.mentors) == (4, 2)
        await pairs_gate.close()
        runs = [asyncio.ensure_future(activities.solve_round(request)) for _ in range(4)]
        try:
            assert await line_up(connection, runs) == 4, "a run finished while the first one was held"
        finally:
            await pairs_gate.open()
        solutions = await asyncio.gather(*runs)
        assert sorted(s.solved_now for s in solutions) == [False, False, False, True], f"attempt {attempt}"
        assert {s.matched for s in solutions} == {3}
        stored = await pool.fetchval(
            "SELECT count(*) FROM matching_round_pairs WHERE programme_id = $1 AND round_id = $2", PROGRAMME, request.round_id
        )
        assert stored == 3
        assert await taken(pool) == CAPACITIES


async def test_hand_reservations_wait_for_a_round_that_holds_their_mentor(
    pool: asyncpg.Pool, gate: tuple[Gate, asyncpg.Connection]
) -> None:
    """A round has locked its mentors and counted their free slots; twenty hand proposals
    for the same mentors arrive before it commits. They must wait for it, then find the
    mentors full: counted before the round's slots were committed, they would oversubscribe."""
    activities = MatchingActivities(pool)
    pairs_gate, connection = gate
    async for attempt, request, _ in each_round(activities, pool, 3):
        await pairs_gate.close()
        solving = asyncio.ensure_future(activities.solve_round(request))
        racers: list[asyncio.Future[Any]] = [solving]
        try:
            assert await line_up(connection, racers) == 1
            for k in range(20):
                racers.append(asyncio.ensure_future(activities.reserve_mentor_slot(SlotRequest(
                    programme_id=PROGRAMME, relationship_id=f"hand-{attempt}-{k}", mentor_id=f"m-{k % 2}",
                    mentee_id=f"h-{k}"))))  # fmt: skip
            await line_up(connection, racers)
        finally:
            await pairs_gate.open()
        solution, *reservations = await asyncio.gather(*racers)
        assert solution.matched == 3
        outcomes = [r.outcome for r in reservations]
        assert await taken(pool) == CAPACITIES, f"attempt {attempt}: oversubscribed ({outcomes.count('reserved')} hand reservations got in)"
        assert set(outcomes) == {"full"}
