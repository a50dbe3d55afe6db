"""Per-relationship data keys in the event store: sealed on append, opened on read, idempotent
retries, race-safe key creation, and `forget` (unknown, running, legacy plain text, twice)."""

from __future__ import annotations

import asyncio
import json
import typing
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest

from activities.data_keys import FORGOTTEN, SEALED, DataKeyError
from activities.event_store import PostgresEventStore
from events.commands import GoalAssessment
from events.decider import start_relationship
from events.model import (
    CONFIDENTIAL_PATHS,
    EVENT_TYPES,
    UPCASTERS,
    AnyEvent,
    ConcernRaised,
    MeetingHeld,
    RelationshipClosed,
    ReviewSubmitted,
    event_payload,
)
from events.sensitivity import CONFIDENTIAL, ConfidentialText, confidential_paths, unmarked_text_fields
from events.settings import ProgrammeSettings
from events.store import ConcurrencyConflict
from mentorflow.forgetting import ForgetRefused, forget_relationship
from mentorflow.keyring import Keyring

NOW = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
KEYRING = Keyring.generate("kek-1")
SECRET = "Worried about my manager; please keep this between us"


def envelope(stream_id: str, version: int) -> dict[str, Any]:
    return {"stream_id": stream_id, "version": version, "event_id": str(uuid.uuid4()),
            "occurred_at": NOW + timedelta(hours=version), "command_id": f"c-{version}"}  # fmt: skip


def history(stream_id: str, text: str = SECRET) -> list[AnyEvent]:
    """A started relationship, a meeting with notes, a concern and a review with nested comments."""
    events: list[AnyEvent] = start_relationship(stream_id, "prog-1", "mentee-1", ProgrammeSettings(), NOW)
    version = len(events)
    events.append(MeetingHeld(**envelope(stream_id, version + 1), meeting_number=1, held_at=NOW,
                              duration_minutes=45, recorded_by="mentor-1", notes=f"notes: {text}"))  # fmt: skip
    events.append(ConcernRaised(**envelope(stream_id, version + 2), concern_id="c-9", party="mentee",
                                raised_by="mentee-1", text=f"concern: {text}"))  # fmt: skip
    events.append(ReviewSubmitted(**envelope(stream_id, version + 3), kind="midpoint", party="mentee",
                                  outcome="continue", comment=f"review: {text}", goal_assessments=(
                                      GoalAssessment(goal_id="g1", progress_percent=40, comment=f"goal: {text}"),
                                      GoalAssessment(goal_id="g2", progress_percent=90),
                                  )))  # fmt: skip
    return events


async def raw_payloads(pool: asyncpg.Pool) -> str:
    rows = await pool.fetch("SELECT payload::text FROM events ORDER BY position")
    return "\n".join(row[0] for row in rows)


def test_every_text_field_of_every_event_is_classified() -> None:
    assert {name: unmarked_text_fields(model) for name, model in EVENT_TYPES.items() if unmarked_text_fields(model)} == {}
    # The union of events and the table agree, and the walker does see nested text.
    assert len(EVENT_TYPES) == len(typing.get_args(typing.get_args(AnyEvent)[0]))
    assert CONFIDENTIAL_PATHS["ReviewSubmitted"] == (("goal_assessments", "*", "comment"), ("comment",))
    assert CONFIDENTIAL_PATHS["MeetingHeld"] == (("notes",),)
    # A new, unmarked text field is caught; a marked one is placed.
    unmarked = type("Probe", (MeetingHeld,), {"__annotations__": {"agenda": str}, "agenda": ""})
    assert unmarked_text_fields(unmarked) == ["agenda"]
    marked = type("Probe2", (MeetingHeld,), {"__annotations__": {"agenda": ConfidentialText}, "agenda": ""})
    assert ("agenda",) in confidential_paths(marked) and CONFIDENTIAL.value == "confidential"


