"""Matching I/O: profiles and mentor slots in PostgreSQL, and the activities that reserve
slots, find a relationship its best candidate, and run a programme's matching round
(migrations/0004_matching.sql; the scoring and the solver are pure, in `pairing`).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any, TypeVar

import asyncpg
import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from temporalio import activity
from temporalio.client import (
    Client,
    WithStartWorkflowOperation,
    WorkflowUpdateFailedError,
)
from temporalio.common import WorkflowIDConflictPolicy, WorkflowIDReusePolicy
from temporalio.exceptions import ApplicationError, FailureError, WorkflowAlreadyStartedError
from temporalio.service import RPCError, RPCStatusCode

from events.settings import ProgrammeSettings
from pairing.profiles import Identifier, MenteeProfile, MentorProfile, Role
from pairing.requests import Candidate, CandidateRequest, SlotRelease, SlotRequest, SlotReservation
from pairing.scoring import PairScore, score_matrix, score_pair, weekly_slots
from pairing.settings import MatchingSettings, Objective
from pairing.solver import SolveStats, solve
from workflows.relationship import CommandResult, Relationship, RelationshipInput
from workflows.start_options import relationship_start_options, relationship_workflow_id

log = logging.getLogger("mentorflow.matching")

T = TypeVar("T")

# -- messages ------------------------------------------------------------------------------


class RoundRequest(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    programme_id: Identifier
    round_id: Identifier
    # The week whose calendar availability is compared in (daylight saving differs).
    week_of: date
    # Only these mentees (default: every active mentee who holds no slot yet).
    mentee_ids: tuple[Identifier, ...] | None = None
    # Overrides the programme's stored objective for this round.
    objective: Objective | None = None


class RoundMembers(BaseModel):
    model_config = ConfigDict(frozen=True)

    mentees: int
    mentors: int
    # False when the round had already collected them (a re-run): the first list stands.
    collected_now: bool


class RoundSolution(BaseModel):
    model_config = ConfigDict(frozen=True)

    mentees: int
    mentors: int
    matched: int
    total_points: int
    # Mean score (0–100) of the matched pairs.
    mean_score: float
    objective: Objective
    solver_seconds: float
    pricing_rounds: int
    # False when the round had already been solved (a re-run): the stored pairs stand.
    solved_now: bool


class ProposeRequest(BaseModel):
    """Propose the next batch of a solved round's pairs to their relationships."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    programme_id: Identifier
    round_id: Identifier
    # Who the proposals come from (must be a coordinator if the programme names any).
    coordinator_id: Identifier
    # None: each relationship reads its programme's settings as it starts.
    relationship_settings: ProgrammeSettings | None = None
    batch_size: int = Field(default=200, ge=1, le=2000)


class ProposeBatch(BaseModel):
    model_config = ConfigDict(frozen=True)

    proposed: int
    already_proposed: int
    not_proposed: int
    remaining: int


# -- ids -----------------------------------------------------------------------------------


def round_relationship_id(programme_id: str, round_id: str, mentee_id: str) -> str:
    """The relationship a round opens for a mentee: the same on every run of the round."""
    digest = hashlib.sha256(f"{programme_id}\x00{round_id}\x00{mentee_id}".encode()).hexdigest()[:24]
    return f"round-{digest}"


def round_command_id(relationship_id: str) -> str:
    return f"{relationship_id}-propose"


def round_workflow_id(programme_id: str, round_id: str) -> str:
    return f"matching-round/{programme_id}/{round_id}"


# -- profiles ------------------------------------------------------------------------------


@dataclass
class SaveCounts:
    inserted: int = 0
    updated: int = 0
    unchanged: int = 0


def _profile_json(profile: MentorProfile | MenteeProfile) -> str:
    return json.dumps(profile.model_dump(mode="json"), separators=(",", ":"), sort_keys=True)


def _load(role: Role, document: str) -> MentorProfile | MenteeProfile:
    data = json.loads(document)
    return MentorProfile.model_validate(data) if role == "mentor" else MenteeProfile.model_validate(data)


