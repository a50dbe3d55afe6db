"""Matching: a mentor is proposed, both sides answer, and a confirmed match opens the agreement."""

from __future__ import annotations

from datetime import timedelta

from events.commands import AcceptMatch, Command, DeclineMatch, Party, ProposeMatch
from events.decision import PARTIES, Changes, Emitter, Requirement, Sender, Stage
from events.ending import close
from events.model import (
    ClosureReason,
    MatchAccepted,
    MatchConfirmed,
    MatchDeclined,
    MatchProposalExpired,
    MatchProposed,
)
from events.refusals import RefusalCode, Rejection, refuse
from events.state import MatchCandidate, Phase, RelationshipState, joined

stage = Stage("matching")


def _proposal_pending(verb: str) -> Requirement:
    def pending(state: RelationshipState, command: Command) -> Rejection | None:
        return refuse(RefusalCode.NOT_FOUND, f"there is no match proposal to {verb}") if state.candidate is None else None

    return pending


@stage.command(
    ProposeMatch,
    phases=(Phase.MATCHING,),
    senders=frozenset({Sender.COORDINATOR, Sender.MATCHING}),
    who="a coordinator; anyone but the mentee if the programme names no coordinators",
    condition="no proposal pending",
    open_without_coordinators=True,
)
def propose_match(command: ProposeMatch, emit: Emitter, sender: Party | None) -> Rejection | None:
    state = emit.current
    if command.actor_id == state.mentee_id:
        return refuse(RefusalCode.NOT_ALLOWED, "the mentee cannot propose their own mentor")
    if command.mentor_id == state.mentee_id:
        return refuse(RefusalCode.CONFLICT, "mentor_id must differ from the mentee")
    if command.mentor_id in state.declined_mentor_ids:
        return refuse(RefusalCode.CONFLICT, f"mentor {command.mentor_id} was already proposed and declined or let it expire")
    if state.candidate is not None:
        return refuse(
            RefusalCode.CONFLICT, f"mentor {state.candidate.mentor_id} is already proposed; wait for an answer or expiry"
        )
    emit(
        MatchProposed,
        mentor_id=command.mentor_id,
        proposed_by=command.actor_id,
        expires_at=emit.now + timedelta(days=state.settings.proposal_ttl_days),
        explanation=command.explanation,
        score=command.score,
    )
    return None


@stage.command(
    AcceptMatch,
    phases=(Phase.MATCHING,),
    senders=PARTIES,
    who="the mentee, the proposed mentor",
    condition="a proposal is pending",
    requires=_proposal_pending("accept"),
)
def accept_match(command: AcceptMatch, emit: Emitter, party: Party) -> Rejection | None:
    state = emit.current
    assert state.candidate is not None
    if party in state.candidate.accepted_by:
        return refuse(RefusalCode.CONFLICT, f"the {party} has already accepted this proposal")
    emit(MatchAccepted, party=party, accepted_by=command.actor_id)
    if len(state.candidate.accepted_by) == 1:
        emit(
            MatchConfirmed,
            mentor_id=state.candidate.mentor_id,
            agreement_due_at=emit.now + timedelta(days=state.settings.agreement_ttl_days),
        )
    return None


@stage.command(
    DeclineMatch,
    phases=(Phase.MATCHING,),
    # The pool withdraws a proposal whose mentor has no free slot, on the mentor's behalf.
    senders=PARTIES | {Sender.MATCHING},
    who="the mentee, the proposed mentor",
    condition="a proposal is pending",
    requires=_proposal_pending("decline"),
)
def decline_match(command: DeclineMatch, emit: Emitter, party: Party | None) -> Rejection | None:
    candidate_declined(emit, party or "mentor", command.actor_id, command.reason)
    return None


def candidate_declined(emit: Emitter, party: Party, declined_by: str, reason: str) -> None:
    """The proposal is off; matching ends unmatched once it has run out of attempts."""
    state = emit.current
    assert state.candidate is not None
    emit(MatchDeclined, mentor_id=state.candidate.mentor_id, party=party, declined_by=declined_by, reason=reason)
    _unmatched_once_out_of_attempts(emit)


@stage.deadline("match_proposal_expiry")
def proposal_expired(emit: Emitter) -> None:
    state = emit.current
    assert state.candidate is not None
    emit(MatchProposalExpired, mentor_id=state.candidate.mentor_id)
    _unmatched_once_out_of_attempts(emit)


def _unmatched_once_out_of_attempts(emit: Emitter) -> None:
    state = emit.current
    if state.match_attempts >= state.settings.max_match_attempts:
        close(emit, ClosureReason.UNMATCHED, None)


@stage.deadline("matching_timeout")
def matching_timed_out(emit: Emitter) -> None:
    close(emit, ClosureReason.UNMATCHED, None)


# -- state changes ---------------------------------------------------------------------------


@stage.evolves(MatchProposed)
def _proposed(event: MatchProposed, state: RelationshipState) -> Changes:
    return {
        "candidate": MatchCandidate(mentor_id=event.mentor_id, proposed_at=event.occurred_at, expires_at=event.expires_at)
    }


@stage.evolves(MatchAccepted)
def _accepted(event: MatchAccepted, state: RelationshipState) -> Changes:
    assert state.candidate is not None
    return {"candidate": state.candidate.model_copy(update={"accepted_by": joined(state.candidate.accepted_by, event.party)})}


@stage.evolves(MatchDeclined)
def _declined(event: MatchDeclined, state: RelationshipState) -> Changes:
    return _candidate_gone(state, event.mentor_id)


@stage.evolves(MatchProposalExpired)
def _expired(event: MatchProposalExpired, state: RelationshipState) -> Changes:
    return _candidate_gone(state, event.mentor_id)


def _candidate_gone(state: RelationshipState, mentor_id: str) -> Changes:
    return {
        "candidate": None,
        "match_attempts": state.match_attempts + 1,
        "declined_mentor_ids": (*state.declined_mentor_ids, mentor_id),
    }


@stage.evolves(MatchConfirmed)
def _confirmed(event: MatchConfirmed, state: RelationshipState) -> Changes:
    return {"phase": Phase.AGREEMENT, "mentor_id": event.mentor_id, "candidate": None, "agreement_due_at": event.agreement_due_at}
