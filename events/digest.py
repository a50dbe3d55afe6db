"""The coordinators' digest (issue #15): what needs a programme's coordinators, decided from
facts alone. No I/O.

- **The facts.** One `DigestRow` per relationship, folded from its events like the report
  projections (events/projections.py registers it as the `digest` projection, table
  `digest_relationships`): phase, health and why, the last meeting, open concerns (ids and
  when raised — never their text), the proposal waiting for answers, the open review, the
  closing reflections. Rebuildable from the events like every read model.
- **The items.** `coordinator_digests` turns a programme's rows, its mentors' load and `now`
  into each coordinator's items: relationships stalled or at risk and why, open concerns
  (count and age), proposals unanswered past half their time, relationships waiting for a
  mentor, reviews and closing reflections that close before the next digest or closed
  without an answer since the last one, mentors at capacity. A coordinator is never told
  about a relationship they are a party of.
- **The message.** `digest_notification` packs one coordinator's items into a
  `coordinator_digest` notification (ids, numbers, dates, codes and the programme's name;
  the words are activities/digest_text.py's); `items_of` unpacks them.
- **When.** `is_due`: at most one digest every `digest_every_days`, recorded by the day it
  was decided; a day with nothing to report records nothing, so the next day looks again.
"""

from __future__ import annotations

import typing
from collections.abc import Iterable, Mapping, Sequence
from datetime import date, datetime, timedelta
from typing import Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict

from events.model import (
    AnyEvent,
    ClosureBegun,
    ConcernRaised,
    ConcernResolved,
    Health,
    HealthChanged,
    MatchAccepted,
    MatchConfirmed,
    MatchDeclined,
    MatchProposalExpired,
    MatchProposed,
    MeetingHeld,
    MeetingMissed,
    ReflectionSubmitted,
    RelationshipActivated,
    RelationshipClosed,
    RelationshipPaused,
    RelationshipResumed,
    ReviewCompleted,
    ReviewOpened,
    ReviewSubmitted,
)
from events.notifications import Notification
from events.settings import ProgrammeSettings
from events.state import Phase
from events.stream_rows import StreamRow, stream_row

TEMPLATE = "coordinator_digest"
PARTIES = ("mentee", "mentor")


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


# -- the facts: one row per relationship ---------------------------------------------------


class DigestRow(StreamRow):
    started_at: AwareDatetime
    # The proposal waiting for answers.
    candidate_id: str | None = None
    proposed_at: AwareDatetime | None = None
    proposal_expires_at: AwareDatetime | None = None
    accepted_by: tuple[str, ...] = ()
    # The last proposal that ended without a match: expired, declined_by_mentee, declined_by_mentor.
    ended_candidate_id: str | None = None
    ended_how: str | None = None
    ended_at: AwareDatetime | None = None
    # Cadence and health. The meetings held (number and when, in the same order) tell the
    # last one, also when a report of one is corrected to "not held".
    activated_at: AwareDatetime | None = None
    held_meeting_numbers: tuple[int, ...] = ()
    held_meetings_at: tuple[AwareDatetime, ...] = ()
    last_meeting_at: AwareDatetime | None = None
    resumed_at: AwareDatetime | None = None
    paused_until: AwareDatetime | None = None
    health: Health = Health.HEALTHY
    health_reasons: tuple[str, ...] = ()
    health_since: AwareDatetime | None = None
    # Open concerns: their ids and when each was raised, in the same order.
    open_concern_ids: tuple[str, ...] = ()
    open_concerns_raised_at: tuple[AwareDatetime, ...] = ()
    # The open review, and the last one that closed without everyone's answer.
    review_kind: str | None = None
    review_respond_by: AwareDatetime | None = None
    review_answered_by: tuple[str, ...] = ()
    unanswered_review_kind: str | None = None
    unanswered_review_by: tuple[str, ...] = ()
    unanswered_review_at: AwareDatetime | None = None
    # Closure.
    reflections_due_at: AwareDatetime | None = None
    reflections_from: tuple[str, ...] = ()
    closed_at: AwareDatetime | None = None
    version: int


