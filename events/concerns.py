"""Concerns: a party or a coordinator raises one with the coordinators; the relationship is at
risk until a coordinator, or the side that raised it, resolves it."""

from __future__ import annotations

from events.commands import Party, RaiseConcern, ResolveConcern
from events.decision import OPEN_PHASES, PARTIES_OR_COORDINATORS, Changes, Emitter, Stage, is_coordinator
from events.model import ConcernRaised, ConcernResolved
from events.refusals import RefusalCode, Rejection, refuse
from events.state import OpenConcern, RelationshipState

stage = Stage("concerns")

_RESOLVERS_ONLY = "only a coordinator or whoever raised the concern may resolve it"


@stage.command(RaiseConcern, phases=OPEN_PHASES, senders=PARTIES_OR_COORDINATORS)
def raise_concern(command: RaiseConcern, emit: Emitter, party: Party | None) -> Rejection | None:
    emit(ConcernRaised, concern_id=command.command_id, party=party, raised_by=command.actor_id, text=command.text)
    return None


def _open(state: RelationshipState, command: ResolveConcern) -> Rejection | None:
    if command.concern_id not in state.open_concerns:
        return refuse(RefusalCode.NOT_FOUND, f"there is no open concern {command.concern_id}")
    return None


@stage.command(
    ResolveConcern,
    phases=OPEN_PHASES,
    senders=PARTIES_OR_COORDINATORS,
    who="a coordinator, or the side that raised it",
    condition="while the concern is open",
    requires=_open,
    refusal=_RESOLVERS_ONLY,
)
def resolve_concern(command: ResolveConcern, emit: Emitter, party: Party | None) -> Rejection | None:
    state = emit.current
    concern = state.open_concerns[command.concern_id]
    raised_by_actor = concern.party is not None and state.party_of(command.actor_id) == concern.party
    if not (is_coordinator(state, command.actor_id) or raised_by_actor):
        return refuse(RefusalCode.NOT_ALLOWED, _RESOLVERS_ONLY)
    emit(ConcernResolved, concern_id=command.concern_id, resolved_by=command.actor_id, resolution=command.resolution)
    return None


@stage.evolves(ConcernRaised)
def _raised(event: ConcernRaised, state: RelationshipState) -> Changes:
    concern = OpenConcern(party=event.party, raised_at=event.occurred_at)
    return {"open_concerns": {**state.open_concerns, event.concern_id: concern}, "concerns_raised": state.concerns_raised + 1}


@stage.evolves(ConcernResolved)
def _resolved(event: ConcernResolved, state: RelationshipState) -> Changes:
    return {"open_concerns": {key: value for key, value in state.open_concerns.items() if key != event.concern_id}}
