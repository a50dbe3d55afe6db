"""What every lifecycle stage builds its rules from: the declaration of a command (the phases
that accept it, who may send it), the guard that enforces it, and the `Emitter` decisions
write their events through.

Each stage module (events/matching.py, agreement.py, meetings.py, goals.py, concerns.py,
pause.py, review.py, health.py, closure.py) holds a `Stage`: its commands, declared with
`@stage.command(...)` on their decision, the state change of each of its events
(`@stage.evolves`) and what its deadlines do (`@stage.deadline`). events/decider.py gathers
the stages into the registries (`COMMAND_TYPES`, the handler tables, `evolve`); the contract
reference, the fuzz tests and the docs' tables read the same declarations.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any, TypeVar

from events.commands import DIRECTORY_ACTOR, MATCHING_ACTORS, Command, Party
from events.model import AnyEvent, CommandStamp, Event
from events.refusals import RefusalCode, Rejection, refuse
from events.state import Phase, RelationshipState

_EVENT_ID_NAMESPACE = uuid.UUID("5f0c6a4e-2b7d-4c1e-9a55-6d0b8f3e7a21")

# Every phase in which a relationship still takes commands from its people.
OPEN_PHASES = (Phase.MATCHING, Phase.AGREEMENT, Phase.ACTIVE, Phase.REVIEW)
CADENCE_PHASES = (Phase.ACTIVE, Phase.REVIEW)


class Sender(StrEnum):
    """Who may send a command."""

    MENTEE = "mentee"
    # The proposed mentor while matching, the matched one afterwards (`RelationshipState.party_of`).
    MENTOR = "mentor"
    COORDINATOR = "coordinator"
    # Internal: the directory reporting a leaver, and the mentor pool and matching rounds.
    DIRECTORY = "directory"
    MATCHING = "matching"


PARTIES = frozenset({Sender.MENTEE, Sender.MENTOR})
PARTIES_OR_COORDINATORS = PARTIES | {Sender.COORDINATOR}


class Pause(StrEnum):
    """What a pause means for a command."""

    ANY = "any"
    NOT_PAUSED = "not_paused"
    ONLY_PAUSED = "only_paused"


# The refusal for a sender outside the declared ones, and how the docs name the senders,
# for the usual sets; other sets declare their own words.
_REFUSALS = {
    PARTIES: "actor {actor} is not a party to this relationship",
    PARTIES | {Sender.MATCHING}: "actor {actor} is not a party to this relationship",
    PARTIES_OR_COORDINATORS: "actor {actor} is neither a party nor a coordinator of this relationship",
    frozenset({Sender.COORDINATOR, Sender.MATCHING}): "actor {actor} is not a coordinator of this programme",
}
_WHO = {PARTIES: "a party", PARTIES_OR_COORDINATORS: "a party or a coordinator"}

Decide = Callable[[Any, "Emitter", Any], Rejection | None]
Requirement = Callable[[RelationshipState, Any], Rejection | None]


@dataclass(frozen=True)
class CommandSpec:
    """One command's rules, declared once: which phases accept it, who may send it, and the
    decision that runs once both hold (it gets the sending party, or None for a coordinator
    or an internal actor)."""

    command: type[Command]
    phases: tuple[Phase, ...]
    senders: frozenset[Sender]
    decide: Decide
    # How the docs name the senders (finer print than `senders`: "once per round", "the other party").
    who: str
    pause: Pause = Pause.ANY
    # What must hold besides the phase, in words ("a proposal is pending").
    condition: str = ""
    # Checked after the phase and before the sender: the thing the command is about must exist.
    requires: Requirement | None = None
    # The refusal of a sender outside `senders` ("{actor}" is filled in).
    refusal: str = ""
    # propose_match: when the programme names no coordinators, anyone but the mentee may send it.
    open_without_coordinators: bool = False

    @property
    def name(self) -> str:
        return self.command.message_name

    def when(self, quote: Callable[[str], str] = str) -> str:
        """The phases and conditions in words: "active or review, not while paused"."""
        names = [quote(phase.value) for phase in self.phases]
        phases = names[0] if len(names) == 1 else ", ".join(names[:-1]) + " or " + names[-1]
        pause = {Pause.ANY: "", Pause.NOT_PAUSED: "not while paused", Pause.ONLY_PAUSED: "while paused"}[self.pause]
        return ", ".join(part for part in (phases, pause, self.condition) if part)


class Emitter:
    """Stamps successive events with the envelope (next version, derived id, time, cause)
    and folds each one, so later rules see the state the earlier events made.

    Event ids are derived from the stream, the version and the cause (the command id or the
    deadline), so deciding the same thing twice yields the same events."""

    def __init__(
        self,
        state: RelationshipState | None,
        stream_id: str,
        cause: str,
        now: datetime,
        command_id: str | None,
        evolve: Callable[[RelationshipState | None, AnyEvent], RelationshipState],
        stamp: CommandStamp | None = None,
    ):
        self.state = state
        self.stream_id, self.cause, self.now, self.command_id = stream_id, cause, now, command_id
        self._evolve = evolve
        # Goes on the first event only: it is what the command was, not what each event is.
        self.stamp = stamp
        self.version = state.version if state else 0
        self.events: list[AnyEvent] = []

    @property
    def current(self) -> RelationshipState:
        assert self.state is not None
        return self.state

    def __call__(self, event_type: type[Any], **fields: Any) -> None:
        self.version += 1
        event_id = uuid.uuid5(_EVENT_ID_NAMESPACE, f"{self.stream_id}/{self.version}/{self.cause}")
        event = event_type(
            stream_id=self.stream_id,
            version=self.version,
            event_id=str(event_id),
            occurred_at=self.now,
            command_id=self.command_id,
            **({"caused_by": self.stamp} if self.stamp and not self.events else {}),
            **fields,
        )
        self.state = self._evolve(self.state, event)
        self.events.append(event)


Changes = dict[str, object]
E = TypeVar("E", bound=Event)
ChangeRule = Callable[[Any, RelationshipState], Changes]
DeadlineRule = Callable[[Emitter], None]
D = TypeVar("D", bound=Callable[..., Any])


@dataclass
class Stage:
    """One lifecycle stage's rules: its commands, the state change of each of its events,
    and what its deadlines do."""

    name: str
    commands: list[CommandSpec] = field(default_factory=list)
    changes: dict[type[Event], ChangeRule] = field(default_factory=dict)
    deadlines: dict[str, DeadlineRule] = field(default_factory=dict)

    def command(
        self,
        command: type[Command],
        *,
        phases: Iterable[Phase],
        senders: frozenset[Sender],
        who: str = "",
        pause: Pause = Pause.ANY,
        condition: str = "",
        requires: Requirement | None = None,
        refusal: str = "",
        open_without_coordinators: bool = False,
    ) -> Callable[[D], D]:
        """Declare `command` and its rules on the function that decides it."""
        words, refused = who or _WHO.get(senders), refusal or _REFUSALS.get(senders)
        if not words or not refused:
            raise ValueError(f"{command.message_name}: name its senders (who=) and their refusal (refusal=)")

        def register(decide: D) -> D:
            self.commands.append(
                CommandSpec(command, tuple(phases), senders, decide, words, pause, condition, requires, refused,
                            open_without_coordinators)  # fmt: skip
            )
            return decide

        return register

    def evolves(self, event_type: type[E]) -> Callable[[Callable[[E, RelationshipState], Changes]], Callable[[E, RelationshipState], Changes]]:  # fmt: skip
        """Declare the function that computes the state change of `event_type`."""

        def register(change: Callable[[E, RelationshipState], Changes]) -> Callable[[E, RelationshipState], Changes]:
            self.changes[event_type] = change
            return change

        return register

    def deadline(self, *kinds: str) -> Callable[[DeadlineRule], DeadlineRule]:
        """Declare what happens when a deadline of one of `kinds` falls due."""

        def register(rule: DeadlineRule) -> DeadlineRule:
            self.deadlines.update(dict.fromkeys(kinds, rule))
            return rule

        return register


# -- the guard ------------------------------------------------------------------------------


def admit(state: RelationshipState, command: Command, spec: CommandSpec) -> Party | None | Rejection:
    """Whether `command` may be decided now, by its declaration: the pause, the phase, what it
    requires, the sender — in that order. The sending party, None for a coordinator or an
    internal actor, or the refusal."""
    if spec.pause is Pause.ONLY_PAUSED and state.paused_until is None:
        return refuse(RefusalCode.WRONG_PHASE, "the relationship is not paused")
    if state.phase not in spec.phases:
        names = " or ".join(phase.value for phase in spec.phases)
        return refuse(
            RefusalCode.WRONG_PHASE,
            f"{spec.name} is only allowed in the {names} phase; the relationship is in {state.phase.value}",
        )
    if spec.pause is Pause.NOT_PAUSED and state.paused_until is not None:
        return refuse(
            RefusalCode.WRONG_PHASE, f"{spec.name} is not allowed while the relationship is paused; resume it first"
        )
    if spec.requires is not None and (missing := spec.requires(state, command)):
        return missing
    return sender_of(state, command.actor_id, spec)


def sender_of(state: RelationshipState, actor: str, spec: CommandSpec) -> Party | None | Rejection:
    senders = spec.senders
    if (Sender.DIRECTORY in senders and actor == DIRECTORY_ACTOR) or (Sender.MATCHING in senders and actor in MATCHING_ACTORS):
        return None
    party = state.party_of(actor)
    if party is not None and Sender(party) in senders:
        return party
    if Sender.COORDINATOR in senders:
        coordinators = state.settings.coordinator_ids
        if actor in coordinators or (spec.open_without_coordinators and not coordinators):
            return None
    return refuse(RefusalCode.NOT_ALLOWED, spec.refusal.format(actor=actor))


def is_coordinator(state: RelationshipState, actor_id: str) -> bool:
    return actor_id in state.settings.coordinator_ids
