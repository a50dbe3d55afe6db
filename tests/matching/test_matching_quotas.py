"""Issue #17 on a real PostgreSQL: a round gives mentees several mentors (each pair its own
relationship), runs with a rule set of its own, tells a mentee it left unmatched why, and
confidential profile attributes are encrypted at rest; migration 0011 keeps the pairs of
rounds solved before it."""

from __future__ import annotations

import json
from datetime import date
from typing import Any, cast

import asyncpg
import pytest
from temporalio.client import Client
from temporalio.exceptions import ApplicationError

from activities.data_keys import DataKeyError
from activities.database import create_pool
from activities.matching import MatchingActivities, ProfileStore, ProposeRequest, RoundRequest, round_relationship_id
from migrations import apply_migrations, available_migrations
from pairing.importing import parse_profiles
from pairing.profiles import MenteeProfile, MentorProfile
from pairing.settings import MatchingSettings
from tests.support.session import TEST_KEYRING

PROGRAMME = "prog-q"
WEEK = date(2027, 1, 4)

SETTINGS = MatchingSettings.model_validate({
    "require_common_language": False,
    "max_open_relationships_per_mentee": 2,
    "attributes": {"organisation": {"kind": "text", "confidential": False}, "grade": {"kind": "number"},
                   "characteristics": {"kind": "set"}},
    "rules": [
        {"name": "other organisation", "require": "different", "attribute": "organisation"},
        {"name": "one or two grades above", "require": "window", "attribute": "grade", "min": 1, "max": 2},
        {"name": "shared characteristic", "score": "shared", "attribute": "characteristics", "points": 6},
    ],
    "rule_sets": {"both at once": {"mentors_per_round": 2},
                  "last round": {"without": ["one or two grades above"],
                                 "rules": [{"name": "still unmatched", "score": "unmatched", "points": 6}]}},
})  # fmt: skip


def mentor(participant_id: str, organisation: str, grade: int, capacity: int = 1, **attributes: Any) -> MentorProfile:
    return MentorProfile.model_validate({
        "participant_id": participant_id, "capacity": capacity, "strengths": [{"topic": "python", "level": 5}],
        "attributes": {"organisation": organisation, "grade": grade, **attributes},
    })  # fmt: skip


def mentee(participant_id: str, organisation: str, grade: int, **fields: Any) -> MenteeProfile:
    return MenteeProfile.model_validate({
        "participant_id": participant_id, "goals": [{"topic": "python"}],
        "attributes": {"organisation": organisation, "grade": grade}, **fields,
    })  # fmt: skip


async def solved(activities: MatchingActivities, round_id: str, rule_set: str | None = None) -> Any:
    request = RoundRequest(programme_id=PROGRAMME, round_id=round_id, week_of=WEEK, rule_set=rule_set)
    await activities.collect_round_members(request)
    return await activities.solve_round(request)


async def pairs_of(pool: asyncpg.Pool, round_id: str) -> list[tuple[str, str, str]]:
    rows = await pool.fetch(
        "SELECT mentee_id, mentor_id, relationship_id FROM matching_round_pairs WHERE round_id = $1 ORDER BY 1, 2",
        round_id,
    )
    return [(r["mentee_id"], r["mentor_id"], r["relationship_id"]) for r in rows]