def apply_digest_row(row: DigestRow | None, event: AnyEvent) -> DigestRow | None:
    """The row after `event` (None: unchanged), the fold of the `digest` projection."""
    return stream_row(DigestRow, row, event, _changes)


_NO_CANDIDATE: dict[str, Any] = {"candidate_id": None, "proposed_at": None, "proposal_expires_at": None, "accepted_by": ()}
_NO_REVIEW: dict[str, Any] = {"review_kind": None, "review_respond_by": None, "review_answered_by": ()}
# What ends with a relationship's active life (events/closure.py `_ending`).
_ENDING: dict[str, Any] = {**_NO_CANDIDATE, **_NO_REVIEW, "paused_until": None}


def _joined(parties: tuple[str, ...], party: str) -> tuple[str, ...]:
    return tuple(sorted({*parties, party}))


def _changes(row: DigestRow, event: AnyEvent) -> dict[str, Any]:  # noqa: PLR0911 - one branch per event
    at = event.occurred_at
    if isinstance(event, MatchProposed):
        return {"candidate_id": event.mentor_id, "proposed_at": at, "proposal_expires_at": event.expires_at, "accepted_by": ()}
    if isinstance(event, MatchAccepted):
        return {"accepted_by": _joined(row.accepted_by, event.party)}
    if isinstance(event, MatchDeclined | MatchProposalExpired):
        how = "expired" if isinstance(event, MatchProposalExpired) else f"declined_by_{event.party}"
        return {**_NO_CANDIDATE, "ended_candidate_id": event.mentor_id, "ended_how": how, "ended_at": at}
    if isinstance(event, MatchConfirmed):
        return {**_NO_CANDIDATE, "phase": Phase.AGREEMENT, "mentor_id": event.mentor_id}
    if isinstance(event, RelationshipActivated):
        return {"phase": Phase.ACTIVE, "activated_at": at}
    if isinstance(event, MeetingHeld | MeetingMissed):
        held = {n: t for n, t in zip(row.held_meeting_numbers, row.held_meetings_at, strict=True) if n != event.meeting_number}
        if isinstance(event, MeetingHeld):
            held[event.meeting_number] = event.held_at
        numbers = tuple(sorted(held))
        return {
            "held_meeting_numbers": numbers,
            "held_meetings_at": tuple(held[n] for n in numbers),
            "last_meeting_at": max(held.values(), default=None),
        }
    if isinstance(event, RelationshipPaused):
        return {"paused_until": event.until}
    if isinstance(event, RelationshipResumed):
        return {"paused_until": None, "resumed_at": at}
    if isinstance(event, HealthChanged):
        since = at if event.health is not row.health or row.health_since is None else row.health_since
        return {"health": event.health, "health_reasons": tuple(event.reasons), "health_since": since}
    if isinstance(event, ConcernRaised):
        return {
            "open_concern_ids": (*row.open_concern_ids, event.concern_id),
            "open_concerns_raised_at": (*row.open_concerns_raised_at, at),
        }
    if isinstance(event, ConcernResolved):
        kept = [(i, t) for i, t in zip(row.open_concern_ids, row.open_concerns_raised_at, strict=True) if i != event.concern_id]
        return {"open_concern_ids": tuple(i for i, _ in kept), "open_concerns_raised_at": tuple(t for _, t in kept)}
    if isinstance(event, ReviewOpened):
        return {"phase": Phase.REVIEW, "review_kind": event.kind, "review_respond_by": event.respond_by, "review_answered_by": ()}
    if isinstance(event, ReviewSubmitted):
        return {"review_answered_by": _joined(row.review_answered_by, event.party)}
    if isinstance(event, ReviewCompleted):
        changes: dict[str, Any] = dict(_NO_REVIEW)
        if event.outcome != "close":
            changes["phase"] = Phase.ACTIVE
        if event.missing_parties:
            changes.update(
                unanswered_review_kind=event.kind, unanswered_review_by=tuple(event.missing_parties), unanswered_review_at=at
            )
        return changes
    if isinstance(event, ClosureBegun):
        return {**_ENDING, "phase": Phase.CLOSING, "reflections_due_at": event.reflections_due_at}
    if isinstance(event, ReflectionSubmitted):
        return {"reflections_from": _joined(row.reflections_from, event.party)}
    if isinstance(event, RelationshipClosed):
        return {**_ENDING, "phase": Phase.CLOSED, "closed_at": at}
    return {}