async def test_confidential_text_is_sealed_at_rest_and_read_back_exactly(pool: asyncpg.Pool) -> None:
    store = PostgresEventStore(pool, KEYRING)
    events = history("rel-1")
    await store.append("rel-1", 0, events[:2])
    await store.append("rel-1", 2, events[2:])
    raw = await raw_payloads(pool)
    assert SECRET not in raw and "Worried" not in raw
    assert raw.count('"$enc"') == 4  # notes, concern, review comment, one goal comment (the empty one stays)
    assert await store.read_stream("rel-1") == events
    assert [stored.event for stored in await store.read_all()] == events
    # Everything that is not confidential stays readable in the row (reports, SQL).
    meeting = json.loads(await pool.fetchval("SELECT payload::text FROM events WHERE event_type = 'MeetingHeld'"))
    assert meeting["duration_minutes"] == 45 and meeting["recorded_by"] == "mentor-1"
    # Another process with the same keys reads it too; one without keys sees a marker, not an error.
    assert await PostgresEventStore(pool, KEYRING).read_stream("rel-1") == events
    sealed = await PostgresEventStore(pool).read_stream("rel-1")
    assert isinstance(sealed[-1], ReviewSubmitted) and sealed[-1].comment == SEALED
    assert sealed[-1].goal_assessments[1].comment == "" and sealed[-1].model_dump(exclude={"comment", "goal_assessments"}) == \
        events[-1].model_dump(exclude={"comment", "goal_assessments"})  # fmt: skip
    with pytest.raises(DataKeyError, match="MENTORFLOW_ENCRYPTION_KEYS"):
        await PostgresEventStore(pool).append("rel-2", 0, history("rel-2")[:2])


async def test_a_retried_append_is_recognised_and_another_text_is_a_conflict(pool: asyncpg.Pool) -> None:
    store = PostgresEventStore(pool, KEYRING)
    events = history("rel-1")
    first = await store.append("rel-1", 0, events)
    # The same batch again, from a process that did not create the key: same positions.
    assert await PostgresEventStore(pool, KEYRING).append("rel-1", 0, events) == first
    assert await pool.fetchval("SELECT count(*) FROM events") == len(events)
    # The same ids with other text (a task decided again) is a conflict, not a repeat.
    changed = history("rel-1", text="something else")
    changed = [*events[:-1], changed[-1].model_copy(update={"event_id": events[-1].event_id})]
    with pytest.raises(ConcurrencyConflict):
        await store.append("rel-1", 0, changed)
    # The workflow adopts what it stored after a conflict: exactly what it wrote.
    assert await store.read_stream("rel-1", after_version=1) == events[1:]


async def test_concurrent_first_appends_agree_on_one_key(pool: asyncpg.Pool) -> None:
    streams = [f"rel-{n}" for n in range(6)]
    stores = [PostgresEventStore(pool, KEYRING) for _ in range(4)]
    # Every store creates the key of every stream at the same moment.
    ciphers = await asyncio.gather(*(store._keys.for_append(s) for s in streams for store in stores))
    assert await pool.fetchval("SELECT count(*) FROM data_keys") == len(streams)
    for n, stream in enumerate(streams):
        tokens = {c.seal("same text", b"aad") for c in ciphers[n * len(stores) : (n + 1) * len(stores)] if c}
        assert len(tokens) == 1, stream
    histories = {stream: history(stream) for stream in streams}
    await asyncio.gather(*(stores[n % 4].append(s, 0, histories[s]) for n, s in enumerate(streams)))
    for stream in streams:
        assert await stores[(streams.index(stream) + 1) % 4].read_stream(stream) == histories[stream]


async def test_a_value_moved_to_another_place_does_not_decrypt(pool: asyncpg.Pool) -> None:
    store = PostgresEventStore(pool, KEYRING)
    await store.append("rel-1", 0, history("rel-1"))
    # Copy the concern's ciphertext into the meeting's notes: authenticated to another place.
    await pool.execute(
        """UPDATE events SET payload = jsonb_set(payload, '{notes}',
               (SELECT payload->'text' FROM events WHERE event_type = 'ConcernRaised'))
           WHERE event_type = 'MeetingHeld'"""
    )
    with pytest.raises(DataKeyError, match=r"notes of event rel-1@\d+ does not decrypt"):
        await store.read_stream("rel-1")