async def test_a_round_gives_a_mentee_several_mentors_up_to_the_quota_and_says_why_others_got_none(
    pool: asyncpg.Pool,
) -> None:
    activities = MatchingActivities(pool, keyring=TEST_KEYRING)
    await activities.profiles.save_settings(PROGRAMME, SETTINGS)
    await activities.profiles.save_profiles(PROGRAMME, [
        mentor("m-1", "dwp", 5, capacity=2), mentor("m-2", "moj", 4), mentor("m-3", "dwp", 5),
        mentee("e-two", "hmrc", 3),  # the programme's quota: 2
        mentee("e-one", "hmrc", 3, mentor_quota=1),  # their own quota: 1
        mentee("e-none", "dwp", 9),  # nobody is one or two grades above
    ])  # fmt: skip

    first = await solved(activities, "r-1", "both at once")
    assert (first.mentees, first.mentors, first.matched, first.mentees_matched, first.rule_set) == (3, 3, 3, 2, "both at once")
    pairs = await pairs_of(pool, "r-1")
    assert sorted(e for e, _, _ in pairs) == ["e-one", "e-two", "e-two"]
    # One relationship per pair; a mentee's first pair keeps the id rounds always gave.
    two = sorted((m, rid) for e, m, rid in pairs if e == "e-two")
    assert two[0][1] == round_relationship_id(PROGRAMME, "r-1", "e-two")
    assert two[1][1] == round_relationship_id(PROGRAMME, "r-1", "e-two", two[1][0])
    slots = await pool.fetch("SELECT mentor_id, count(*) AS n FROM mentor_slots GROUP BY mentor_id")
    assert all(r["n"] <= {"m-1": 2}.get(r["mentor_id"], 1) for r in slots)  # never over a capacity

    [why] = await activities.round_unmatched(PROGRAMME, "r-1")
    assert why == {"mentee_id": "e-none", "mentors": 3, "allowed": 0,
                   "excluded": {"rule 'one or two grades above'": 3, "rule 'other organisation'": 2}}  # fmt: skip

    # Quotas are full now: the next round leaves e-two and e-one out; e-none is still there.
    second = await solved(activities, "r-2")
    assert (second.mentees, second.matched) == (1, 0)
    # A last round without the grade window, and a bonus for who has no mentor yet.
    await activities.profiles.save_profiles(PROGRAMME, [mentor("m-4", "moj", 2)])
    last = await solved(activities, "r-3", "last round")
    assert await pairs_of(pool, "r-3") == [("e-none", "m-4", round_relationship_id(PROGRAMME, "r-3", "e-none"))]
    explanation = await pool.fetchval("SELECT explanation FROM matching_round_pairs WHERE round_id = 'r-3'")
    assert explanation.endswith("still unmatched +6") and last.rule_set == "last round"


async def test_proposals_of_a_mentee_with_two_mentors_are_recorded_pair_by_pair(pool: asyncpg.Pool) -> None:
    # Every pair is stopped before anything is sent (the mentee left), so no Temporal client is needed.
    activities = MatchingActivities(pool, cast(Client, object()), "unused", keyring=TEST_KEYRING)
    await activities.profiles.save_settings(PROGRAMME, SETTINGS)
    await activities.profiles.save_profiles(PROGRAMME, [mentor("m-1", "dwp", 5), mentor("m-2", "moj", 4),
                                                        mentee("e-two", "hmrc", 3)])  # fmt: skip
    assert (await solved(activities, "r-1", "both at once")).matched == 2
    await pool.execute("""INSERT INTO participants (participant_id, display_name, email, status, left_at)
                          VALUES ('e-two', 'E', 'e@x.org', 'left', now())""")
    batch = await activities.propose_round_pairs(ProposeRequest(programme_id=PROGRAMME, round_id="r-1", coordinator_id="c"))
    assert (batch.not_proposed, batch.remaining) == (2, 0)
    _, reported = await activities.round_report(PROGRAMME, "r-1")
    assert [(p["mentor_id"], p["outcome"]) for p in reported] == [("m-1", "left the directory"), ("m-2", "left the directory")]


async def test_an_unknown_rule_set_is_refused_before_the_round_stores_anything(pool: asyncpg.Pool) -> None:
    activities = MatchingActivities(pool)
    await activities.profiles.save_settings(PROGRAMME, SETTINGS)
    with pytest.raises(ApplicationError, match="no rule set 'nope'"):
        await activities.collect_round_members(RoundRequest(programme_id=PROGRAMME, round_id="r", week_of=WEEK,
                                                            rule_set="nope"))  # fmt: skip
    assert await pool.fetchval("SELECT count(*) FROM matching_rounds") == 0