# -- the items ------------------------------------------------------------------------------

ItemKind = Literal[
    "stalled",
    "at_risk",
    "concerns",
    "proposal_unanswered",
    "waiting_for_mentor",
    "review_due",
    "review_unanswered",
    "reflections_due",
    "reflections_missing",
    "mentor_at_capacity",
]
# The order of the digest's sections.
KINDS: tuple[ItemKind, ...] = typing.get_args(ItemKind)

class DigestItem(_Frozen):
    """One thing that needs a coordinator. Which fields are set depends on `kind`."""

    kind: ItemKind
    relationship_id: str | None = None
    mentee_id: str | None = None
    # The matched mentor, the proposed one, the one whose proposal ended, or the one at capacity.
    mentor_id: str | None = None
    # Since when: in this health, oldest concern raised, proposed, waiting for a mentor.
    since: AwareDatetime | None = None
    # A deadline: the proposal expires, the review or the reflections close (or closed).
    due: AwareDatetime | None = None
    # Whole days since `since` (for health: without a meeting).
    days: int | None = None
    # Health reason codes (events/health.py): quiet, missed_meetings, concern_open, low_feedback.
    reasons: tuple[str, ...] = ()
    # Open concerns; a mentor's relationships.
    count: int | None = None
    # A mentor's places.
    capacity: int | None = None
    # The parties whose answer is missing.
    waiting_for: tuple[str, ...] = ()
    # midpoint, final, on_demand; for a proposal that ended: expired, declined_by_mentee, …
    what: str | None = None

    def concerns(self, person_id: str) -> bool:
        return person_id in (self.mentee_id, self.mentor_id) and self.kind != "mentor_at_capacity"


class MentorLoad(_Frozen):
    mentor_id: str
    taken: int
    capacity: int


class CoordinatorDigest(_Frozen):
    coordinator_id: str
    items: tuple[DigestItem, ...]


def _days(since: datetime, now: datetime) -> int:
    return max((now - since).days, 0)


def _health_item(row: DigestRow, now: datetime) -> DigestItem | None:
    if row.health is Health.HEALTHY or row.paused_until is not None or row.phase not in (Phase.ACTIVE, Phase.REVIEW):
        return None
    # Quiet since the last meeting, the start of the cadence or the end of a pause (events/health.py).
    quiet = max((m for m in (row.activated_at, row.last_meeting_at, row.resumed_at) if m is not None), default=None)
    return DigestItem(
        kind="stalled" if row.health is Health.STALLED else "at_risk",
        relationship_id=row.relationship_id,
        mentee_id=row.mentee_id,
        mentor_id=row.mentor_id,
        since=row.health_since,
        days=None if quiet is None else _days(quiet, now),
        reasons=row.health_reasons,
    )


def _matching_items(row: DigestRow, now: datetime) -> list[DigestItem]:
    if row.phase is not Phase.MATCHING:
        return []
    base = {"relationship_id": row.relationship_id, "mentee_id": row.mentee_id}
    if row.candidate_id is not None:
        assert row.proposed_at is not None and row.proposal_expires_at is not None
        waiting = tuple(p for p in PARTIES if p not in row.accepted_by)
        # Past half of its time to answer, nobody having refused: worth a word to whoever is silent.
        if waiting and now >= row.proposed_at + (row.proposal_expires_at - row.proposed_at) / 2:
            return [
                DigestItem(
                    kind="proposal_unanswered", **base, mentor_id=row.candidate_id, since=row.proposed_at,
                    days=_days(row.proposed_at, now), due=row.proposal_expires_at, waiting_for=waiting,
                )  # fmt: skip
            ]
        return []
    since = row.ended_at or row.started_at
    return [
        DigestItem(
            kind="waiting_for_mentor", **base, mentor_id=row.ended_candidate_id, since=since, days=_days(since, now),
            what=row.ended_how,
        )  # fmt: skip
    ]


