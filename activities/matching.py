"""Matching activities: reserve and give back mentor slots, find a relationship its best
candidate from the pool, and (from activities.matching_round) run a programme's matching
round. The data lives in PostgreSQL (activities/matching_store.py; migrations 0004_matching and
0009_mentor_load); the scoring and the solver are pure, in `pairing`.

This module is what the worker, the CLI and the tests import; it re-exports the round's
messages and ids.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from temporalio import activity

from activities.matching_round import (
    ProposeBatch,
    ProposeRequest,
    RoundActivities,
    RoundMembers,
    RoundRequest,
    RoundSolution,
    relationship_workflow_id,
    round_command_id,
    round_relationship_id,
    round_workflow_id,
)
from activities.matching_store import LEFT_THE_DIRECTORY, MentorSlots, ProfileStore, SaveCounts
from pairing.profiles import MenteeProfile, MentorProfile
from pairing.requests import Candidate, CandidateRequest, RoundProposalClaim, SlotRelease, SlotRequest, SlotReservation
from pairing.scoring import PairScore, score_pair, weekly_slots

__all__ = [
    "Candidate", "CandidateRequest", "MatchingActivities", "MentorSlots", "ProfileStore", "ProposeBatch",
    "ProposeRequest", "RoundMembers", "RoundRequest", "RoundSolution", "SaveCounts", "SlotRelease", "SlotRequest",
    "SlotReservation", "relationship_workflow_id", "round_command_id", "round_relationship_id", "round_workflow_id",
]  # fmt: skip

log = logging.getLogger("mentorflow.matching")


class MatchingActivities(RoundActivities):
    """Registered as bound methods; `client` and `task_queue` are where rounds start relationships."""

    def all_activities(self) -> list[Callable[..., Any]]:
        """Every matching activity, for the worker."""
        return [
            self.reserve_mentor_slot,
            self.release_mentor_slot,
            self.best_candidate,
            self.confirm_round_proposal,
            self.collect_round_members,
            self.solve_round,
            self.propose_round_pairs,
        ]

    @activity.defn(name="reserve_mentor_slot")
    async def reserve_mentor_slot(self, request: SlotRequest) -> SlotReservation:
        """Reserve a slot of the mentor for the relationship; idempotent per relationship.
        A mentor without a profile gets the slot recorded all the same: their load counts it."""
        return await self.slots.reserve(request)

    @activity.defn(name="confirm_round_proposal")
    async def confirm_round_proposal(self, claim: RoundProposalClaim) -> bool:
        """Whether a matching round of the programme settled on this mentor for this
        relationship: what a propose_match sent as `matching-round` must be (issue #12)."""
        found = await self._pool.fetchval(
            """SELECT EXISTS (SELECT 1 FROM matching_round_pairs
                               WHERE programme_id = $1 AND relationship_id = $2 AND mentor_id = $3)""",
            claim.programme_id, claim.relationship_id, claim.mentor_id,
        )  # fmt: skip
        return bool(found)

    @activity.defn(name="release_mentor_slot")
    async def release_mentor_slot(self, request: SlotRelease) -> str | None:
        """Give the relationship's slot back (on decline, expiry, closure); idempotent."""
        return await self.slots.release(request)

    @activity.defn(name="best_candidate")
    async def best_candidate(self, request: CandidateRequest) -> Candidate | None:
        """The best mentor with a free slot for the mentee, with the slot reserved for the
        relationship; None when nobody fits, when the mentee has left, or when their other
        open relationships are as many as their quota allows. A retry returns the mentor
        already reserved."""
        programme_id, relationship_id = request.programme_id, request.relationship_id
        mentee = await self.profiles.get_profile(programme_id, "mentee", request.mentee_id)
        if not isinstance(mentee, MenteeProfile):
            log.info("best_candidate: no profile for mentee %s in %s", request.mentee_id, programme_id)
            return None
        settings = await self.profiles.get_settings(programme_id)
        standing = await self.profiles.mentee_standing(programme_id, request.mentee_id, relationship_id)
        held = await self.slots.held_by(programme_id, relationship_id)
        excluded = {*request.exclude_mentor_ids, *standing.current_mentors}
        quota = settings.max_open_relationships_per_mentee if mentee.mentor_quota is None else mentee.mentor_quota
        busy = standing.other_relationships >= quota
        if held is not None and (standing.left or busy or held in excluded):
            await self.slots.release(SlotRelease(programme_id=programme_id, relationship_id=relationship_id,
                                                 mentor_id=held))  # fmt: skip
            held = None
        if standing.left or busy:
            log.info("best_candidate: mentee %s of %s has left or has %d other open relationships",
                     request.mentee_id, programme_id, standing.other_relationships)  # fmt: skip
            return None
        week_of = datetime.now(UTC).date()
        rows = await self._pool.fetch(
            f"""SELECT p.participant_id, p.profile
                  FROM matching_profiles p
                  LEFT JOIN mentor_slots s ON s.programme_id = p.programme_id AND s.mentor_id = p.participant_id
                 WHERE p.programme_id = $1 AND p.role = 'mentor' AND p.active
                   AND NOT (p.participant_id = ANY($2::text[]))
                   AND NOT {LEFT_THE_DIRECTORY.format(id="p.participant_id")}
                 GROUP BY p.participant_id, p.profile, p.capacity
                HAVING p.capacity > count(s.relationship_id) OR p.participant_id = $3""",
            programme_id, sorted(excluded), held,
        )  # fmt: skip
        mentee_slots = weekly_slots(mentee, week_of)
        scored: list[PairScore] = []
        for mentor in await self.profiles.load(programme_id, "mentor", [row["profile"] for row in rows]):
            assert isinstance(mentor, MentorProfile)
            pair = score_pair(mentee, mentor, settings, week_of, mentee_slots=mentee_slots,
                              has_mentor=standing.other_relationships > 0)  # fmt: skip
            if pair.excluded is None and (pair.points > 0 or settings.objective == "max_matched"):
                scored.append(pair)
        if held is not None:
            kept = next((p for p in scored if p.mentor_id == held), None)
            if kept is not None:
                return Candidate(mentor_id=held, score=kept.score, points=kept.points, explanation=kept.explanation)
            # The held mentor no longer fits (profile changed, or left): give the slot back, choose anew.
            await self.slots.release(SlotRelease(programme_id=programme_id, relationship_id=relationship_id,
                                                 mentor_id=held))  # fmt: skip
        # Best first; ties by id, so the same request gets the same answer.
        scored.sort(key=lambda p: (-p.points, p.mentor_id))
        for pair in scored:
            reservation = await self.slots.reserve(
                SlotRequest(programme_id=programme_id, relationship_id=relationship_id,
                            mentor_id=pair.mentor_id, mentee_id=request.mentee_id)  # fmt: skip
            )
            if reservation.reserved:
                return Candidate(mentor_id=pair.mentor_id, score=pair.score, points=pair.points,
                                 explanation=pair.explanation)  # fmt: skip
            # Someone else took the last slot since we looked: on to the next candidate.
        return None
