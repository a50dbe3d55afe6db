"""Profiles and mentor slots in a real PostgreSQL: idempotent imports, atomic reservations,
and many relationships racing for the last slot of one mentor."""

from __future__ import annotations

import asyncio

import asyncpg

from activities.matching import (
    CandidateRequest,
    MatchingActivities,
    ProfileStore,
    SlotRelease,
    SlotRequest,
)
from pairing.importing import parse_profiles
from pairing.profiles import MenteeProfile, MentorProfile
from pairing.settings import MatchingSettings
from tests.support.db_gate import Gate, line_up

PROGRAMME = "prog-m"
# The advisory lock key of the gate the race tests put into slot reservations.
RESERVATION_GATE = 7_130_001


def mentor(participant_id: str, capacity: int, level: int, **fields: object) -> MentorProfile:
    return MentorProfile.model_validate(
        {"participant_id": participant_id, "capacity": capacity, "languages": ["en"],
         "strengths": [{"topic": "python", "level": level}, {"topic": "sql", "level": level}], **fields}
    )  # fmt: skip


def mentee(participant_id: str, **fields: object) -> MenteeProfile:
    return MenteeProfile.model_validate(
        {"participant_id": participant_id, "languages": ["en"],
         "goals": [{"topic": "python", "priority": 3}, {"topic": "sql"}], **fields}
    )  # fmt: skip


async def slots_of(pool: asyncpg.Pool, mentor_id: str) -> int:
    count: int = await pool.fetchval(
        "SELECT count(*) FROM mentor_slots WHERE programme_id = $1 AND mentor_id = $2", PROGRAMME, mentor_id
    )
    return count


async def warm_up(pool: asyncpg.Pool, connections: int) -> None:
    """Open the connections first, so the racers start together instead of one per new connection."""
    held = await asyncio.gather(*(pool.acquire() for _ in range(connections)))
    await asyncio.gather(*(pool.release(connection) for connection in held))


async def test_importing_the_same_file_twice_changes_nothing(pool: asyncpg.Pool) -> None:
    text = """participant_id,role,capacity,strengths,goals,languages
m-1,mentor,2,python:5,,en
e-1,mentee,,,python,en
e-2,mentee,,,sql:2,en
"""
    store = ProfileStore(pool)
    profiles = [p for _, p in parse_profiles(text, "csv").profiles]
    first = await store.save_profiles(PROGRAMME, profiles)
    stamps = await pool.fetch("SELECT participant_id, updated_at FROM matching_profiles ORDER BY 1")
    second = await store.save_profiles(PROGRAMME, [p for _, p in parse_profiles(text, "csv").profiles])
    assert (first.inserted, first.updated, first.unchanged) == (3, 0, 0)
    assert (second.inserted, second.updated, second.unchanged) == (0, 0, 3)
    assert await pool.fetch("SELECT participant_id, updated_at FROM matching_profiles ORDER BY 1") == stamps
    # One profile updated on its own: only it changes.
    third = await store.save_profiles(PROGRAMME, [mentor("m-1", 3, 5)])
    assert (third.inserted, third.updated, third.unchanged) == (0, 1, 0)
    stored = await store.get_profile(PROGRAMME, "mentor", "m-1")
    assert isinstance(stored, MentorProfile) and stored.capacity == 3
    assert await store.save_settings(PROGRAMME, MatchingSettings(objective="max_matched"))
    assert not await store.save_settings(PROGRAMME, MatchingSettings(objective="max_matched"))
    assert (await store.get_settings(PROGRAMME)).objective == "max_matched"


async def test_a_reservation_is_idempotent_per_relationship_and_moves_with_it(pool: asyncpg.Pool) -> None:
    activities = MatchingActivities(pool)
    await activities.profiles.save_profiles(PROGRAMME, [mentor("m-1", 1, 5), mentor("m-2", 1, 4)])

    def request(relationship_id: str, mentor_id: str) -> SlotRequest:
        return SlotRequest(programme_id=PROGRAMME, relationship_id=relationship_id, mentor_id=mentor_id, mentee_id="e-1")

    assert (await activities.reserve_mentor_slot(request("r-1", "m-1"))).outcome == "reserved"
    assert (await activities.reserve_mentor_slot(request("r-1", "m-1"))).outcome == "already_reserved"
    assert (await activities.reserve_mentor_slot(request("r-2", "m-1"))).outcome == "full"
    # A mentor without a profile: nothing to check against, but the slot counts.
    assert (await activities.reserve_mentor_slot(request("r-3", "nobody"))).outcome == "reserved_without_profile"
    assert await slots_of(pool, "nobody") == 1
    moved = await activities.reserve_mentor_slot(request("r-1", "m-2"))
    assert (moved.outcome, moved.released_mentor_id) == ("reserved", "m-1")
    assert (await slots_of(pool, "m-1"), await slots_of(pool, "m-2")) == (0, 1)
    release = SlotRelease(programme_id=PROGRAMME, relationship_id="r-1", mentor_id="m-1")
    assert await activities.release_mentor_slot(release) is None  # it holds m-2, not m-1
    assert await activities.release_mentor_slot(release.model_copy(update={"mentor_id": None})) == "m-2"
    assert await activities.release_mentor_slot(release) is None
    assert await slots_of(pool, "m-2") == 0


