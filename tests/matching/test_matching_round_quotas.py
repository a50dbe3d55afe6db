"""A matching round that gives one mentee two mentors, end to end: time-skipping Temporal
server, real PostgreSQL, the real Relationship workflows receiving the proposals (one
relationship per pair), with a rule set of the programme and confidential attributes."""

from __future__ import annotations

import uuid

import asyncpg
from temporalio.testing import WorkflowEnvironment

from activities.directory import Directory
from activities.matching import ProfileStore, relationship_workflow_id, round_relationship_id, round_workflow_id
from activities.event_store import PostgresEventStore
from events.model import MatchProposed
from events.people import Programme
from events.settings import ProgrammeSettings
from pairing.profiles import MenteeProfile, MentorProfile
from pairing.settings import MatchingSettings
from tests.support.session import TEST_KEYRING
from tests.support.helpers import new_worker
from workflows.matching_round import MatchingRound, MatchingRoundInput

PROGRAMME = "cohort-q"

SETTINGS = MatchingSettings.model_validate({
    "max_open_relationships_per_mentee": 2,
    "attributes": {"organisation": {"kind": "text"}, "grade": {"kind": "number"}},
    "rules": [{"name": "other organisation", "require": "different", "attribute": "organisation"},
              {"name": "one or two grades above", "require": "window", "attribute": "grade", "min": 1, "max": 2}],
    "rule_sets": {"two at once": {"mentors_per_round": 2}},
})  # fmt: skip


async def test_a_round_proposes_two_mentors_to_one_mentee_as_two_relationships(
    time_skipping_env: WorkflowEnvironment, pool: asyncpg.Pool
) -> None:
    env = time_skipping_env
    store = ProfileStore(pool, TEST_KEYRING)
    await store.save_settings(PROGRAMME, SETTINGS)
    await store.save_profiles(PROGRAMME, [
        *(MentorProfile.model_validate({"participant_id": f"m-{j}", "languages": ["en"],
                                        "strengths": [{"topic": "python", "level": 5 - j}],
                                        "attributes": {"organisation": org, "grade": 5}})
          for j, org in enumerate(["dwp", "moj", "hmrc"])),
        MenteeProfile.model_validate({"participant_id": "e-1", "languages": ["en"], "goals": [{"topic": "python"}],
                                      "attributes": {"organisation": "hmrc", "grade": 3}}),
    ])  # fmt: skip
    settings = ProgrammeSettings(coordinator_ids=("coord-1",))
    await Directory(pool).create_or_update_programme(Programme(programme_id=PROGRAMME, name="Cohort Q", settings=settings))
    round_id = f"r-{uuid.uuid4().hex[:8]}"
    async with new_worker(env.client, pool) as worker:
        result = await env.client.execute_workflow(
            MatchingRound.run,
            MatchingRoundInput(programme_id=PROGRAMME, round_id=round_id, coordinator_id="coord-1", rule_set="two at once"),
            id=round_workflow_id(PROGRAMME, round_id),
            task_queue=worker.task_queue,
        )
        # m-2 is in e-1's organisation; m-0 and m-1 are both proposed, each in a relationship of its own.
        assert (result.mentees, result.mentors, result.matched, result.proposed) == (1, 3, 2, 2)
        rows = await pool.fetch(
            "SELECT mentor_id, relationship_id FROM matching_round_pairs WHERE round_id = $1 ORDER BY mentor_id", round_id
        )
        assert [r["mentor_id"] for r in rows] == ["m-0", "m-1"]
        assert rows[0]["relationship_id"] == round_relationship_id(PROGRAMME, round_id, "e-1")
        assert rows[1]["relationship_id"] == round_relationship_id(PROGRAMME, round_id, "e-1", "m-1")
        events = PostgresEventStore(pool, keyring=TEST_KEYRING)
        for row in rows:
            proposed = [e for e in await events.read_stream(row["relationship_id"]) if isinstance(e, MatchProposed)]
            assert [p.mentor_id for p in proposed][:1] == [row["mentor_id"]]
        for row in rows:
            handle = env.client.get_workflow_handle(relationship_workflow_id(PROGRAMME, row["relationship_id"]))
            await handle.execute_update("close_relationship", {"command_id": f"close-{row['mentor_id']}", "actor_id": "e-1"})
            await handle.result()
