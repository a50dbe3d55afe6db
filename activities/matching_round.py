"""A programme matching round's activities: collect the cohort, solve it with its slots in
one transaction, propose the pairs (workflows/matching_round.py runs them; the scoring and
the solver are pure, in `pairing`).

Who takes part: active mentees with fewer open relationships than their quota (the
profile's `mentor_quota`, else the programme's `max_open_relationships_per_mentee`, one by
default) and active mentors with a free slot, leaving out anyone the directory lists as
having left. A mentor's slots count every open relationship holding them, however it was
matched (migrations/0009_mentor_load.sql). A round gives a mentee up to `mentors_per_round`
mentors (one by default), never more than is left of their quota, each pair its own
relationship (migrations/0011_matching_rules.sql).
A round may run with one of the programme's rule sets; a mentee it leaves unmatched is told
why in aggregate (which reasons ruled out how many of the round's mentors). A large round
is scored and solved a few mentee rows at a time (pairing/round_solver.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator
from datetime import date
from typing import Any, Literal

import asyncpg
import numpy as np
from pydantic import ValidationError
from temporalio import activity
from temporalio.client import Client, WithStartWorkflowOperation, WorkflowUpdateFailedError
from temporalio.common import WorkflowIDConflictPolicy, WorkflowIDReusePolicy
from temporalio.exceptions import ApplicationError, FailureError, WorkflowAlreadyStartedError
from temporalio.service import RPCError, RPCStatusCode

from pairing.rounds import (
    ProposeBatch,
    ProposeRequest,
    RoundMembers,
    RoundRequest,
    RoundSolution,
    round_command_id,
    round_relationship_id,
    round_workflow_id,
)
from activities.matching_store import (
    LEFT_THE_DIRECTORY,
    MentorSlots,
    ProfileStore,
    mentee_quota_of,
    open_relationships_of,
)
from mentorflow.codec import EncryptionCodec
from mentorflow.keyring import Keyring
from pairing.profiles import MenteeProfile, MentorProfile
from pairing.requests import SlotRelease
from pairing.round_solver import TILED_ABOVE_PAIRS, RoundCohort, solve_cohort
from pairing.scoring import PairScore
from pairing.settings import MatchingSettings, Objective
from events.relationship_io import RELATIONSHIP_WORKFLOW, CommandResult, RelationshipInput, relationship_workflow_id
from mentorflow.start_options import relationship_start_options

__all__ = [
    "ProposeBatch", "ProposeRequest", "RoundActivities", "RoundMembers", "RoundRequest", "RoundSolution",
    "relationship_workflow_id", "round_command_id", "round_relationship_id", "round_workflow_id",
]  # fmt: skip

log = logging.getLogger("mentorflow.matching")

# Outcomes of a pair the round did not propose because things changed after it was solved.
LEFT = "left the directory"
IN_A_RELATIONSHIP = "mentee already in a relationship"
# Profiles read (decrypted and validated) between two heartbeats.
_PROFILES_PER_BATCH = 5000



# -- the activities ------------------------------------------------------------------------

# A round's mentee (profile `p`) who may be matched now: not left, and with fewer open
# relationships than their quota (the programme's is the query's parameter `limit`).
_MENTEE_IS_FREE = (
    f"NOT {LEFT_THE_DIRECTORY.format(id='p.participant_id')} "
    f"AND {open_relationships_of('p.programme_id', 'p.participant_id')} < {mentee_quota_of('p.profile', '{limit}')}"
)


@contextlib.asynccontextmanager
async def _heartbeating(every: float = 5) -> AsyncIterator[None]:
    """Heartbeat every few seconds while the block runs: its statements and the thread it
    waits for leave the event loop free, and a 100,000-mentee round takes many minutes."""

    async def beat() -> None:
        while True:
            activity.heartbeat()
            await asyncio.sleep(every)

    task = asyncio.ensure_future(beat()) if activity.in_activity() else None
    try:
        yield
    finally:
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


class RoundActivities:
    """The round's activities; `client` and `task_queue` are where rounds start relationships."""

    def __init__(
        self, pool: asyncpg.Pool, client: Client | None = None, task_queue: str | None = None,
        *, keyring: Keyring | None = None, tiled_above_pairs: int | None = None,
    ) -> None:  # fmt: skip
        self._pool = pool
        # Pairs above which `solve_round` scores and solves tile by tile (pairing/round_solver.py);
        # the worker passes MENTORFLOW_ROUND_TILED_ABOVE_PAIRS.
        self.tiled_above_pairs = TILED_ABOVE_PAIRS if tiled_above_pairs is None else tiled_above_pairs
        self._client = client
        self._task_queue = task_queue
        # The keys of confidential profile attributes: given, else the client's payload keys.
        codec = getattr(getattr(client, "data_converter", None), "payload_codec", None)
        if keyring is None and isinstance(codec, EncryptionCodec):
            keyring = codec.keyring
        self.profiles = ProfileStore(pool, keyring)
        self.slots = MentorSlots(pool)

    async def _profiles(
        self, programme_id: str, role: Literal["mentor", "mentee"], rows: list[asyncpg.Record]
    ) -> list[MentorProfile | MenteeProfile]:
        loaded: list[MentorProfile | MenteeProfile] = []
        try:
            # In batches, with the event loop free between them (`_heartbeating`'s beats go
            # out): reading 100,000 profiles holds it for many seconds.
            for start in range(0, len(rows), _PROFILES_PER_BATCH):
                batch = rows[start : start + _PROFILES_PER_BATCH]
                loaded += await self.profiles.load(programme_id, role, [row["profile"] for row in batch])
                await asyncio.sleep(0)
        except ValidationError as error:
            raise ApplicationError(f"a stored {role} profile no longer validates: {error.error_count()} errors",
                                   non_retryable=True) from None  # fmt: skip
        return loaded

    async def round_report(self, programme_id: str, round_id: str) -> tuple[dict[str, Any] | None, list[dict[str, Any]]]:
        """A solved round's summary and pairs (with the outcome of each proposal), for people."""
        summary = await self._pool.fetchval(
            "SELECT summary FROM matching_rounds WHERE programme_id = $1 AND round_id = $2", programme_id, round_id
        )
        pairs = await self._pool.fetch(
            """SELECT mentee_id, mentor_id, relationship_id, score, explanation, outcome FROM matching_round_pairs
                WHERE programme_id = $1 AND round_id = $2 ORDER BY mentee_id, mentor_id""",
            programme_id, round_id,
        )  # fmt: skip
        return (None if summary is None else json.loads(summary)), [dict(row) for row in pairs]

    async def round_unmatched(self, programme_id: str, round_id: str) -> list[dict[str, Any]]:
        """The mentees a solved round left unmatched, each with how many of the round's mentors
        each reason ruled out (`excluded`) and how many allowed ones went to others (`allowed`)."""
        rows = await self._pool.fetch(
            """SELECT mentee_id, excluded, allowed, mentors FROM matching_round_unmatched
                WHERE programme_id = $1 AND round_id = $2 ORDER BY mentee_id""",
            programme_id, round_id,
        )  # fmt: skip
        return [{**dict(row), "excluded": json.loads(row["excluded"])} for row in rows]

    @activity.defn(name="collect_round_members")
    async def collect_round_members(self, request: RoundRequest) -> RoundMembers:
        """Fix who takes part in the round (see the module's docstring). Stored, so that a
        re-run of the round sees the same cohort."""
        settings = await self.profiles.get_settings(request.programme_id)
        objective = request.objective or settings.objective
        _round_settings(settings, request.rule_set)  # an unknown rule set fails before anything is stored
        async with self._pool.acquire() as connection, connection.transaction():
            created = await connection.execute(
                """INSERT INTO matching_rounds (programme_id, round_id, objective, week_of, rule_set)
                   VALUES ($1, $2, $3, $4, $5)
                   ON CONFLICT DO NOTHING""",
                request.programme_id, request.round_id, objective, request.week_of, request.rule_set,
            )  # fmt: skip
            if created.endswith(" 1"):
                await connection.execute(
                    f"""INSERT INTO matching_round_members (programme_id, round_id, role, participant_id)
                        SELECT p.programme_id, $2, 'mentee', p.participant_id
                          FROM matching_profiles p
                         WHERE p.programme_id = $1 AND p.role = 'mentee' AND p.active
                           AND ($3::text[] IS NULL OR p.participant_id = ANY($3::text[]))
                           AND {_MENTEE_IS_FREE.format(limit="$4")}""",
                    request.programme_id, request.round_id,
                    None if request.mentee_ids is None else list(request.mentee_ids),
                    settings.max_open_relationships_per_mentee,
                )  # fmt: skip
                await connection.execute(
                    f"""INSERT INTO matching_round_members (programme_id, round_id, role, participant_id)
                        SELECT p.programme_id, $2, 'mentor', p.participant_id
                          FROM matching_profiles p
                         WHERE p.programme_id = $1 AND p.role = 'mentor' AND p.active
                           AND NOT {LEFT_THE_DIRECTORY.format(id="p.participant_id")}
                           AND p.capacity > (SELECT count(*) FROM mentor_slots s
                                              WHERE s.programme_id = p.programme_id AND s.mentor_id = p.participant_id)""",
                    request.programme_id, request.round_id,
                )  # fmt: skip
            counts = await connection.fetch(
                """SELECT role, count(*) AS members FROM matching_round_members
                    WHERE programme_id = $1 AND round_id = $2 GROUP BY role""",
                request.programme_id, request.round_id,
            )  # fmt: skip
        by_role = {row["role"]: row["members"] for row in counts}
        return RoundMembers(mentees=by_role.get("mentee", 0), mentors=by_role.get("mentor", 0),
                            collected_now=created.endswith(" 1"))  # fmt: skip

    @activity.defn(name="solve_round")
    async def solve_round(self, request: RoundRequest) -> RoundSolution:
        """Solve the assignment for the whole cohort at once and store it with its slots in
        one transaction; a round that is already solved returns what is stored."""
        async with _heartbeating():
            return await self._solve_round(request)

    async def _solve_round(self, request: RoundRequest) -> RoundSolution:
        programme_id, round_id = request.programme_id, request.round_id
        # Each mentor's lock row exists before the transaction locks it (created in mentor
        # order, committed at once: a round never waits inside its transaction for a row
        # that another transaction is still inserting).
        await self._pool.execute(
            """INSERT INTO mentor_locks (programme_id, mentor_id)
               SELECT programme_id, participant_id FROM matching_round_members
                WHERE programme_id = $1 AND round_id = $2 AND role = 'mentor'
                ORDER BY participant_id
               ON CONFLICT DO NOTHING""",
            programme_id, round_id,
        )  # fmt: skip
        async with self._pool.acquire() as connection, connection.transaction():
            # Serialises two runs of the same round (the second then finds it solved).
            round_row = await connection.fetchrow(
                """SELECT objective, week_of, solved_at, summary, rule_set FROM matching_rounds
                    WHERE programme_id = $1 AND round_id = $2 FOR UPDATE""",
                programme_id, round_id,
            )  # fmt: skip
            if round_row is None:
                raise ApplicationError(f"round {round_id} of {programme_id} has not collected its members",
                                       type="RoundNotCollected", non_retryable=True)  # fmt: skip
            if round_row["solved_at"] is not None:
                return RoundSolution.model_validate({**json.loads(round_row["summary"]), "solved_now": False})
            programme_settings = await self.profiles.get_settings(programme_id, connection)
            settings = _round_settings(programme_settings, round_row["rule_set"])
            objective: Objective = round_row["objective"]
            # Lock the round's mentors (in id order: no deadlock with another round), the same
            # locks every reservation takes; only then count their slots, in statements of
            # their own (a statement's snapshot is taken before it waits for a lock).
            await connection.execute(
                """SELECT 1 FROM mentor_locks l
                     JOIN matching_round_members m
                       ON m.programme_id = l.programme_id AND m.role = 'mentor' AND m.participant_id = l.mentor_id
                    WHERE l.programme_id = $1 AND m.round_id = $2
                    ORDER BY l.mentor_id
                      FOR UPDATE OF l""",
                programme_id, round_id,
            )  # fmt: skip
            mentor_rows = await connection.fetch(
                f"""SELECT p.participant_id, p.profile, p.capacity,
                           (SELECT count(*) FROM mentor_slots s
                             WHERE s.programme_id = p.programme_id AND s.mentor_id = p.participant_id) AS taken
                      FROM matching_profiles p
                      JOIN matching_round_members m
                        ON m.programme_id = p.programme_id AND m.role = 'mentor' AND m.participant_id = p.participant_id
                     WHERE p.programme_id = $1 AND m.round_id = $2 AND p.role = 'mentor' AND p.active
                       AND NOT {LEFT_THE_DIRECTORY.format(id="p.participant_id")}
                     ORDER BY p.participant_id""",
                programme_id, round_id,
            )  # fmt: skip
            # Looked at again: a mentee may have been matched, or left, since the collection.
            mentee_rows = await connection.fetch(
                f"""SELECT p.participant_id, p.profile,
                           {open_relationships_of('p.programme_id', 'p.participant_id')} AS open
                      FROM matching_profiles p
                      JOIN matching_round_members m
                        ON m.programme_id = p.programme_id AND m.role = 'mentee' AND m.participant_id = p.participant_id
                     WHERE p.programme_id = $1 AND m.round_id = $2 AND p.role = 'mentee' AND p.active
                       AND {_MENTEE_IS_FREE.format(limit="$3")}
                     ORDER BY p.participant_id""",
                programme_id, round_id, settings.max_open_relationships_per_mentee,
            )  # fmt: skip
            mentors = [p for p in await self._profiles(programme_id, "mentor", mentor_rows) if isinstance(p, MentorProfile)]
            mentees = [p for p in await self._profiles(programme_id, "mentee", mentee_rows) if isinstance(p, MenteeProfile)]
            # What is left of each mentee's quota, and who has a mentor already.
            opened = [row["open"] for row in mentee_rows]
            quotas = np.array([min(settings.mentors_per_round, _quota(m, settings) - k)
                               for m, k in zip(mentees, opened, strict=True)], dtype=np.int64).clip(min=0)  # fmt: skip
            has_mentor = [k > 0 for k in opened]
            # A mentee allowed more than one relationship never gets a mentor they have already.
            together = await connection.fetch(
                "SELECT mentee_id, mentor_id FROM mentor_slots WHERE programme_id = $1 AND mentee_id = ANY($2::text[])",
                programme_id, [m.participant_id for m in mentees],
            )  # fmt: skip
            free = np.array([max(0, row["capacity"] - row["taken"]) for row in mentor_rows], dtype=np.int64)
            week_of: date = round_row["week_of"]

            mentee_at = {m.participant_id: i for i, m in enumerate(mentees)}
            mentor_at = {m.participant_id: j for j, m in enumerate(mentors)}
            cohort = RoundCohort(
                mentees, mentors, settings, week_of, objective, quotas, free, has_mentor,
                together=[(mentee_at[row["mentee_id"]], mentor_at[row["mentor_id"]])
                          for row in together if row["mentor_id"] in mentor_at],
            )  # fmt: skip
            started = time.perf_counter()
            outcome = await asyncio.to_thread(solve_cohort, cohort, tiled_above_pairs=self.tiled_above_pairs)
            seconds = time.perf_counter() - started
            pairs, unmatched, stats = outcome.pairs, outcome.unmatched, outcome.stats
            relationship_ids = _relationship_ids(programme_id, round_id, pairs)
            await connection.execute(
                """INSERT INTO matching_round_pairs
                       (programme_id, round_id, mentee_id, mentor_id, relationship_id, points, score, explanation)
                   SELECT $1, $2, * FROM unnest($3::text[], $4::text[], $5::text[], $6::int[], $7::real[], $8::text[])""",
                programme_id, round_id, [p.mentee_id for p in pairs], [p.mentor_id for p in pairs],
                relationship_ids, [p.points for p in pairs], [p.score for p in pairs], [p.explanation for p in pairs],
            )  # fmt: skip
            # The mentors are locked and their free slots counted: these cannot be full.
            await connection.execute(
                """INSERT INTO mentor_slots (programme_id, relationship_id, mentor_id, mentee_id)
                   SELECT $1, * FROM unnest($2::text[], $3::text[], $4::text[])""",
                programme_id, relationship_ids, [p.mentor_id for p in pairs], [p.mentee_id for p in pairs],
            )  # fmt: skip
            await connection.execute(
                """INSERT INTO matching_round_unmatched (programme_id, round_id, mentee_id, excluded, allowed, mentors)
                   SELECT $1, $2, * FROM unnest($3::text[], $4::jsonb[], $5::int[], $6::int[])""",
                programme_id, round_id, [u.mentee_id for u in unmatched],
                [json.dumps(u.excluded, sort_keys=True) for u in unmatched], [u.allowed for u in unmatched],
                [len(mentors)] * len(unmatched),
            )  # fmt: skip
            total = sum(p.points for p in pairs)
            solution = RoundSolution(
                mentees=len(mentees), mentors=len(mentors), matched=len(pairs), total_points=total,
                mean_score=round(sum(p.score for p in pairs) / len(pairs), 1) if pairs else 0.0,
                objective=objective, solver_seconds=round(seconds, 3), pricing_rounds=stats.pricing_rounds,
                solved_now=True, mentees_matched=len({p.mentee_id for p in pairs}), rule_set=round_row["rule_set"],
            )  # fmt: skip
            await connection.execute(
                """UPDATE matching_rounds SET solved_at = now(), summary = $3::jsonb
                    WHERE programme_id = $1 AND round_id = $2""",
                programme_id, round_id, solution.model_dump_json(exclude={"solved_now"}),
            )  # fmt: skip
        return solution

    @activity.defn(name="propose_round_pairs")
    async def propose_round_pairs(self, request: ProposeRequest) -> ProposeBatch:
        """Propose the next batch of the round's pairs: start each mentee's relationship (or
        find it running) and send it `propose_match` in one update-with-start. Safe to repeat:
        relationship ids, command ids and update ids are derived from the round and the mentee.

        A pair whose relationship has not started yet is looked at once more: if either
        side has left the directory, or the mentee has meanwhile gone into as many other
        relationships as the programme allows, it is not proposed and its slot goes back."""
        if self._client is None or self._task_queue is None:
            raise ApplicationError("these activities were built without a Temporal client", non_retryable=True)
        settings = await self.profiles.get_settings(request.programme_id)
        rows = await self._pool.fetch(
            f"""SELECT p.mentee_id, p.mentor_id, p.relationship_id, p.score, p.explanation,
                       CASE WHEN EXISTS (SELECT 1 FROM events e WHERE e.stream_id = p.relationship_id AND e.version = 1)
                            THEN NULL
                            WHEN {LEFT_THE_DIRECTORY.format(id="p.mentee_id")}
                              OR {LEFT_THE_DIRECTORY.format(id="p.mentor_id")} THEN $4
                            WHEN (SELECT count(*) FROM open_relationships o
                                   WHERE o.programme_id = p.programme_id AND o.mentee_id = p.mentee_id
                                     AND o.relationship_id <> p.relationship_id)
                                  >= (SELECT {mentee_quota_of('q.profile', '$6')} FROM matching_profiles q
                                       WHERE q.programme_id = p.programme_id AND q.role = 'mentee'
                                         AND q.participant_id = p.mentee_id) THEN $5
                       END AS blocked
                  FROM matching_round_pairs p
                 WHERE p.programme_id = $1 AND p.round_id = $2 AND p.proposed_at IS NULL
                 ORDER BY p.mentee_id, p.mentor_id LIMIT $3""",
            request.programme_id, request.round_id, request.batch_size, LEFT, IN_A_RELATIONSHIP,
            settings.max_open_relationships_per_mentee,
        )  # fmt: skip
        gate = asyncio.Semaphore(16)

        async def propose(row: asyncpg.Record) -> str:
            if row["blocked"] is not None:
                log.info("round %s: not proposing %s: %s", request.round_id, row["relationship_id"], row["blocked"])
                return str(row["blocked"])
            async with gate:
                outcome = await self._propose(request, row)
            if activity.in_activity():
                activity.heartbeat()  # alive: a killed worker's batch is retried after the heartbeat timeout
            return outcome

        outcomes = await asyncio.gather(*(propose(row) for row in rows))
        for row, outcome in zip(rows, outcomes, strict=True):
            if outcome.startswith("rejected") or outcome in ("relationship closed", LEFT, IN_A_RELATIONSHIP):
                # The relationship will never use this slot.
                await self.slots.release(SlotRelease(programme_id=request.programme_id,
                                                     relationship_id=row["relationship_id"]))  # fmt: skip
        await self._pool.execute(
            """UPDATE matching_round_pairs p SET proposed_at = now(), outcome = t.outcome
                 FROM unnest($3::text[], $4::text[]) AS t(relationship_id, outcome)
                WHERE p.programme_id = $1 AND p.round_id = $2 AND p.relationship_id = t.relationship_id""",
            request.programme_id, request.round_id, [row["relationship_id"] for row in rows], list(outcomes),
        )  # fmt: skip
        remaining = await self._pool.fetchval(
            """SELECT count(*) FROM matching_round_pairs
                WHERE programme_id = $1 AND round_id = $2 AND proposed_at IS NULL""",
            request.programme_id, request.round_id,
        )  # fmt: skip
        return ProposeBatch(
            proposed=sum(1 for o in outcomes if o == "proposed"),
            already_proposed=sum(1 for o in outcomes if o == "already_proposed"),
            not_proposed=sum(1 for o in outcomes if o not in ("proposed", "already_proposed")),
            remaining=remaining,
        )

    async def _propose(self, request: ProposeRequest, row: asyncpg.Record) -> str:
        assert self._client is not None and self._task_queue is not None
        relationship_id: str = row["relationship_id"]
        command_id = round_command_id(relationship_id)
        relationship = RelationshipInput(relationship_id=relationship_id, programme_id=request.programme_id,
                                         mentee_id=row["mentee_id"], settings=request.relationship_settings,
                                         ask_pool_first=False)  # fmt: skip
        start: WithStartWorkflowOperation[Any, Any] = WithStartWorkflowOperation(
            RELATIONSHIP_WORKFLOW,
            relationship,
            id=relationship_workflow_id(request.programme_id, relationship_id),
            task_queue=self._task_queue,
            # Running: deliver the proposal to it. Closed: leave it closed (a re-run of the
            # round must not open a relationship that has already ended).
            id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
            id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
            **relationship_start_options(relationship, started_by=f"matching round {request.round_id}",
                                         round_id=request.round_id),  # fmt: skip
        )
        command: dict[str, Any] = {
            "command_id": command_id,
            "actor_id": request.coordinator_id,
            "mentor_id": row["mentor_id"],
            "explanation": row["explanation"],
            "score": float(row["score"]),
        }
        try:
            result = await self._client.execute_update_with_start_workflow(
                "propose_match", command, start_workflow_operation=start, id=command_id, result_type=CommandResult
            )
        except WorkflowUpdateFailedError as error:
            cause = error.cause
            reason = cause.message if isinstance(cause, FailureError) else str(cause or error)
            log.warning("round %s: %s refused the proposal: %s", request.round_id, relationship_id, reason)
            return f"rejected: {reason}"[:500]
        except (WorkflowAlreadyStartedError, RPCError) as error:
            # The start's own outcome holds the same error: retrieve it, or asyncio reports
            # it as never retrieved.
            with contextlib.suppress(Exception):
                await start.workflow_handle()
            # The time-skipping test server reports the closed workflow as ALREADY_EXISTS.
            if isinstance(error, WorkflowAlreadyStartedError) or error.status == RPCStatusCode.ALREADY_EXISTS:
                return "relationship closed"
            raise
        return "proposed" if result.applied else "already_proposed"