async def test_many_reservations_racing_for_the_last_slot_never_oversubscribe(pool: asyncpg.Pool) -> None:
    """40 reservations for one mentor's last slot, lined up at a gate inside PostgreSQL (every
    insert of a slot waits there until all 40 wait, at the gate or for the mentor's lock),
    then let go together; three times. Without the mentor's lock all 40 would count two
    slots taken and insert: the interleaving is forced, not hoped for."""
    activities = MatchingActivities(pool)
    await activities.profiles.save_profiles(PROGRAMME, [mentor("m-1", 3, 5)])
    await warm_up(pool, 41)
    async with pool.acquire() as connection:
        gate = await Gate.install(connection, "mentor_slots", RESERVATION_GATE)
        try:
            for attempt in range(3):
                await pool.execute("DELETE FROM mentor_slots")
                for k in range(2):
                    await activities.reserve_mentor_slot(SlotRequest(programme_id=PROGRAMME, relationship_id=f"held-{k}",
                                                                     mentor_id="m-1", mentee_id=f"e-{k}"))  # fmt: skip
                await gate.close()
                racers = [
                    asyncio.ensure_future(activities.reserve_mentor_slot(SlotRequest(
                        programme_id=PROGRAMME, relationship_id=f"r-{attempt}-{k}", mentor_id="m-1", mentee_id=f"x-{k}")))
                    for k in range(40)
                ]  # fmt: skip
                try:
                    assert await line_up(connection, racers) == 40, "a racer finished while the gate was closed"
                finally:
                    await gate.open()
                results = await asyncio.gather(*racers)
                outcomes = sorted(r.outcome for r in results)
                assert outcomes.count("reserved") == 1, f"attempt {attempt}: {outcomes.count('reserved')} reserved"
                assert all(r.outcome in ("reserved", "full") for r in results)
                assert await slots_of(pool, "m-1") == 3
        finally:
            await gate.remove()


async def test_racing_relationships_each_move_on_to_another_candidate_and_no_slot_leaks(pool: asyncpg.Pool) -> None:
    activities = MatchingActivities(pool)
    # Everyone's favourite has one slot; the others have two each, at lower scores.
    mentors = [mentor("m-star", 1, 5), *(mentor(f"m-{k}", 2, 1 + k % 3) for k in range(20))]
    mentees = [mentee(f"e-{k}") for k in range(36)]
    # One mentee may never have the favourite: same reporting line.
    mentees[0] = mentee("e-0", reports_to=["m-star"])
    await activities.profiles.save_profiles(PROGRAMME, [*mentors, *mentees])
    await warm_up(pool, len(mentees))

    def request(k: int, exclude: tuple[str, ...] = ()) -> CandidateRequest:
        return CandidateRequest(programme_id=PROGRAMME, relationship_id=f"rel-{k}", mentee_id=f"e-{k}",
                                exclude_mentor_ids=exclude)  # fmt: skip

    candidates = await asyncio.gather(*(activities.best_candidate(request(k)) for k in range(len(mentees))))
    assert all(c is not None for c in candidates), "a loser did not move on to another candidate"
    chosen = {f"rel-{k}": c.mentor_id for k, c in enumerate(candidates) if c is not None}
    assert list(chosen.values()).count("m-star") == 1
    assert chosen["rel-0"] != "m-star"
    rows = await pool.fetch("SELECT relationship_id, mentor_id FROM mentor_slots WHERE programme_id = $1", PROGRAMME)
    assert {row["relationship_id"]: row["mentor_id"] for row in rows} == chosen  # one slot each, no leak
    for m in mentors:
        assert await slots_of(pool, m.participant_id) <= m.capacity
    first = candidates[1]
    assert first is not None and first.explanation.startswith(f"score {first.score:g}/100: shares 2 of 2 goals")

    # A retried call returns the slot it already holds; a decline excludes that mentor.
    retried = await activities.best_candidate(request(1))
    assert retried == candidates[1]
    declined = await activities.best_candidate(request(1, exclude=(chosen["rel-1"],)))
    assert declined is not None and declined.mentor_id != chosen["rel-1"]
    assert await pool.fetchval("SELECT count(*) FROM mentor_slots WHERE relationship_id = 'rel-1'") == 1

    # Releasing every relationship leaves every slot free.
    await asyncio.gather(*(activities.release_mentor_slot(SlotRelease(programme_id=PROGRAMME, relationship_id=r))
                           for r in chosen))  # fmt: skip
    assert await pool.fetchval("SELECT count(*) FROM mentor_slots") == 0


async def test_no_candidate_when_nobody_fits(pool: asyncpg.Pool) -> None:
    activities = MatchingActivities(pool)
    await activities.profiles.save_profiles(PROGRAMME, [mentor("m-1", 1, 5, languages=["de"]), mentee("e-1")])
    request = CandidateRequest(programme_id=PROGRAMME, relationship_id="r-1", mentee_id="e-1")
    assert await activities.best_candidate(request) is None  # no common language
    assert await activities.best_candidate(request.model_copy(update={"mentee_id": "e-unknown"})) is None
    assert await pool.fetchval("SELECT count(*) FROM mentor_slots") == 0
