"""A programme matching round end to end: time-skipping Temporal server, real PostgreSQL,
the real Relationship workflow receiving the proposals."""

from __future__ import annotations

import uuid
from typing import Any

import asyncpg
from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment

from activities.matching import (
    ProfileStore,
    relationship_workflow_id,
    round_relationship_id,
    round_workflow_id,
)
from activities.directory import Directory
from activities.event_store import PostgresEventStore
from events.model import MatchProposed
from events.people import Programme
from events.settings import ProgrammeSettings
from tests.support.helpers import cohort, new_worker
from tests.support.session import TEST_KEYRING
from workflows.matching_round import MatchingRound, MatchingRoundInput, MatchingRoundResult

PROGRAMME = "cohort-27"


async def proposals(pool: asyncpg.Pool, relationship_id: str) -> list[dict[str, Any]]:
    """The round's proposals to the relationship. (While the test waits for a round, the
    test server skips time: a proposal may expire, and the relationship then asks the pool
    itself; those later proposals are not the round's.) Read with the keys: the explanation
    is confidential, encrypted in the store."""
    events = await PostgresEventStore(pool, keyring=TEST_KEYRING).read_stream(relationship_id)
    return [
        event.model_dump(mode="json")
        for event in events
        if isinstance(event, MatchProposed) and (event.command_id or "").startswith("round-")
    ]


async def new_round(pool: asyncpg.Pool) -> str:
    """The cohort's profiles and programme saved; the id of a new round."""
    await ProfileStore(pool).save_profiles(PROGRAMME, cohort())
    # The relationships a round starts read their programme's settings.
    settings = ProgrammeSettings(coordinator_ids=("coord-1",))
    await Directory(pool).create_or_update_programme(Programme(programme_id=PROGRAMME, name="Cohort 27", settings=settings))
    return f"r-{uuid.uuid4().hex[:8]}"


async def run_round(client: Client, task_queue: str, round_id: str) -> MatchingRoundResult:
    return await client.execute_workflow(
        MatchingRound.run,
        MatchingRoundInput(programme_id=PROGRAMME, round_id=round_id, coordinator_id="coord-1", batch_size=2),
        id=round_workflow_id(PROGRAMME, round_id),
        task_queue=task_queue,
    )


async def test_a_round_proposes_the_optimal_pairs_once_with_their_explanations(
    time_skipping_env: WorkflowEnvironment, pool: asyncpg.Pool
) -> None:
    env = time_skipping_env
    round_id = await new_round(pool)
    async with new_worker(env.client, pool) as worker:
        result = await run_round(env.client, worker.task_queue, round_id)
        # Four slots for six mentees: four matched, every one proposed.
        assert (result.mentees, result.mentors, result.matched) == (6, 3, 4)
        assert (result.proposed, result.already_proposed, result.not_proposed) == (4, 0, 0)

        pairs = await pool.fetch(
            "SELECT mentee_id, mentor_id, relationship_id, explanation FROM matching_round_pairs WHERE round_id = $1",
            round_id,
        )
        assert len(pairs) == 4
        assert ("e-0", "m-0") not in {(p["mentee_id"], p["mentor_id"]) for p in pairs}  # excluded
        slots = await pool.fetch("SELECT mentor_id, count(*) AS n FROM mentor_slots GROUP BY mentor_id")
        assert {row["mentor_id"]: row["n"] for row in slots} == {"m-0": 2, "m-1": 1, "m-2": 1}
        for pair in pairs:
            assert pair["relationship_id"] == round_relationship_id(PROGRAMME, round_id, pair["mentee_id"])
            [proposed] = await proposals(pool, pair["relationship_id"])
            assert proposed["mentor_id"] == pair["mentor_id"]
            assert proposed["explanation"] == pair["explanation"]
            assert "goals" in proposed["explanation"] and "h/week overlap" in proposed["explanation"]

        # Run the round again, as after a crash: it re-proposes nothing.
        again = await run_round(env.client, worker.task_queue, round_id)
        assert (again.matched, again.proposed, again.already_proposed) == (4, 0, 0)
        # Even when the round's own bookkeeping is lost, the proposals are sent again with
        # the same update and command ids, and the relationships apply them only once.
        await pool.execute("UPDATE matching_round_pairs SET proposed_at = NULL WHERE round_id = $1", round_id)
        third = await run_round(env.client, worker.task_queue, round_id)
        assert third.proposed + third.already_proposed == 4 and third.not_proposed == 0
        for pair in pairs:
            assert len(await proposals(pool, pair["relationship_id"])) == 1

        # The mentees then answer as usual; end every relationship the way people would.
        for pair in pairs:
            handle = env.client.get_workflow_handle(relationship_workflow_id(PROGRAMME, pair["relationship_id"]))
            await handle.execute_update(
                "close_relationship", {"command_id": f"close-{pair['mentee_id']}", "actor_id": pair["mentee_id"]}
            )
            await handle.result()

        # A relationship that has ended is never reopened by the round, and gives its slot back.
        await pool.execute("UPDATE matching_round_pairs SET proposed_at = NULL WHERE round_id = $1", round_id)
        after_closing = await run_round(env.client, worker.task_queue, round_id)
        assert (after_closing.proposed, after_closing.not_proposed) == (0, 4)
        outcomes = await pool.fetch("SELECT DISTINCT outcome FROM matching_round_pairs WHERE round_id = $1", round_id)
        assert [row["outcome"] for row in outcomes] == ["relationship closed"]
        assert await pool.fetchval("SELECT count(*) FROM mentor_slots") == 0


async def test_round_start_wait_shows_the_rounds_progress_on_a_terminal(
    time_skipping_env: WorkflowEnvironment, pool: asyncpg.Pool, monkeypatch: Any
) -> None:
    import io

    from rich.console import Console

    from mentorflow import cli

    env = time_skipping_env
    round_id = await new_round(pool)
    screen = io.StringIO()
    monkeypatch.setattr(cli, "err", Console(file=screen, force_terminal=True, width=100))
    async with new_worker(env.client, pool) as worker:
        handle = await env.client.start_workflow(
            MatchingRound.run,
            MatchingRoundInput(programme_id=PROGRAMME, round_id=round_id, coordinator_id="coord-1", batch_size=2),
            id=round_workflow_id(PROGRAMME, round_id),
            task_queue=worker.task_queue,
        )
        result = await cli._with_round_progress(handle)
        assert (result.matched, result.proposed) == (4, 4)
        final = await handle.query(MatchingRound.progress)
        for pair in await pool.fetch("SELECT relationship_id, mentee_id FROM matching_round_pairs WHERE round_id = $1", round_id):
            relationship = env.client.get_workflow_handle(relationship_workflow_id(PROGRAMME, pair["relationship_id"]))
            await relationship.execute_update(
                "close_relationship", {"command_id": f"close-{pair['mentee_id']}", "actor_id": pair["mentee_id"]}
            )
    # The bar was drawn (a terminal gets control sequences) and named a stage of the round.
    shown = screen.getvalue()
    assert "\x1b[" in shown
    assert final.stage == "done"
    assert any(stage in shown for stage in ("collecting", "solving", "proposing", "done")), shown