async def test_upcasters_see_the_decrypted_text(pool: asyncpg.Pool, monkeypatch: pytest.MonkeyPatch) -> None:
    store = PostgresEventStore(pool, KEYRING)
    await store.append("rel-1", 0, history("rel-1"))
    monkeypatch.setitem(UPCASTERS, ("MeetingHeld", 1), lambda data: data | {"notes": data["notes"].upper()})
    meeting = next(e for e in await store.read_stream("rel-1") if isinstance(e, MeetingHeld))
    assert meeting.notes == f"NOTES: {SECRET.upper()}" and meeting.schema_version == 2


async def never_running(programme_id: str, relationship_id: str) -> bool:
    return False


async def test_forget_makes_the_text_unreadable_and_keeps_the_rest(pool: asyncpg.Pool) -> None:
    store = PostgresEventStore(pool, KEYRING)
    events = history("rel-1")
    await store.append("rel-1", 0, events)
    other = history("rel-2")
    await store.append("rel-2", 0, other)  # another relationship, untouched
    asked: list[tuple[str, str]] = []

    async def running(programme_id: str, relationship_id: str) -> bool:
        asked.append((programme_id, relationship_id))
        return True

    with pytest.raises(ForgetRefused, match="still running"):
        await forget_relationship(pool, "relationship/prog-1/rel-1", forgotten_by="ops-1", still_running=running)
    assert asked == [("prog-1", "rel-1")]
    with pytest.raises(ForgetRefused, match="no relationship 'rel-404'"):
        await forget_relationship(pool, "rel-404", forgotten_by="ops-1", still_running=never_running)
    with pytest.raises(ForgetRefused, match="--by must be an id"):
        await forget_relationship(pool, "rel-1", forgotten_by="Jane Doe", still_running=never_running)

    done = await forget_relationship(pool, "relationship/prog-1/rel-1", forgotten_by="ops-1", still_running=never_running)
    assert (done.now, done.relationship_id, done.programme_id, done.sealed_values, done.scrubbed_events) == \
        (True, "rel-1", "prog-1", 4, 0)  # fmt: skip
    # Even this store, which still holds the key in its cache from the appends above.
    for reader in (store, PostgresEventStore(pool, KEYRING)):
        after = await reader.read_stream("rel-1")
        assert len(after) == len(events)
        for before, now in zip(events, after, strict=True):
            paths = CONFIDENTIAL_PATHS.get(before.type, ())
            if not paths:
                assert now == before
                continue
            assert now.model_dump(exclude={p[0] for p in paths}) == before.model_dump(exclude={p[0] for p in paths})
        review = after[-1]
        assert isinstance(review, ReviewSubmitted) and review.comment == FORGOTTEN
        assert [a.comment for a in review.goal_assessments] == [FORGOTTEN, ""]
        assert [a.progress_percent for a in review.goal_assessments] == [40, 90]
    assert await PostgresEventStore(pool, KEYRING).read_stream("rel-2") == other
    row = await pool.fetchrow("SELECT * FROM data_keys WHERE stream_id = 'rel-1'")
    assert row["wrapped_key"] is None and row["kek_id"] is None and row["forgotten_by"] == "ops-1"
    # A second time changes nothing and says when it happened; no new key is ever made.
    again = await forget_relationship(pool, "rel-1", forgotten_by="ops-2", still_running=running)
    assert (again.now, again.forgotten_by, again.forgotten_at) == (False, "ops-1", done.forgotten_at)
    late = MeetingHeld(**envelope("rel-1", len(events) + 1), meeting_number=2, held_at=NOW, duration_minutes=30,
                       recorded_by="mentor-1", notes="written after forgetting")  # fmt: skip
    await PostgresEventStore(pool, KEYRING).append("rel-1", len(events), [late])
    assert "written after forgetting" not in await raw_payloads(pool)
    assert (await store.read_stream("rel-1", after_version=len(events)))[0] == late.model_copy(update={"notes": FORGOTTEN})


