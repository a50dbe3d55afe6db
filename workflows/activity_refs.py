"""Every activity a workflow calls, as a typed reference: the name the worker registers it
under, what it takes and what it returns.

Temporal's Python SDK types a call when the workflow passes the activity's own function;
ours never import activities/ (the layers: activities do the I/O, workflows decide), so each
activity is named here once, with its types. `call`/`call_local` (workflows/calls.py) take a
reference, so a call site gets the result's type (for mypy) and its decoding (`result_type`)
from one place, and tests/workflow/test_activity_refs.py checks every reference against the
activity the worker really registers: name, argument and result annotations.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from events.digest import DueProgrammes, PreparedDigest, ProgrammeDigestRequest
    from events.model import AnyEvent
    from events.notifications import Notification
    from events.people import ParticipantStatus
    from events.settings import ProgrammeRequest, ProgrammeSettings
    from events.store import AppendAndNotifyRequest, AppendAndNotifyResult, AppendRequest, ReadStreamRequest
    from pairing.requests import Candidate, CandidateRequest, RoundProposalClaim, SlotRelease, SlotRequest, SlotReservation
    from pairing.rounds import ProposeBatch, ProposeRequest, RoundMembers, RoundRequest, RoundSolution

A = TypeVar("A")
R = TypeVar("R")


@dataclass(frozen=True)
class ActivityRef(Generic[A, R]):
    name: str
    # The types as the activity declares them (a union or generic alias where it is one).
    argument: Any
    result: Any


# The event store (activities/event_store.py, activities/store_and_notify.py)
APPEND_EVENTS: ActivityRef[AppendRequest, list[int]] = ActivityRef("append_events", AppendRequest, list[int])
APPEND_EVENTS_AND_NOTIFY: ActivityRef[AppendAndNotifyRequest, AppendAndNotifyResult] = ActivityRef(
    "append_events_and_notify", AppendAndNotifyRequest, AppendAndNotifyResult
)
READ_STREAM: ActivityRef[ReadStreamRequest, list[AnyEvent]] = ActivityRef(
    "read_stream", ReadStreamRequest, list[AnyEvent]
)
# Notifications (activities/notifications.py)
SEND_NOTIFICATIONS: ActivityRef[list[Notification], int] = ActivityRef("send_notifications", list[Notification], int)
# The directory (activities/directory.py)
LOAD_PROGRAMME: ActivityRef[ProgrammeRequest, ProgrammeSettings] = ActivityRef(
    "load_programme", ProgrammeRequest | str, ProgrammeSettings
)
CHECK_PARTICIPANTS: ActivityRef[list[str], list[ParticipantStatus]] = ActivityRef(
    "check_participants", list[str], list[ParticipantStatus]
)
# The mentor pool (activities/matching.py)
RESERVE_MENTOR_SLOT: ActivityRef[SlotRequest, SlotReservation] = ActivityRef(
    "reserve_mentor_slot", SlotRequest, SlotReservation
)
RELEASE_MENTOR_SLOT: ActivityRef[SlotRelease, str | None] = ActivityRef("release_mentor_slot", SlotRelease, str | None)
CONFIRM_ROUND_PROPOSAL: ActivityRef[RoundProposalClaim, bool] = ActivityRef(
    "confirm_round_proposal", RoundProposalClaim, bool
)
BEST_CANDIDATE: ActivityRef[CandidateRequest, Candidate | None] = ActivityRef(
    "best_candidate", CandidateRequest, Candidate | None
)
# Matching rounds (activities/matching_round.py)
COLLECT_ROUND_MEMBERS: ActivityRef[RoundRequest, RoundMembers] = ActivityRef(
    "collect_round_members", RoundRequest, RoundMembers
)
SOLVE_ROUND: ActivityRef[RoundRequest, RoundSolution] = ActivityRef("solve_round", RoundRequest, RoundSolution)
PROPOSE_ROUND_PAIRS: ActivityRef[ProposeRequest, ProposeBatch] = ActivityRef(
    "propose_round_pairs", ProposeRequest, ProposeBatch
)
# The coordinators' digest (activities/digest.py)
DIGEST_PROGRAMMES_DUE: ActivityRef[DueProgrammes, list[str]] = ActivityRef(
    "digest_programmes_due", DueProgrammes, list[str]
)
PREPARE_PROGRAMME_DIGEST: ActivityRef[ProgrammeDigestRequest, PreparedDigest] = ActivityRef(
    "prepare_programme_digest", ProgrammeDigestRequest, PreparedDigest
)

ALL: tuple[ActivityRef[Any, Any], ...] = (
    APPEND_EVENTS, APPEND_EVENTS_AND_NOTIFY, READ_STREAM, SEND_NOTIFICATIONS, LOAD_PROGRAMME, CHECK_PARTICIPANTS,
    RESERVE_MENTOR_SLOT, RELEASE_MENTOR_SLOT, CONFIRM_ROUND_PROPOSAL, BEST_CANDIDATE, COLLECT_ROUND_MEMBERS,
    SOLVE_ROUND, PROPOSE_ROUND_PAIRS, DIGEST_PROGRAMMES_DUE, PREPARE_PROGRAMME_DIGEST,
)  # fmt: skip
