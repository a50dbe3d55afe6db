"""The Relationship workflow and the mentor pool: the slot a proposed mentor takes, given
back on decline, expiry and closure; asking the pool for a mentor; checking a matching
round's proposal against the round's records."""

from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from events.commands import MATCHING_ACTOR, MATCHING_ACTORS, Command, DeclineMatch, ProposeMatch
    from events.decider import decide
    from events.model import AnyEvent, ClosureBegun, MatchDeclined, MatchProposalExpired, MatchProposed, RelationshipClosed
    from events.refusals import Rejection
    from events.state import Phase, RelationshipState
    from pairing.requests import (
        CandidateRequest,
        RoundProposalClaim,
        SlotRelease,
        SlotRequest,
    )

from workflows.activity_refs import BEST_CANDIDATE, CONFIRM_ROUND_PROPOSAL, RELEASE_MENTOR_SLOT, RESERVE_MENTOR_SLOT
from workflows.calls import call_activity

if TYPE_CHECKING:
    from workflows.shell import RelationshipShell


def slot_work_for(
    event: AnyEvent, before: RelationshipState | None, *, reserve_every_proposal: bool = False
) -> list[tuple[str, str | None]]:
    """What an event asks of the mentor pool's capacity (see `MentorPool._manage_mentor_slots`)."""
    # The pool's own proposal comes with its slot reserved. Every other proposal reserves
    # one (a round's is already reserved: the reservation is idempotent per relationship),
    # so a mentor's load counts it however it was made. Runs that began before that
    # reserved only for hand proposals without a score.
    if isinstance(event, MatchProposed):
        if reserve_every_proposal:
            return [("reserve", event.mentor_id)] if event.proposed_by != MATCHING_ACTOR else []
        if event.proposed_by not in MATCHING_ACTORS and event.score is None:
            return [("reserve", event.mentor_id)]
    if isinstance(event, (MatchDeclined, MatchProposalExpired)):
        return [("release", event.mentor_id)]
    if isinstance(event, ClosureBegun) or (
        isinstance(event, RelationshipClosed) and before is not None and before.phase is not Phase.CLOSING
    ):
        return [("release", None)]
    return []


class MentorPool:
    # Assigned by these methods, first set in the workflow's __init__ (declared for the type checker).
    _pool_asked_for: int | None
    async def _manage_mentor_slots(self: RelationshipShell) -> None:
        """Reserve the slot of a mentor proposed by hand; give slots back on decline, expiry
        and closure. A mentor with no free slot is withdrawn, and the search goes on.

        Local activities (one marker each): reservations and releases are idempotent per
        relationship, so one run again by a retried task changes nothing."""
        state = self.current
        while self._slot_work:
            action, mentor_id = self._slot_work.pop(0)
            if action == "release":
                release = SlotRelease(
                    programme_id=state.programme_id, relationship_id=state.relationship_id, mentor_id=mentor_id
                )
                await call_activity(RELEASE_MENTOR_SLOT, release, summary="Give the mentor's slot back")
                continue
            assert mentor_id is not None
            request = SlotRequest(
                programme_id=state.programme_id,
                relationship_id=state.relationship_id,
                mentor_id=mentor_id,
                mentee_id=state.mentee_id,
            )
            reservation = await call_activity(RESERVE_MENTOR_SLOT, request, summary="Reserve the proposed mentor's slot")
            candidate = self.current.candidate
            if reservation.outcome == "full" and candidate is not None and candidate.mentor_id == mentor_id:
                withdraw = DeclineMatch(
                    command_id=f"pool-full-{self.current.match_attempts + 1}",
                    actor_id=MATCHING_ACTOR,
                    reason="the mentor has no free slot",
                )
                decision = decide(self._deciding(), withdraw, workflow.now())
                if not isinstance(decision, Rejection):
                    self._apply(decision)
        if self._outbox:
            await self._flush()

    async def _round_holds(self: RelationshipShell, command: Command) -> bool:
        """Whether a matching round really settled on this pair (a proposal sent as the round)."""
        assert isinstance(command, ProposeMatch)
        claim = RoundProposalClaim(
            programme_id=self.current.programme_id,
            relationship_id=self.current.relationship_id,
            mentor_id=command.mentor_id,
        )
        confirmed = await call_activity(CONFIRM_ROUND_PROPOSAL, claim, summary="Check the matching round's proposal")
        return confirmed

    async def _ask_pool_for_a_mentor(self: RelationshipShell) -> bool:
        """Unmatched and nobody proposed: ask the mentor pool for its best available
        candidate (its slot comes reserved) once per match attempt. True if proposed."""
        state = self.current
        if state.phase is not Phase.MATCHING or state.candidate is not None or self._pool_asked_for == state.match_attempts:
            return False
        if state.match_attempts == 0 and not self._input.ask_pool_first:
            return False
        self._pool_asked_for = state.match_attempts
        request = CandidateRequest(
            programme_id=state.programme_id,
            relationship_id=state.relationship_id,
            mentee_id=state.mentee_id,
            exclude_mentor_ids=state.declined_mentor_ids,
        )
        candidate = await call_activity(
            BEST_CANDIDATE,
            request,
            timeout=timedelta(minutes=2),
            summary=f"Ask the mentor pool (attempt {state.match_attempts + 1})",
        )
        if candidate is None:
            return False
        command = ProposeMatch(
            command_id=f"pool-{state.match_attempts + 1}",
            actor_id=MATCHING_ACTOR,
            mentor_id=candidate.mentor_id,
            explanation=candidate.explanation,
            score=candidate.score,
        )
        decision = decide(self._deciding(), command, workflow.now())
        if isinstance(decision, Rejection):  # a proposal arrived meanwhile
            proposed = self.current.candidate
            if proposed is None:
                self._slot_work.append(("release", candidate.mentor_id))
            elif proposed.mentor_id != candidate.mentor_id:
                # The relationship holds one slot: move it back to the mentor proposed.
                self._slot_work.append(("reserve", proposed.mentor_id))
            return False
        self._apply(decision)
        return True