def _answer_items(row: DigestRow, now: datetime, before_next: datetime, after_last: datetime) -> list[DigestItem]:
    base = {"relationship_id": row.relationship_id, "mentee_id": row.mentee_id, "mentor_id": row.mentor_id}
    items: list[DigestItem] = []
    if row.review_kind is not None and row.review_respond_by is not None and row.review_respond_by <= before_next:
        waiting = tuple(p for p in PARTIES if p not in row.review_answered_by)
        if waiting:
            items.append(
                DigestItem(kind="review_due", **base, due=row.review_respond_by, waiting_for=waiting, what=row.review_kind)
            )
    if row.unanswered_review_at is not None and row.unanswered_review_at > after_last:
        items.append(
            DigestItem(
                kind="review_unanswered", **base, due=row.unanswered_review_at, waiting_for=row.unanswered_review_by,
                what=row.unanswered_review_kind,
            )  # fmt: skip
        )
    if row.reflections_due_at is not None:
        waiting = tuple(p for p in PARTIES if p not in row.reflections_from)
        if waiting and row.phase is Phase.CLOSING and row.reflections_due_at <= before_next:
            items.append(DigestItem(kind="reflections_due", **base, due=row.reflections_due_at, waiting_for=waiting))
        elif waiting and row.phase is Phase.CLOSED and row.closed_at is not None and row.closed_at > after_last:
            items.append(DigestItem(kind="reflections_missing", **base, due=row.closed_at, waiting_for=waiting))
    return items


def relationship_items(row: DigestRow, now: datetime, every: timedelta) -> list[DigestItem]:
    """What one relationship asks of its coordinators at `now`, with digests `every` apart."""
    items: list[DigestItem] = []
    health = _health_item(row, now)
    if health is not None:
        items.append(health)
    if row.open_concern_ids and row.phase is not Phase.CLOSED:
        oldest = min(row.open_concerns_raised_at)
        items.append(
            DigestItem(
                kind="concerns", relationship_id=row.relationship_id, mentee_id=row.mentee_id,
                mentor_id=row.mentor_id or row.candidate_id, since=oldest, days=_days(oldest, now),
                count=len(row.open_concern_ids),
            )  # fmt: skip
        )
    items.extend(_matching_items(row, now))
    items.extend(_answer_items(row, now, before_next=now + every, after_last=now - every))
    return items


def coordinator_digests(
    settings: ProgrammeSettings,
    rows: Iterable[DigestRow],
    mentor_load: Iterable[MentorLoad],
    now: datetime,
) -> list[CoordinatorDigest]:
    """Each coordinator's items, in section order (oldest first within one); coordinators
    with nothing to hear of are left out, and so is everyone when the digest is off."""
    if settings.digest_every_days is None:
        return []
    every = timedelta(days=settings.digest_every_days)
    items = [item for row in rows for item in relationship_items(row, now, every)]
    items += [
        DigestItem(kind="mentor_at_capacity", mentor_id=load.mentor_id, count=load.taken, capacity=load.capacity)
        for load in mentor_load
        if 0 < load.capacity <= load.taken
    ]
    items.sort(key=lambda item: (KINDS.index(item.kind), item.since or item.due or now, item.relationship_id or "", item.mentor_id or ""))
    digests = []
    for coordinator in dict.fromkeys(settings.coordinator_ids):
        theirs = tuple(item for item in items if not item.concerns(coordinator))
        if theirs:
            digests.append(CoordinatorDigest(coordinator_id=coordinator, items=theirs))
    return digests