async def test_forget_overwrites_text_stored_in_plain_before_encryption(pool: asyncpg.Pool) -> None:
    events = history("rel-1")
    # As a store before migration 0007 wrote them: the payload JSON as it is.
    await pool.execute(
        """INSERT INTO events (position, stream_id, version, event_id, event_type, schema_version, occurred_at,
                               command_id, payload)
           SELECT nextval('event_position'), 'rel-1', v, e::uuid, t, 1, o, c, p::jsonb
             FROM unnest($1::int[], $2::text[], $3::text[], $4::timestamptz[], $5::text[], $6::text[])
                  AS u(v, e, t, o, c, p)""",
        [e.version for e in events], [e.event_id for e in events], [e.type for e in events],
        [e.occurred_at for e in events], [e.command_id for e in events],
        [json.dumps(event_payload(e)) for e in events],
    )  # fmt: skip
    events.append(RelationshipClosed.model_validate(
        {**envelope("rel-1", len(events) + 1), "reason": "closed_by_mentee", "closed_by": "mentee-1",
         "summary": {"relationship_id": "rel-1", "programme_id": "prog-1", "mentee_id": "mentee-1",
                     "mentor_id": "mentor-1", "closure_reason": "closed_by_mentee", "started_at": NOW,
                     "activated_at": NOW, "closed_at": NOW, "duration_days": 0, "meetings_held": 1,
                     "meetings_missed": 0, "meetings_cancelled": 0, "late_cancellations": 0,
                     "meeting_minutes_total": 45, "goals_total": 2, "goals_achieved": 0, "goal_progress": {},
                     "feedback_trend": [], "concerns_raised": 1, "reviews_completed": [], "extensions": 0,
                     "reflections_from": []}}))  # fmt: skip
    store = PostgresEventStore(pool, KEYRING)
    await store.append("rel-1", len(events) - 1, events[-1:])
    assert await store.read_stream("rel-1") == events  # plain text reads as it is
    assert SECRET in await raw_payloads(pool)

    async def must_not_ask(programme_id: str, relationship_id: str) -> bool:
        raise AssertionError("the store shows it closed: Temporal need not be asked")

    done = await forget_relationship(pool, "rel-1", forgotten_by="ops-1", still_running=must_not_ask)
    assert (done.sealed_values, done.scrubbed_events) == (0, 3)
    assert SECRET not in await raw_payloads(pool)
    concern = next(e for e in await store.read_stream("rel-1") if isinstance(e, ConcernRaised))
    assert concern.text == FORGOTTEN and concern.raised_by == "mentee-1"


async def test_a_data_key_wrapped_with_a_key_no_longer_configured_names_it(pool: asyncpg.Pool) -> None:
    events = history("rel-1")
    await PostgresEventStore(pool, KEYRING).append("rel-1", 0, events)
    # A rotation that dropped the old key too early: a clear error, not a traceback.
    with pytest.raises(DataKeyError, match=r"relationship rel-1 cannot be unwrapped: encryption key 'kek-1' is not configured"):
        await PostgresEventStore(pool, Keyring.generate("kek-2")).read_stream("rel-1")
    # Rotated properly (new key first, old key kept): old data reads, new data keys use the new key.
    rotated = Keyring.parse(f"{Keyring.generate('kek-2').format()} {KEYRING.format()}")
    assert await PostgresEventStore(pool, rotated).read_stream("rel-1") == events
    await PostgresEventStore(pool, rotated).append("rel-2", 0, history("rel-2"))
    assert await pool.fetchval("SELECT kek_id FROM data_keys WHERE stream_id = 'rel-2'") == "kek-2"