async def test_confidential_attributes_are_encrypted_at_rest_and_a_reimport_changes_nothing(pool: asyncpg.Pool) -> None:
    store = ProfileStore(pool, TEST_KEYRING)
    await store.save_settings(PROGRAMME, SETTINGS)
    text = "participant_id,role,attr:organisation,attr:grade,attr:characteristics\ne-1,mentee,HMRC,3,carer; lgbt+\n"
    profiles = [p for _, p in parse_profiles(text, "csv", settings=SETTINGS).profiles]
    assert (await store.save_profiles(PROGRAMME, profiles)).inserted == 1
    stored = json.loads(await pool.fetchval("SELECT profile FROM matching_profiles WHERE participant_id = 'e-1'"))
    assert stored["attributes"]["organisation"] == "hmrc"  # declared not confidential
    assert set(stored["attributes"]["grade"]) == {"$enc"} and set(stored["attributes"]["characteristics"]) == {"$enc"}
    row = await pool.fetchrow("SELECT * FROM matching_profiles WHERE participant_id = 'e-1'")
    assert "carer" not in str(dict(row)) and "lgbt" not in str(dict(row))
    assert await pool.fetchval("SELECT count(*) FROM data_keys WHERE stream_id = $1", f"profiles/{PROGRAMME}") == 1

    back = await store.get_profile(PROGRAMME, "mentee", "e-1")
    assert back is not None and back.attributes == {"characteristics": ("carer", "lgbt+"), "grade": 3.0, "organisation": "hmrc"}
    assert (await store.save_profiles(PROGRAMME, profiles)).unchanged == 1  # deterministic encryption
    # Without the keys, the rest of the profile reads; the confidential attributes do not.
    keyless = ProfileStore(pool)
    assert (await keyless.get_profile(PROGRAMME, "mentee", "e-1")).attributes == {"organisation": "hmrc"}  # type: ignore[union-attr]
    with pytest.raises(DataKeyError, match="MENTORFLOW_ENCRYPTION_KEYS"):
        await keyless.save_profiles(PROGRAMME, profiles)
    # A value moved to another participant does not decrypt.
    await pool.execute(
        """INSERT INTO matching_profiles (programme_id, role, participant_id, profile)
           SELECT programme_id, role, 'e-2', jsonb_set(profile, '{participant_id}', '"e-2"')
             FROM matching_profiles WHERE participant_id = 'e-1'"""
    )
    with pytest.raises(DataKeyError, match="does not decrypt"):
        await store.get_profile(PROGRAMME, "mentee", "e-2")


async def test_migration_0011_keeps_the_pairs_of_rounds_solved_before_it(database_url: str) -> None:
    pool = await create_pool(database_url, max_size=2)
    try:
        mine = next(m for m in available_migrations() if "matching_rules" in m.name)
        async with pool.acquire() as connection:
            await apply_migrations(connection, until=mine.version - 1)
        await pool.execute("INSERT INTO matching_rounds (programme_id, round_id, objective, week_of) VALUES ('p', 'r', 'max_total', $1)", WEEK)
        await pool.execute(
            """INSERT INTO matching_round_pairs (programme_id, round_id, mentee_id, mentor_id, relationship_id, points,
                                                 score, explanation) VALUES ('p', 'r', 'e-1', 'm-1', 'round-x', 5, 1, 'why')"""
        )
        async with pool.acquire() as connection:
            applied = await apply_migrations(connection, until=mine.version)
        assert [m.version for m in applied] == [mine.version]
        kept = await pool.fetch("SELECT mentee_id, mentor_id, relationship_id FROM matching_round_pairs")
        assert [tuple(r) for r in kept] == [("e-1", "m-1", "round-x")]
        # A second mentor for the same mentee in the same round fits the new key.
        await pool.execute(
            """INSERT INTO matching_round_pairs (programme_id, round_id, mentee_id, mentor_id, relationship_id, points,
                                                 score, explanation) VALUES ('p', 'r', 'e-1', 'm-2', 'round-y', 5, 1, 'why')"""
        )
        with pytest.raises(asyncpg.UniqueViolationError):
            await pool.execute(
                """INSERT INTO matching_round_pairs (programme_id, round_id, mentee_id, mentor_id, relationship_id, points,
                                                     score, explanation) VALUES ('p', 'r', 'e-1', 'm-2', 'round-z', 5, 1, 'why')"""
            )
        assert await pool.fetchval("SELECT rule_set FROM matching_rounds") is None
    finally:
        await pool.close()