class ProfileStore:
    """Mentor and mentee profiles and programme matching settings in PostgreSQL."""

    def __init__(self, pool: asyncpg.Pool):
        self._pool = pool

    async def save_profiles(self, programme_id: str, profiles: Sequence[MentorProfile | MenteeProfile]) -> SaveCounts:
        """Insert or update; a profile equal to the stored one is left alone (updated_at too)."""
        counts = SaveCounts()
        for start in range(0, len(profiles), 1000):
            batch = profiles[start : start + 1000]
            rows = await self._pool.fetch(
                """INSERT INTO matching_profiles AS p (programme_id, role, participant_id, profile, capacity, active)
                   SELECT $1, role, participant_id, profile, capacity, active
                     FROM unnest($2::text[], $3::text[], $4::jsonb[], $5::int[], $6::bool[])
                          AS t(role, participant_id, profile, capacity, active)
                   ON CONFLICT (programme_id, role, participant_id) DO UPDATE
                      SET profile = EXCLUDED.profile, capacity = EXCLUDED.capacity,
                          active = EXCLUDED.active, updated_at = now()
                    WHERE (p.profile, p.capacity, p.active) IS DISTINCT FROM
                          (EXCLUDED.profile, EXCLUDED.capacity, EXCLUDED.active)
                   RETURNING (xmax = 0) AS inserted""",
                programme_id,
                [p.role for p in batch],
                [p.participant_id for p in batch],
                [_profile_json(p) for p in batch],
                [p.capacity if isinstance(p, MentorProfile) else 0 for p in batch],
                [p.active for p in batch],
            )
            inserted = sum(1 for row in rows if row["inserted"])
            counts.inserted += inserted
            counts.updated += len(rows) - inserted
            counts.unchanged += len(batch) - len(rows)
        return counts

    async def get_profile(self, programme_id: str, role: Role, participant_id: str) -> MentorProfile | MenteeProfile | None:
        document = await self._pool.fetchval(
            "SELECT profile FROM matching_profiles WHERE programme_id = $1 AND role = $2 AND participant_id = $3",
            programme_id, role, participant_id,
        )  # fmt: skip
        return None if document is None else _load(role, document)

    async def list_profiles(self, programme_id: str, role: Role) -> list[MentorProfile | MenteeProfile]:
        rows = await self._pool.fetch(
            "SELECT profile FROM matching_profiles WHERE programme_id = $1 AND role = $2 ORDER BY participant_id",
            programme_id, role,
        )  # fmt: skip
        return [_load(role, row["profile"]) for row in rows]

    async def slots_taken(self, programme_id: str) -> dict[str, int]:
        rows = await self._pool.fetch(
            "SELECT mentor_id, count(*) AS taken FROM mentor_slots WHERE programme_id = $1 GROUP BY mentor_id",
            programme_id,
        )
        return {row["mentor_id"]: row["taken"] for row in rows}

    async def get_settings(self, programme_id: str, connection: asyncpg.Connection | None = None) -> MatchingSettings:
        document = await (connection or self._pool).fetchval(
            "SELECT settings FROM matching_settings WHERE programme_id = $1", programme_id
        )
        return MatchingSettings() if document is None else MatchingSettings.model_validate_json(document)

    async def save_settings(self, programme_id: str, settings: MatchingSettings) -> bool:
        """Store the programme's matching settings; returns False when nothing changed."""
        status = await self._pool.execute(
            """INSERT INTO matching_settings AS s (programme_id, settings) VALUES ($1, $2::jsonb)
               ON CONFLICT (programme_id) DO UPDATE SET settings = EXCLUDED.settings, updated_at = now()
                WHERE s.settings IS DISTINCT FROM EXCLUDED.settings""",
            programme_id,
            settings.model_dump_json(),
        )
        return bool(status.endswith(" 1"))


# -- slots ---------------------------------------------------------------------------------


class MentorSlots:
    """Mentor capacity, reserved atomically (see reserve_mentor_slot in the migration)."""

    def __init__(self, pool: asyncpg.Pool):
        self._pool = pool

    async def reserve(self, request: SlotRequest) -> SlotReservation:
        row = await self._pool.fetchrow(
            "SELECT outcome, released_mentor_id FROM reserve_mentor_slot($1, $2, $3, $4)",
            request.programme_id, request.relationship_id, request.mentor_id, request.mentee_id,
        )  # fmt: skip
        assert row is not None
        return SlotReservation(
            outcome=row["outcome"], mentor_id=request.mentor_id, released_mentor_id=row["released_mentor_id"]
        )

    async def release(self, request: SlotRelease) -> str | None:
        """Returns the mentor whose slot was given back, or None if the relationship held none."""
        released: str | None = await self._pool.fetchval(
            """DELETE FROM mentor_slots
                WHERE programme_id = $1 AND relationship_id = $2 AND ($3::text IS NULL OR mentor_id = $3)
               RETURNING mentor_id""",
            request.programme_id, request.relationship_id, request.mentor_id,
        )  # fmt: skip
        return released

    async def held_by(self, programme_id: str, relationship_id: str) -> str | None:
        mentor: str | None = await self._pool.fetchval(
            "SELECT mentor_id FROM mentor_slots WHERE programme_id = $1 AND relationship_id = $2",
            programme_id, relationship_id,
        )  # fmt: skip
        return mentor