def is_due(settings: ProgrammeSettings, last_sent_on: date | None, today: date) -> bool:
    """Whether a programme's coordinators may get a digest today: it is on, they exist, and
    the last one went out at least `digest_every_days` ago."""
    every = settings.digest_every_days
    if every is None or not settings.coordinator_ids:
        return False
    return last_sent_on is None or (today - last_sent_on).days >= every


# -- the runs: what the workflow and its activities say to each other -----------------------


class DueProgrammes(_Frozen):
    """Which programmes are due on the (UTC) day of `now`."""

    now: AwareDatetime


class ProgrammeDigestRequest(_Frozen):
    programme_id: str
    now: AwareDatetime


class PreparedDigest(_Frozen):
    programme_id: str
    day: date
    # Empty when nothing needs anyone (then nothing is recorded and the next day looks again).
    notifications: tuple[Notification, ...] = ()
    # Only in results of workers from before the notification activity held the digest for
    # daytime: when each one was to go (by notification id). Runs begun then replay their
    # waves from it (workflows/digest.py `_send_in_waves`); it goes with that path.
    send_at: dict[str, AwareDatetime] = {}
    # The day was recorded before: by an earlier try whose sending may not have finished, or
    # by another run; the delivery log sends only what has not gone out.
    recorded_before: bool = False


class DigestRunResult(_Frozen):
    programmes_due: int
    digests: int
    failed_programmes: tuple[str, ...] = ()


# -- the message ----------------------------------------------------------------------------


def digest_relationship_id(programme_id: str) -> str:
    """What a digest names where other notifications name their relationship (the delivery log, webhooks)."""
    return f"programme/{programme_id}"


def digest_notification(
    programme_id: str, programme_name: str, day: date, settings: ProgrammeSettings, digest: CoordinatorDigest
) -> Notification:
    """One coordinator's digest of `day`: its id is the same for every try of that day, so the
    delivery log sends it once."""
    data = {
        "programme_id": programme_id,
        "programme_title": programme_name,
        "coordinator_id": digest.coordinator_id,
        "day": day.isoformat(),
        "every_days": str(settings.digest_every_days),
        "missed_meetings_at_risk": str(settings.missed_meetings_at_risk),
        "items": str(len(digest.items)),
    }
    for number, item in enumerate(digest.items, 1):
        for field, value in item.model_dump(exclude_defaults=True).items():
            data[f"item{number}_{field}"] = _encoded(value)
    return Notification(
        notification_id=f"{TEMPLATE}:{programme_id}:{day.isoformat()}:{digest.coordinator_id}",
        relationship_id=digest_relationship_id(programme_id),
        recipient_id=digest.coordinator_id,
        template=TEMPLATE,
        data=data,
    )


def _encoded(value: Any) -> str:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, tuple):
        return ",".join(value)
    return str(value)


def items_of(data: Mapping[str, str]) -> list[DigestItem]:
    """The items a digest notification carries, in order."""
    items = []
    for number in range(1, int(data.get("items", "0")) + 1):
        prefix = f"item{number}_"
        fields: dict[str, Any] = {key.removeprefix(prefix): value for key, value in data.items() if key.startswith(prefix)}
        for name in ("reasons", "waiting_for"):
            if name in fields:
                fields[name] = tuple(part for part in fields[name].split(",") if part)
        items.append(DigestItem.model_validate(fields))
    return items


def item_key(number: int, field: str) -> str:
    """The data key of one item's field (its `_id` fields get a `_name` from the templates)."""
    return f"item{number}_{field}"


def sections(items: Sequence[DigestItem]) -> list[tuple[ItemKind, list[tuple[int, DigestItem]]]]:
    """The items by kind, in section order, each with its number in the notification."""
    numbered = list(enumerate(items, 1))
    return [(kind, [(n, item) for n, item in numbered if item.kind == kind]) for kind in KINDS if any(i.kind == kind for i in items)]
