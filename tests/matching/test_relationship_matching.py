"""The matching phase inside a relationship: the pool proposes, capacity is held and given back."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import asyncpg
from temporalio.client import WorkflowHandle
from temporalio.testing import WorkflowEnvironment

from activities.event_store import PostgresEventStore
from activities.matching import MatchingActivities
from events.model import MatchDeclined, MatchProposed
from events.state import Phase, RelationshipState
from tests.support.session import TEST_KEYRING
from tests.support.helpers import (
    AGREEMENT,
    cmd,
    mentee_profile as mentee,
    mentor_profile as mentor,
    mentor_slots as slots,
    new_worker,
    reflect,
    start_relationship,
    state_of,
)

PROGRAMME = "prog-1"


async def settled(handle: WorkflowHandle[Any, Any], ready: Callable[[RelationshipState], bool]) -> RelationshipState:
    """The pool is asked in the background after each change: wait (bounded) until it answered."""
    for _ in range(200):
        state = await state_of(handle)
        if ready(state):
            return state
        await asyncio.sleep(0.05)
    raise AssertionError(f"never settled: {state}")


async def proposed(handle: WorkflowHandle[Any, Any], *, attempts: int) -> str:
    state = await settled(handle, lambda s: s.candidate is not None and s.match_attempts == attempts)
    assert state.candidate is not None
    return state.candidate.mentor_id


async def test_the_pool_proposes_the_best_free_mentor_and_capacity_follows_the_relationship(
    time_skipping_env: WorkflowEnvironment, pool: asyncpg.Pool
) -> None:
    env = time_skipping_env
    await MatchingActivities(pool).profiles.save_profiles(
        PROGRAMME, [mentor("m-best", level=5), mentor("m-next", level=3), mentee("e-1"), mentee("e-2")]
    )
    async with new_worker(env.client, pool) as worker:
        first = await start_relationship(env.client, worker, mentee_id="e-1")
        # Nobody proposed anyone: the relationship asked the pool, which reserved a slot.
        assert await proposed(first, attempts=0) == "m-best"
        rel_1 = (await state_of(first)).relationship_id
        assert await slots(pool) == {rel_1: "m-best"}
        stored = await PostgresEventStore(pool, TEST_KEYRING).read_stream(rel_1)
        proposal = next(e for e in stored if isinstance(e, MatchProposed))
        assert proposal.proposed_by == "matching-engine" and proposal.explanation.startswith("score ")

        # The mentor declines: the slot goes back and the next best is proposed.
        await first.execute_update("decline_match", cmd("m-best", reason="no time this quarter"))
        assert await proposed(first, attempts=1) == "m-next"
        assert await slots(pool) == {rel_1: "m-next"}

        # A coordinator proposes, by hand, a mentor whose only slot is taken: withdrawn at
        # once, and the pool moves on to a mentor who is free.
        second = await start_relationship(env.client, worker, mentee_id="e-2")
        rel_2 = (await state_of(second)).relationship_id
        assert await proposed(second, attempts=0) == "m-best"  # freed by the decline above
        await second.execute_update("decline_match", cmd("e-2", reason="prefer someone else"))
        # Nobody else is free: it waits for a coordinator.
        await second.execute_update("propose_match", cmd("coord-1", mentor_id="m-next"))
        state = await settled(second, lambda s: s.match_attempts == 2)
        assert state.candidate is None and state.declined_mentor_ids == ("m-best", "m-next")
        withdrawn = [e for e in await PostgresEventStore(pool).read_stream(rel_2) if isinstance(e, MatchDeclined)]
        assert withdrawn[-1].declined_by == "matching-engine"
        assert (await slots(pool)).get(rel_2) is None
        # (Closed now: awaiting a result below lets the test server skip through its timers.)
        await second.execute_update("close_relationship", cmd("e-2"))

        # The first relationship goes ahead; its closure gives the slot back.
        await first.execute_update("accept_match", cmd("e-1"))
        await first.execute_update("accept_match", cmd("m-next"))
        await first.execute_update("propose_agreement", cmd("e-1", terms=AGREEMENT))
        await first.execute_update("sign_agreement", cmd("e-1", agreement_version=1))
        await first.execute_update("sign_agreement", cmd("m-next", agreement_version=1))
        assert (await state_of(first)).phase is Phase.ACTIVE
        assert await slots(pool) == {rel_1: "m-next"}
        await first.execute_update("close_relationship", cmd("e-1"))
        await reflect(first, mentor="m-next", mentee="e-1")
        await first.result()
        for _ in range(100):  # given back by an activity after the last event is stored
            if not await slots(pool):
                break
            await asyncio.sleep(0.05)
        assert await slots(pool) == {}
        assert (await second.result()).closure_reason == "closed_by_mentee"