# -- the activities ------------------------------------------------------------------------


async def _in_thread(work: Callable[[], T]) -> T:
    """CPU-heavy work off the event loop, heartbeating while it runs."""
    task = asyncio.ensure_future(asyncio.to_thread(work))
    while True:
        done, _ = await asyncio.wait({task}, timeout=5)
        if done:
            return task.result()
        if activity.in_activity():
            activity.heartbeat()


class MatchingActivities:
    """Registered as bound methods; `client` and `task_queue` are where rounds start relationships."""

    def __init__(self, pool: asyncpg.Pool, client: Client | None = None, task_queue: str | None = None):
        self._pool = pool
        self._client = client
        self._task_queue = task_queue
        self.profiles = ProfileStore(pool)
        self.slots = MentorSlots(pool)

    def all_activities(self) -> list[Callable[..., Any]]:
        """Every matching activity, for the worker."""
        return [
            self.reserve_mentor_slot,
            self.release_mentor_slot,
            self.best_candidate,
            self.collect_round_members,
            self.solve_round,
            self.propose_round_pairs,
        ]

    @activity.defn(name="reserve_mentor_slot")
    async def reserve_mentor_slot(self, request: SlotRequest) -> SlotReservation:
        """Reserve a slot of the mentor for the relationship; idempotent per relationship."""
        return await self.slots.reserve(request)

    @activity.defn(name="release_mentor_slot")
    async def release_mentor_slot(self, request: SlotRelease) -> str | None:
        """Give the relationship's slot back (on decline, expiry, closure); idempotent."""
        return await self.slots.release(request)

    @activity.defn(name="best_candidate")
    async def best_candidate(self, request: CandidateRequest) -> Candidate | None:
        """The best mentor with a free slot for the mentee, with the slot reserved for the
        relationship; None when nobody fits. A retry returns the mentor already reserved."""
        mentee = await self.profiles.get_profile(request.programme_id, "mentee", request.mentee_id)
        if not isinstance(mentee, MenteeProfile):
            log.info("best_candidate: no profile for mentee %s in %s", request.mentee_id, request.programme_id)
            return None
        settings = await self.profiles.get_settings(request.programme_id)
        week_of = datetime.now(UTC).date()
        held = await self.slots.held_by(request.programme_id, request.relationship_id)
        if held is not None and held in request.exclude_mentor_ids:
            await self.slots.release(SlotRelease(programme_id=request.programme_id,
                                                 relationship_id=request.relationship_id, mentor_id=held))  # fmt: skip
            held = None
        rows = await self._pool.fetch(
            """SELECT p.participant_id, p.profile
                 FROM matching_profiles p
                 LEFT JOIN mentor_slots s ON s.programme_id = p.programme_id AND s.mentor_id = p.participant_id
                WHERE p.programme_id = $1 AND p.role = 'mentor' AND p.active
                  AND NOT (p.participant_id = ANY($2::text[]))
                GROUP BY p.participant_id, p.profile, p.capacity
               HAVING p.capacity > count(s.relationship_id) OR p.participant_id = $3""",
            request.programme_id, list(request.exclude_mentor_ids), held,
        )  # fmt: skip
        mentee_slots = weekly_slots(mentee, week_of)
        scored: list[PairScore] = []
        for row in rows:
            mentor = _load("mentor", row["profile"])
            assert isinstance(mentor, MentorProfile)
            pair = score_pair(mentee, mentor, settings, week_of, mentee_slots=mentee_slots)
            if pair.excluded is None and (pair.points > 0 or settings.objective == "max_matched"):
                scored.append(pair)
        if held is not None:
            kept = next((p for p in scored if p.mentor_id == held), None)
            if kept is not None:
                return Candidate(mentor_id=held, score=kept.score, points=kept.points, explanation=kept.explanation)
            # The held mentor no longer fits (profile changed): give the slot back, choose anew.
            await self.slots.release(SlotRelease(programme_id=request.programme_id,
                                                 relationship_id=request.relationship_id, mentor_id=held))  # fmt: skip
        # Best first; ties by id, so the same request gets the same answer.
        scored.sort(key=lambda p: (-p.points, p.mentor_id))
        for pair in scored:
            reservation = await self.slots.reserve(
                SlotRequest(programme_id=request.programme_id, relationship_id=request.relationship_id,
                            mentor_id=pair.mentor_id, mentee_id=request.mentee_id)  # fmt: skip
            )
            if reservation.reserved:
                return Candidate(mentor_id=pair.mentor_id, score=pair.score, points=pair.points,
                                 explanation=pair.explanation)  # fmt: skip
            # Someone else took the last slot since we looked: on to the next candidate.
        return None

    # -- programme matching rounds

    async def round_report(self, programme_id: str, round_id: str) -> tuple[dict[str, Any] | None, list[dict[str, Any]]]:
        """A solved round's summary and pairs (with the outcome of each proposal), for people."""
        summary = await self._pool.fetchval(
            "SELECT summary FROM matching_rounds WHERE programme_id = $1 AND round_id = $2", programme_id, round_id
        )
        pairs = await self._pool.fetch(
            """SELECT mentee_id, mentor_id, relationship_id, score, explanation, outcome FROM matching_round_pairs
                WHERE programme_id = $1 AND round_id = $2 ORDER BY mentee_id""",
            programme_id, round_id,
        )  # fmt: skip
        return (None if summary is None else json.loads(summary)), [dict(row) for row in pairs]

    @activity.defn(name="collect_round_members")
    async def collect_round_members(self, request: RoundRequest) -> RoundMembers:
        """Fix who takes part in the round: active mentees holding no slot, active mentors
        with a free slot. Stored, so that a re-run of the round sees the same cohort."""
        settings = await self.profiles.get_settings(request.programme_id)
        objective = request.objective or settings.objective
        async with self._pool.acquire() as connection, connection.transaction():
            created = await connection.execute(
                """INSERT INTO matching_rounds (programme_id, round_id, objective, week_of) VALUES ($1, $2, $3, $4)
                   ON CONFLICT DO NOTHING""",
                request.programme_id, request.round_id, objective, request.week_of,
            )  # fmt: skip
            if created.endswith(" 1"):
                await connection.execute(
                    """INSERT INTO matching_round_members (programme_id, round_id, role, participant_id)
                       SELECT p.programme_id, $2, 'mentee', p.participant_id
                         FROM matching_profiles p
                        WHERE p.programme_id = $1 AND p.role = 'mentee' AND p.active
                          AND ($3::text[] IS NULL OR p.participant_id = ANY($3::text[]))
                          AND NOT EXISTS (SELECT 1 FROM mentor_slots s
                                           WHERE s.programme_id = p.programme_id AND s.mentee_id = p.participant_id)""",
                    request.programme_id, request.round_id,
                    None if request.mentee_ids is None else list(request.mentee_ids),
                )  # fmt: skip
                await connection.execute(
                    """INSERT INTO matching_round_members (programme_id, round_id, role, participant_id)
                       SELECT p.programme_id, $2, 'mentor', p.participant_id
                         FROM matching_profiles p
                        WHERE p.programme_id = $1 AND p.role = 'mentor' AND p.active
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
        """Solve the round's assignment for the whole cohort at once and store it with its
        slots in one transaction; a round that is already solved returns what is stored."""
        programme_id, round_id = request.programme_id, request.round_id
        async with self._pool.acquire() as connection, connection.transaction():
            # Serialises two runs of the same round (the second then finds it solved).
            round_row = await connection.fetchrow(
                """SELECT objective, week_of, solved_at, summary FROM matching_rounds
                    WHERE programme_id = $1 AND round_id = $2 FOR UPDATE""",
                programme_id, round_id,
            )  # fmt: skip
            if round_row is None:
                raise ApplicationError(f"round {round_id} of {programme_id} has not collected its members",
                                       type="RoundNotCollected", non_retryable=True)  # fmt: skip
            if round_row["solved_at"] is not None:
                return RoundSolution.model_validate({**json.loads(round_row["summary"]), "solved_now": False})
            settings = await self.profiles.get_settings(programme_id, connection)
            objective: Objective = round_row["objective"]
            # Lock the round's mentors (in a fixed order: no deadlock with another round) so
            # that no reservation slips in between counting free slots and taking them.
            mentor_rows = await connection.fetch(
                """SELECT p.participant_id, p.profile, p.capacity,
                          (SELECT count(*) FROM mentor_slots s
                            WHERE s.programme_id = p.programme_id AND s.mentor_id = p.participant_id) AS taken
                     FROM matching_profiles p
                     JOIN matching_round_members m
                       ON m.programme_id = p.programme_id AND m.role = 'mentor' AND m.participant_id = p.participant_id
                    WHERE p.programme_id = $1 AND m.round_id = $2 AND p.role = 'mentor' AND p.active
                    ORDER BY p.participant_id
                      FOR UPDATE OF p""",
                programme_id, round_id,
            )  # fmt: skip
            mentee_rows = await connection.fetch(
                """SELECT p.participant_id, p.profile
                     FROM matching_profiles p
                     JOIN matching_round_members m
                       ON m.programme_id = p.programme_id AND m.role = 'mentee' AND m.participant_id = p.participant_id
                    WHERE p.programme_id = $1 AND m.round_id = $2 AND p.role = 'mentee' AND p.active
                      AND NOT EXISTS (SELECT 1 FROM mentor_slots s
                                       WHERE s.programme_id = p.programme_id AND s.mentee_id = p.participant_id)
                    ORDER BY p.participant_id""",
                programme_id, round_id,
            )  # fmt: skip
            mentors = [_mentor(row["profile"]) for row in mentor_rows]
            mentees = [_mentee(row["profile"]) for row in mentee_rows]
            free = np.array([max(0, row["capacity"] - row["taken"]) for row in mentor_rows], dtype=np.int64)
            week_of: date = round_row["week_of"]

            def work() -> tuple[list[PairScore], SolveStats, float]:
                started = time.perf_counter()
                scores = score_matrix(mentees, mentors, settings, week_of)
                assignment = solve(scores, free, objective)
                pairs = [score_pair(mentees[i], mentors[j], settings, week_of) for i, j in assignment.pairs()]
                return pairs, assignment.stats, time.perf_counter() - started

            pairs, stats, seconds = await _in_thread(work)
            relationship_ids = [round_relationship_id(programme_id, round_id, p.mentee_id) for p in pairs]
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
            total = sum(p.points for p in pairs)
            solution = RoundSolution(
                mentees=len(mentees), mentors=len(mentors), matched=len(pairs), total_points=total,
                mean_score=round(sum(p.score for p in pairs) / len(pairs), 1) if pairs else 0.0,
                objective=objective, solver_seconds=round(seconds, 3), pricing_rounds=stats.pricing_rounds,
                solved_now=True,
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
        relationship ids, command ids and update ids are derived from the round and the mentee."""
        if self._client is None or self._task_queue is None:
            raise ApplicationError("these activities were built without a Temporal client", non_retryable=True)
        rows = await self._pool.fetch(
            """SELECT mentee_id, mentor_id, relationship_id, score, explanation FROM matching_round_pairs
                WHERE programme_id = $1 AND round_id = $2 AND proposed_at IS NULL
                ORDER BY mentee_id LIMIT $3""",
            request.programme_id, request.round_id, request.batch_size,
        )  # fmt: skip
        gate = asyncio.Semaphore(16)

        async def propose(row: asyncpg.Record) -> str:
            async with gate:
                return await self._propose(request, row)

        outcomes = await asyncio.gather(*(propose(row) for row in rows))
        for row, outcome in zip(rows, outcomes, strict=True):
            if outcome.startswith("rejected") or outcome == "relationship closed":
                # The relationship will never use this slot.
                await self.slots.release(SlotRelease(programme_id=request.programme_id,
                                                     relationship_id=row["relationship_id"]))  # fmt: skip
        await self._pool.execute(
            """UPDATE matching_round_pairs p SET proposed_at = now(), outcome = t.outcome
                 FROM unnest($3::text[], $4::text[]) AS t(mentee_id, outcome)
                WHERE p.programme_id = $1 AND p.round_id = $2 AND p.mentee_id = t.mentee_id""",
            request.programme_id, request.round_id, [row["mentee_id"] for row in rows], list(outcomes),
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
        start = WithStartWorkflowOperation(
            Relationship.run,
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


def _mentor(document: str) -> MentorProfile:
    try:
        return MentorProfile.model_validate_json(document)
    except ValidationError as error:
        raise ApplicationError(f"a stored mentor profile no longer validates: {error.error_count()} errors",
                               non_retryable=True) from None  # fmt: skip


def _mentee(document: str) -> MenteeProfile:
    try:
        return MenteeProfile.model_validate_json(document)
    except ValidationError as error:
        raise ApplicationError(f"a stored mentee profile no longer validates: {error.error_count()} errors",
                               non_retryable=True) from None  # fmt: skip