def _quota(mentee: MenteeProfile, settings: MatchingSettings) -> int:
    return settings.max_open_relationships_per_mentee if mentee.mentor_quota is None else mentee.mentor_quota


def _round_settings(settings: MatchingSettings, rule_set: str | None) -> MatchingSettings:
    try:
        return settings.for_round(rule_set)
    except KeyError as error:
        raise ApplicationError(str(error.args[0]), type="UnknownRuleSet", non_retryable=True) from None


def _relationship_ids(programme_id: str, round_id: str, pairs: list[PairScore]) -> list[str]:
    """One relationship per pair: a mentee's first pair (by mentor id) keeps the id a round
    always gave its mentee, further pairs name their mentor too."""
    seen: set[str] = set()
    ids = []
    for pair in sorted(pairs, key=lambda p: (p.mentee_id, p.mentor_id)):
        first = pair.mentee_id not in seen
        seen.add(pair.mentee_id)
        ids.append((pair.mentee_id, pair.mentor_id,
                    round_relationship_id(programme_id, round_id, pair.mentee_id, None if first else pair.mentor_id)))  # fmt: skip
    by_pair = {(mentee, mentor): rid for mentee, mentor, rid in ids}
    return [by_pair[p.mentee_id, p.mentor_id] for p in pairs]
